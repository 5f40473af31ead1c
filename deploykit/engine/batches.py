"""Phases run in batches: a rolling release's rollout, and the putting back of the hosts it switched.

`batches: rollout` runs the phase's steps once per batch of the run's
rollout plan (work/rollout.py, made by the plan_rollout step), each time on
that batch's hosts only (Context.narrow). A host whose step fails drops out
of the rest of its batch; while the stage's failed hosts stay within
rollout.max_fail, each is put back on the previous release at the end of
its batch (playbooks/rollout_host_back.yml, on that host alone) and the
rollout goes on; one more, and the phase fails: its on_failure procedure
(rollout_undo) puts back every host that was switched.

`batches: back` runs the phase's steps once per host to put back, one host
at a time, in the reverse order of their batches: the other hosts keep
serving while each is drained, switched back, restarted and checked. A host
that cannot be put back is recorded and the others still are; the phase
fails at the end, naming it.
"""
from __future__ import annotations

import time

from ..errors import DeployError
from ..work import rollout as plan


def run_batches(ctx, book: str, phase, result, reporter, run_steps, run_book_phases) -> None:
    """`run_steps(phase)`: the runner's steps-of-a-phase; `run_book_phases(name)`: a playbook's phases, as
    steps of this run (used to put one host back)."""
    state = ctx.state.rollout
    if not state and ctx.dry_run:  # a procedure described by name (the dry-run of every playbook): its steps once
        return run_steps(phase)
    if not state:
        raise DeployError(f"playbook {book}: phase {phase.name} runs in batches, but the run has no rollout plan",
                          hint="run it through 'deploykit release' (its plan_rollout step makes the plan)")
    if phase.batches == "back":
        return _run_back(ctx, phase, state, run_steps)
    batches = [b for b in state["batches"] if any(state["hosts"].get(h) != "done" for h in b)]
    total = len(state["batches"])
    for batch in batches:
        index = state["batches"].index(batch) + 1
        hosts = [h for h in batch if state["hosts"].get(h) != "done"]
        ctx.journal.record("batch", batch=index, of=total, hosts=hosts)
        started = time.time()
        with ctx.narrow(hosts, batch=index, of=total, started=started, tolerate=_tolerate(ctx, state)):
            run_steps(phase)
            for name in hosts:
                if state["hosts"].get(name) == "switched":
                    plan.mark(state, name, "done")
        failed_now = [h for h in hosts if state["hosts"].get(h) == "failed"]
        for name in failed_now:  # within max_fail: back on the previous release, the rollout goes on
            with ctx.narrow([name], batch=index, of=total, started=started, tolerate=None):
                run_book_phases("rollout_host_back")
            plan.mark(state, name, "back")
        ctx.journal.record("batch_done", batch=index, of=total, hosts=hosts,
                           done=[h for h in hosts if state["hosts"].get(h) == "done"], failed=failed_now,
                           seconds=round(time.time() - started, 3))
        ctx.record_progress()


def _tolerate(ctx, state):
    def tolerate(failed: list) -> bool:
        """Hosts whose step failed: drop them from the batch; True while the stage stays within max_fail."""
        for host, exc in failed:
            plan.mark(state, host.name, "failed", exc.one_line())
        ctx.drop_hosts([host for host, _ in failed])
        ctx.record_progress()
        return not plan.over_max_fail(state)
    return tolerate


def _run_back(ctx, phase, state: dict, run_steps) -> None:
    could_not: list[str] = []
    for name in plan.to_put_back(state):
        ctx.journal.record("put_back", target=name)
        try:
            with ctx.narrow([name], batch=None, of=None, started=time.time(), tolerate=None):
                run_steps(phase)
        except DeployError as exc:
            could_not.append(f"{name}: {exc.one_line()}")
            state.setdefault("failures", {})[name] = exc.one_line()
            continue
        plan.mark(state, name, "back")
        ctx.record_progress()
    if could_not:
        raise DeployError(f"{len(could_not)} host(s) could not be put back on the previous release: "
                          f"{'; '.join(could_not)}", hint="fix those hosts, then run the same command again")
