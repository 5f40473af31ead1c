"""Verification: HTTP health checks, `manage.py check`, custom commands."""
from __future__ import annotations

from ..errors import DeployError, Interrupted
from .base import Outcome, Step, register
from ..work.health import check_health


@register
class HealthCheck(Step):
    """Check that every app host serves the release (HTTP, manage.py check, commands)."""

    name = "health_check"
    scope = "app"

    def run(self, ctx, host):
        try:
            notes = check_health(ctx, host)
        except DeployError as exc:
            if not isinstance(exc, Interrupted):
                _health(ctx, host, False)
            if self.options.get("report_only") and not isinstance(exc, Interrupted):
                return Outcome(message=f"NOT healthy: {exc.one_line()}")
            raise
        _health(ctx, host, True)
        return Outcome(message="; ".join(notes) or "no health check configured")


def _health(ctx, host, ok: bool) -> None:
    """The latest health of each host: the ending line says whether the app serves."""
    with ctx.lock:
        health = ctx.outcome.setdefault("health", {})
        health[host.name] = ok
        ctx.outcome["healthy"] = all(health.values())
