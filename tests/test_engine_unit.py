"""The engine without hosts: order of phases, hooks, on_failure procedures, and exit codes that
follow error classes and playbook declarations, not names."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from deploykit import ending as E
from deploykit.engine import load_playbook, run_playbook
from deploykit.errors import (ConfigError, DeployError, Interrupted, LockHeld, LockLost, NotConfirmed,
                              PreflightFailed)
from deploykit.steps import STEPS, Outcome, Step, builtin

LOG: list[str] = []


class Say(Step):
    """Appends its `say` option to the log (on the controller)."""

    name = "t_say"
    scope = "controller"

    def run(self, ctx, host):
        LOG.append(self.options.get("say", "?"))
        return Outcome(changed=True, message="said")


class Fail(Step):
    name = "t_fail"
    scope = "controller"

    def run(self, ctx, host):
        LOG.append("fail")
        raise ctx.error_to_raise


class Look(Step):
    """A read-only look: runs under --dry-run too."""

    name = "t_look"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        LOG.append("look")


class HookStep(Step):
    name = "hook"
    scope = "controller"

    def run(self, ctx, host):
        LOG.append(f"hook {self.options['label']}: {self.options['run']}")


@pytest.fixture(autouse=True)
def steps(monkeypatch):
    LOG.clear()
    builtin()  # the built-in steps first: the test ones (and the hook stand-in) replace them, then are undone
    for cls in (Say, Fail, Look, HookStep):
        monkeypatch.setitem(STEPS, cls.name, cls)


class Journal:
    def __init__(self):
        self.events = []

    def record(self, event, **fields):
        self.events.append((event, fields))


def make_ctx(tmp_path, hooks=None, dry_run=False, error=None):
    config = SimpleNamespace(playbooks_dir=tmp_path, hooks=hooks or {})
    host = SimpleNamespace(name="h1", roles=["app", "primary"], is_primary=True, kill_marked=lambda marker: [])
    ctx = SimpleNamespace(config=config, run_id="run-1", dry_run=dry_run, journal=Journal(), hosts=[host],
                          primary=host, lock_lost=None, interrupted=None, in_procedure=False, failure=None,
                          progress=[], lock=threading.RLock(), error_to_raise=error or DeployError("it broke"))
    ctx.record_progress = lambda **kw: ctx.progress.append(kw)
    ctx.accept_commands = lambda: LOG.append("accept")
    ctx.doing = lambda *what: None
    return ctx


def book(tmp_path, name, text):
    (tmp_path / f"{name}.yml").write_text(text)


RELEASE = """
name: ship
phases:
  - name: {check}
    before_changes: true
    on_failure: give_up
    steps:
      - t_look
      - {{step: t_say, with: {{say: checked}}}}
      - {first}
  - name: {change}
    on_failure: put_back
    steps:
      - {{step: t_say, with: {{say: changed}}}}
      - {second}
  - name: last
    steps:
      - {{step: t_say, with: {{say: last}}}}
"""

PROCEDURES = {
    "give_up": "name: give_up\nends: refused\nphases:\n  - name: x\n    steps: [{step: t_say, with: {say: gave up}}]\n",
    "put_back": "name: put_back\nends: undone\nsays: \"back to {previous}\"\n"
                "phases:\n  - name: y\n    steps: [{step: t_say, with: {say: put back}}]\n",
}


def setup(tmp_path, check="check", change="migrate", first="t_look", second="t_look"):
    book(tmp_path, "ship", RELEASE.format(check=check, change=change, first=first, second=second))
    for name, text in PROCEDURES.items():
        book(tmp_path, name, text)


def test_phases_and_steps_run_in_order_with_hooks_around_their_phase(tmp_path):
    setup(tmp_path)
    ctx = make_ctx(tmp_path, hooks={"before": {"migrate": [{"run": "echo pre", "on": "controller"}]},
                                    "after": {"check": [{"run": "echo post", "on": "controller"}]}})
    result = run_playbook(ctx, "ship")
    assert result.ok and result.failed_phase is None and result.recovery is None
    assert LOG == ["look", "checked", "look", "hook after:check: echo post", "hook before:migrate: echo pre",
                   "changed", "look", "last"]
    assert [r.phase for r in result.records][:4] == ["check", "check", "check", "check"]
    # progress before each phase names the procedure that applies there (for a run that finishes this one)
    assert [(p["phase"], p["on_failure"]) for p in ctx.progress] == [("check", "give_up"), ("migrate", "put_back"),
                                                                      ("last", None)]
    assert E.ending(result, "ship", "ship").code == E.OK


def test_a_failing_phase_runs_its_on_failure_procedure_and_stops(tmp_path):
    setup(tmp_path, second="t_fail")
    ctx = make_ctx(tmp_path)
    result = run_playbook(ctx, "ship")
    assert not result.ok and result.failed_phase == "migrate" and not result.refused
    assert LOG == ["look", "checked", "look", "changed", "fail", "accept", "put back"]
    assert result.recovery.ok and result.recovery.playbook == "put_back" and result.recovery.ends == "undone"
    assert ctx.failure is result.error and ctx.in_procedure is False
    assert ("on_failure", {"playbook": "ship", "procedure": "put_back"}) in ctx.journal.events
    end = E.ending(result, "ship", "ship")
    assert end.code == E.FAILED and "back to None" in end.line


def test_a_procedure_does_not_run_its_own_handlers_nor_under_dry_run(tmp_path):
    setup(tmp_path, second="t_fail")
    result = run_playbook(make_ctx(tmp_path), "ship", procedure=True)
    assert result.recovery is None and "put back" not in LOG
    LOG.clear()
    result = run_playbook(make_ctx(tmp_path, dry_run=True), "ship")
    assert result.ok and LOG == ["look", "look"]  # only read-only steps run; the rest (t_fail too) is planned
    assert {r.status for r in result.records if r.step in ("t_say", "t_fail")} == {"planned"}


@pytest.mark.parametrize("names", [("check", "migrate"), ("preflight", "schema")])
def test_exit_codes_follow_declarations_not_names(tmp_path, names):
    """Renaming phases in YAML changes no exit code."""
    setup(tmp_path, check=names[0], change=names[1], first="t_fail")
    result = run_playbook(make_ctx(tmp_path), "ship")
    assert result.failed_phase == names[0] and result.refused and result.recovery.ends == "refused"
    assert E.ending(result, "ship", "ship").code == E.REFUSED
    LOG.clear()
    setup(tmp_path, check=names[0], change=names[1], second="t_fail")
    result = run_playbook(make_ctx(tmp_path), "ship")
    assert E.ending(result, "ship", "ship").code == E.FAILED


def test_a_failure_after_changes_without_procedure_is_unknown(tmp_path):
    book(tmp_path, "bare", "name: bare\nphases:\n  - name: look\n    before_changes: true\n    steps: [t_look]\n"
                           "  - name: change\n    steps: [t_fail]\n")
    result = run_playbook(make_ctx(tmp_path), "bare")
    assert result.failed_phase == "change" and result.recovery is None and not result.refused
    assert E.ending(result, "bare", "bare").code == E.UNKNOWN


def test_a_failing_procedure_leaves_the_state_unknown(tmp_path):
    setup(tmp_path, second="t_fail")
    book(tmp_path, "put_back", "name: put_back\nends: undone\nphases:\n  - name: y\n    steps: [t_fail]\n")
    result = run_playbook(make_ctx(tmp_path), "ship")
    assert result.recovery is not None and not result.recovery.ok
    end = E.ending(result, "ship", "ship")
    assert end.code == E.UNKNOWN and "ALSO failed at y" in end.line


@pytest.mark.parametrize("error, code", [(LockHeld("held"), E.REFUSED), (PreflightFailed("no"), E.REFUSED),
                                         (NotConfirmed("no"), E.REFUSED), (LockLost("taken"), E.FAILED)])
def test_error_classes_decide_wherever_they_happen(tmp_path, error, code):
    book(tmp_path, "flat", "name: flat\nphases:\n  - name: anywhere\n    steps: [t_fail]\n")
    result = run_playbook(make_ctx(tmp_path, error=error), "flat")
    assert not result.refused and result.failed_phase == "anywhere"
    assert E.ending(result, "flat", "flat").code == code


def test_one_map_from_error_class_to_exit_code():
    assert E.exit_code(ConfigError("x")) == E.REFUSED
    assert E.exit_code(Interrupted("x")) == E.INTERRUPTED
    assert E.exit_code(LockLost("x")) == E.FAILED
    assert E.exit_code(DeployError("x")) is None and E.exit_code(DeployError("x"), E.REFUSED) == E.REFUSED

    class Sub(LockHeld):
        pass

    assert E.exit_code(Sub("x")) == E.REFUSED  # the closest class wins


def test_interrupted_procedures_end_by_their_declaration(tmp_path):
    setup(tmp_path, second="t_fail")
    result = run_playbook(make_ctx(tmp_path), "ship")
    result.data["interrupted"] = 2
    assert E.ending(result, "ship", "ship").code == E.INTERRUPTED
    book(tmp_path, "put_back", "name: put_back\nends: finished\nphases:\n  - name: y\n    steps: [t_look]\n")
    result = run_playbook(make_ctx(tmp_path), "ship")
    end = E.ending(result, "ship", "ship")
    assert end.code == E.OK and "finished by put_back" in end.line


def test_a_run_finished_for_a_dead_one_is_ok_only_when_its_procedure_finishes_that_command(tmp_path):
    book(tmp_path, "done_it", "name: done_it\nends: finished\nphases:\n  - name: y\n    steps: [t_look]\n")
    result = run_playbook(make_ctx(tmp_path), "done_it", procedure=True)
    result.data["finished_run"] = {"run_id": "old", "command": "ship", "phase": "z", "procedure": "done_it"}
    assert E.ending(result, "ship", "ship").code == E.OK
    assert E.ending(result, "other", "other").code == E.FAILED
    result.ends = "undone"
    assert E.ending(result, "ship", "ship").code == E.FAILED


GATE = threading.Event()
CANCELLED = threading.Event()


class Wait(Step):
    """Waits for Open (in another phase): it can only pass when both phases run at the same time."""

    name = "t_wait"
    scope = "controller"

    def run(self, ctx, host):
        if not GATE.wait(10):
            raise DeployError("the other phase never ran meanwhile")
        LOG.append("waited")


class Open(Step):
    name = "t_open"
    scope = "controller"

    def run(self, ctx, host):
        LOG.append("open")
        GATE.set()


class Slow(Step):
    """A long command: it ends when the hosts are cancelled (as a killed remote command would)."""

    name = "t_slow"
    scope = "controller"

    def run(self, ctx, host):
        GATE.set()  # it runs: the failing phase may go on
        if not CANCELLED.wait(10):
            raise AssertionError("nobody stopped this command")
        raise DeployError("killed")


OVERLAP = """
name: ship
phases:
  - name: a
    on_failure: put_back
    runs_with: b
    steps: [{first}]
  - name: b
    on_failure: put_back
    steps: [{second}, {{step: t_say, with: {{say: after}}}}]
  - name: c
    steps: [{{step: t_say, with: {{say: last}}}}]
"""


def overlap_ctx(tmp_path, first, second):
    GATE.clear()
    CANCELLED.clear()
    book(tmp_path, "ship", OVERLAP.format(first=first, second=second))
    book(tmp_path, "put_back", PROCEDURES["put_back"])
    ctx = make_ctx(tmp_path)
    ctx.every_host = ctx.hosts
    ctx.hosts[0].cancel = lambda: (LOG.append("cancel"), CANCELLED.set())
    return ctx


def test_phases_joined_by_runs_with_run_at_the_same_time(tmp_path, monkeypatch):
    for cls in (Wait, Open, Slow):
        monkeypatch.setitem(STEPS, cls.name, cls)
    ctx = overlap_ctx(tmp_path, "t_wait", "t_open")
    result = run_playbook(ctx, "ship")
    assert result.ok, result.error
    assert LOG.index("open") < LOG.index("waited") and LOG[-1] == "last"
    # one progress record for the pair (one procedure applies to both), then the next phase
    assert [(p["phase"], p["on_failure"]) for p in ctx.progress] == [("a+b", "put_back"), ("c", None)]
    assert [f["phase"] for e, f in ctx.journal.events if e == "phase"][-1] == "c"
    # a dry-run describes them one after the other
    LOG.clear()
    dry = overlap_ctx(tmp_path, "t_wait", "t_open")
    dry.dry_run = True
    result = run_playbook(dry, "ship")
    assert result.ok and LOG == [] and [r.step for r in result.records] == ["t_wait", "t_open", "t_say", "t_say"]


def test_the_first_failure_of_overlapping_phases_stops_the_other_and_undoes_both_once(tmp_path, monkeypatch):
    for cls in (Wait, Open, Slow):
        monkeypatch.setitem(STEPS, cls.name, cls)
    ctx = overlap_ctx(tmp_path, "t_wait, t_fail", "t_slow")
    result = run_playbook(ctx, "ship")
    assert not result.ok and result.failed_phase == "a" and str(result.error) == "it broke"
    assert "cancel" in LOG and "after" not in LOG and "last" not in LOG  # b stopped before its next step
    assert LOG.count("put back") == 1 and LOG.index("cancel") < LOG.index("accept") < LOG.index("put back")
    assert {r.step: r.status for r in result.records if r.phase in ("a", "b")} == {
        "t_wait": "ok", "t_fail": "failed", "t_slow": "failed"}


@pytest.mark.parametrize("text, match", [
    ("  - name: a\n    runs_with: c\n    steps: [t_look]\n  - name: b\n    steps: [t_look]\n",
     "runs_with: 'c' is not the next phase"),
    ("  - name: a\n    runs_with: b\n    steps: [t_look]\n", "runs_with: 'b' is not the next phase"),
    ("  - name: a\n    runs_with: b\n    on_failure: x\n    steps: [t_look]\n  - name: b\n    steps: [t_look]\n",
     "fail differently"),
])
def test_runs_with_must_name_the_next_phase_that_fails_the_same_way(tmp_path, text, match):
    book(tmp_path, "bad", "name: bad\nphases:\n" + text)
    with pytest.raises(ConfigError, match=match):
        load_playbook("bad", SimpleNamespace(playbooks_dir=tmp_path))


def test_playbook_declarations_are_checked_and_the_old_key_still_reads(tmp_path):
    book(tmp_path, "bad", "name: bad\nends: maybe\nphases: []\n")
    with pytest.raises(ConfigError, match="ends: 'maybe' is not one of"):
        load_playbook("bad", SimpleNamespace(playbooks_dir=tmp_path))
    book(tmp_path, "old", "name: old\nstages:\n  - name: a\n    steps: [t_look]\n")
    old = load_playbook("old", SimpleNamespace(playbooks_dir=tmp_path))
    assert [p.name for p in old.phases] == ["a"]
    book(tmp_path, "none", "name: none\n")
    with pytest.raises(ConfigError, match="needs a 'phases:' list"):
        load_playbook("none", SimpleNamespace(playbooks_dir=tmp_path))


def test_builtin_procedures_declare_how_they_end():
    cfg = SimpleNamespace(playbooks_dir=None)
    ends = {n: load_playbook(n, cfg).ends for n in ("abandon", "abort", "recover", "backup_abort", "restore_abort",
                                                    "rollback_abort", "release_finish", "restore_finish",
                                                    "rollback_finish", "rollback_data_finish")}
    assert ends["abandon"] == "refused"
    assert {n for n, e in ends.items() if e == "undone"} == {"abort", "recover", "backup_abort", "restore_abort",
                                                             "rollback_abort"}
    assert {n for n, e in ends.items() if e == "finished"} == {"release_finish", "restore_finish",
                                                               "rollback_finish", "rollback_data_finish"}
    release = load_playbook("release", cfg)
    assert [p.name for p in release.phases if p.before_changes] == ["check"]
    assert "{previous}" in load_playbook("recover", cfg).says


def test_the_engine_does_not_import_the_step_modules_circularly():
    import subprocess
    import sys

    for first in ("deploykit.steps", "deploykit.engine", "deploykit.api", "deploykit.steps.rollback",
                  "deploykit.steps.services"):
        out = subprocess.run([sys.executable, "-c", f"import {first}; import deploykit.steps as s; s.builtin()"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_run_state_exports_only_what_a_run_finishing_this_one_needs():
    from deploykit.engine.state import RunState

    state = RunState()
    assert state.export() == {}
    state.add_snapshot("default", "dks_1")
    state.migrations = {"applied": {"library": ["0001"]}}
    state.manifests["h1"] = {"items": []}  # this run only
    state.loss = {"db-default": {}}
    state.restore_state("b1", "run-1")["built"].append({"item": "db-default"})
    doc = state.export()
    assert set(doc) == {"snapshots", "migrations", "restore"}
    other = RunState()
    other.update({**doc, "swapped": True, "manifests": {"x": 1}})  # older and run-only keys are ignored
    assert other.snapshots == {"default": "dks_1"} and other.restore["built"] == [{"item": "db-default"}]
    assert other.manifests == {} and other.restore_state("b2", "run-2")["backup_id"] == "b1"
    other.drop_snapshots({"dks_1"})
    assert other.snapshots == {}
    other.use_snapshots_of({"snapshots": {"default": "dks_2"}})
    assert other.snapshots == {"default": "dks_2"}
    other.use_snapshots_of(None)
    assert other.snapshots == {}


def test_steps_are_thin_and_the_imports_go_one_way():
    """Steps import steps.base, work/ and drivers/, never a sibling step nor the engine; work/ imports neither."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "deploykit"
    bad = []
    for sub, forbidden in (("steps", ("engine", "playbook", "steps")), ("work", ("engine", "playbook", "steps"))):
        for path in (root / sub).glob("*.py"):
            if path.name in ("__init__.py", "base.py", "services.py"):  # services.py: see the drivers report
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ImportFrom):
                    continue
                mod = node.module or ""
                target = mod.split(".")[0] if node.level == 2 else (sub if node.level == 1 else mod.split(".")[1:2])
                if node.level == 1 and mod != "base":
                    bad.append(f"{sub}/{path.name}: from .{mod}")
                elif node.level == 2 and target in forbidden:
                    bad.append(f"{sub}/{path.name}: from ..{mod}")
    assert bad == []
