"""Verification: HTTP health checks, `manage.py check`, custom commands."""
from __future__ import annotations

from .. import layout
from ..errors import DeployError, Interrupted
from .base import Outcome, Step, register
from ..pyenv import render_app


def check_health(ctx, host, read_only: bool = False) -> list[str]:
    """Run the configured health checks on a host; raise DeployError on the first that fails.

    read_only: for preflight; custom commands are skipped (they may change things).
    """
    notes = []
    for check in ctx.config.health:
        if check.kind == "http":
            url = host.render(check.url)
            doc = host.helper("files", "http_check", {"url": url, "expect_status": check.expect_status,
                                                      "contains": check.contains, "timeout": check.timeout},
                              timeout=check.timeout + 30)
            if not doc.get("healthy"):
                raise DeployError(f"{host.name}: health check {url} failed: status {doc.get('status')} "
                                  f"{(doc.get('body') or doc.get('error') or '')[:120]!r}",
                                  hint="see the app's logs on that host")
            notes.append(f"{url} {doc.get('status')}")
        elif check.kind == "manage":
            res = ctx.manage(host, check.command, check=False, timeout=check.timeout, read_only=read_only)
            if not res.ok:
                raise DeployError(f"{host.name}: manage.py {check.command} failed: {res.tail(2)}")
            notes.append(f"manage.py {check.command} ok")
        elif read_only:
            notes.append(f"{check.command!r} not run (a check changes nothing)")
        else:
            res = host.run(render_app(ctx, host, check.command, layout.current(host)), cwd=layout.current(host),
                           check=False, timeout=check.timeout)
            if not res.ok:
                raise DeployError(f"{host.name}: health command {check.command!r} failed: {res.tail(2)}")
            notes.append(f"{check.command!r} ok")
    return notes


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
