"""Run journals read back: what `deploykit log` lists and shows, and what the HTML run report draws.

A journal (state/journal.py) is one JSON object per line. This module only
reads them, whichever copy: the controller's (`journal_dir`) or a host's
(`.deploykit/journal/`, written once the run held the lock there, and holding
that host's own steps plus the run's common events). Journals written before
events carried `t` and before `step_start` existed are read too: a step is
then placed by its `at` (whole seconds) less its `seconds`.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import DeployError

SUFFIX = ".jsonl"
CONTROLLER = "controller"  # the "host" of steps that run on the controller (no host in their events)
# steps that take the app down, and the check that says it serves again: downtime runs from one to the other
DOWN_STEPS = ("stop_processes", "restart_processes")
UP_STEP = "health_check"


def parse(text: str, only: tuple[str, ...] | None = None) -> list[dict]:
    """The events of a journal's text; a line that is not a JSON object (cut off by a crash) is skipped.

    `only`: the kinds of event wanted; other lines are not even parsed (pruning reads many journals).
    """
    marks = tuple(f'"event": "{kind}"' for kind in only) if only else None
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line or (marks and not any(m in line for m in marks)):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            events.append(doc)
    return events


def run_ids(journal_dir: Path) -> list[str]:
    """Ids of the runs a journal directory holds, oldest first (run ids start with their UTC stamp)."""
    try:
        return sorted(p.name[:-len(SUFFIX)] for p in Path(journal_dir).iterdir()
                      if p.name.endswith(SUFFIX) and p.is_file())
    except OSError:
        return []


def load(journal_dir: Path, run_id: str, only: tuple[str, ...] | None = None) -> list[dict]:
    try:
        return parse((Path(journal_dir) / f"{run_id}{SUFFIX}").read_text(encoding="utf-8", errors="replace"),
                     only)
    except OSError:
        return []


def resolve(ids: list[str], ref: str | None, where: str) -> str:
    """A run id from what the operator typed: the id, a unique prefix of one, or `last` (the newest)."""
    ref = (ref or "last").strip()
    if not ids:
        raise DeployError(f"no run journal in {where}", hint="run a command first (every command keeps one)")
    if ref == "last":
        return ids[-1]
    if ref in ids:
        return ref
    found = [i for i in ids if i.startswith(ref)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DeployError(f"no run {ref!r} in {where}", hint="'deploykit log' lists the runs; give an id, a "
                                                             "unique prefix of one, or 'last'")
    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    raise DeployError(f"{len(found)} runs start with {ref!r} in {where}: {shown}", hint="give more of the id")


# -- time ------------------------------------------------------------------------------
def epoch(entry: dict) -> float | None:
    """When an event was recorded: its `t`, else its `at` (older journals: whole seconds)."""
    t = entry.get("t")
    if isinstance(t, (int, float)):
        return float(t)
    at = entry.get("at")
    if isinstance(at, str):
        try:
            return datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            return None
    return None


def run_pid(run_id: str) -> int | None:
    """The controller pid a run id ends with (`<stamp>-<command>-<pid>`)."""
    m = re.search(r"-(\d+)$", run_id)
    return int(m.group(1)) if m else None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def command_of(run_id: str) -> str | None:
    m = re.match(r"^\d{8}T\d{6}Z-(.+)-\d+$", run_id)
    return m.group(1) if m else None


# -- what a run did ------------------------------------------------------------------------
def _procedures(events: list[dict]) -> set[str]:
    """Playbooks run as a procedure (on_failure, or finishing a dead run): their steps are the recovery."""
    names = {e.get("procedure") for e in events if e.get("event") == "on_failure" and e.get("procedure")}
    tops = [e.get("playbook") for e in events if e.get("event") == "playbook_start"]
    if any(e.get("event") == "takeover" for e in events) and tops:
        names.add(tops[0])  # a run that took a dead run over and finished it ran its procedure first
    return {n for n in names if n}


def steps(events: list[dict]) -> list[dict]:
    """Every finished step, in journal order: host, playbook, phase, step, status, seconds, message,
    start and end (epoch seconds), and whether it belongs to the recovery (`recovery`)."""
    open_starts: dict[tuple, list[float]] = {}
    procedures = _procedures(events)
    out = []
    for e in events:
        kind = e.get("event")
        key = (e.get("host") or CONTROLLER, e.get("playbook"), e.get("phase"), e.get("step"))
        if kind == "step_start":
            t = epoch(e)
            if t is not None:
                open_starts.setdefault(key, []).append(t)
        elif kind == "step":
            seconds = float(e.get("seconds") or 0.0)
            starts = open_starts.get(key)
            end = epoch(e)
            if starts:
                start = starts.pop(0)
                end = start + seconds
            else:  # an older journal, or a step only planned (a dry-run): placed from its end
                start = (end - seconds) if end is not None else None
            out.append({"host": key[0], "playbook": e.get("playbook") or "", "phase": e.get("phase") or "",
                        "step": e.get("step") or "", "status": e.get("status") or "", "seconds": seconds,
                        "message": e.get("message") or "", "start": start, "end": end,
                        "recovery": e.get("playbook") in procedures})
    return out


def hosts_of(events: list[dict]) -> list[str]:
    """The hosts the run's steps ran on, in the order they first appear (the controller last)."""
    seen = list(dict.fromkeys(e.get("host") or CONTROLLER for e in events if e.get("event") in ("step", "step_start")))
    return [h for h in seen if h != CONTROLLER] + ([CONTROLLER] if CONTROLLER in seen else [])


def _backup_id(events: list[dict]) -> str | None:
    end = next((e for e in reversed(events) if e.get("event") == "run_end"), {})
    if end.get("backup"):
        return end["backup"]
    for e in events:  # older journals: the backup steps name it
        if e.get("event") != "step" or e.get("status") not in ("ok", "changed"):
            continue
        msg = str(e.get("message") or "")
        if e.get("step") == "seal_backup" and ":" in msg:
            return msg.split(":", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if e.get("step") == "verify_backup" and ":" in msg:
            return msg.split(":", 1)[0]
    return None


def summary(run_id: str, events: list[dict], *, local: bool = True) -> dict:
    """One line of `deploykit log`: id, command, stage, started, seconds, outcome (a word) and what it means.

    `local`: the journal is this controller's, so a run without `run_end` whose pid still runs is running.
    """
    first = next((e for e in events if e.get("event") == "run_start"), {})
    tops = [e for e in events if e.get("event") == "playbook_start"]
    procedures = _procedures(events)
    main = [e for e in tops if e.get("playbook") not in procedures]
    times = [t for t in (epoch(e) for e in events) if t is not None]
    started = min(times) if times else None
    end = next((e for e in reversed(events) if e.get("event") == "run_end"), None)
    dry = first.get("dry_run") if "dry_run" in first else any(e.get("dry_run") for e in tops)
    failed = next((e for e in events if e.get("event") == "playbook_failed" and e.get("playbook") not in procedures),
                  None)
    on_failure = next((e for e in events if e.get("event") == "on_failure"), None)
    recovery = None
    if procedures:
        name = on_failure.get("procedure") if on_failure else sorted(procedures)[0]
        rec_failed = next((e for e in events if e.get("event") == "playbook_failed" and e.get("playbook") == name),
                          None)
        rec_done = any(e.get("event") == "playbook_done" and e.get("playbook") == name for e in events)
        recovery = {"procedure": name, "ok": rec_done and rec_failed is None,
                    "failed_phase": rec_failed.get("phase") if rec_failed else None,
                    "error": rec_failed.get("error") if rec_failed else None,
                    "done": rec_done or rec_failed is not None}
    interrupted = any(e.get("event") == "interrupted" for e in events)
    if end is None:
        outcome = "running" if local and alive(run_pid(run_id)) else "died"
    elif recovery is not None and not recovery["ok"]:
        outcome = "recovery failed"
    elif failed is not None and recovery is not None:
        outcome = "recovered"
    elif interrupted:
        outcome = "interrupted"
    elif failed is not None:
        outcome = "failed"
    elif recovery is not None:
        outcome = "finished"  # it finished a dead run's work
    else:
        outcome = "ok"
    text = outcome
    if failed is not None:
        text += f" (failed at {failed.get('phase')}: {failed.get('error')})"
    if recovery is not None:
        text += (f"; {recovery['procedure']} done" if recovery["ok"] else
                 f"; {recovery['procedure']} failed at {recovery['failed_phase']}: {recovery['error']}"
                 if recovery["done"] else f"; {recovery['procedure']} did not finish")
    locked = (end or {}).get("locked") or []
    if locked:
        text += f"; lock kept on {', '.join(locked)}"
    stage = first.get("stage")
    last = max(times) if times else None
    return {"run": run_id, "command": first.get("command") or (main[0].get("playbook") if main else None)
            or command_of(run_id), "stage": stage, "dry_run": bool(dry),
            "started": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if started is not None else None,
            "seconds": round(last - started, 3) if started is not None and end is not None else None,
            "outcome": outcome, "text": text, "failed_phase": failed.get("phase") if failed else None,
            "error": failed.get("error") if failed else None, "recovery": recovery, "locked": locked,
            "ended": end is not None, "backup": _backup_id(events), "release": (end or {}).get("release")}


def downtime(rows: list[dict]) -> dict | None:
    """From the first step that stops or restarts the app's processes to the end of the last health check
    that passed after it: {seconds, from, to}. None when the run never took the app down, or it never
    passed a health check again (then `to` is None)."""
    downs = [r for r in rows if r["step"] in DOWN_STEPS and r["start"] is not None
             and r["status"] in ("ok", "changed", "failed")]
    if not downs:
        return None
    start = min(r["start"] for r in downs)
    ups = [r for r in rows if r["step"] == UP_STEP and r["status"] == "ok" and r["end"] is not None
           and r["start"] is not None and r["start"] >= start]
    if not ups:
        return {"seconds": None, "from": start, "to": None}
    # the last host to pass its check in the last round of health checks after the app went down
    last_phase = (ups[-1]["playbook"], ups[-1]["phase"])
    end = max(r["end"] for r in ups if (r["playbook"], r["phase"]) == last_phase)
    return {"seconds": round(end - start, 3), "from": start, "to": end}


def detail(run_id: str, events: list[dict], *, local: bool = True) -> dict:
    """Everything `deploykit log RUN` and the HTML report show: the summary, every step per host, the
    recovery, the backup used, and figures (total, per phase, downtime)."""
    doc = summary(run_id, events, local=local)
    rows = steps(events)
    doc["hosts"] = hosts_of(events)
    doc["steps"] = rows
    phases: dict[str, dict] = {}
    for r in rows:
        if r["start"] is None or r["end"] is None:
            continue
        key = f"{r['playbook']}/{r['phase']}"
        span = phases.setdefault(key, {"playbook": r["playbook"], "phase": r["phase"], "from": r["start"],
                                       "to": r["end"], "recovery": r["recovery"]})
        span["from"], span["to"] = min(span["from"], r["start"]), max(span["to"], r["end"])
    doc["phases"] = [{**p, "seconds": round(p["to"] - p["from"], 3)} for p in phases.values()]
    doc["downtime"] = downtime(rows)
    build = next((r for r in rows if r["step"] == "build_restore" and r["status"] in ("ok", "changed")), None)
    doc["restored_from"] = build["message"] if build else None
    times = [t for t in (epoch(e) for e in events) if t is not None]
    doc["t0"] = min(times) if times else None
    return doc
