"""Django's own commands, run with the app's Python in the release directory."""
from __future__ import annotations

import posixpath

from ..playbook import Outcome, Step, register


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
    ctx.manage(host, "migrate --noinput", release_dir=release_dir)
    after = migration_state(ctx, host, release_dir)
    ctx.state["migrations"] = after
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


def migration_state(ctx, host, release_dir: str) -> dict:
    """Applied migrations per app and the graph's leaves, from Django's recorder and loader."""
    args = {"project_dir": release_dir, "settings": ctx.config.settings_module}
    return host.helper("django_state", "state", args)


def check_database_identity(ctx, host, release_dir: str) -> list[str]:
    """Each configured database is the one the release's own Django uses (asked through its settings)."""
    seen = host.helper("django_state", "databases", {"project_dir": release_dir,
                                                     "settings": ctx.config.settings_module})["databases"]
    problems = []
    for db in ctx.config.databases:
        mine = seen.get(db.alias)
        if mine is None:
            problems.append(f"databases.{db.alias}: the live release's Django has no database {db.alias!r} "
                            f"(it has: {', '.join(sorted(seen)) or 'none'})")
            continue
        if db.engine == "postgresql":
            if "postgis" not in mine["engine"] and "postgresql" not in mine["engine"]:
                problems.append(f"databases.{db.alias}: PostgreSQL in deploykit.yaml, {mine['engine']} in Django")
            elif mine["name"] != db.name:
                problems.append(f"databases.{db.alias}: deploykit.yaml names the database {db.name!r}, the live "
                                f"release's Django uses {mine['name']!r}")
        elif db.engine == "sqlite":
            configured = host.render(db.name)
            configured = configured if posixpath.isabs(configured) else host.path(configured)
            used = mine["name"] if posixpath.isabs(mine["name"]) else posixpath.join(release_dir, mine["name"])
            if "sqlite" not in mine["engine"]:
                problems.append(f"databases.{db.alias}: SQLite in deploykit.yaml, {mine['engine']} in Django")
            elif (host.realpath(configured) or configured) != (host.realpath(used) or used):
                problems.append(f"databases.{db.alias}: deploykit.yaml names {configured}, the live release's "
                                f"Django uses {used}")
    return problems
