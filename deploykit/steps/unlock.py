"""`unlock`: another run's lock, looked at and freed only when freeing it cannot lose data."""
from __future__ import annotations

from .. import layout
from ..errors import LockHeld
from ..state import lock as stage_lock
from .base import Outcome, Step, register


def _problems(rows: list[dict], stage: str) -> list[str]:
    """Why freeing these locks now could lose data (nothing: they may go)."""
    out = []
    for r in rows:
        if not r["gone"]:
            out.append(f"{r['host']}: {r['describe']}")
        if r["pending"]:
            out.append(f"{r['host']}: run {r.get('run_id')} ({r.get('command')}) stopped at "
                       f"{(r.get('progress') or {}).get('phase')} with its {r['pending']} not done: any "
                       f"command on the stage (e.g. 'deploykit {r.get('command')} --host {stage}') finishes it")
        for p in r["running"]:
            out.append(f"{r['host']}: pid {p['pid']} ({p['label']}) of run {r.get('run_id')} still runs")
    return out


@register
class InspectLock(Step):
    """Read every host's lock: its holder, whether that run is provably gone, what it left to do."""

    name = "inspect_lock"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        rows = []
        for h, proc in ctx.foreign_locks():
            running = h.host.helper("runs", "tracked", {
                "pid_file": layout.pid_file(h.host, h.holder.get("run_id"))})["running"]
            rows.append({"host": h.host.name, **h.holder, "gone": h.verdict.gone, "why": h.verdict.why,
                         "state": h.verdict.state,
                         "pending": proc, "running": running, "describe": h.verdict.describe()})
        ctx.state.lock_holders = rows
        if not rows:
            return Outcome(message="no lock held")
        return Outcome(message="; ".join(f"{r['host']}: {r['describe']}" for r in rows))


@register
class FreeLock(Step):
    """Free the locks inspect_lock found, all or none: refused while one may be alive or left work (--force)."""

    name = "free_lock"
    scope = "controller"

    def _check(self, ctx) -> list[str]:
        problems = _problems(ctx.state.lock_holders, ctx.stage)
        if problems and not ctx.options.get("force"):
            raise LockHeld("; ".join(problems), hint="freeing the lock now could lose data; --force frees it anyway")
        return problems

    def describe(self, ctx, host):
        rows = ctx.state.lock_holders
        if not rows:
            return "no lock to free"
        problems = _problems(rows, ctx.stage)
        verb = "would free" if not problems else ("would FORCE" if ctx.options.get("force") else "would refuse")
        return "; ".join(f"{r['host']}: {verb} the lock of run {r.get('run_id')} ({r.get('command')})" for r in rows)

    def run(self, ctx, host):
        problems = self._check(ctx)
        for r in ctx.state.lock_holders:
            stage_lock.release(ctx.host(r["host"]), r.get("run_id", ""), force=True)
            r["forced"] = bool(problems)
            ctx.journal.record("unlock", host=ctx.host(r["host"]), holder={k: r.get(k) for k in (
                "run_id", "command", "user", "controller", "pid", "since")}, forced=bool(problems))
        freed = ", ".join(r["host"] for r in ctx.state.lock_holders)
        return Outcome(changed=bool(freed), message=f"freed on {freed}" if freed else "no lock held")
