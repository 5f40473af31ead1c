#!/usr/bin/env python3
"""deploykit remote helper: an HTTP health check, asked from the host itself.

    http_probe   one request, its answer as it came (status, Location, body or the error): the
                 controller drives the attempts and judges each answer (deploykit/http_answer.py),
                 so the operator sees every attempt and a definite wrong answer fails at once
    http_check   the same request repeated until it answers `expect_status` (and `contains`)
                 or `timeout` passes, for callers that only want the outcome

Standalone (stdlib only, Python 3.9+; _common.py is inlined when it is sent).
"""

import sys
import time

from _common import (BadArguments, _arg, serve)

BODY_LIMIT = 1024 * 1024  # bytes of a body read; a health answer is far smaller


def _opener(follow_redirects, insecure=False, use_proxy=False):
    import ssl
    import urllib.parse
    import urllib.request

    class _Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if not follow_redirects:
                return None  # the 3xx itself is the answer
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
                # a Host header given for the first URL would be wrong for another server
                for name in [k for k in new.headers if k.lower() == "host"]:
                    del new.headers[name]
            return new

    handlers = [_Redirects()]
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


def _error_kind(exc):
    """'refused', 'reset', 'timeout' (what an app that is starting gives) or 'other'."""
    import socket

    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "refused"
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"  # http.client.RemoteDisconnected is a ConnectionResetError
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return "timeout"
    return "other"


def _ask(opener, url, headers, timeout):
    """One GET: {status, location, content_type, body, truncated} or {status: None, error, error_kind}."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        req = urllib.request.Request(url, headers=headers, method="GET")
        try:
            resp = opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            resp = e
        try:
            status = resp.getcode()
            raw = resp.read(BODY_LIMIT + 1) or b""
            location = resp.headers.get("Location") if resp.headers is not None else None
            content_type = resp.headers.get("Content-Type") if resp.headers is not None else None
            final_url = resp.geturl()
        finally:
            resp.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", e)
        return {"status": None, "error": "%s: %s" % (type(reason).__name__, reason), "error_kind": _error_kind(e)}
    return {"status": status, "location": location, "content_type": content_type, "url": final_url,
            "body": raw[:BODY_LIMIT].decode("utf-8", "replace"), "truncated": len(raw) > BODY_LIMIT}


def _request(args):
    url = _arg(args, "url", kind=str)
    if not url.startswith(("http://", "https://")):
        raise BadArguments("url must be http:// or https://, got %r" % url)
    headers = _arg(args, "headers", {}, dict)
    hdrs = {"User-Agent": "deploykit-http-check"}
    hdrs.update({str(k): str(v) for k, v in headers.items()})
    opener = _opener(bool(args.get("follow_redirects", True)), bool(args.get("insecure", False)),
                     bool(args.get("use_proxy", False)))
    return url, hdrs, opener


def act_http_probe(args):
    url, hdrs, opener = _request(args)
    request_timeout = float(_arg(args, "request_timeout", 5.0, float))
    start = time.monotonic()
    out = _ask(opener, url, hdrs, request_timeout)
    out["seconds"] = round(time.monotonic() - start, 3)
    return out


def act_http_check(args):
    url, hdrs, opener = _request(args)
    expect = int(_arg(args, "expect_status", 200, int))
    contains = _arg(args, "contains", None, str)
    timeout = float(_arg(args, "timeout", 30.0, float))
    interval = float(_arg(args, "interval", 0.5, float))
    request_timeout = float(_arg(args, "request_timeout", 5.0, float))

    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    healthy = False
    while True:
        attempts += 1
        remaining = max(0.1, deadline - time.monotonic())
        answer = _ask(opener, url, hdrs, min(request_timeout, remaining))
        status, body = answer["status"], answer.get("body", "")
        if status == expect and (contains is None or contains in body):
            healthy = True
            break
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
        if time.monotonic() >= deadline:
            # one last try exactly at the deadline would overrun it
            break
    out = {
        "healthy": healthy,
        "status": status,
        "body": body[:300],
        "attempts": attempts,
        "seconds": round(time.monotonic() - start, 3),
    }
    if not healthy:
        if answer.get("error"):
            out["error"] = answer["error"]
        elif status != expect:
            out["error"] = "status %s, expected %s" % (status, expect)
        else:
            out["error"] = "body does not contain %r" % contains
    return out


READ_ONLY = {"http_check", "http_probe"}  # what a dry-run may call: a GET changes nothing

ACTIONS = {
    "http_check": act_http_check,
    "http_probe": act_http_probe,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="httpcheck.py", read_only=READ_ONLY,
                 private_umask=lambda action: True)


if __name__ == "__main__":
    sys.exit(main())
