"""Is the router serving a colour? One GET through the router, compared with the colour's own answer.

The router's check URL is asked from the router host; the same path is asked
of each of the colour's servers directly, from the same host. The router
serves the colour when it answers as one of them does (same status, same
body). Two colours that answer alike cannot be told apart this way: the
check then only shows that the router answers. After a reload, nginx's old
workers may serve a last request or two: the router is asked again until
`check_timeout`. A colour that takes writes meanwhile changes its answer (a
count of rows in the page): so the colour is asked again around each of the
router's answers, which matches what it answered just before or just after.
"""
from __future__ import annotations

import time
import urllib.parse

from ..errors import DeployError

REQUEST_TIMEOUT = 5.0
PAUSE = 0.25


def _ask(host, url: str) -> dict:
    return host.helper("httpcheck", "http_probe", {"url": url, "follow_redirects": False,
                                                   "request_timeout": REQUEST_TIMEOUT},
                       timeout=REQUEST_TIMEOUT + 30)


def _said(answer: dict) -> str:
    if answer.get("status") is None:
        return answer.get("error") or "no answer"
    body = " ".join((answer.get("body") or "").split())
    return f"{answer['status']} {body[:120]}"


def colour_answers(host, url: str, servers: list[str]) -> list[tuple]:
    """What each server of a colour answers at the path of `url` (asked from `host`)."""
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    out = []
    for server in servers:
        answer = _ask(host, f"{parts.scheme}://{server}{path}")
        if answer.get("status") is None:
            raise DeployError(f"{host.name}: the colour's server {server} does not answer {path}: {_said(answer)}",
                              hint="the router could not reach it either: check the colour's processes")
        out.append((answer["status"], answer.get("body")))
    return out


def serves(ctx, host, colour: str, servers: list[str], url: str, timeout: float) -> str:
    """Wait until the router at `url` answers as `colour` does; raise DeployError when it does not in time."""
    expected = colour_answers(host, url, servers)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        answer = _ask(host, url)
        got = (answer.get("status"), answer.get("body"))
        before, expected = expected, colour_answers(host, url, servers)  # a colour under load answers anew
        ok = got in before or got in expected
        ctx.progress(host, f"router check {attempt}: {_said(answer)}", kind="router", attempt=attempt, url=url,
                     status=answer.get("status"), serves=ok)
        if ok:
            return f"{url} answers as {colour} does ({_said(answer)})"
        if time.monotonic() >= deadline:
            raise DeployError(f"{host.name}: the router does not serve {colour}: {url} answered {_said(answer)}, "
                              f"{colour} answers {_said({'status': expected[0][0], 'body': expected[0][1]})}",
                              hint="look at the router's configuration: does it proxy to the upstream deploykit "
                                   "writes?")
        host.cancelled.wait(PAUSE)
