"""A rolling release's own steps: plan the batches, refuse migrations the old code does not survive,
drain and put back each host at the balancer, judge each batch (the gate), record what each host reached."""
from __future__ import annotations

import time

from ..state.releases import Registry
from ..work import balance
from ..work import rollout as plan
from ..work.migration_safety import counts_text, refuse_unsafe
from ..work.registry import release_entry, save_registry
from .base import Outcome, Step, register


def _rolled_hosts(ctx) -> list[str]:
    """The hosts a rollout switches in batches: the app hosts; with workers: around_migrate, not the hosts
    that are only workers (those are switched right after the migrate)."""
    hosts = [h for h in ctx.hosts if "app" in h.roles or h.is_primary]
    if ctx.config.rollout.workers == "around_migrate":
        hosts = [h for h in hosts if not plan.worker_only(h)]
    return [h.name for h in hosts]


@register
class PlanRollout(Step):
    """Cut the app hosts into batches (rollout.batches or --batch); resume the hosts an earlier run left."""

    name = "plan_rollout"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        spec = ctx.options.get("batches") or ctx.config.rollout.batches
        resumed = plan.resumable(Registry.load(ctx.primary), ctx.revision.commit) if ctx.revision else None
        if resumed and not ctx.dry_run:
            ctx.release_id = resumed["id"]  # the same release: its builds on the hosts are reused
            if resumed.get("status") == "live":  # partly rolled: the way back is still the release before it
                ctx.previous = Registry.load(ctx.primary).get(resumed.get("previous")) if resumed.get("previous") \
                    else None
        ctx.state.rollout = plan.new_rollout(_rolled_hosts(ctx), spec, ctx.config.rollout.max_fail,
                                             (resumed or {}).get("rollout"))
        state = ctx.state.rollout
        balancer = balance.check(ctx, state["batches"])
        state["marks"] = balance.mark(ctx)  # the first batch's gate counts from here (the migrate included)
        sizes = " + ".join(str(len(b)) for b in state["batches"]) or "none"
        done = [h for h, s in state["hosts"].items() if s == "done"]
        note = (f"; resumes {resumed['id']} (run {state['resumed_from']}): {len(done)} host(s) done are skipped"
                if resumed else "")
        return Outcome(message=f"{len(state['batches'])} batch(es) of {sizes} host(s){note}; {balancer}",
                       diff="\n".join(f"batch {i + 1}: {', '.join(b)}" for i, b in enumerate(state["batches"])))


@register
class RefuseUnsafeMigrations(Step):
    """Refuse, before anything live changes, migrations the old code still serving does not survive."""

    name = "refuse_unsafe_migrations"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        doc = ctx.state.migration_safety or {}
        if ctx.previous is None:
            return Outcome(message=f"a first release: no old code serves, nothing to refuse ({counts_text(doc)})")
        refuse_unsafe(doc)
        return Outcome(message=f"every operation is safe while the old code serves ({counts_text(doc)})")


def _targets(ctx, host) -> list:
    """The host; run `on: controller`, every host of the run (a rolling batch: its hosts, in one change)."""
    return [host] if host is not None else [h for h in ctx.hosts if "app" in h.roles or h.is_primary]


class _BalancerStep(Step):
    """drain and undrain: the host, or run `on: controller` (a rolling batch) every host of the batch at once."""

    scope = "app"
    verb = ""

    def describe(self, ctx, host):
        return "; ".join(balance.describe(ctx, h, self.verb) for h in _targets(ctx, host))

    def run(self, ctx, host):
        return Outcome(**getattr(balance, self.verb)(ctx, _targets(ctx, host)))


@register
class Drain(_BalancerStep):
    """Take the host out of the balancer: no new request reaches it, the ones in flight end.

    `on: controller` (a rolling batch): every host of the batch at once, one reload of the balancer.
    """

    name = verb = "drain"


@register
class Undrain(_BalancerStep):
    """Put the host back into the balancer (after its health check passed); `on: controller`: the batch's."""

    name = verb = "undrain"


@register
class Gate(Step):
    """After a batch: wait rollout.pause (not after the last), then judge the errors the balancer saw."""

    name = "gate"
    scope = "controller"
    read_only = True  # it reads the balancer's answers; a dry-run describes the batches without it

    def run(self, ctx, host):
        spec, batch = ctx.config.rollout, ctx.batch or {}
        last = batch.get("batch") == batch.get("of")
        waited = 0.0
        if spec.pause and not last and not ctx.dry_run:
            ctx.progress(None, f"pause {spec.pause:g}s before batch {batch.get('batch', 0) + 1}")
            waited = _pause(ctx, spec.pause)
        state = ctx.state.rollout or {}
        counts = balance.errors_since(ctx, state.get("marks"))
        if not ctx.dry_run:  # the next batch counts from where this count ended (or from now)
            state["marks"] = (counts or {}).pop("marks", None) or balance.mark(ctx)
        ok, text = plan.gate_verdict(counts, spec.max_error_rate, spec.min_requests)
        ctx.journal.record("gate", batch=batch.get("batch"), ok=ok, counts=counts, waited=round(waited, 3))
        if not ok:
            raise plan.RolloutFailed(f"batch {batch.get('batch')} of {batch.get('of')}: the gate failed: {text}",
                                     hint="look at the app's errors on the batch's hosts; the rollout is undone, "
                                          "fix and run the same command again (it resumes)")
        return Outcome(message=f"batch {batch.get('batch')}/{batch.get('of')}: {text}"
                               + (f"; paused {waited:.1f}s" if waited else ""))


def _pause(ctx, seconds: float) -> float:
    """Sleep, but wake for an interrupt (the runner stops the rollout right after)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds and ctx.interrupted is None:
        time.sleep(min(0.1, seconds - (time.monotonic() - start)))
    return time.monotonic() - start


@register
class RecordRollout(Step):
    """Record the undone rollout in the registry: which host reached what; the next run resumes from it."""

    name = "record_rollout"
    scope = "controller"
    continue_on_error = True

    def run(self, ctx, host):
        state = ctx.state.rollout or {}
        registry = Registry.load(ctx.primary)
        entry = registry.get(ctx.release_id) or registry.add(release_entry(ctx))
        entry.update(status="failed", error=ctx.failure.one_line() if ctx.failure else None, undone_by=ctx.run_id,
                     rollout={**state, "run_id": ctx.run_id, "resumable": True})
        save_registry(ctx, registry)
        rows = plan.summary_rows(state)
        return Outcome(changed=True, message=", ".join(f"{r['host']}: {r['state']}" for r in rows))
