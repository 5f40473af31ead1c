#!/usr/bin/env python3
"""deploykit remote helper: the write freeze (flag file + drain of the writes in flight).

Standalone (stdlib only, Python 3.9+; _common.py is inlined when it is sent).
It must run on the host: the flock that drains the writes in flight is taken
on the host's own file system, where the app's processes take theirs.

    freeze < {"flag", "lock", "drain_timeout", "info"}
        create the flag (kept when it is there already), then take the lock
        exclusively, waiting at most drain_timeout seconds for the write
        requests in flight (each holds it shared) to end, then release it.
        From the answer on, every write request sees the flag. A drain that
        times out removes the flag it created (the freeze never started).
        -> {"since", "created", "waited", "drain_seconds", "flag": {...}}
    unfreeze < {"flag"}
        remove the flag; no flag is no error (nothing was frozen).
        -> {"was_frozen", "seconds" (since the flag was made), "flag": {...}}
    freeze_state < {"flag"}             (read-only)
        -> {"frozen", "flag", "now"}

The ordering argument is in deploykit/django/middleware.py.
"""

import json
import os
import sys
import time

from _common import (_arg, _atomic_write, _fsync_dir, _path_arg, serve)

POLL = 0.005  # seconds between attempts at the exclusive lock while writes drain


class DrainTimeout(Exception):
    """Writes were still in flight when drain_timeout ran out."""


class NoStateDir(Exception):
    """The deploy root has no state directory: nothing was released here."""


def _read_flag(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {"raw": raw.decode("utf-8", "replace")[:200]}


def _open_lock(path):
    """The lock file, created readable by every local user (the app may run as another user than deploy)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        os.fchmod(fd, 0o644)
    except OSError:
        pass  # someone else's file: flock works on it all the same
    return fd


def _drain(fd, timeout):
    """Take the lock exclusively (every write in flight has ended), then release it: (waited, seconds)."""
    import fcntl

    start = time.monotonic()
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = True
            if time.monotonic() - start >= timeout:
                raise DrainTimeout("write requests still in flight after %g s" % timeout)
            time.sleep(POLL)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return waited, time.monotonic() - start


def act_freeze(args):
    flag = _path_arg(args, "flag")
    lock = _path_arg(args, "lock")
    timeout = _arg(args, "drain_timeout", 30.0, float)
    info = _arg(args, "info", {}, dict)
    if not os.path.isdir(os.path.dirname(flag)):
        raise NoStateDir("no %s: nothing was released here" % os.path.dirname(flag))
    fd = _open_lock(lock)  # before the flag: a write that finds no lock file cannot miss the drain
    try:
        existing = _read_flag(flag)
        created = existing is None
        doc = existing if existing is not None else dict(info, since=time.time())
        if created:
            _atomic_write(flag, (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"), mode=0o644,
                          dir_mode=0o755)
        try:
            waited, seconds = _drain(fd, timeout)
        except DrainTimeout:
            if created and _remove_flag(flag):
                _fsync_dir(os.path.dirname(flag))
            raise
    finally:
        os.close(fd)
    return {"changed": created, "created": created, "since": doc.get("since"), "waited": waited,
            "drain_seconds": round(seconds, 3), "flag": doc}


def _remove_flag(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def act_unfreeze(args):
    """The flag removed: writes are accepted from this moment (the middleware looks for the file), so the
    freeze's seconds end here, before the directory's fsync (which may wait for a busy disk's journal)."""
    flag = _path_arg(args, "flag")
    doc = _read_flag(flag)
    removed = _remove_flag(flag)
    since = (doc or {}).get("since")
    seconds = round(time.time() - since, 3) if removed and isinstance(since, (int, float)) else None
    if removed:
        _fsync_dir(os.path.dirname(flag))
    return {"changed": removed, "was_frozen": removed, "seconds": seconds, "flag": doc}


def act_freeze_state(args):
    flag = _path_arg(args, "flag")
    doc = _read_flag(flag)
    return {"frozen": doc is not None, "flag": doc, "now": time.time()}


READ_ONLY = {"freeze_state"}  # what a dry-run may call

ACTIONS = {
    "freeze": act_freeze,
    "unfreeze": act_unfreeze,
    "freeze_state": act_freeze_state,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="freeze.py", read_only=READ_ONLY, typed_errors=True)


if __name__ == "__main__":
    sys.exit(main())
