"""Backups and restores of code, databases and media, in the configured order."""
from __future__ import annotations

import time

from ..backupset import code_item, data_items, prepare_dir, require_verified, verify, write_manifest
from ..drivers import driver_for_item, drivers_for
from ..drivers.postgres import PostgresDriver
from ..errors import DeployError
from ..host import q
from ..playbook import Outcome, Step, register


def _items(ctx, host) -> list:
    return ctx.state.setdefault("backup_items", {}).setdefault(host.name, [])


def _mb(items) -> float:
    return sum(f["size"] for it in items for f in it["files"].values()) / (1 << 20)


@register
class BackupCode(Step):
    """Tarball of the code `current` points at, into backups/<id>/code.tar.gz."""

    name = "backup_code"
    scope = "app"

    def describe(self, ctx, host):
        return f"would tar {host.path('current')} into {ctx.backup_dir(host)}/code.tar.gz"

    def run(self, ctx, host):
        prepare_dir(host, ctx.backup_dir(host))
        item = code_item(ctx, host, ctx.backup_dir(host))
        if item is None:
            return Outcome(message="no current release yet: nothing to back up")
        _items(ctx, host).append(item)
        return Outcome(changed=True, message=f"code of {item['release_id']} ({_mb([item]):.1f} MB)")


@register
class BackupData(Step):
    """Back up databases, then media, then extra paths, on the primary host."""

    name = "backup_data"
    scope = "primary"

    def describe(self, ctx, host):
        names = [d.item_name for d in drivers_for(ctx.config)]
        return f"would back up {', '.join(names) or 'nothing'} into {ctx.backup_dir(host)}"

    def run(self, ctx, host):
        prepare_dir(host, ctx.backup_dir(host))
        items = data_items(ctx, host, ctx.backup_dir(host))
        _items(ctx, host).extend(items)
        names = [f"{i['name']}{' (absent)' if i.get('absent') else ''}" for i in items]
        return Outcome(changed=True, message=f"{', '.join(names) or 'no data configured'} ({_mb(items):.1f} MB)")


@register
class SealBackup(Step):
    """Write manifest.json (sizes, sha256) and verify the backup before going on."""

    name = "seal_backup"
    scope = "all"

    def run(self, ctx, host):
        items = _items(ctx, host)
        live = ctx.previous["id"] if ctx.previous else None
        write_manifest(ctx, host, ctx.backup_dir(host), ctx.backup_id, items, release=live,
                       for_release=ctx.release_id, label=ctx.options.get("label"))
        ok, problems, _ = verify(ctx, host, ctx.backup_dir(host))
        if not ok:
            raise DeployError(f"{host.name}: backup {ctx.backup_id} does not verify: {'; '.join(problems[:3])}",
                              hint="check disk space and the host's tools, then release again")
        return Outcome(changed=True, message=f"{ctx.backup_dir(host)}: {len(items)} item(s) verified")


@register
class VerifyBackup(Step):
    """Verify the backup (checksums, pg_restore --list) before anything is destroyed."""

    name = "verify_backup"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        if not ctx.backup_id:
            raise DeployError("no backup to restore from", hint="pick one with --backup ID from 'invoke backups'")
        manifest = require_verified(ctx, host, ctx.backup_dir(host))
        ctx.state.setdefault("manifests", {})[host.name] = manifest
        return Outcome(message=f"{ctx.backup_id}: {len(manifest['items'])} item(s) verified at {ctx.backup_dir(host)}")


@register
class KeepFailedData(Step):
    """Keep a copy of the failed-state databases and files in failed/<id>/."""

    name = "keep_failed_data"
    scope = "primary"

    def run(self, ctx, host):
        dest = ctx.failed_dir(host)
        if host.exists(f"{dest}/.kept"):  # a resumed run: never overwrite the first failed-state copy
            dest = f"{dest}/kept-{ctx.run_id}"
        host.run(f"mkdir -p -m 700 {q(dest)}")
        notes = []
        for d in drivers_for(ctx.config):
            if isinstance(d, PostgresDriver) and usable_snapshot(ctx, host, d):
                notes.append(f"{d.item_name}: kept whole as {d.aside_name(ctx.release_id)} by the revert")
            else:
                notes.append(d.keep_failed_state(ctx, host, dest))
        host.run(f"touch {q(ctx.failed_dir(host))}/.kept")
        return Outcome(changed=True, message="; ".join(notes) or "no data configured")


@register
class CheckOwners(Step):
    """Report each PostgreSQL database's owner before it is recreated."""

    name = "check_owners"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        notes = []
        for d in drivers_for(ctx.config):
            if isinstance(d, PostgresDriver) and d.exists(ctx, host):
                rep = d.owner_report(ctx, host)
                notes.append(f"{rep['database']} owned by {rep['owner']} (expected {rep['expected']}), "
                             f"{len(rep['objects_not_owned'])} object(s) owned by others")
                ctx.journal.record("owners", host=host, report=rep)
        return Outcome(message="; ".join(notes) or "no PostgreSQL database")


@register
class RestoreData(Step):
    """Restore databases (dropped and recreated with their owner) and media from the backup."""

    name = "restore_data"
    scope = "primary"

    def describe(self, ctx, host):
        return f"would recreate the databases and restore data and media from {ctx.backup_dir(host)}"

    def run(self, ctx, host):
        manifest = ctx.state.get("manifests", {}).get(host.name) or require_verified(ctx, host, ctx.backup_dir(host))
        aside = ctx.failed_dir(host)
        host.run(f"mkdir -p -m 700 {q(aside)}")
        notes = []
        for item in manifest["items"]:
            if item["kind"] == "code":
                continue
            driver = driver_for_item(ctx.config, item)
            snap = usable_snapshot(ctx, host, driver) if isinstance(driver, PostgresDriver) else None
            if snap:
                start = time.monotonic()
                kept = driver.revert(ctx, host, snap, ctx.release_id)
                notes.append(f"{item['name']}: snapshot swapped in by rename in {time.monotonic() - start:.2f}s "
                             f"(the database it replaced is kept as {kept})")
                continue
            notes.append(driver.restore(ctx, host, ctx.backup_dir(host), item, aside))
        return Outcome(changed=True, message="; ".join(notes) or "no data in the backup")


def pg_drivers(ctx) -> list[PostgresDriver]:
    return [d for d in drivers_for(ctx.config) if isinstance(d, PostgresDriver)]


def usable_snapshot(ctx, host, driver) -> str | None:
    """The snapshot recovery can swap in for this database, if it still exists."""
    snap = (ctx.state.get("snapshots") or {}).get(driver.spec.alias)
    return snap if snap and driver.snapshot_exists(ctx, host, snap) else None


@register
class SnapshotDatabases(Step):
    """Clone each PostgreSQL database (writers stopped) for an instant revert; else rely on the dump."""

    name = "snapshot_databases"
    scope = "primary"

    def applies(self, ctx, host):
        return ctx.config.snapshots and bool(pg_drivers(ctx))

    def describe(self, ctx, host):
        return "would clone " + ", ".join(f"{d.spec.name} -> {d.snapshot_name(ctx.release_id)}" for d in pg_drivers(ctx))

    def run(self, ctx, host):
        notes, snaps = [], ctx.state.setdefault("snapshots", {})
        for d in pg_drivers(ctx):
            if not d.exists(ctx, host):
                notes.append(f"{d.spec.name}: does not exist yet")
                continue
            blocker = d.snapshot_blocker(ctx, host)
            if blocker:
                notes.append(f"no snapshot of {d.spec.name}: {blocker}; recovery will restore the verified dump")
                ctx.journal.record("snapshot_skipped", host=host, database=d.spec.name, reason=blocker)
                continue
            try:
                snaps[d.spec.alias] = d.snapshot(ctx, host, ctx.release_id)
            except DeployError as exc:
                notes.append(f"no snapshot of {d.spec.name}: {exc}; recovery will restore the verified dump")
                continue
            notes.append(f"{d.spec.name} -> {snaps[d.spec.alias]}")
        return Outcome(changed=bool(snaps), message="; ".join(notes))


@register
class PruneSnapshots(Step):
    """Drop snapshots and set-aside databases of releases beyond keep_releases."""

    name = "prune_snapshots"
    scope = "primary"
    continue_on_error = True

    def applies(self, ctx, host):
        return bool(pg_drivers(ctx))

    def run(self, ctx, host):
        from ..releases import Registry

        kept = {r["id"] for r in Registry.load(host).releases[-ctx.config.keep_releases:]} | {ctx.release_id}
        dropped = []
        for d in pg_drivers(ctx):
            for name in d.own_databases(ctx, host):
                label = name.split("__dk_", 1)[-1] if "__dk_" in name else name.split("__dkold_", 1)[-1]
                if label not in kept:
                    d.drop(ctx, host, name)
                    dropped.append(name)
        return Outcome(changed=bool(dropped), message=", ".join(dropped) or "nothing to drop")
