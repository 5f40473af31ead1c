#!/usr/bin/env python3
"""deploykit remote helper: the deploy lock file (acquire, take over, heartbeat, release, read).

Standalone (stdlib only, Python 3.9+; _common.py is inlined when it is
sent). Every change of the lock file is one read-modify-write under flock(2)
on LOCK.guard, written atomically.
"""

import json
import os
import sys
import time

from _common import (_arg, _atomic_write, _fsync_dir, _makedirs, _path_arg, serve)


def _utc_now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z"
    )


def _read_lock(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    except ValueError:
        pass
    return {"raw": text}


class _LockGuard(object):
    """flock(2) on LOCK.guard: every change of the lock file is one read-modify-write."""

    def __init__(self, path):
        self.path = path + ".guard"

    def __enter__(self):
        import fcntl

        _makedirs(os.path.dirname(self.path), 0o700)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock


def _write_lock(path, data):
    _atomic_write(path, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"))


def act_lock_acquire(args):
    path = _path_arg(args, "path")
    info = _arg(args, "info", {}, dict)
    data = dict(info)
    data["since"] = _utc_now()
    data.setdefault("heartbeat", time.time())
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is not None:
            return {"acquired": False, "changed": False, "holder": holder, "now": time.time()}
        _write_lock(path, data)
    return {"acquired": True, "changed": True, "holder": data}


def act_lock_takeover(args):
    """Replace the lock of run `expected` (declared gone by the caller) with ours; refused if someone else holds it."""
    path = _path_arg(args, "path")
    expected = _arg(args, "expected", kind=str)
    info = _arg(args, "info", {}, dict)
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is not None and holder.get("run_id") != expected:
            return {"acquired": False, "changed": False, "holder": holder, "now": time.time()}
        data = dict(info)
        data["since"] = _utc_now()
        data["heartbeat"] = time.time()
        if holder is not None:
            data["took_over"] = {k: holder.get(k) for k in ("run_id", "command", "user", "controller", "pid",
                                                            "since", "heartbeat")}
        _write_lock(path, data)
    return {"acquired": True, "changed": True, "holder": data, "previous": holder}


def act_lock_heartbeat(args):
    """Refresh our heartbeat (and merge `fields`, e.g. the run's progress); says whether the lock is still ours."""
    path = _path_arg(args, "path")
    run_id = _arg(args, "run_id", kind=str)
    fields = _arg(args, "fields", {}, dict)
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is None or holder.get("run_id") != run_id:
            return {"ours": False, "changed": False, "holder": holder}
        holder.update(fields)
        holder["heartbeat"] = time.time()
        _write_lock(path, holder)
    return {"ours": True, "changed": True, "holder": holder}


def act_lock_release(args):
    path = _path_arg(args, "path")
    run_id = args.get("run_id")
    force = bool(args.get("force", False))
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is None:
            return {"released": False, "changed": False, "holder": None, "missing": True}
        if not force and (run_id is None or holder.get("run_id") != run_id):
            return {
                "released": False,
                "changed": False,
                "holder": holder,
                "reason": "lock held by run %r, not %r" % (holder.get("run_id"), run_id),
            }
        try:
            os.unlink(path)
        except FileNotFoundError:
            return {"released": False, "changed": False, "holder": None, "missing": True}
        _fsync_dir(os.path.dirname(path))
    return {"released": True, "changed": True, "holder": holder}


def act_lock_read(args):
    path = _path_arg(args, "path")
    holder = _read_lock(path)
    if holder is None:
        return {"held": False, "holder": None}
    return {"held": True, "holder": holder, "now": time.time()}


READ_ONLY = {"lock_read"}  # what a dry-run may call

ACTIONS = {
    "lock_acquire": act_lock_acquire,
    "lock_takeover": act_lock_takeover,
    "lock_heartbeat": act_lock_heartbeat,
    "lock_release": act_lock_release,
    "lock_read": act_lock_read,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="locks.py", read_only=READ_ONLY,
                 private_umask=lambda action: True)


if __name__ == "__main__":
    sys.exit(main())
