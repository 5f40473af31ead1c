"""The write freeze, seen from the app: while deploykit's freeze flag exists, writes get 503 and reads are served.

    MIDDLEWARE += ["deploykit.django.middleware.WriteFreezeMiddleware"]

A safe request (GET, HEAD, OPTIONS, TRACE) costs nothing: it is served as if
the middleware were not there. An unsafe one (POST, PUT, PATCH, DELETE, any
other) opens `<deploy root>/.deploykit/freeze.lock`, takes a *shared*
flock(2) on it, and only then looks for the flag `.deploykit/freeze` (one
stat). With the flag there it releases the lock and answers 503 with
`Retry-After` (the flag's `retry_after`, else settings.DEPLOYKIT_FREEZE_RETRY_AFTER,
else 5); without it the request runs to its end (the view, its commit, the
middleware below this one) holding the lock, and releases it after.

The freezer (deploykit's `freeze_writes` step, remote helper freeze.py)
creates the flag, then takes the same lock *exclusively* (waiting, at most
freeze.drain_timeout seconds, for the shared holders), releases it, and only
then reports the freeze on.

Why no write slips through the freeze start. Take any unsafe request R that
is not refused and the freeze F. flock's shared and exclusive locks on one
file exclude each other, so R's shared hold [R.lock, R.unlock] and F's
exclusive moment F.ex are ordered: either R.unlock < F.ex or F.ex < R.lock.
(1) R.unlock < F.ex: R's work, commit included, ended while R held the lock,
    so before F.ex, so before F reports "on" (F reports after F.ex).
(2) F.ex < R.lock: F created the flag before F.ex (an atomic rename, seen by
    every process of the host once made), so the flag existed when R, after
    R.lock, looked for it: R was refused, against the assumption.
So every write that is not refused has ended before the freeze is reported
on, and every write that starts its check after that is refused, until the
flag is removed (unfreeze). Across the gunicorn worker processes and their
threads this holds because every request opens its own file description
(flock locks belong to it) on the same file. The lock file is created by
whoever comes first (request or freezer), before the freezer's flag; a
request that cannot open it because the state directory does not exist runs
unlocked, which is safe: the freezer refuses to start without that directory.
A request that cannot open it for another reason (permissions) is refused
with 503: the guarantee could not be kept. The state directory must be on a
local file system (flock on NFS is not shared between hosts); each app host
has its own flag, frozen by a step that runs on every app host.

What it does not cover: writes that do not come through HTTP (workers, cron,
management commands) and, when the middleware is not first in MIDDLEWARE,
what the middleware above it writes after the view (a session saved by
SessionMiddleware). Stop those processes (`freeze: {mode: stop_writers}`) or
put this middleware first.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.management.base import CommandError
from django.http import HttpResponse

from .. import layout
from .state import deploy_root

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_RETRY_AFTER = 5
log = logging.getLogger("deploykit.freeze")


def retry_after(flag: Path, default: int) -> int:
    """Seconds from the flag (JSON {"retry_after": N}, or a bare number), else `default`."""
    try:
        text = flag.read_text(errors="replace").strip()
    except OSError:
        return default
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return default
    if isinstance(value, dict):
        value = value.get("retry_after")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return default


def frozen_response(seconds: int) -> HttpResponse:
    response = HttpResponse("Writes are paused for maintenance; please retry shortly.\n", status=503,
                            content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(seconds)
    return response


class WriteFreezeMiddleware:
    """503 + Retry-After for unsafe methods while the freeze flag exists; reads always served."""

    def __init__(self, get_response):
        self.get_response = get_response
        try:
            root = deploy_root()
        except CommandError:  # not running from a deploykit release (a developer's checkout)
            raise MiddlewareNotUsed("deploykit write freeze: no deploy root (set DEPLOYKIT_ROOT)") from None
        self.flag = root / layout.FREEZE_FLAG
        self.lock = root / layout.FREEZE_LOCK
        self.default_retry = int(getattr(settings, "DEPLOYKIT_FREEZE_RETRY_AFTER", DEFAULT_RETRY_AFTER))

    def __call__(self, request):
        if request.method in SAFE_METHODS:
            return self.get_response(request)
        try:
            fd = os.open(self.lock, os.O_RDONLY | os.O_CREAT, 0o644)
        except FileNotFoundError:  # no state directory: no freeze can start here (see above)
            return self.get_response(request)
        except OSError as exc:
            log.error("deploykit write freeze: cannot open %s (%s): refusing the write", self.lock, exc)
            return frozen_response(self.default_retry)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.path.lexists(self.flag):  # the one stat, after the lock (the ordering argument)
                return frozen_response(retry_after(self.flag, self.default_retry))
            return self.get_response(request)
        finally:
            os.close(fd)  # releases the lock
