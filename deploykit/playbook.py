"""Playbooks: procedures as data, run stage by stage, step by step, per host.

A playbook (YAML) is an ordered list of named stages; each stage lists steps by
registry name. Stages are stable hook points: deploykit.yaml's `hooks.before`
and `hooks.after` attach commands to them without touching the steps. A stage's
`on_failure` names the playbook that runs when one of its steps fails (for the
release: `abort` before anything live changed, `recover` after).
"""
from __future__ import annotations

import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from . import yamlload
from .errors import ConfigError, DeployError, DryRunWrite, Interrupted, LockLost

BUILTIN_DIR = Path(__file__).parent / "playbooks"
SCOPES = ("app", "primary", "all", "controller")

STEPS: dict[str, type["Step"]] = {}


def register(cls):
    """Class decorator: make a step available to playbooks by its `name`."""
    STEPS[cls.name] = cls
    return cls


@dataclass
class Outcome:
    changed: bool = False
    message: str = ""
    diff: str = ""


class Step:
    """One small unit of work. `run` acts; `describe` says what it would do."""

    name = ""
    scope = "app"
    read_only = False  # runs for real under --dry-run (checks that change nothing)
    continue_on_error = False

    def __init__(self, options: dict | None = None):
        self.options = options or {}

    def applies(self, ctx, host) -> bool:
        return True

    def describe(self, ctx, host) -> str:
        return self.__doc__.strip().splitlines()[0] if self.__doc__ else self.name

    def run(self, ctx, host) -> Outcome | None:
        raise NotImplementedError


@dataclass
class StepCall:
    step: str
    scope: str | None
    options: dict


@dataclass
class Stage:
    name: str
    steps: list[StepCall]
    on_failure: str | None = None


@dataclass
class Playbook:
    name: str
    description: str
    stages: list[Stage]
    path: Path


@dataclass
class StepRecord:
    playbook: str
    stage: str
    step: str
    host: str
    status: str  # ok, changed, failed, skipped, planned
    seconds: float
    message: str = ""
    diff: str = ""


@dataclass
class RunResult:
    """What each host did, kept even when a step fails (Fabric's GroupResult idea)."""

    playbook: str
    run_id: str
    ok: bool = True
    dry_run: bool = False
    records: list[StepRecord] = field(default_factory=list)
    error: DeployError | None = None
    failed_stage: str | None = None
    recovery: "RunResult | None" = None
    data: dict = field(default_factory=dict)

    def by_host(self) -> dict[str, list[StepRecord]]:
        out: dict[str, list[StepRecord]] = {}
        for rec in self.records:
            out.setdefault(rec.host, []).append(rec)
        return out

    @property
    def recovered(self) -> bool:
        return self.recovery is not None and self.recovery.ok


def _playbook_file(name: str, config) -> Path:
    for base in ([config.playbooks_dir] if config.playbooks_dir else []) + [BUILTIN_DIR]:
        path = base / f"{name}.yml"
        if path.is_file():
            return path
    raise ConfigError(f"no playbook named {name!r}",
                      hint=f"add {name}.yml to playbooks_dir or use one of the built-in playbooks")


def load_playbook(name: str, config, _seen: tuple = ()) -> Playbook:
    from . import steps  # noqa: F401  (the built-in steps register themselves)

    path = _playbook_file(name, config)
    try:
        raw = yamlload.load(path.read_text())  # YAML 1.2 booleans, no duplicate keys
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}".splitlines()[0], hint="fix the playbook's YAML") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list):
        raise ConfigError(f"{path}: a playbook needs a 'stages:' list", hint="see the built-in playbooks for the shape")
    stages: list[Stage] = []
    for i, st in enumerate(raw["stages"]):
        if isinstance(st, dict) and "include" in st:
            if st["include"] in _seen + (name,):
                raise ConfigError(f"{path}: stages[{i}]: include loop through {st['include']!r}", hint="remove the loop")
            stages.extend(load_playbook(st["include"], config, _seen + (name,)).stages)
            continue
        if not isinstance(st, dict) or "name" not in st or not isinstance(st.get("steps"), list):
            raise ConfigError(f"{path}: stages[{i}]: needs 'name:' and a 'steps:' list", hint="see the built-in playbooks")
        calls = []
        for j, s in enumerate(st["steps"]):
            if isinstance(s, str):
                s = {"step": s}
            step = s.get("step") if isinstance(s, dict) else None
            if step not in STEPS:
                raise ConfigError(f"{path}: stages[{i}].steps[{j}]: unknown step {step!r}",
                                  hint=f"use one of: {', '.join(sorted(STEPS))}")
            scope = s.get("on")
            if scope is not None and scope not in SCOPES:
                raise ConfigError(f"{path}: stages[{i}].steps[{j}].on: unknown scope {scope!r}",
                                  hint=f"use one of {', '.join(SCOPES)}")
            calls.append(StepCall(step, scope, s.get("with") or {}))
        stages.append(Stage(st["name"], calls, st.get("on_failure", raw.get("on_failure"))))
    return Playbook(raw.get("name", name), raw.get("description", ""), stages, path)


Reporter = Callable[[StepRecord], None]


def _hosts_for(ctx, scope: str):
    if scope == "controller":
        return [None]
    if scope == "primary":
        return [ctx.primary]
    if scope == "all":
        return list(ctx.hosts)
    return [h for h in ctx.hosts if scope in h.roles]


def run_playbook(ctx, name: str, reporter: Reporter | None = None, *, procedure: bool = False) -> RunResult:
    """Run a playbook; on a failing or interrupted stage, run its on_failure procedure.

    Before each stage the run records on the primary's lock where it is and
    which procedure applies there, so that whoever finishes a run that died
    (SIGKILL, a lost controller) runs the same procedure this run would have.
    `procedure` marks a playbook run as the on_failure procedure of another.
    """
    book = load_playbook(name, ctx.config)
    result = RunResult(book.name, ctx.run_id, dry_run=ctx.dry_run)
    ctx.journal.record("playbook_start", playbook=book.name, dry_run=ctx.dry_run)
    for stage in book.stages:
        if not ctx.dry_run:
            if procedure:
                ctx.record_progress(procedure=book.name, phase=stage.name)
            else:
                ctx.record_progress(playbook=book.name, phase=stage.name, on_failure=stage.on_failure,
                                    procedure=None)
        ctx.journal.record("phase", playbook=book.name, phase=stage.name)
        try:
            _run_hooks(ctx, "before", stage.name, book.name, result, reporter)
            for call in stage.steps:
                _check_interrupt(ctx)
                _run_step(ctx, book.name, stage.name, call, result, reporter)
            _run_hooks(ctx, "after", stage.name, book.name, result, reporter)
            _check_interrupt(ctx)
        except DeployError as exc:
            result.ok = False
            result.error = exc
            result.failed_stage = stage.name
            ctx.journal.record("playbook_failed", playbook=book.name, stage=stage.name, error=exc.one_line())
            if isinstance(exc, LockLost) or ctx.lock_lost:
                return result  # someone else finishes: change nothing more
            if stage.on_failure and not ctx.dry_run and not procedure:
                ctx.failure = exc
                ctx.accept_commands()
                _stop_leftovers(ctx)
                ctx.journal.record("on_failure", playbook=book.name, handler=stage.on_failure)
                ctx.in_procedure = True
                try:
                    result.recovery = run_playbook(ctx, stage.on_failure, reporter, procedure=True)
                finally:
                    ctx.in_procedure = False
            return result
    ctx.journal.record("playbook_done", playbook=book.name)
    return result


def _check_interrupt(ctx) -> None:
    if ctx.lock_lost:
        raise LockLost(f"the lock of {ctx.lock_lost} was taken over by another run")
    if ctx.interrupted is not None and not ctx.in_procedure:
        raise Interrupted(f"interrupted by signal {ctx.interrupted}")


def _stop_leftovers(ctx) -> None:
    """Before a procedure runs: no long command of this run may still run on a host (after a lost connection)."""
    for host in ctx.hosts:
        try:
            killed = host.kill_marked(f"DEPLOYKIT_TRACK={ctx.run_id}")
        except DeployError:
            continue
        if killed:
            ctx.journal.record("killed_leftovers", host=host, pids=killed)


def _run_step(ctx, book: str, stage: str, call: StepCall, result: RunResult, reporter) -> None:
    """Run one step on each host of its scope, the hosts in parallel (Fabric's ThreadingGroup).

    Every host's outcome is recorded, in host order, before the first failure is raised.
    """
    step = STEPS[call.step](call.options)
    scope = call.scope or step.scope
    hosts = [h for h in _hosts_for(ctx, scope) if step.applies(ctx, h)]
    if len(hosts) > 1:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            outcomes = list(pool.map(lambda h: _on_host(ctx, book, stage, step, h), hosts))
    else:
        outcomes = [_on_host(ctx, book, stage, step, h) for h in hosts]
    error = None
    for host, (rec, exc) in zip(hosts, outcomes):
        _emit(ctx, result, rec, host, reporter)
        if exc is not None and error is None and not step.continue_on_error:
            error = exc
    if error is not None:
        raise error


def _on_host(ctx, book: str, stage: str, step: Step, host) -> tuple[StepRecord, DeployError | None]:
    hname = host.name if host else "controller"
    start = time.monotonic()
    if ctx.dry_run and not step.read_only:
        return StepRecord(book, stage, step.name, hname, "planned", 0.0, step.describe(ctx, host)), None
    try:
        outcome = step.run(ctx, host) or Outcome()
    except DryRunWrite as exc:
        err = DryRunWrite(f"{hname}: step {step.name} tried to change the host during a dry-run: {exc}",
                          hint=exc.hint)
        return StepRecord(book, stage, step.name, hname, "failed", time.monotonic() - start, err.one_line()), err
    except DeployError as exc:
        return StepRecord(book, stage, step.name, hname, "failed", time.monotonic() - start, exc.one_line()), exc
    except Exception as exc:  # a bug or an unexpected library error: keep it, fail the step
        msg = f"{type(exc).__name__}: {exc}"
        ctx.journal.record("traceback", host=host, step=step.name, text=traceback.format_exc())
        err = DeployError(f"{hname}: step {step.name} failed: {msg}", hint="see the journal for the traceback")
        return StepRecord(book, stage, step.name, hname, "failed", time.monotonic() - start, msg), err
    status = "changed" if outcome.changed else "ok"
    return StepRecord(book, stage, step.name, hname, status, time.monotonic() - start, outcome.message, outcome.diff), None


def _emit(ctx, result: RunResult, rec: StepRecord, host, reporter) -> None:
    result.records.append(rec)
    ctx.journal.record("step", host=host, playbook=rec.playbook, stage=rec.stage, step=rec.step,
                       status=rec.status, seconds=round(rec.seconds, 3), message=rec.message, diff=rec.diff)
    if reporter:
        reporter(rec)


def _run_hooks(ctx, when: str, stage: str, book: str, result: RunResult, reporter) -> None:
    for hook in ctx.config.hooks.get(when, {}).get(stage, []):
        call = StepCall("hook", hook["on"], {"run": hook["run"], "label": f"{when}:{stage}",
                                             "timeout": hook.get("timeout")})
        _run_step(ctx, book, stage, call, result, reporter)
