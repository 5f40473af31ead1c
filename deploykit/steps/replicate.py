"""A blue/green transfer by logical replication (mode replicate): seed, catch up, cut over under a freeze budget.

The run's stage is the source; the seed runs with the target in focus (its
registry records the new database's name). Every procedure of a transfer runs
drop_replication: a slot left behind would keep the source's WAL forever.
"""
from __future__ import annotations

import time

from ..errors import PreflightFailed
from ..work import replication as work
from ..work.transfer import NOT_A_TRANSFER, ends as _ends
from .base import Outcome, Step, register


def _docs(ctx) -> dict:
    return ctx.state.transfer.setdefault("replication", {})


def _frozen_for(ctx) -> float:
    """Seconds writes have been frozen on the source, from the freeze flag's own time."""
    since = [f.get("since") for f in ctx.state.freeze.values() if f.get("since")]
    return max(0.0, time.time() - min(since)) if since else 0.0


def max_freeze(ctx) -> float:
    return float(ctx.options.get("max_freeze") or 10.0)


@register
class ReplicationCheck(Step):
    """Refuse, changing nothing, a replicate transfer the source or target cannot do (wal_level, roles, keys)."""

    name = "replication_check"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        ends = _ends(ctx)
        if ends is None:
            return Outcome(message=NOT_A_TRANSFER)
        if ctx.options.get("mode") != "replicate":
            return Outcome(message=f"mode {ctx.options.get('mode')}: no replication")
        problems = work.blockers(ctx, *ends)
        if problems:
            raise PreflightFailed("logical replication is not possible: " + "; ".join(problems),
                                  hint="use --mode copy (writes frozen for the dump, copy and restore)")
        return Outcome(message=f"logical replication possible for {', '.join(d.spec.alias for d in work.pg_drivers(ctx))}")


@register
class SeedReplica(Step):
    """A new database beside the target's with the source's schema, subscribed to the source: the copy begins."""

    name = "seed_replica"
    scope = "controller"

    def describe(self, ctx, host):
        return "would create a database beside the target's, a publication and a slot on the source, a subscription"

    def run(self, ctx, host):
        ends = _ends(ctx)
        if ends is None:
            return Outcome(message=NOT_A_TRANSFER)
        src, dst = ends
        state = ctx.state.restore_state(ctx.backup_id, ctx.run_id)
        notes = []
        for driver in work.pg_drivers(ctx):
            doc = _docs(ctx).setdefault(driver.spec.alias, {})
            if doc.get("seeded"):
                continue
            if not doc.get("new"):  # recorded, and handed to discard_restore, before the database exists
                doc["new"] = driver.claim(ctx, dst, "restore", ctx.run_id)
                state["built"].append({"engine": driver.engine, "alias": driver.spec.alias, "name": doc["new"],
                                       "label": ctx.run_id, "item": driver.item_name})
                ctx.record_progress()
            work.seed(ctx, driver, src, dst, doc, ctx.record_progress)
            doc["seeded"] = True
            ctx.record_progress()
            ctx.journal.record("replication_seed", host=dst, alias=driver.spec.alias, name=doc["name"],
                               new=doc["new"], source=doc["source"])
            notes.append(f"{driver.spec.alias}: {doc['new']} on {dst.name} subscribed to {src.name} as {doc['name']}")
        return Outcome(changed=bool(notes), message="; ".join(notes) or "seeded already")


@register
class CatchUp(Step):
    """Wait, the source serving, until every table is copied and the target is within a moment of the source."""

    name = "catch_up"
    scope = "controller"

    def run(self, ctx, host):
        ends = _ends(ctx)
        if ends is None:
            return Outcome(message=NOT_A_TRANSFER)
        src, dst = ends
        notes = []
        for driver in work.pg_drivers(ctx):
            doc = _docs(ctx)[driver.spec.alias]

            def report(now, alias=driver.spec.alias):
                ctx.progress(dst, f"{alias}: {now['ready']}/{now['tables']} tables copied, {now['lag']} bytes "
                                  "behind the source", kind="replication", **now)
            now = work.catch_up(ctx, driver, src, dst, doc, report, float(ctx.options.get("catch_up_timeout") or 3600))
            notes.append(f"{driver.spec.alias}: {now['tables']} tables copied, {now['lag']} bytes behind")
        return Outcome(message="; ".join(notes))


@register
class CutOver(Step):
    """Writes frozen: wait until the target applied the source's current WAL position, copy the sequences, drop
    the subscription, slot and publication. Past --max-freeze: stopped, the source unfrozen, nothing switched."""

    name = "cut_over"
    scope = "controller"

    def run(self, ctx, host):
        ends = _ends(ctx)
        if ends is None:
            return Outcome(message=NOT_A_TRANSFER)
        src, dst = ends
        deadline = time.monotonic() + max_freeze(ctx) - _frozen_for(ctx)
        notes = []
        for driver in work.pg_drivers(ctx):
            doc = _docs(ctx)[driver.spec.alias]
            start = time.monotonic()
            lsn = work.wait_applied(ctx, driver, src, doc, deadline)
            waited = time.monotonic() - start
            sequences = work.sync_sequences(ctx, driver, src, dst, doc)
            gone = work.drop(ctx, driver, src, dst, doc)
            ctx.record_progress()
            ctx.journal.record("replication_cutover", host=dst, alias=driver.spec.alias, lsn=lsn,
                               wait_seconds=round(waited, 3), sequences=sequences, dropped=gone)
            notes.append(f"{driver.spec.alias}: applied up to {lsn} after {waited:.2f}s, {sequences} sequence(s) "
                         f"set, dropped {', '.join(gone) or 'nothing'}")
        return Outcome(changed=True, message="; ".join(notes))


@register
class FreezeBudget(Step):
    """Stop (the source unfrozen, nothing switched) when the freeze has lasted longer than --max-freeze."""

    name = "freeze_budget"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if _ends(ctx) is None or ctx.options.get("mode") != "replicate":
            return Outcome(message="no freeze budget (not a replicate transfer)")
        frozen, budget = _frozen_for(ctx), max_freeze(ctx)
        if frozen > budget:
            raise work.FreezeBudgetExceeded(f"writes have been frozen {frozen:.2f} s, over --max-freeze {budget:g} s",
                                            hint="nothing was switched and the source takes writes again; raise "
                                                 "--max-freeze or use --mode copy")
        return Outcome(message=f"frozen {frozen:.2f} s of {budget:g} s")


@register
class DropReplication(Step):
    """Drop the subscription, the slot and the publication a replicate transfer made (by their recorded name)."""

    name = "drop_replication"
    scope = "controller"

    def run(self, ctx, host):
        ends = _ends(ctx)
        docs = ctx.state.transfer.get("replication") or {}
        if ends is None or not docs:
            return Outcome(message="no replication made")
        src, dst = ends
        notes = []
        for driver in work.pg_drivers(ctx):
            doc = docs.get(driver.spec.alias)
            if doc:
                gone = work.drop(ctx, driver, src, dst, doc)
                ctx.record_progress()
                if gone:
                    notes.append(f"{driver.spec.alias}: dropped {', '.join(gone)} {doc['name']}")
        return Outcome(changed=bool(notes), message="; ".join(notes) or "nothing of it left")
