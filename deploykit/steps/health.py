"""Verification: HTTP health checks, `manage.py check`, custom commands."""
from __future__ import annotations

from ..errors import DeployError
from ..playbook import Outcome, Step, register
from ..pyenv import render_app


@register
class HealthCheck(Step):
    """Check that every app host serves the release (HTTP, manage.py check, commands)."""

    name = "health_check"
    scope = "app"

    def run(self, ctx, host):
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
                res = ctx.manage(host, check.command, check=False, timeout=check.timeout)
                if not res.ok:
                    raise DeployError(f"{host.name}: manage.py {check.command} failed: {res.tail(2)}")
                notes.append(f"manage.py {check.command} ok")
            else:
                res = host.run(render_app(ctx, host, check.command, host.path("current")), cwd=host.path("current"),
                               check=False, timeout=check.timeout)
                if not res.ok:
                    raise DeployError(f"{host.name}: health command {check.command!r} failed: {res.tail(2)}")
                notes.append(f"{check.command!r} ok")
        return Outcome(message="; ".join(notes) or "no health check configured")
