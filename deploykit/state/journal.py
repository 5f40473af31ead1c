"""Per-run journal (JSON lines, locally and on each host) and the stage lock.

The local journal is written from the first event; the host copies start once
the lock is held, so a run refused early leaves no trace on any host. (The
stage lock itself lives in lock.py.)
"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .. import layout


_SECRET_WORDS = ("password", "secret", "token", "passwd")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp() -> str:
    """Sortable UTC stamp used in release, backup and run ids."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


_ISSUED: set[str] = set()
_ISSUING = threading.Lock()


def new_run_id(kind: str) -> str:
    """`<stamp>-<command>-<pid>`, unique: a second run of one command from this process within the same
    second waits for the next second (its id names its journal file and its lock; two runs must not share them)."""
    with _ISSUING:
        while True:
            run_id = f"{utc_stamp()}-{kind}-{os.getpid()}"
            if run_id not in _ISSUED:
                _ISSUED.add(run_id)
                return run_id
            time.sleep(1.0 - time.time() % 1.0 + 0.001)


def scrub(value):
    """Drop anything that looks like a secret before it reaches a journal."""
    if isinstance(value, dict):
        return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


_WATCHERS: list = []  # callables given every event of every run of this process, as it is recorded
_WATCHERS_LOCK = threading.Lock()


@contextmanager
def watching(fn):
    """Give `fn(entry)` every journal event while the block runs: live progress and `--json` read the
    run as it happens from the same events the journal keeps (one source, nothing reported twice)."""
    with _WATCHERS_LOCK:
        _WATCHERS.append(fn)
    try:
        yield fn
    finally:
        with _WATCHERS_LOCK:
            _WATCHERS.remove(fn)


class Journal:
    """Append-only record of one run; every event is one JSON line."""

    def __init__(self, run_id: str, local_dir: Path, hosts=()):
        self.run_id = run_id
        self.local_path = Path(local_dir) / f"{run_id}.jsonl"
        self.local_path.parent.mkdir(parents=True, exist_ok=True)
        self.hosts = list(hosts)
        self.remote_hosts: set[str] = set()
        self.events: list[dict] = []
        self._lock = threading.Lock()  # steps run on several hosts at once

    def remote_path(self, host) -> str:
        return layout.journal_file(host, self.run_id)

    def enable_remote(self, host) -> None:
        self.remote_hosts.add(host.name)

    def record(self, event: str, host=None, **fields) -> dict:
        entry = {"at": utc_now(), "t": round(time.time(), 3), "run": self.run_id, "event": event}
        if host is not None:
            entry["host"] = host.name
        entry.update(scrub(fields))
        line = json.dumps(entry, default=str)
        with self._lock:
            self.events.append(entry)
            with open(self.local_path, "a") as fh:
                fh.write(line + "\n")
            for watcher in list(_WATCHERS):  # in the journal's order; a failing display never stops the run
                try:
                    watcher(entry)
                except Exception:
                    pass
        targets = [host] if host is not None else self.hosts
        for h in targets:
            if h.name in self.remote_hosts:
                path = self.remote_path(h)
                try:  # sent to the host's agent without waiting: hosts do not pay one after another
                    h.journal_append(path, line)
                except Exception:  # a lost host must not hide the event itself
                    pass
        return entry
