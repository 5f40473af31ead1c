"""The stage lock: one mutating run at a time, and a holder that can be proven gone.

The lock is a file on every host of the stage (`.deploykit/lock`), changed
only under flock by the remote helper. It names its holder: run id, command,
user, the controller's id and boot id, the pid and that pid's start time, and
a heartbeat the holder refreshes every `lock.heartbeat` seconds. The primary
host's lock also carries the run's progress (phase reached, the procedure for
that point, the ids it works on), so whoever takes the lock over after the
holder died knows what is left to finish.

A holder is gone only when that is provable: its pid on this controller is
dead (or is another process now, or the controller rebooted), its run wrote
`run_end` in this controller's journal, or its heartbeat is older than
`lock.stale_after`. Anything else is a live holder, and is refused.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import layout
from ..errors import LockHeld

LOCK_FILE = layout.LOCK_FILE


def lock_path(host) -> str:
    return layout.lock_file(host)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def controller_id() -> str:
    """A stable id of this machine (DEPLOYKIT_CONTROLLER_ID overrides it, e.g. in tests)."""
    override = os.environ.get("DEPLOYKIT_CONTROLLER_ID")
    if override:
        return override
    seed = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id") or socket.gethostname()
    return hashlib.sha256(seed.encode()).hexdigest()[:12]


def boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def pid_start(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat): a pid reused later has another."""
    raw = _read(f"/proc/{int(pid)}/stat")
    if not raw:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def holder_info(run_id: str, command: str, stage: str) -> dict:
    pid = os.getpid()
    return {"run_id": run_id, "command": command, "stage": stage, "user": getpass.getuser(),
            "controller": socket.gethostname(), "controller_id": controller_id(), "boot_id": boot_id(),
            "pid": pid, "pid_start": pid_start(pid), "started": time.time()}


@dataclass
class Verdict:
    """Whether a lock's holder is provably gone, and why (shown to the operator)."""

    holder: dict
    gone: bool
    why: str
    # in one word, for `deploykit status` and scripts: alive (may still run), dead (its process or run is
    # provably gone), stale (its heartbeat is older than lock.stale_after), unknown (cannot be told: refused)
    state: str = "alive"

    def describe(self) -> str:
        h = self.holder
        age = ""
        return (f"run {h.get('run_id', '?')} ({h.get('command', '?')}) of {h.get('user', '?')}@"
                f"{h.get('controller', '?')} pid {h.get('pid', '?')}, since {h.get('since', '?')}{age}: {self.why}")


def assess(holder: dict, host_now: float | None, stale_after: float, journal_dir: Path | None = None) -> Verdict:
    """Is the holder of a lock provably gone?"""
    if "raw" in holder and len(holder) == 1:
        return Verdict(holder, False, "the lock file is unreadable, so its holder cannot be proven gone", "unknown")
    if holder.get("ended"):
        return Verdict(holder, True, "its run has ended", "dead")
    beat = holder.get("heartbeat")
    age = (host_now - float(beat)) if (beat is not None and host_now is not None) else None
    if holder.get("controller_id") and holder.get("controller_id") == controller_id():
        pid = holder.get("pid")
        if holder.get("boot_id") and boot_id() and holder["boot_id"] != boot_id():
            return Verdict(holder, True, "this controller has rebooted since", "dead")
        if journal_dir is not None and _journal_ended(journal_dir, holder.get("run_id", "")):
            return Verdict(holder, True, "its journal on this controller says it ended", "dead")
        if not _alive(pid):
            return Verdict(holder, True, f"pid {pid} no longer runs on this controller", "dead")
        if holder.get("pid_start") and pid_start(int(pid)) != holder["pid_start"]:
            return Verdict(holder, True, f"pid {pid} on this controller is another process now", "dead")
        return Verdict(holder, False, f"pid {pid} still runs on this controller")
    if age is None:
        return Verdict(holder, False, "it records no heartbeat, so it cannot be proven gone", "unknown")
    if age > stale_after:
        return Verdict(holder, True, f"its heartbeat is {age:.0f} s old (limit {stale_after:g} s)", "stale")
    return Verdict(holder, False, f"its controller {holder.get('controller', '?')} sent a heartbeat {max(age, 0):.0f} s ago")


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True
    except (OSError, TypeError, ValueError):
        return False
    return True


def _journal_ended(journal_dir: Path, run_id: str) -> bool:
    if not run_id:
        return False
    try:
        return '"event": "run_end"' in (Path(journal_dir) / f"{run_id}.jsonl").read_text()
    except OSError:
        return False


def read_lock(host) -> tuple[dict | None, float | None]:
    """(holder, the host's clock now) of a host's lock."""
    doc = host.helper("locks", "lock_read", {"path": lock_path(host)}, always=True)
    return (doc.get("holder") if doc.get("held") else None), doc.get("now")


def acquire(host, info: dict) -> None:
    doc = host.helper("locks", "lock_acquire", {"path": lock_path(host), "info": info})
    if not doc.get("acquired"):
        holder = doc.get("holder") or {}
        raise LockHeld(f"{host.name}: locked by run {holder.get('run_id', '?')} ({holder.get('command', '?')}) "
                       f"of {holder.get('user', '?')}@{holder.get('controller', '?')} since {holder.get('since', '?')}")


def take_over(host, expected_run_id: str, info: dict) -> dict:
    doc = host.helper("locks", "lock_takeover", {"path": lock_path(host), "expected": expected_run_id, "info": info})
    if not doc.get("acquired"):
        holder = doc.get("holder") or {}
        raise LockHeld(f"{host.name}: the lock was taken by run {holder.get('run_id', '?')} in the meantime")
    return doc.get("previous") or {}


def heartbeat(host, run_id: str, fields: dict | None = None) -> bool:
    """Refresh our heartbeat (and store `fields`); False when the lock is no longer ours."""
    doc = host.helper("locks", "lock_heartbeat", {"path": lock_path(host), "run_id": run_id, "fields": fields or {}},
                      always=True)
    return bool(doc.get("ours"))


def release(host, run_id: str, force: bool = False) -> dict:
    return host.helper("locks", "lock_release", {"path": lock_path(host), "run_id": run_id, "force": force},
                       always=True)


class Heartbeat:
    """A thread that keeps our locks fresh and notices when one was taken from us."""

    def __init__(self, ctx, interval: float):
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="deploykit-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for host in list(self.ctx.locked):
                try:
                    ours = heartbeat(host, self.ctx.run_id)
                except Exception:  # an unreachable host: the next step will say so
                    continue
                if not ours and host in self.ctx.locked:  # not a lock this run has just freed itself
                    self.ctx.lose_lock(host)
