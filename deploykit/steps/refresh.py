"""An anonymized refresh: refusals, the masking plan, the digests of the originals, the masked copy, the proof.

The run's stage is the target; `stage: source` phases read production
(which is only read). The restore's own swap_restore/discard_restore put the
proved copy in place or drop it; migrate_live, the process and health steps
finish it as after a restore. See work/refresh.py.
"""
from __future__ import annotations

from ..errors import DeployError, PreflightFailed
from ..work import refresh as work
from ..work import transfer as ends_of
from .base import Outcome, Step, register

NOT_A_REFRESH = "not a refresh (no source and target stages): nothing to do"


def _ends(ctx):
    return ends_of.ends(ctx)


@register
class RefreshRefusals(Step):
    """Refuse, changing nothing, a refresh onto its own source, between one database, or without a masking key."""

    name = "refresh_refusals"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        both = ends_of.roles(ctx)
        if both is None:
            return Outcome(message=NOT_A_REFRESH)
        source, target = both
        if source == target:
            raise PreflightFailed(f"--from and --to are both {source}", hint="refresh from production to another stage")
        driver = work.pg_driver(ctx)
        work.mask_key(ctx)
        src, dst = _ends(ctx)
        same = ends_of.same_databases(ends_of.identities(ctx, src), ends_of.identities(ctx, dst))
        if same:
            raise PreflightFailed(f"{source} and {target} use the same database ({', '.join(same)}): a refresh "
                                  f"would replace {source}'s data", hint="give each stage its own database server "
                                  "or name")
        return Outcome(message=f"{source} -> {target}: {driver.spec.name} on distinct servers")


@register
class RefreshPlan(Step):
    """Read the source's tables and models, resolve every rule; a personal-looking column without one stops here."""

    name = "refresh_plan"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        if ends_of.roles(ctx) is None:
            return Outcome(message=NOT_A_REFRESH)
        plan = work.plan_tables(ctx, host, work.pg_driver(ctx))
        ctx.state.refresh["plan"] = plan
        masked = sum(len(s.get("masks", {})) for s in plan["masks"].values())
        return Outcome(message=f"{len(plan['tables'])} table(s), {masked} column(s) masked in "
                               f"{len([s for s in plan['masks'].values() if s.get('masks')])} table(s)"
                               + (f", {len(plan['where'])} reduced by the subset" if plan["where"] else ""))


@register
class RefreshDigests(Step):
    """Open the copy's snapshot of the source and make the run's keys; the keyed digests of every original masked
    value are taken in it by refresh_copy, beside the copy of the tables without rules (controller memory only)."""

    name = "refresh_digests"
    scope = "primary"

    def describe(self, ctx, host):
        return "would digest every original value of the masked columns (kept in memory for the proof)"

    def run(self, ctx, host):
        plan = ctx.state.refresh.get("plan")
        if not plan:
            return Outcome(message=NOT_A_REFRESH)
        got = work.open_snapshot(ctx, host, work.pg_driver(ctx), plan)
        return Outcome(message=f"snapshot open: {got['rows']} row(s) in {got['tables']} table(s); the originals of "
                               f"{got['masked_tables']} masked table(s) are digested beside the copy")


@register
class RefreshCopy(Step):
    """Build the masked copy as a new database beside the target's own: schema, rows, then keys; nothing live changes."""

    name = "refresh_copy"
    scope = "primary"

    def describe(self, ctx, host):
        return "would build a masked copy of the source's database beside this one (a new name), then check it"

    def run(self, ctx, host):
        plan = ctx.state.refresh.get("plan")
        if not plan:
            return Outcome(message=NOT_A_REFRESH)
        src, dst = _ends(ctx)
        built = work.build(ctx, src, dst, work.pg_driver(ctx), plan, ctx.record_progress)
        got = ctx.state.refresh["digests"] = work.memory(ctx)["digest_stats"]  # counts only: digests in memory
        rows = sum(built["rows"].values())
        t = built["timings"]
        return Outcome(changed=True, message=f"{built['name']}: {rows} row(s) in {len(built['rows'])} table(s) "
                                             f"(copy {t['copy']:.2f}s, keys {t['post_data']:.2f}s); "
                                             f"{got['digested']} original value(s) of {got['columns']} column(s) "
                                             f"digested ({t['digests']:.2f}s)"
                                             + (f", {got['skipped_short']} too short to prove anything"
                                                if got["skipped_short"] else ""))


@register
class RefreshProof(Step):
    """Scan the new copy (every text-like column, and a plain pg_dump of it) for any original masked value."""

    name = "refresh_proof"
    scope = "primary"

    def describe(self, ctx, host):
        return "would scan the masked copy and a plain pg_dump of it for every original value"

    def run(self, ctx, host):
        plan = ctx.state.refresh.get("plan")
        if not plan:
            return Outcome(message=NOT_A_REFRESH)
        report = work.prove(ctx, host, work.pg_driver(ctx))
        ctx.state.refresh["proof"] = report
        if isinstance(ctx.state.refresh.get("digests"), dict):  # distinct originals: counted as the proof merges them
            ctx.state.refresh["digests"]["originals"] = report["originals"]
        ctx.journal.record("refresh_proof", host=host, **report)
        if report["found"]:
            where = ", ".join(f"{f['where']} ({f['how']}, {f['count']})" for f in report["found"][:3])
            raise work.ProofFailed(f"{host.name}: {sum(f['count'] for f in report['found'])} original value(s) "
                                   f"found in the masked copy: {where}; it is dropped, the target keeps its data",
                                   hint="add or fix the rules of those columns (deploykit refresh --init-rules "
                                        "suggests them)")
        return Outcome(message=f"{report['checked']} value(s) checked against {report['originals']} original(s): "
                               f"none found ({report['seconds']:.2f}s)")


@register
class RefreshReport(Step):
    """Print and journal what the refresh did: rows per table, columns masked, values checked, values found."""

    name = "refresh_report"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        rf = ctx.state.refresh
        if not rf.get("plan"):
            return Outcome(message=NOT_A_REFRESH)
        built = next((b for b in (ctx.state.restore or {}).get("built", []) if b.get("rows")), {})
        if ctx.dry_run:
            return Outcome(message=f"dry-run: {len(rf['plan']['masked_columns'])} column(s) would be masked")
        proof = rf.get("proof") or {}
        ctx.journal.record("refresh", rows=built.get("rows"), masked=rf["plan"]["masked_columns"],
                           checked=proof.get("checked"), found=len(proof.get("found") or []))
        if not built:
            raise DeployError("the refresh has no copy to report", hint="see the journal")
        return Outcome(message=f"{sum(built['rows'].values())} row(s), {len(rf['plan']['masked_columns'])} "
                               f"column(s) masked, {proof.get('checked', 0)} value(s) checked, "
                               f"{len(proof.get('found') or [])} found")


@register
class RefreshForget(Step):
    """Forget the proof's key and digests (this process's memory), whatever the refresh's outcome."""

    name = "refresh_forget"
    scope = "controller"
    read_only = True
    continue_on_error = True

    def run(self, ctx, host):
        work.forget(ctx)
        return Outcome(message="the proof's key and digests are forgotten")
