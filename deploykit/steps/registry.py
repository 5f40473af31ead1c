"""Recording releases in `.deploykit/releases.json` on every app host."""
from __future__ import annotations

from .base import Outcome, Step, register
from ..state.releases import Registry
from ..work.registry import release_entry, save_registry


@register
class RecordRelease(Step):
    """Record the new release as live (commit, tags, migrations, backup)."""

    name = "record_release"
    scope = "controller"

    def run(self, ctx, host):
        registry = Registry.load(ctx.primary)
        state = ctx.state.migrations or {}
        registry.add({**release_entry(ctx), "migrations": state.get("applied", {}), "leaves": state.get("leaves", {}),
                      "replaced": state.get("replaced", {}), "unmatched": state.get("unmatched", {}),
                      "snapshots": dict(ctx.state.snapshots),
                      **({"rollout": {**ctx.state.rollout, "run_id": ctx.run_id}} if ctx.state.rollout else {})})
        registry.make_live(ctx.release_id)
        save_registry(ctx, registry)
        return Outcome(changed=True, message=f"{ctx.release_id} live")


@register
class RecordFailed(Step):
    """Record a release that was abandoned before going live."""

    name = "record_failed"
    scope = "controller"
    continue_on_error = True

    def run(self, ctx, host):
        if not ctx.release_id:
            return Outcome(message="nothing to record")
        registry = Registry.load(ctx.primary)
        registry.add({**release_entry(ctx), "status": "failed", "error": ctx.failure.one_line() if ctx.failure else None})
        save_registry(ctx, registry)
        return Outcome(changed=True, message=f"{ctx.release_id} failed")


@register
class RecordRecovery(Step):
    """Mark the undone release failed (or rolled-back) and the previous one live."""

    name = "record_recovery"
    scope = "controller"

    def run(self, ctx, host):
        registry = Registry.load(ctx.primary)
        status = self.options.get("status") or "failed"
        if registry.get(ctx.release_id) is None:
            registry.add(release_entry(ctx))
        registry.update(ctx.release_id, status=status,
                        error=ctx.failure.one_line() if ctx.failure else None, undone_by=ctx.run_id)
        if ctx.previous:
            registry.make_live(ctx.previous["id"])
        save_registry(ctx, registry)
        return Outcome(changed=True, message=f"{ctx.release_id} {status}; "
                                             f"{ctx.previous['id'] if ctx.previous else 'no release'} live")


@register
class LoadRegistry(Step):
    """Read the release registry: which release is live now (the one to come back to)."""

    name = "load_registry"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        registry = Registry.load(host)
        ctx.previous = registry.live()
        return Outcome(message=f"live: {ctx.previous['id'] if ctx.previous else 'none (first release)'}")
