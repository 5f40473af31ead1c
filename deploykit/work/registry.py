"""Writing the release registry from a run: the entry a run makes, saved on every registry host."""
from __future__ import annotations

from ..pyenv import registry_fields
from ..state.releases import Registry, registry_hosts


def release_entry(ctx) -> dict:
    rev = ctx.revision
    # the clone speed the next release estimates its snapshots with (carried over when this one took none)
    clone_speed = ctx.state.clone_speed or (ctx.previous or {}).get("clone_speed")
    return {"id": ctx.release_id, "commit": rev.commit if rev else None, "tag": rev.tag if rev else None,
            "tags": rev.tags if rev else [], "backup_id": ctx.backup_id,
            "previous": ctx.previous["id"] if ctx.previous else None, "run_id": ctx.run_id, **registry_fields(ctx),
            **({"clone_speed": clone_speed} if clone_speed else {})}


def save_registry(ctx, registry: Registry) -> None:
    """Every app host (and the primary) keeps the same registry."""
    registry.save(registry_hosts(ctx))
