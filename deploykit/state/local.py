"""The controller's own state, in one place: `.deploykit/` next to deploykit.yaml.

It holds the journal of every run (`journal/<run id>.jsonl`, the `journal_dir`
default) and nothing a host needs: a lost controller loses only its copies
of the journals (each host keeps its own). The directory carries its own
`.gitignore` (`*`), written when deploykit makes it, so a project that keeps
deploykit.yaml in git never commits its state by mistake.

Old journals are pruned like releases: the newest `keep_runs` runs that
could change something and, counted apart, the newest `keep_runs` read-only
runs (dry-runs, status, check...), so a `deploykit status` every minute
never pushes out the journal of the last release. A journal is never pruned
while its run may hold a lock (it has no `run_end`, or ended keeping the lock,
and no later run here took that lock over or freed it), nor the current run's.
"""
from __future__ import annotations

from pathlib import Path

from .. import layout
from . import runlog

GITIGNORE = "*\n"
# what pruning reads of each journal (other lines are not parsed)
PRUNE_EVENTS = ("playbook_start", "run_end", "takeover", "unlock", "step")


def state_dir(config) -> Path:
    """`.deploykit/` beside the config file (the same name the hosts use: layout.STATE_DIR)."""
    return Path(config.project_dir) / layout.STATE_DIR


def _make(path: Path) -> None:
    """Create a directory of deploykit's local state with its .gitignore (an existing one keeps its own)."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        try:
            ignore.write_text(GITIGNORE)
        except OSError:
            pass


def prepare(config, current: str | None = None) -> list[str]:
    """Before a run journals: the state dir (and the journal dir) exist, each with its .gitignore; old
    journals are pruned. Returns the run ids pruned."""
    journal_dir = Path(config.journal_dir)
    inside = False
    if getattr(config, "project_dir", None) is not None:
        base = state_dir(config)
        try:
            inside = journal_dir.resolve().is_relative_to(base.resolve())
        except OSError:
            pass
    if inside:
        _make(base)
        journal_dir.mkdir(parents=True, exist_ok=True)
    elif not journal_dir.exists():  # a journal_dir of its own elsewhere: it carries its own .gitignore
        _make(journal_dir)
    return prune_journals(journal_dir, getattr(config, "keep_runs", 50), current)


def _in_use(run_id: str, events: list[dict]) -> bool:
    """The run may still run (no run_end, its pid alive here) or hold the stage lock, judging by its journal."""
    end = next((e for e in reversed(events) if e.get("event") == "run_end"), None)
    if end is not None:
        return bool(end.get("locked"))
    if runlog.alive(runlog.run_pid(run_id)):
        return True
    locked = any(e.get("event") == "takeover" for e in events) or any(
        e.get("event") == "step" and e.get("step") == "acquire_lock" and e.get("status") == "changed"
        for e in events)
    released = locked and any(e.get("event") == "step" and e.get("step") == "release_lock"
                              and e.get("status") == "changed" for e in events)
    # no run_end and its process gone: it died; if it never took a lock (or freed it), it holds none
    return locked and not released


def _freed_by_others(events: dict[str, list[dict]]) -> set[str]:
    """Runs whose lock a later run here took over or freed (takeover, unlock events name the holder)."""
    freed = set()
    for evs in events.values():
        for e in evs:
            if e.get("event") in ("takeover", "unlock"):
                holder = e.get("holder") or {}
                if holder.get("run_id"):
                    freed.add(holder["run_id"])
    return freed


def _changing(events: list[dict]) -> bool:
    """The run could change something: one of its playbooks ran for real (not a dry-run)."""
    return any(e.get("event") == "playbook_start" and not e.get("dry_run") for e in events)


def prune_journals(journal_dir: Path, keep: int, current: str | None = None) -> list[str]:
    """Remove the journals beyond the newest `keep` changing runs and the newest `keep` read-only runs.

    Never the current run's, never one that still runs here or may hold a lock. Returns the pruned run ids.
    """
    journal_dir = Path(journal_dir)
    ids = runlog.run_ids(journal_dir)
    if keep < 1 or len(ids) <= keep:
        return []
    events = {rid: runlog.load(journal_dir, rid, only=PRUNE_EVENTS) for rid in ids}
    changing = [rid for rid in ids if _changing(events[rid])]
    reading = [rid for rid in ids if rid not in set(changing)]
    candidates = changing[:-keep] + reading[:-keep]
    if not candidates:
        return []
    freed = _freed_by_others(events)
    pruned = []
    for rid in sorted(candidates):
        if rid == current or (_in_use(rid, events[rid]) and rid not in freed):
            continue
        try:
            (journal_dir / f"{rid}{runlog.SUFFIX}").unlink()
        except OSError:
            continue
        pruned.append(rid)
    return pruned
