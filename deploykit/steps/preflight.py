"""Preflight: every mistake a read-only look can find, before anything changes.

Run by `release` in its check phase and by `deploykit check`. Everything here
is read-only (it also runs in a dry-run): the process manager answers and
knows every program; each database exists, its owner role too, pg_dump is
not older than the server, and Django (through the live release's manage.py)
sees the database configured here; media paths exist; the shared files every
release links (.env, an SQLite file) exist; the live release
passes its health check; there is disk for the backup and the snapshot.
A failure is a refusal (exit 2) with nothing changed.
"""
from __future__ import annotations

import os

from .. import layout
from ..djangoapp import check_database_identity, warm_up
from ..work.rollback import from_dir
from ..drivers import capable, drivers_for
from ..errors import DeployError, PreflightFailed
from ..processes import manager_for
from .base import Outcome, Step, register
from ..work.code import missing_shared_files
from ..work.health import check_health


def check_processes(ctx, host) -> list[str]:
    """Each configured process is known to its manager, and the manager answers (each manager checks itself)."""
    return [p for proc in ctx.config.processes
            for p in manager_for(proc).check(host, live=bool(ctx.previous))]


def check_databases(ctx, host) -> list[str]:
    """On the primary: what each driver's preflight finds (the item exists while a release is live, its tools)."""
    live = ctx.failed or ctx.previous  # a rollback's live release is the one it leaves
    return [p for d in drivers_for(ctx.config) for p in d.preflight(ctx, host, live)]


def live_release_dir(ctx, host) -> str | None:
    """The live release's directory on host, when a release is live there and has a manage.py."""
    if not ctx.previous:
        return None
    current = host.realpath(layout.current(host))
    if not current or not host.exists(os.path.join(current, "manage.py")):
        return None
    return current


def check_django_databases(ctx, host, live_dir: str | None) -> list[str]:
    """The live release's Django, run through its own manage.py, uses the databases configured here."""
    return check_database_identity(ctx, host, live_dir) if live_dir else []


def asks_live_django(ctx, host) -> bool:
    """The one app host whose live Django answers the `manage: check` health checks in preflight: the primary,
    or the first app host when the primary runs no app."""
    apps = ctx.app_hosts
    return bool(apps) and host is (ctx.primary if ctx.primary in apps else apps[0])


def check_space(ctx, host) -> list[str]:
    """Room under backups/ for a backup (media, plus about half the databases once compressed)."""
    need = sum(d.backup_bytes(ctx, host) for d in drivers_for(ctx.config))
    free = host.helper("files", "disk_free", {"path": host.deploy_to})["free_bytes"]
    if free < need + (ctx.config.min_free_mb << 20):
        return [f"only {free >> 20} MB free under {host.deploy_to} for a backup of about {need >> 20} MB "
                f"(+ min_free_mb {ctx.config.min_free_mb})"]
    return []


@register
class Preflight(Step):
    """Read-only checks of everything a release relies on (process manager, databases, Django's view, health)."""

    name = "preflight"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        # The live release's Django boots on one host (asks_live_django): its code is the same release on
        # every host, and every other app host's Django is asked with the new release before anything live
        # changes (check_database; then collectstatic, and verify's `manage: check`). A Django start-up is a
        # quarter of a host's CPU in a release (bench/fleet.py); every app host is still asked its HTTP checks.
        asked = host.is_primary or asks_live_django(ctx, host)
        live_dir = live_release_dir(ctx, host) if asked else None
        if live_dir:  # the live Django boots while processes, databases and disk are looked at
            warm_up(ctx, host, live_dir)
        problems = []
        if ctx.config.identity and not os.path.exists(ctx.config.identity):
            problems.append(f"the SSH identity file {ctx.config.identity} does not exist on this controller")
        if "app" in host.roles:
            problems += [f"the shared file {path} does not exist (every release links it; create it: an empty "
                         "SQLite database file or the app's .env, say)" for path in missing_shared_files(ctx, host)]
            problems += check_processes(ctx, host)
        if host.is_primary:
            problems += check_databases(ctx, host)
            if not problems:
                problems += check_django_databases(ctx, host, live_dir)
                problems += check_space(ctx, host)
        notes = []
        if not problems and host.is_primary and ctx.config.snapshots:
            for d in capable(ctx.config, "snapshot"):  # no room (or no right) for one: the dump is the way back
                if d.exists(ctx, host):
                    blocker = d.snapshot_blocker(ctx, host)
                    if blocker:
                        notes.append(f"no snapshot of {d.label} will be taken ({blocker}): a recovery "
                                     "would restore the verified dump")
        if not problems and ctx.previous and "app" in host.roles:
            try:
                notes += check_health(ctx, host, read_only=True, django=asks_live_django(ctx, host))
            except DeployError as exc:
                problems.append(f"the live release {ctx.previous['id']} fails its health check, so a new one "
                                f"could not be verified either: {exc.one_line()}")
        if problems:
            raise PreflightFailed(f"{host.name}: {'; '.join(problems)}",
                                  hint="fix this first; nothing was changed (run 'deploykit check --host STAGE' again)")
        return Outcome(message="; ".join(["processes, databases, disk for the backup ok"] + notes))


@register
class PreflightData(Step):
    """Read-only checks before a restore replaces data: the databases, their owner roles, the tools."""

    name = "preflight_data"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        if ctx.failed:  # a rollback asks the live release's Django for its plan next: it boots meanwhile
            warm_up(ctx, host, from_dir(ctx, host))
        problems = check_databases(ctx, host)
        if problems:
            raise PreflightFailed(f"{host.name}: {'; '.join(problems)}",
                                  hint="fix this first; nothing was changed")
        return Outcome(message="databases, owner roles and tools ok")
