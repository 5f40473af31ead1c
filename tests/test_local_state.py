"""The controller's local state (pure logic, a tmp directory): `.deploykit/` with its .gitignore, old run
journals pruned (never one that may hold a lock, nor the current run's), and journals read back by
`deploykit log`, old ones (no `t`, no step_start) too."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploykit.errors import DeployError
from deploykit.state import local, runlog


def dead_pid() -> int:
    """A pid that no longer runs (a process that has exited and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


DEAD = dead_pid()


def rid(n: int, command: str = "release") -> str:
    return f"20260101T{n:06d}Z-{command}-{DEAD}"


def write(journal: Path, run_id: str, events: list[dict]) -> None:
    journal.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"at": "2026-01-01T00:00:00Z", "t": 1767225600.0 + i, "run": run_id, **e})
             for i, e in enumerate(events)]
    (journal / f"{run_id}.jsonl").write_text("\n".join(lines) + "\n")


def changing(locked=()) -> list[dict]:
    return [{"event": "run_start", "command": "release", "stage": "prod", "dry_run": False},
            {"event": "playbook_start", "playbook": "release", "dry_run": False},
            {"event": "step", "host": "web1", "playbook": "release", "phase": "check", "step": "acquire_lock",
             "status": "changed", "seconds": 0.1},
            {"event": "run_end", "locked": list(locked)}]


def reading() -> list[dict]:
    return [{"event": "run_start", "command": "status", "stage": "prod", "dry_run": True},
            {"event": "playbook_start", "playbook": "status", "dry_run": True},
            {"event": "run_end", "locked": []}]


def config(tmp_path: Path, keep: int = 50, journal_dir: Path | None = None):
    return SimpleNamespace(project_dir=tmp_path, journal_dir=journal_dir or tmp_path / ".deploykit" / "journal",
                           keep_runs=keep)


def test_the_state_dir_is_made_beside_the_config_with_its_own_gitignore(tmp_path):
    cfg = config(tmp_path)
    local.prepare(cfg)
    assert (tmp_path / ".deploykit" / ".gitignore").read_text() == "*\n"
    assert (tmp_path / ".deploykit" / "journal").is_dir()
    # git really ignores all of it
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".deploykit" / "journal" / "x.jsonl").write_text("{}\n")
    cp = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                        capture_output=True, text=True, check=True)
    assert ".deploykit" not in cp.stdout, cp.stdout
    # an existing .gitignore is the operator's: kept as it is
    (tmp_path / ".deploykit" / ".gitignore").write_text("journal/\n")
    local.prepare(cfg)
    assert (tmp_path / ".deploykit" / ".gitignore").read_text() == "journal/\n"


def test_a_journal_dir_elsewhere_gets_its_own_gitignore_when_deploykit_makes_it(tmp_path):
    elsewhere = tmp_path / "logs" / "deploykit"
    local.prepare(config(tmp_path, journal_dir=elsewhere))
    assert (elsewhere / ".gitignore").read_text() == "*\n"
    assert not (tmp_path / ".deploykit").exists()


def test_pruning_keeps_the_newest_changing_runs_and_read_only_runs_apart(tmp_path):
    journal = tmp_path / "journal"
    releases = [rid(i) for i in range(1, 6)]
    statuses = [rid(i, "status") for i in range(10, 20)]
    for r in releases:
        write(journal, r, changing())
    for r in statuses:
        write(journal, r, reading())
    pruned = local.prune_journals(journal, keep=2)
    assert sorted(pruned) == sorted(releases[:3] + statuses[:8])
    assert runlog.run_ids(journal) == sorted(releases[3:] + statuses[8:])
    # nothing more to prune
    assert local.prune_journals(journal, keep=2) == []


def test_pruning_never_removes_a_run_that_may_hold_a_lock_nor_the_current_one(tmp_path):
    journal = tmp_path / "journal"
    kept_lock = rid(1)  # ended keeping its lock (work left to finish)
    died_locked = rid(2)  # no run_end: killed while it held the lock
    died_unlocked = rid(3)  # killed before it took any lock
    current = rid(4)
    taken_over = rid(5)  # ended keeping its lock, then a later run took it over
    write(journal, kept_lock, changing(locked=["web1"]))
    write(journal, died_locked, changing()[:-1])
    write(journal, died_unlocked, changing()[:2])
    write(journal, current, changing()[:1])
    write(journal, taken_over, changing(locked=["web1"]))
    later = [rid(i) for i in range(6, 9)]
    for r in later:
        write(journal, r, changing())
    write(journal, later[0], changing()[:-1] + [{"event": "takeover", "host": "web1",
                                                  "holder": {"run_id": taken_over}}, {"event": "run_end"}])
    pruned = local.prune_journals(journal, keep=1, current=current)
    assert sorted(pruned) == sorted([died_unlocked, taken_over, later[0], later[1]])
    left = runlog.run_ids(journal)
    assert kept_lock in left and died_locked in left and current in left and later[-1] in left


def test_a_run_that_still_runs_here_is_never_pruned(tmp_path):
    import os

    journal = tmp_path / "journal"
    running = f"20260101T000001Z-release-{os.getpid()}"  # this process: alive
    write(journal, running, changing()[:2])
    for i in range(2, 5):
        write(journal, rid(i), changing())
    assert running not in local.prune_journals(journal, keep=1)
    assert running in runlog.run_ids(journal)


def test_prepare_prunes_with_keep_runs(tmp_path):
    cfg = config(tmp_path, keep=2)
    for i in range(1, 5):
        write(cfg.journal_dir, rid(i), changing())
    assert local.prepare(cfg, current="20260101T999999Z-release-1") == [rid(1), rid(2)]


def test_runs_are_found_by_id_unique_prefix_or_last():
    ids = ["20260101T000001Z-release-1", "20260101T000002Z-release-2", "20260102T000000Z-status-3"]
    assert runlog.resolve(ids, "last", "here") == ids[-1]
    assert runlog.resolve(ids, None, "here") == ids[-1]
    assert runlog.resolve(ids, "20260102", "here") == ids[2]
    assert runlog.resolve(ids, ids[0], "here") == ids[0]
    with pytest.raises(DeployError, match="2 runs start with '20260101T'"):
        runlog.resolve(ids, "20260101T", "here")
    with pytest.raises(DeployError, match="no run 'nope'"):
        runlog.resolve(ids, "nope", "here")
    with pytest.raises(DeployError, match="no run journal"):
        runlog.resolve([], "last", "here")


def test_a_failed_and_recovered_run_read_back_with_steps_timeline_and_downtime():
    run = rid(1)
    t = 1767225600.0
    ev = [
        {"event": "run_start", "t": t, "command": "release", "stage": "prod", "dry_run": False},
        {"event": "playbook_start", "t": t, "playbook": "release", "dry_run": False},
        {"event": "step_start", "t": t + 1, "host": "web1", "playbook": "release", "phase": "snapshot",
         "step": "stop_processes"},
        {"event": "step", "t": t + 2, "host": "web1", "playbook": "release", "phase": "snapshot",
         "step": "stop_processes", "status": "changed", "seconds": 0.5, "message": "web"},
        {"event": "step_start", "t": t + 3, "host": "web1", "playbook": "release", "phase": "verify",
         "step": "health_check"},
        {"event": "step", "t": t + 5, "host": "web1", "playbook": "release", "phase": "verify",
         "step": "health_check", "status": "failed", "seconds": 2.0, "message": "<b>500</b>"},
        {"event": "playbook_failed", "t": t + 5, "playbook": "release", "phase": "verify", "error": "web1: 500"},
        {"event": "on_failure", "t": t + 5, "playbook": "release", "procedure": "recover"},
        {"event": "playbook_start", "t": t + 5, "playbook": "recover", "dry_run": False},
        {"event": "step_start", "t": t + 6, "host": "web1", "playbook": "recover", "phase": "verify",
         "step": "health_check"},
        {"event": "step", "t": t + 7, "host": "web1", "playbook": "recover", "phase": "verify",
         "step": "health_check", "status": "ok", "seconds": 1.0, "message": "200"},
        {"event": "playbook_done", "t": t + 7, "playbook": "recover"},
        {"event": "run_end", "t": t + 8, "locked": [], "release": "r2", "backup": "b1"},
    ]
    doc = runlog.detail(run, [{"at": "2026-01-01T00:00:00Z", "run": run, **e} for e in ev], local=False)
    assert doc["outcome"] == "recovered" and doc["command"] == "release" and doc["stage"] == "prod"
    assert doc["failed_phase"] == "verify" and doc["recovery"]["ok"] and doc["backup"] == "b1"
    assert doc["seconds"] == 8.0 and doc["hosts"] == ["web1"]
    assert [(s["step"], s["status"], s["recovery"]) for s in doc["steps"]] == [
        ("stop_processes", "changed", False), ("health_check", "failed", False), ("health_check", "ok", True)]
    assert doc["steps"][0]["start"] == t + 1 and doc["steps"][1]["end"] == t + 5
    assert doc["downtime"] == {"seconds": 6.0, "from": t + 1, "to": t + 7}
    assert {p["phase"]: p["seconds"] for p in doc["phases"] if not p["recovery"]} == {"snapshot": 0.5,
                                                                                      "verify": 2.0}


def test_an_old_journal_without_t_nor_step_start_is_placed_from_at_and_seconds():
    run = rid(1)
    ev = [{"at": "2026-01-01T00:00:10Z", "run": run, "event": "playbook_start", "playbook": "release"},
          {"at": "2026-01-01T00:00:12Z", "run": run, "event": "step", "host": "web1", "playbook": "release",
           "phase": "check", "step": "connect", "status": "ok", "seconds": 1.5},
          {"at": "2026-01-01T00:00:13Z", "run": run, "event": "run_end", "locked": []},
          "not json {"]
    text = "\n".join(e if isinstance(e, str) else json.dumps(e) for e in ev)
    doc = runlog.detail(run, runlog.parse(text), local=False)
    (step,) = doc["steps"]
    assert step["end"] == 1767225612.0 and step["start"] == 1767225610.5
    assert doc["outcome"] == "ok" and doc["command"] == "release" and doc["stage"] is None
    assert doc["started"] == "2026-01-01T00:00:10Z" and doc["seconds"] == 3.0


def test_a_run_without_run_end_died_or_runs():
    import os

    ev = [{"event": "playbook_start", "t": 1.0, "playbook": "release"}]
    assert runlog.summary(rid(1), ev)["outcome"] == "died"
    assert runlog.summary(f"20260101T000000Z-release-{os.getpid()}", ev)["outcome"] == "running"


def test_status_exit_codes_say_what_kind_of_problem_was_found():
    from deploykit.ending import status_ending

    well = {"web1": {"problems": [], "warnings": [{"what": "lock", "text": "locked by a live run"}]}}
    assert status_ending("prod", well).code == 0
    drift = {**well, "web2": {"problems": [{"what": "drift", "text": "DRIFT: a vs b", "down": False}]}}
    end = status_ending("prod", drift)
    assert end.code == 1 and "web2: DRIFT: a vs b" in end.text() and "needs a look" in end.text()
    down = {**drift, "web3": {"problems": [{"what": "health", "text": "500", "down": True}]}}
    end = status_ending("prod", down)
    assert end.code == 3 and "may NOT be serving" in end.text() and "DRIFT" in end.text()


def test_the_deploykit_program_takes_the_run_of_log_as_a_bare_word():
    from deploykit.cli import bare_words

    assert bare_words(["dk", "log", "last"]) == ["dk", "log", "--run", "last"]
    assert bare_words(["dk", "log", "--host", "prod", "--from-host", "2026"]) == [
        "dk", "log", "--host", "prod", "--from-host", "--run", "2026"]
    assert bare_words(["dk", "log", "--html", "r.html", "--config", "x.yaml"]) == [
        "dk", "log", "--html", "r.html", "--config", "x.yaml"]
    assert bare_words(["dk", "status", "--host", "prod"]) == ["dk", "status", "--host", "prod"]


def test_two_runs_of_one_command_in_one_second_get_their_own_ids():
    """A library user (or a test) running the same command twice at once: two journals, two lock holders."""
    from deploykit.state.journal import new_run_id

    ids = [new_run_id("status") for _ in range(3)]
    assert len(set(ids)) == 3 and all(i.endswith(f"-status-{__import__('os').getpid()}") for i in ids)
