"""Finishing a run that died: the next mutating command on the stage does what it would have done.

A run killed with SIGKILL, one whose controller was lost, or one stopped at
once by a second Ctrl-C leaves its lock, and in the primary's lock its
progress: the phase it reached and the procedure for that point (abort,
recover, finish). The next command that needs the lock takes it over only
when the holder is provably gone (see lock.assess), stops the dead run's
long commands that still run on the hosts (found by their recorded token),
runs that procedure with the dead run's ids, and stops there, saying so.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import layout
from ..state import lock as stage_lock
from ..errors import DeployError, LockHeld
from ..transport.host import q
from . import Reporter, RunResult, load_playbook, run_playbook
from ..errors import ConfigError


@dataclass
class Holder:
    host: object
    holder: dict
    verdict: stage_lock.Verdict


def holders(ctx) -> list[Holder]:
    """Other runs' locks on the stage's hosts, in host order; every host is read at once (the first contact
    with each: its connection and agent start here, and a fleet's do not wait for one another)."""
    hosts = list(ctx.hosts)
    if len(hosts) > 1:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            read = list(pool.map(stage_lock.read_lock, hosts))  # the first host's error is raised
    else:
        read = [stage_lock.read_lock(h) for h in hosts]
    out = []
    for host, (holder, now) in zip(hosts, read):
        if holder and holder.get("run_id") != ctx.run_id:
            verdict = stage_lock.assess(holder, now, ctx.config.lock.stale_after, ctx.config.journal_dir)
            out.append(Holder(host, holder, verdict))
    return out


def pending_procedure(config, progress: dict | None) -> str | None:
    """The procedure a run left unfinished, judging by its last recorded progress.

    None when there is none, or when it declares `ends: refused` (it only
    frees the lock of a run that changed nothing).
    """
    progress = progress or {}
    proc = progress.get("procedure") or progress.get("on_failure")
    if not proc:
        return None
    try:
        refused = load_playbook(proc, config).ends == "refused"
    except ConfigError:
        refused = False  # a procedure no longer there: report it as pending rather than drop it
    return None if refused else proc


def take_over(ctx, reporter: Reporter | None = None) -> RunResult | None:
    """Before a mutating command: refuse a live holder; finish a dead one's work.

    Returns the result of finishing a dead run (the command then stops), or
    None when the command may go on (no lock, or a dead run with nothing left).
    """
    held = holders(ctx)
    if not held:
        return None
    live = [h for h in held if not h.verdict.gone]
    if live:
        h = live[0]
        raise LockHeld(f"{h.host.name}: locked by {h.verdict.describe()}")
    if ctx.dry_run:
        primary = next((h for h in held if h.host is ctx.primary), None)
        proc = pending_procedure(ctx.config, primary.holder.get("progress") if primary else None)
        ctx.journal.record("takeover_planned", holders=[h.holder.get("run_id") for h in held], procedure=proc)
        ctx.state.dead_run = {"run_id": held[0].holder.get("run_id"), "procedure": proc,
                                 "why": held[0].verdict.why}
        return None
    info = ctx.holder_info()
    for h in sorted(held, key=lambda h: not h.host.is_primary):
        stage_lock.take_over(h.host, h.holder.get("run_id", ""), info)
        ctx.locked_on(h.host)
        ctx.journal.record("takeover", host=h.host, holder=h.holder, why=h.verdict.why)
    dead_ids = sorted({h.holder.get("run_id", "") for h in held})
    for host in ctx.hosts:  # the dead run's long commands may still run (a lost connection)
        for rid in dead_ids:
            try:
                killed = host.kill_marked(f"DEPLOYKIT_TRACK={rid}")
            except DeployError:
                continue
            if killed:
                ctx.journal.record("killed_leftovers", host=host, run=rid, pids=killed)
            host.run(f"rm -f {q(layout.pid_file(host, rid))}", check=False)
    primary = next((h for h in held if h.host is ctx.primary), None)
    progress = (primary.holder.get("progress") if primary else None) or {}
    proc = pending_procedure(ctx.config, progress)
    dead = primary or held[0]
    ctx.state.dead_run = {"run_id": dead.holder.get("run_id"), "command": dead.holder.get("command"),
                             "phase": progress.get("phase"), "procedure": proc, "why": dead.verdict.why}
    if proc is None:
        # it died before it changed anything: its lock is ours now, the command goes on
        return None
    ctx.import_state(progress.get("context") or {})
    ctx.failure = DeployError(f"run {dead.holder.get('run_id')} ({dead.holder.get('command')}) did not finish: "
                              f"{dead.verdict.why}")
    ctx.in_procedure = True
    try:
        result = run_playbook(ctx, proc, reporter, procedure=True)
    finally:
        ctx.in_procedure = False
    result.data["finished_run"] = ctx.state.dead_run
    return result
