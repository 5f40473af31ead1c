"""Django's own commands, run with the release's Python in the release directory."""
from __future__ import annotations

from ..djangoapp import require_database_identity
from ..work.django import applied_message, collectstatic, migrate_in
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
        applied = migrate_in(ctx, host, ctx.release_dir(host))
        return Outcome(changed=bool(applied), message=applied_message(applied))


@register
class CollectStatic(Step):
    """Run `manage.py collectstatic` in the release (each app host)."""

    name = "collectstatic"
    scope = "app"

    def applies(self, ctx, host):
        return ctx.config.collectstatic

    def run(self, ctx, host):
        return Outcome(changed=True, message=collectstatic(ctx, host, ctx.release_dir(host)))

