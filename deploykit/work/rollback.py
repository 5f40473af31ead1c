"""What the rollback steps share: where the newer code is, the migration targets read from the database now,
whether a rerun finishes an interrupted rollback, and the backup taken while a release was live."""
from __future__ import annotations

from .. import layout
from ..state.backups import list_backups
from ..djangoapp import migration_graph
from ..errors import DeployError
from ..planning import graph_targets, unknown_target_state


def from_dir(ctx, host) -> str:
    """The code of the release being rolled back from (it has the migration files)."""
    return ctx.release_dir(host, ctx.failed["id"])


def current_targets(ctx, host) -> tuple[dict, list]:
    """The database's state read with the newer code's graph, and each app's target in that graph."""
    graph = migration_graph(ctx, host, from_dir(ctx, host))
    if unknown_target_state(graph, ctx.previous) and not ctx.options.get("with_data"):
        raise DeployError(f"{name_of(ctx.previous)} has no recorded migration state, the database has migrations: "
                          f"a plan would unapply everything", hint="roll back with --with-data to restore its backup")
    return graph, graph_targets(graph, ctx.previous)


def name_of(entry: dict) -> str:
    return entry.get("tag") or entry["id"]


def resuming(ctx, host) -> bool:
    """This rollback finishes an interrupted one to the same target (its unapply may be done)."""
    pending = host.read_json(layout.pending_rollback(host))
    return bool(pending and pending.get("to") == ctx.previous["id"])


def data_backup_for(ctx, host, release: dict) -> str | None:
    """The newest verified-looking backup taken while `release` was live."""
    for bid in reversed(list_backups(host)):
        manifest = host.read_json(layout.manifest(layout.backup_dir(host, bid)))
        if manifest and manifest.get("complete") and manifest.get("release") == release["id"]:
            return bid
    return None
