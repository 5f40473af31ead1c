"""Process helpers shared by the rig (Linux /proc based, no psutil)."""

from __future__ import annotations

import atexit
import os
import signal
import time
from pathlib import Path
from typing import Callable

__all__ = [
    "RigError",
    "is_root",
    "proc_state",
    "alive",
    "children_of",
    "descendants",
    "group_members",
    "kill_tree",
    "wait_gone",
    "at_exit",
    "forget_at_exit",
]


class RigError(RuntimeError):
    """The test rig could not set up a real service; the message says why and what to do."""


def is_root() -> bool:
    return os.geteuid() == 0


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest  # rest[0]=state, rest[1]=ppid, rest[2]=pgrp, rest[3]=session


def proc_state(pid: int) -> str | None:
    """Single-letter state of ``pid`` ('R', 'S', 'Z', ...) or None if gone."""
    st = _stat(pid)
    if st is None:
        if not Path("/proc/self/stat").exists():  # no /proc: best effort
            try:
                os.kill(pid, 0)
                return "?"
            except ProcessLookupError:
                return None
            except PermissionError:
                return "?"
        return None
    return st[0]


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _all_stats() -> dict[int, list[str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def children_of(pid: int) -> list[int]:
    return [p for p, st in _all_stats().items() if int(st[1]) == pid]


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first), from one /proc snapshot."""
    stats = _all_stats()
    kids: dict[int, list[int]] = {}
    for p, st in stats.items():
        kids.setdefault(int(st[1]), []).append(p)
    out: list[int] = []
    todo = list(kids.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def command_lines(under: str | os.PathLike | None = None) -> dict[int, str]:
    """pid -> command line of live processes; with ``under``, only those whose working directory is inside it.

    Tests run on several workers at once: a test that waits for "a helper
    running migrate" must find its own host's, not another worker's.
    """
    root = os.path.realpath(under) if under is not None else None
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if root is not None:
                cwd = os.readlink(f"/proc/{entry}/cwd")
                if cwd != root and not cwd.startswith(root + os.sep):
                    continue
        except OSError:
            continue
        if cmd:
            out[int(entry)] = cmd
    return out


def process_name(pid: int) -> str:
    """/proc/PID/comm: a deploykit session names itself after the action it is busy with ("dk migrate")."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    return [
        p
        for p, st in _all_stats().items()
        if int(st[2]) == pgid and st[0] not in ("Z", "X")
    ]


def kill_tree(pid: int, sig: int = signal.SIGKILL, include_self: bool = True) -> list[int]:
    """Signal ``pid`` and every descendant (descendants collected first)."""
    pids = descendants(pid)
    if include_self:
        pids.insert(0, pid)
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def wait_gone(pids: list[int] | Callable[[], list[int]], timeout: float = 10.0) -> bool:
    """Wait until none of ``pids`` is alive (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        current = pids() if callable(pids) else [p for p in pids if alive(p)]
        if not current:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# --- cleanup of services a crashed/interrupted test run would leave behind ----

_exit_hooks: dict[int, Callable[[], None]] = {}


def _run_exit_hooks() -> None:
    for key in list(_exit_hooks)[::-1]:
        fn = _exit_hooks.pop(key, None)
        if fn is None:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_run_exit_hooks)


def at_exit(obj: object, fn: Callable[[], None]) -> None:
    """Run ``fn`` at interpreter exit unless ``forget_at_exit(obj)`` is called first."""
    _exit_hooks[id(obj)] = fn


def forget_at_exit(obj: object) -> None:
    _exit_hooks.pop(id(obj), None)
