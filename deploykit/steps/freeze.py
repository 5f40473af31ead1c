"""freeze_writes and unfreeze_writes: the write freeze of a transfer, on every app host (work/freeze.py).

The freeze's start and end are journaled ("freeze", "unfreeze" with the
frozen seconds, measured from the flag the host keeps), and the seconds are
kept in the run state for the ending line. unfreeze_writes is safe on every
exit path: no freeze on is no error.
"""
from __future__ import annotations

from .. import layout
from ..errors import DeployError
from ..work import freeze as work
from .base import Outcome, Step, register


@register
class FreezeWrites(Step):
    """Freeze writes (freeze.mode): the flag, the writes in flight drained, in stop_writers mode the writers stopped."""

    name = "freeze_writes"
    scope = "app"

    def describe(self, ctx, host):
        spec = ctx.config.freeze
        on = work.state(host)
        if on is not None:
            return f"writes already frozen since {on.get('since')} ({on.get('mode')}): would keep that freeze"
        if spec.mode == "maintenance":
            try:
                work.check_middleware(ctx, host)  # read-only: the live release's settings
            except DeployError as exc:
                return f"would refuse: {exc.one_line()}"
        what = (f"stop {', '.join(p.name for p in work.writers(ctx)) or 'no process'}" if spec.mode == "stop_writers"
                else "have the app answer writes 503")
        return (f"would create {layout.freeze_flag(host)}, wait up to {spec.drain_timeout:g} s for the writes in "
                f"flight, then {what}")

    def run(self, ctx, host):
        doc = work.freeze(ctx, host)
        with ctx.lock:
            ctx.state.freeze[host.name] = {"since": doc.get("since"), "mode": doc["mode"]}
        ctx.journal.record("freeze", host=host, mode=doc["mode"], since=doc.get("since"), created=doc["created"],
                           waited=doc["waited"], drain_seconds=doc["drain_seconds"], stopped=doc["stopped"])
        drained = "after writes in flight ended" if doc["waited"] else "no write in flight"
        kept = "" if doc["created"] else " (kept the freeze already on)"
        stopped = f"; stopped {', '.join(doc['stopped'])}" if doc["stopped"] else ""
        return Outcome(changed=doc["created"] or bool(doc["stopped"]),
                       message=f"writes frozen ({doc['mode']}), {drained}{kept}{stopped}")


@register
class UnfreezeWrites(Step):
    """End the write freeze (nothing to do when none is on): writers started again, the flag removed."""

    name = "unfreeze_writes"
    scope = "app"

    def describe(self, ctx, host):
        on = work.state(host)
        if on is None:
            return "no freeze on: nothing to do"
        start = ", then start the writers" if on.get("mode") == "stop_writers" else ""
        return f"would end the freeze on since {on.get('since')} ({on.get('mode')}){start}"

    def run(self, ctx, host):
        doc = work.unfreeze(ctx, host)
        if doc is None:
            return Outcome(message="no freeze on")
        seconds = doc.get("seconds")
        with ctx.lock:
            ctx.state.freeze.pop(host.name, None)
            if seconds is not None and (ctx.state.freeze_seconds or 0) < seconds:
                ctx.state.freeze_seconds = seconds
                ctx.outcome["freeze_seconds"] = seconds
        ctx.journal.record("unfreeze", host=host, mode=doc["mode"], seconds=seconds, started=doc["started"])
        started = f"; started {', '.join(doc['started'])}" if doc["started"] else ""
        took = f" after {seconds:.2f} s" if seconds is not None else ""
        return Outcome(changed=True, message=f"writes accepted again{took}{started}")
