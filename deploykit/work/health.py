"""Health checks of a host (HTTP, manage.py commands, custom commands): the release's verify and preflight share them."""
from __future__ import annotations

import shlex

from .. import layout
from ..djangoapp import django_helper
from ..errors import DeployError
from ..pyenv import render_app


def asks_django(check) -> bool:
    """A `manage: check` health check: answered by the run's Django session of the live release."""
    return check.kind == "manage" and check.command.split()[:1] == ["check"]


def check_health(ctx, host, read_only: bool = False) -> list[str]:
    """Run the configured health checks on a host; raise DeployError on the first that fails.

    read_only: for preflight; custom commands are skipped (they may change things).
    `manage: check ...` is answered by the release's Django session (one start-up per
    release and run); other manage.py commands start a process of their own.
    """
    notes = []
    for check in ctx.config.health:
        if check.kind == "http":
            url = host.render(check.url)
            doc = host.helper("httpcheck", "http_check", {"url": url, "expect_status": check.expect_status,
                                                      "contains": check.contains, "timeout": check.timeout},
                              timeout=check.timeout + 30)
            if not doc.get("healthy"):
                raise DeployError(f"{host.name}: health check {url} failed: status {doc.get('status')} "
                                  f"{(doc.get('body') or doc.get('error') or '')[:120]!r}",
                                  hint="see the app's logs on that host")
            notes.append(f"{url} {doc.get('status')}")
        elif asks_django(check):
            # Django's system checks, by the live release's own Django (the run's session: no start-up of its own)
            live = host.realpath(layout.current(host)) or layout.current(host)
            doc = django_helper(ctx, host, live, "check", {"args": shlex.split(check.command)[1:]}, check=False,
                                timeout=check.timeout)
            if not doc.get("ok"):
                raise DeployError(f"{host.name}: manage.py {check.command} failed: {doc.get('error')}")
            notes.append(f"manage.py {check.command} ok")
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
