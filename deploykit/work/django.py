"""Django work several steps share: migrate with a given release's code, keeping the state after for the registry."""
from __future__ import annotations

from ..djangoapp import migration_state


def migrate_in(ctx, host, release_dir: str) -> list[str]:
    """`manage.py migrate` with the code in release_dir; return what it applied (the state after is kept)."""
    before = migration_state(ctx, host, release_dir)["applied"]
    ctx.manage(host, "migrate --noinput", release_dir=release_dir, track="migrate")
    after = migration_state(ctx, host, release_dir)
    ctx.state.migrations = after
    applied = [f"{app}.{name}" for app, names in after["applied"].items()
               for name in names if name not in before.get(app, [])]
    return applied


def applied_message(applied: list[str], nothing: str = "no migrations to apply") -> str:
    return f"applied {len(applied)}: {', '.join(applied)}" if applied else nothing
