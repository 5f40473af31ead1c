#!/usr/bin/env python3
"""deploykit remote helper: one HTTP health check, asked from the host itself.

Standalone (stdlib only, Python 3.9+; _common.py is inlined when it is sent).
"""

import sys
import time

from _common import (BadArguments, _arg, serve)


def act_http_check(args):
    import http.client
    import socket
    import ssl
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    url = _arg(args, "url", kind=str)
    expect = int(_arg(args, "expect_status", 200, int))
    contains = _arg(args, "contains", None, str)
    timeout = float(_arg(args, "timeout", 30.0, float))
    interval = float(_arg(args, "interval", 0.5, float))
    request_timeout = float(_arg(args, "request_timeout", 5.0, float))
    headers = _arg(args, "headers", {}, dict)
    if not url.startswith(("http://", "https://")):
        raise BadArguments("url must be http:// or https://, got %r" % url)
    handlers = []
    if not args.get("use_proxy", False):
        handlers.append(urllib.request.ProxyHandler({}))
    if not args.get("follow_redirects", True):
        handlers.append(_NoRedirect())
    if args.get("insecure", False):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    hdrs = {"User-Agent": "deploykit-http-check"}
    hdrs.update({str(k): str(v) for k, v in headers.items()})

    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    status = None
    body = ""
    last_error = None
    healthy = False
    while True:
        attempts += 1
        remaining = max(0.1, deadline - time.monotonic())
        try:
            req = urllib.request.Request(url, headers=hdrs, method="GET")
            try:
                resp = opener.open(req, timeout=min(request_timeout, remaining))
            except urllib.error.HTTPError as e:
                resp = e
            try:
                status = resp.getcode()
                raw = resp.read(1024 * 1024) or b""
            finally:
                resp.close()
            body = raw.decode("utf-8", "replace")
            last_error = None
            if status == expect and (contains is None or contains in body):
                healthy = True
        except (OSError, socket.timeout, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            last_error = "%s: %s" % (type(reason).__name__, reason)
            status = None
            body = ""
        if healthy:
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
        if last_error:
            out["error"] = last_error
        elif status != expect:
            out["error"] = "status %s, expected %s" % (status, expect)
        else:
            out["error"] = "body does not contain %r" % contains
    return out


READ_ONLY = {"http_check"}  # what a dry-run may call

ACTIONS = {
    "http_check": act_http_check,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="httpcheck.py", read_only=READ_ONLY,
                 private_umask=lambda action: True)


if __name__ == "__main__":
    sys.exit(main())
