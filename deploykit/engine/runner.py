"""Running a playbook: phase by phase, step by step, each step on its hosts in parallel.

Before each phase the run records on the primary's lock where it is and
which procedure applies there, so that whoever finishes a run that died
(SIGKILL, a lost controller) runs the same procedure this run would have.
"""
from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ..errors import DeployError, DryRunWrite, Interrupted, LockLost
from ..steps.base import STEPS, Outcome, Step
from .model import Phase, StepCall, load_playbook, overlapping
from .results import Reporter, RunResult, StepRecord


def run_playbook(ctx, name: str, reporter: Reporter | None = None, *, procedure: bool = False) -> RunResult:
    """Run a playbook; on a failing or interrupted phase, run its on_failure procedure.

    `procedure` marks a playbook run as the on_failure procedure of another.
    """
    book = load_playbook(name, ctx.config)
    result = RunResult(book.name, ctx.run_id, dry_run=ctx.dry_run, ends=book.ends, says=book.says)
    ctx.journal.record("playbook_start", playbook=book.name, dry_run=ctx.dry_run)
    for group in overlapping(book.phases):
        lead = group[0]  # phases that run at the same time fail the same way (model._check_overlaps)
        where = "+".join(ph.name for ph in group)
        if not ctx.dry_run:
            if procedure:
                ctx.record_progress(procedure=book.name, phase=where)
            else:
                ctx.record_progress(playbook=book.name, phase=where, on_failure=lead.on_failure, procedure=None)
        try:
            if len(group) == 1 or ctx.dry_run:  # a dry-run describes them in order
                for phase in group:
                    ctx.journal.record("phase", playbook=book.name, phase=phase.name)
                    lead = phase
                    _run_phase(ctx, book.name, phase, result, reporter)
            else:
                _run_together(ctx, book.name, group, result, reporter)
        except _PhaseFailed as failed:
            _failed(ctx, book.name, failed.phase, failed.error, result, reporter, procedure)
            return result
        except DeployError as exc:
            _failed(ctx, book.name, lead, exc, result, reporter, procedure)
            return result
    ctx.journal.record("playbook_done", playbook=book.name)
    return result


class _PhaseFailed(Exception):
    def __init__(self, phase: Phase, error: DeployError):
        super().__init__(error.one_line())
        self.phase, self.error = phase, error


def _run_together(ctx, book: str, group: list[Phase], result: RunResult, reporter) -> None:
    """Phases joined by runs_with, each in its own thread; the first to fail stops the others' commands.

    Stopping is the interrupt's own mechanism: every host refuses new commands
    and kills the running ones, until the on_failure procedure accepts
    commands again. The failure reported is the first one, not the stops it caused.
    """
    first: list[tuple[Phase, DeployError]] = []
    guard = threading.Lock()
    stop = threading.Event()

    def branch(phase: Phase) -> None:
        ctx.journal.record("phase", playbook=book, phase=phase.name)
        try:
            _run_phase(ctx, book, phase, result, reporter, stop)
        except DeployError as exc:
            with guard:
                if stop.is_set():
                    return  # a stop the first failure caused
                stop.set()
                first.append((phase, exc))
            for host in ctx.every_host:
                host.cancel()

    with ThreadPoolExecutor(max_workers=len(group)) as pool:
        for future in [pool.submit(branch, phase) for phase in group]:
            future.result()
    if first:
        raise _PhaseFailed(*first[0])


def _run_phase(ctx, book: str, phase: Phase, result: RunResult, reporter, stop=None) -> None:
    """`stop`: set when a phase running at the same time failed; this one stops before its next step."""
    if phase.stage is None:
        return _run_phase_steps(ctx, book, phase, result, reporter, stop)
    stage = (ctx.options.get("stages") or {}).get(phase.stage)
    if stage is None and ctx.dry_run:  # a procedure described by name on one stage (dry-run of every playbook)
        return _run_phase_steps(ctx, book, phase, result, reporter, stop)
    if stage is None:
        raise DeployError(f"playbook {book}: phase {phase.name} runs on the {phase.stage} stage, but the run "
                          f"names no {phase.stage} stage", hint="run it through the command that names it "
                          "(deploykit transfer --from ... --to ...)")
    with ctx.focus(stage):
        _run_phase_steps(ctx, book, phase, result, reporter, stop)


def _run_phase_steps(ctx, book: str, phase: Phase, result: RunResult, reporter, stop=None) -> None:
    if phase.batches and getattr(ctx, "batch", None) is None:
        from .batches import run_batches

        def steps(ph):
            _run_steps(ctx, book, ph, result, reporter, stop)

        def book_phases(name):
            for ph in load_playbook(name, ctx.config).phases:
                ctx.journal.record("phase", playbook=name, phase=ph.name)
                _run_steps(ctx, name, ph, result, reporter, stop)
        return run_batches(ctx, book, phase, result, reporter, steps, book_phases)
    _run_steps(ctx, book, phase, result, reporter, stop)


def _run_steps(ctx, book: str, phase: Phase, result: RunResult, reporter, stop=None) -> None:
    _run_hooks(ctx, "before", phase.name, book, result, reporter)
    for call in phase.steps:
        _check_interrupt(ctx, stop)
        _run_step(ctx, book, phase.name, call, result, reporter)
    _run_hooks(ctx, "after", phase.name, book, result, reporter)
    _check_interrupt(ctx, stop)


def _failed(ctx, book: str, phase: Phase, exc: DeployError, result: RunResult, reporter, procedure: bool) -> None:
    """Record the failure; run the phase's on_failure procedure (unless another run took over)."""
    result.ok = False
    result.error = exc
    result.failed_phase = phase.name
    result.refused = phase.before_changes
    ctx.journal.record("playbook_failed", playbook=book, phase=phase.name, error=exc.one_line())
    if isinstance(exc, LockLost) or ctx.lock_lost:
        return  # someone else finishes: change nothing more
    if phase.on_failure and not ctx.dry_run and not procedure:
        ctx.failure = exc
        ctx.accept_commands()
        _stop_leftovers(ctx)
        ctx.journal.record("on_failure", playbook=book, procedure=phase.on_failure)
        ctx.in_procedure = True
        try:
            result.recovery = run_playbook(ctx, phase.on_failure, reporter, procedure=True)
        finally:
            ctx.in_procedure = False


def _check_interrupt(ctx, stop=None) -> None:
    if ctx.lock_lost:
        raise LockLost(f"the lock of {ctx.lock_lost} was taken over by another run")
    if ctx.interrupted is not None and not ctx.in_procedure:
        raise Interrupted(f"interrupted by signal {ctx.interrupted}")
    if stop is not None and stop.is_set():
        raise DeployError("stopped: a phase running at the same time failed")


def _stop_leftovers(ctx) -> None:
    """Before a procedure runs: no long command of this run may still run on a host (after a lost connection)."""
    for host in ctx.hosts:
        try:
            killed = host.kill_marked(f"DEPLOYKIT_TRACK={ctx.run_id}")
        except DeployError:
            continue
        if killed:
            ctx.journal.record("killed_leftovers", host=host, pids=killed)


def _hosts_for(ctx, scope: str):
    if scope == "controller":
        return [None]
    if scope == "primary":
        return [ctx.primary]
    if scope == "all":
        return list(ctx.hosts)
    return [h for h in ctx.hosts if scope in h.roles]


def _run_step(ctx, book: str, phase: str, call: StepCall, result: RunResult, reporter) -> None:
    """Run one step on each host of its scope, the hosts in parallel (Fabric's ThreadingGroup).

    Every host's outcome is recorded, in host order, before the first failure is raised.
    """
    step = STEPS[call.step](call.options)
    scope = call.scope or step.scope
    hosts = [h for h in _hosts_for(ctx, scope) if step.wanted(ctx, h) and step.applies(ctx, h)]
    if len(hosts) > 1:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            outcomes = list(pool.map(lambda h: _on_host(ctx, book, phase, step, h), hosts))
    else:
        outcomes = [_on_host(ctx, book, phase, step, h) for h in hosts]
    error = None
    for host, (rec, exc) in zip(hosts, outcomes):
        _emit(ctx, result, rec, host, reporter)
        if exc is not None and error is None and not step.continue_on_error:
            error = exc
    if error is not None:
        failed = [(h, exc) for h, (_, exc) in zip(hosts, outcomes) if exc is not None and h is not None]
        tolerate = getattr(ctx, "tolerate", None)
        if tolerate is not None and failed and tolerate(failed):
            return  # a batch of a rolling release within max_fail: those hosts are put back, the others go on
        raise error


def _on_host(ctx, book: str, phase: str, step: Step, host) -> tuple[StepRecord, DeployError | None]:
    hname = host.name if host else "controller"
    start, started = time.monotonic(), time.time()

    def record(status, message="", diff=""):
        return StepRecord(book, phase, step.name, hname, status, time.monotonic() - start, message, diff, started)

    if ctx.dry_run and not step.read_only:
        return StepRecord(book, phase, step.name, hname, "planned", 0.0, step.describe(ctx, host), "", started), None
    batch = getattr(ctx, "batch", None)
    where = {"batch": batch["batch"], "of": batch["of"]} if batch and batch.get("batch") else {}
    ctx.journal.record("step_start", host=host, playbook=book, phase=phase, step=step.name, **where)
    ctx.doing(book, phase, step.name)
    try:
        outcome = step.run(ctx, host) or Outcome()
    except DryRunWrite as exc:
        err = DryRunWrite(f"{hname}: step {step.name} tried to change the host during a dry-run: {exc}",
                          hint=exc.hint)
        return record("failed", err.one_line()), err
    except DeployError as exc:
        return record("failed", exc.one_line()), exc
    except Exception as exc:  # a bug or an unexpected library error: keep it, fail the step
        msg = f"{type(exc).__name__}: {exc}"
        ctx.journal.record("traceback", host=host, step=step.name, text=traceback.format_exc())
        err = DeployError(f"{hname}: step {step.name} failed: {msg}", hint="see the journal for the traceback")
        return record("failed", msg), err
    finally:
        ctx.doing(None)
    return record("changed" if outcome.changed else "ok", outcome.message, outcome.diff), None


def _emit(ctx, result: RunResult, rec: StepRecord, host, reporter) -> None:
    result.records.append(rec)
    ctx.journal.record("step", host=host, playbook=rec.playbook, phase=rec.phase, step=rec.step,
                       status=rec.status, seconds=round(rec.seconds, 3), message=rec.message, diff=rec.diff)
    if reporter:
        reporter(rec)


def _run_hooks(ctx, when: str, phase: str, book: str, result: RunResult, reporter) -> None:
    for hook in ctx.config.hooks.get(when, {}).get(phase, []):
        call = StepCall("hook", hook["on"], {"run": hook["run"], "label": f"{when}:{phase}",
                                             "timeout": hook.get("timeout")})
        _run_step(ctx, book, phase, call, result, reporter)
