"""Health checks of a host (HTTP, manage.py commands, custom commands): the release's verify and preflight share them."""
from __future__ import annotations

import shlex
import time

from .. import layout
from ..djangoapp import django_helper
from ..errors import DeployError
from ..pyenv import render_app
from ..http_answer import judge

REQUEST_TIMEOUT = 5.0  # seconds one request may take (a request timing out counts as the app starting)
# seconds between attempts: an app that is still starting is asked every QUICK_PAUSE for QUICK_FOR seconds
# (a refused connection costs the host nothing, and a frozen cut-over waits on it), then once a second
QUICK_PAUSE, QUICK_FOR, MAX_PAUSE = 0.1, 2.0, 1.0


def asks_django(check) -> bool:
    """A `manage: check` health check: answered by the run's Django session of the live release."""
    return check.kind == "manage" and check.command.split()[:1] == ["check"]


def check_health(ctx, host, read_only: bool = False, django: bool = True) -> list[str]:
    """Run the configured health checks on a host; raise DeployError on the first that fails.

    read_only: for preflight; custom commands are skipped (they may change things).
    `manage: check ...` is answered by the release's Django session (one start-up per
    release and run); other manage.py commands start a process of their own.
    django=False: the `manage: check` checks are not asked here (preflight on an app host
    that is not the primary: see steps/preflight.py).
    """
    notes = []
    for check in ctx.config.health:
        if check.kind == "http":
            notes.append(http_health(ctx, host, check))
        elif asks_django(check) and not django:
            notes.append(f"manage.py {check.command} asked on the primary")
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


def http_health(ctx, host, check) -> str:
    """Ask the check's URL from the host, one request per attempt, until it is healthy or fails.

    Each attempt is one http_probe of the host's httpcheck helper, judged here
    (deploykit/http_answer.py) and shown to the operator as a progress event. While
    the app is starting (connection refused, 502/503/504, ...) it is asked
    again until `timeout`; `fail_after` definite wrong answers in a row fail
    the check at once. Read-only, so preflight runs it too.
    """
    url = host.render(check.url)
    headers = {name: host.render(value) for name, value in check.headers.items()}
    deadline = time.monotonic() + check.timeout
    attempt = definite = 0
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        request_timeout = max(1.0, min(REQUEST_TIMEOUT, left))
        answer = host.helper("httpcheck", "http_probe",
                             {"url": url, "headers": headers, "follow_redirects": check.follow_redirects,
                              "request_timeout": request_timeout}, timeout=request_timeout + 30)
        verdict = judge(answer, check)
        ctx.progress(host, f"attempt {attempt}: {verdict.answered}", kind="health", attempt=attempt,
                     status=answer.get("status"), url=url, healthy=verdict.healthy)
        if verdict.healthy:
            return f"{url} {answer['status']}" + (f" after {attempt} attempts" if attempt > 1 else "")
        definite = definite + 1 if verdict.definite else 0
        failed = f"{host.name}: health check {url} failed after {attempt} attempt{'s' if attempt > 1 else ''}"
        last = f"last answer: {verdict.answered}" if verdict.why == verdict.answered else \
            f"{verdict.why}; last answer: {verdict.answered}"
        if definite >= check.fail_after:
            raise DeployError(f"{failed}: {last} ({definite} definite wrong answer{'s' if definite > 1 else ''} "
                              f"in a row, fail_after: {check.fail_after})",
                              hint="the app answers, but not as the check expects: see its logs on that host")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeployError(f"{failed} in {check.timeout:g} s (timeout): {last}",
                              hint="see the app's logs on that host; raise the check's timeout if the app needs "
                                   "longer to start")
        # a starting app is asked again soon, then once a second; a definite answer waits a second,
        # so fail_after answers span a moment in which a just-started app may come right
        starting = not verdict.definite and time.monotonic() - (deadline - check.timeout) < QUICK_FOR
        pause = QUICK_PAUSE if starting else MAX_PAUSE
        host.cancelled.wait(min(pause, left))
