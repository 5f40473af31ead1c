"""How a run ends, in one place: the exit code and the last line.

Exit codes: 0 done; 1 failed, and the state before the run is back (or was
never changed) and serving; 2 refused (bad input, a failed preflight, a
lock held): nothing changed; 130 interrupted, and the state before or after
the run is in place and serving; 3 only when the app is not serving or the
data is in an unknown state (a procedure failed, or a second signal stopped
it at once). The last line always says what is live, whether the lock is
held, and where the backup and the journal are.

`deploykit status` ends by the same codes (status_ending): 0 all well, 1
something needs a look, 3 the app may not be serving.

Codes follow error classes (EXIT_CODES, one map) and what the playbooks
declare (a phase `before_changes`, a procedure that `ends: undone`), never
the names of phases or playbooks: renaming one in YAML changes no code.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import (ConfigError, DeployError, Interrupted, LockHeld, LockLost, NotConfirmed, PreflightFailed,
                     UnknownRevision, UnknownStage)

OK, FAILED, REFUSED, UNKNOWN, INTERRUPTED = 0, 1, 2, 3, 130

# errors that by their class say how a run ends, wherever they happen (the closest class wins)
EXIT_CODES: dict[type, int] = {
    ConfigError: REFUSED,  # bad input: checked before any host is touched
    UnknownStage: REFUSED,
    UnknownRevision: REFUSED,
    LockHeld: REFUSED,  # another run holds the stage: this one changed nothing
    PreflightFailed: REFUSED,  # read-only checks
    NotConfirmed: REFUSED,  # asked before anything changed
    Interrupted: INTERRUPTED,
    LockLost: FAILED,  # the run that took over finishes it
}


def exit_code(error, default: int | None = None) -> int | None:
    """The exit code an error's class implies (None when it depends on where the run failed)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return default


HINTS = {
    FAILED: "fix the cause, then run the command again",
    REFUSED: "nothing was changed",
    UNKNOWN: "fix the cause, then run the same command again: it finishes what was left (the journal has every step)",
    INTERRUPTED: "run the command again when you are ready",
}


@dataclass
class Ending:
    code: int
    line: str

    def text(self, hint: str | None = None) -> str:
        """The last line: 'deploykit: error: ... (hint: ...)' for anything but success."""
        if self.code == OK:
            return f"deploykit: {self.line}"
        hint = hint or HINTS.get(self.code, "")
        return f"deploykit: error: {self.line}" + (f" (hint: {hint})" if hint and "(hint:" not in self.line else "")


def _err(error) -> str:
    if error is None:
        return "failed"
    return error.one_line() if isinstance(error, DeployError) else str(error)


def _where(data: dict, backup: bool = True) -> str:
    live = data.get("live")
    if isinstance(live, dict):
        live_text = f"live: {live['id']}" + (f" ({live['tag']})" if live.get("tag") else "")
    elif live is None:
        live_text = "live: no release"
    else:
        live_text = f"live: {live}"
    held = data.get("lock_held") or []
    lock = f"lock: HELD on {', '.join(held)}" if held else "lock: free"
    parts = [live_text, lock]
    if backup and data.get("backup_dir"):
        parts.append(f"backup: {data['backup_dir']}")
    parts.append(f"journal: {data.get('journal')}")
    return "; ".join(parts)


def ending(result, what: str, command: str) -> Ending:
    data = result.data
    where = _where(data)
    dead = data.get("dead_run")
    if dead and not data.get("finished_run") and not result.dry_run:
        # the run took a dead run's lock over (nothing of it was left to finish): say whose, and why
        where = (f"took over the lock of run {dead.get('run_id')} ({dead.get('command') or '?'}): "
                 f"{dead.get('why')}; {where}")
    if result.dry_run:
        if result.ok:
            return Ending(OK, f"dry run of {what}: nothing was changed")
        return Ending(REFUSED, f"dry run of {what}: {_err(result.error)}; nothing was changed")
    unhealthy = data.get("outcome", {}).get("healthy") is False
    if data.get("hard_stopped"):
        return Ending(UNKNOWN, f"{what}: stopped at once; {where}; run the same command again to finish")
    finished = data.get("finished_run")
    if finished:
        about = (f"run {finished.get('run_id')} ({finished.get('command')}, stopped at {finished.get('phase')}: "
                 f"{finished.get('why')})")
        if not result.ok:
            return Ending(UNKNOWN, f"finishing {about} failed at {result.failed_phase}: {_err(result.error)}; {where}")
        if unhealthy:
            return Ending(UNKNOWN, f"finished {about} with its {finished.get('procedure')}, but the app is NOT "
                                   f"serving; {where}")
        if result.ends == "finished" and finished.get("command") == command:
            return Ending(OK, f"{what}: finished {about}; {where}")
        return Ending(FAILED, f"{what} not started: first finished {about} with its {finished.get('procedure')}; "
                              f"{where}; run the command again")
    if result.ok:
        if unhealthy:
            return Ending(UNKNOWN, f"{what}: done, but the app is NOT serving; {where}")
        return Ending(OK, f"{what}: done; {where}")
    err = _err(result.error)
    if data.get("partial"):  # every host serves: most the new release, the ones named the previous
        return Ending(FAILED, f"{what} partly done: {err}; {where}")
    at = f" at {result.failed_phase}" if result.failed_phase else ""
    interrupted = data.get("interrupted")
    recovery = result.recovery
    by_class = exit_code(result.error)
    if by_class == FAILED:
        return Ending(FAILED, f"{what} stopped{at}: {err}; the run that took over finishes it; {where}")
    if recovery is None or recovery.ends == "refused":
        if interrupted:
            return Ending(INTERRUPTED, f"{what} interrupted{at}: nothing was changed; {where}")
        if by_class == REFUSED or result.refused or result.failed_phase is None:
            return Ending(REFUSED, f"{what} refused{at}: {err}; {_where(data, backup=False)}")
        return Ending(UNKNOWN, f"{what} failed{at}: {err}; {where}")
    how = "interrupted" if interrupted else f"failed{at}: {err}"
    if not recovery.ok:
        rec_err = _err(recovery.error)
        return Ending(UNKNOWN, f"{what} {how}; its {recovery.playbook} ALSO failed at {recovery.failed_phase}: "
                               f"{rec_err}; {where}; fix the cause, then run the same command again to finish")
    if unhealthy:
        return Ending(UNKNOWN, f"{what} {how}; {recovery.playbook} done, but the app is NOT serving; {where}")
    if recovery.ends == "undone":
        back = recovery.says.format(previous=data.get("previous")) if recovery.says else "undone"
        refused = result.refused and by_class == REFUSED  # refused after a build beside: the build is set aside
        return Ending(INTERRUPTED if interrupted else REFUSED if refused else FAILED, f"{what} {how}; {back}; {where}")
    return Ending(INTERRUPTED if interrupted else OK, f"{what} {how}; finished by {recovery.playbook}; {where}")


def status_ending(stage: str, hosts: dict[str, dict]) -> Ending:
    """`deploykit status`: 0 when every host is well (warnings, such as a live run holding the lock, allowed);
    3 when the app may not be serving (a host unreachable, a process stopped, a health check failing);
    1 when something else needs an operator (drift between the registry and `current`, a lock of a dead or
    stale run, too little disk, no backup that verifies). The problems are in the result either way."""
    problems = [(name, p) for name, doc in hosts.items() for p in doc.get("problems", [])]
    if not problems:
        return Ending(OK, f"status of {stage}: every host is well")
    code = UNKNOWN if any(p.get("down") for _, p in problems) else FAILED
    shown = "; ".join(f"{name}: {p['text']}" for name, p in problems[:4])
    more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
    what = "the app may NOT be serving" if code == UNKNOWN else "needs a look"
    return Ending(code, f"status of {stage}: {what}: {shown}{more}")
