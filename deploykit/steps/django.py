"""Django's own commands, run with the release's Python in the release directory."""
from __future__ import annotations

from ..djangoapp import migration_state, require_database_identity
from .base import Outcome, Step, register


@register
class CheckDatabase(Step):
    """Check that the app in the new release uses the databases deploykit.yaml names (before anything live changes)."""

    name = "check_database"
    scope = "app"

    def applies(self, ctx, host):
        return bool(ctx.config.databases)

    def describe(self, ctx, host):
        return (f"would check that manage.py in {ctx.release_dir(host)} sees the database(s) "
                f"{', '.join(db.alias + '=' + db.name for db in ctx.config.databases)}")

    def run(self, ctx, host):
        return Outcome(message=require_database_identity(ctx, host, ctx.release_dir(host)))


@register
class Migrate(Step):
    """Run `manage.py migrate` once, on the primary host, with the new code."""

    name = "migrate"
    scope = "primary"

    def describe(self, ctx, host):
        return f"would run manage.py migrate in {ctx.release_dir(host)}"

    def run(self, ctx, host):
        return migrate_in(ctx, host, ctx.release_dir(host))


def migrate_in(ctx, host, release_dir: str, nothing: str = "no migrations to apply") -> Outcome:
    """`manage.py migrate` with the code in release_dir; the state after is kept for the registry."""
    before = migration_state(ctx, host, release_dir)["applied"]
    ctx.manage(host, "migrate --noinput", release_dir=release_dir, track="migrate")
    after = migration_state(ctx, host, release_dir)
    ctx.state.migrations = after
    applied = [f"{app}.{name}" for app, names in after["applied"].items()
               for name in names if name not in before.get(app, [])]
    return Outcome(changed=bool(applied), message=f"applied {len(applied)}: {', '.join(applied)}" if applied else nothing)


@register
class CollectStatic(Step):
    """Run `manage.py collectstatic` in the release (each app host)."""

    name = "collectstatic"
    scope = "app"

    def applies(self, ctx, host):
        return ctx.config.collectstatic

    def run(self, ctx, host):
        res = ctx.manage(host, "collectstatic --noinput", release_dir=ctx.release_dir(host))
        return Outcome(changed=True, message=res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "done")

