"""Backups and restores of code, databases and media, in the configured order."""
from __future__ import annotations

import time

from .. import layout
from ..state.backups import code_item, data_items, prepare_dir, require_verified, verify, write_manifest
from ..drivers import capable, driver_for_item, drivers_for
from ..errors import DeployError, Interrupted, NotConfirmed
from ..transport.host import q
from ..work import snapshots
from .base import Outcome, Step, register


def _items(ctx, host) -> list:
    return ctx.state.backup_items.setdefault(host.name, [])


def _mb(items) -> float:
    return sum(f["size"] for it in items for f in it["files"].values()) / (1 << 20)


@register
class BackupCode(Step):
    """Tarball of the code `current` points at, into backups/<id>/code.tar.gz."""

    name = "backup_code"
    scope = "app"

    def describe(self, ctx, host):
        return f"would tar {layout.current(host)} into {layout.code_archive(ctx.backup_dir(host))}"

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
        # `with: {databases_only: true}`: a transfer's frozen set (its media go by sync_media, file by file)
        items = data_items(ctx, host, ctx.backup_dir(host), databases_only=bool(self.options.get("databases_only")))
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
        ok, problems, manifest = verify(ctx, host, ctx.backup_dir(host))
        if not ok:
            raise DeployError(f"{host.name}: backup {ctx.backup_id} does not verify: {'; '.join(problems[:3])}",
                              hint="check disk space and the host's tools, then release again")
        ctx.state.sealed[host.name] = manifest  # verified just now: a transfer copies it without reading it again
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
        skip = _from_snapshots(ctx, host)
        manifest = require_verified(ctx, host, ctx.backup_dir(host), skip)
        ctx.state.manifests[host.name] = manifest
        ctx.state.unverified[host.name] = sorted(skip)
        note = f" ({', '.join(sorted(skip))}: a snapshot is swapped in, the dump is not read)" if skip else ""
        return Outcome(message=f"{ctx.backup_id}: {len(manifest['items']) - len(skip)} item(s) verified at "
                               f"{ctx.backup_dir(host)}{note}")


def _from_snapshots(ctx, host) -> set[str]:
    """Items whose data comes back from a snapshot this run took (recovery): their dumps are not needed."""
    if not ctx.state.snapshots or not host.is_primary:
        return set()
    return {d.item_name for d in snapshotting(ctx) if d.usable_snapshot(ctx, host, ctx.state.snapshots)}


@register
class CheckOwners(Step):
    """Report what each driver says about the live data before it is replaced (e.g. database owners)."""

    name = "check_owners"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        notes = [n for d in drivers_for(ctx.config) for n in d.restore_notes(ctx, host)]
        return Outcome(message="; ".join(notes) or "nothing to report")


def _restore_state(ctx) -> dict:
    return ctx.state.restore_state(ctx.backup_id, ctx.run_id)


@register
class BuildRestore(Step):
    """Build each backed-up item beside the live one and check it (owners, row counts, checksums); nothing live changes."""

    name = "build_restore"
    scope = "primary"

    def describe(self, ctx, host):
        return (f"would restore the databases and files of {ctx.backup_dir(host)} beside the live ones "
                "(new names), check owners and row counts, then swap them in by rename")

    def run(self, ctx, host):
        manifest = ctx.state.manifests.get(host.name) or require_verified(ctx, host, ctx.backup_dir(host))
        state = _restore_state(ctx)
        done = {b.get("item") or f"db-{b.get('alias')}" for b in state["built"]}
        notes = []
        for item in manifest["items"]:
            if item["kind"] == "code" or item["name"] in done:
                continue
            driver = driver_for_item(ctx.config, item)
            start = time.monotonic()
            snap = driver.usable_snapshot(ctx, host, ctx.state.snapshots)
            if snap:
                built = driver.build_from_snapshot(ctx, host, snap, state["label"])
                notes.append(f"{item['name']}: snapshot {snap} ready to swap in")
            else:
                if item["name"] in ctx.state.unverified.get(host.name, ()):  # its snapshot went: check the dump now
                    others = {i["name"] for i in manifest["items"] if i["name"] != item["name"]}
                    require_verified(ctx, host, ctx.backup_dir(host), others)
                built = driver.build(ctx, host, ctx.backup_dir(host), item, state["label"])
                notes.append(f"{item['name']}: built beside as {built.get('name') or built.get('new') or '-'} "
                             f"and checked in {time.monotonic() - start:.2f}s")
            built["item"] = item["name"]
            state["built"].append(built)
            ctx.record_progress()  # a run finishing this one knows what was built
        return Outcome(changed=bool(notes), message="; ".join(notes) or "no data in the backup")


@register
class SwapRestore(Step):
    """Swap every built item in by rename (databases in one transaction each); the replaced ones are kept."""

    name = "swap_restore"
    scope = "primary"

    def describe(self, ctx, host):
        return "would swap the restored copies in by rename, keeping the replaced ones"

    def run(self, ctx, host):
        state = _restore_state(ctx)
        notes = []
        for built in state["built"]:
            if built.get("swapped"):
                continue
            driver = driver_for_item(ctx.config, {"name": built["item"]})
            start = time.monotonic()
            notes.append(f"{driver.swap(ctx, host, built, state['label'])} ({time.monotonic() - start:.2f}s)")
            built["swapped"] = True
            ctx.record_progress()
        ctx.state.drop_snapshots({b["name"] for b in state["built"] if b.get("snapshot")})
        return Outcome(changed=bool(notes), message="; ".join(notes) or "nothing left to swap")


@register
class DiscardRestore(Step):
    """Remove what was built for a restore that will not be swapped in; the live data was never touched."""

    name = "discard_restore"
    scope = "primary"
    continue_on_error = True

    def run(self, ctx, host):
        state = ctx.state.restore or {}
        notes = []
        for built in state.get("built", []):
            if built.get("swapped"):
                continue
            driver = driver_for_item(ctx.config, {"name": built["item"]})
            notes.append(driver.discard(ctx, host, built))
        state["built"] = [b for b in state.get("built", []) if b.get("swapped")]
        return Outcome(changed=bool(notes), message="; ".join(notes) or "nothing was built")


def snapshotting(ctx) -> list:
    return capable(ctx.config, "snapshot")


@register
class ChooseSnapshots(Step):
    """Decide, before the writers stop, which databases to snapshot: each clone must fit the snapshot budget."""

    name = "choose_snapshots"
    scope = "primary"
    read_only = True

    def applies(self, ctx, host):
        return ctx.config.snapshots and bool(snapshotting(ctx))

    def run(self, ctx, host):
        plan, sizes, lines = snapshots.choose(ctx, host, snapshotting(ctx))
        ctx.state.snapshot_plan, ctx.state.snapshot_sizes = plan, sizes
        ctx.journal.record("snapshot_plan", host=host, plan=plan, sizes=sizes)
        return Outcome(message="; ".join(lines))


@register
class SnapshotDatabases(Step):
    """Snapshot each database chosen (writers stopped) for an instant revert; else rely on the dump."""

    name = "snapshot_databases"
    scope = "primary"

    def applies(self, ctx, host):
        return ctx.config.snapshots and bool(snapshotting(ctx))

    def describe(self, ctx, host):
        return "would clone " + ", ".join(f"{d.label} -> {d.snapshot_name(ctx, ctx.release_id)}"
                                          for d in snapshotting(ctx))

    def run(self, ctx, host):
        notes, snaps, plan = [], ctx.state.snapshots, ctx.state.snapshot_plan
        for d in snapshotting(ctx):
            key = d.snapshot_key()
            if key in snaps and d.snapshot_exists(ctx, host, snaps[key]):
                notes.append(f"{d.label} -> {snaps[key]} (taken already)")
                continue
            if plan is not None:  # choose_snapshots looked a moment ago, before the writers stopped
                why = plan.get(key, "not chosen")
            elif not d.exists(ctx, host):
                why = "it does not exist yet"
            else:
                why = d.snapshot_blocker(ctx, host)
            if why:
                notes.append(f"no snapshot of {d.label}: {why}; recovery will restore the verified dump")
                ctx.journal.record("snapshot_skipped", host=host, database=d.label, reason=why)
                continue
            start = time.monotonic()
            try:
                ctx.state.add_snapshot(key, d.snapshot(ctx, host, ctx.release_id))
            except DeployError as exc:
                if isinstance(exc, Interrupted):
                    raise
                notes.append(f"no snapshot of {d.label}: {exc}; recovery will restore the verified dump")
                continue
            seconds = time.monotonic() - start
            snapshots.measured(ctx, ctx.state.snapshot_sizes.get(key, 0), seconds)
            ctx.record_progress()
            notes.append(f"{d.label} -> {snaps[key]} in {seconds:.2f} s")
        return Outcome(changed=bool(snaps), message="; ".join(notes))


@register
class DiscardSnapshots(Step):
    """Drop the snapshots this run took (a release that never went live does not need its way back)."""

    name = "discard_snapshots"
    scope = "primary"
    continue_on_error = True

    def run(self, ctx, host):
        dropped = []
        for d in snapshotting(ctx):
            snap = ctx.state.snapshots.get(d.snapshot_key())
            if snap:
                d.drop(ctx, host, snap)
                dropped.append(snap)
        ctx.state.drop_snapshots()
        return Outcome(changed=bool(dropped), message=", ".join(dropped) or "no snapshot taken")


@register
class PruneSnapshots(Step):
    """Drop the databases deploykit derived for releases beyond keep_releases (only names the registry lists)."""

    name = "prune_snapshots"
    scope = "primary"
    continue_on_error = True

    def applies(self, ctx, host):
        return bool(snapshotting(ctx))

    def run(self, ctx, host):
        from ..state.releases import Registry

        registry = Registry.load(host)
        kept = {r["id"] for r in registry.releases[-ctx.config.keep_releases:]} | {ctx.release_id}
        dropped = [name for d in snapshotting(ctx) for name in d.prune_derived(ctx, host, kept)]
        return Outcome(changed=bool(dropped), message=", ".join(dropped) or "nothing to drop")


@register
class DiscardBackup(Step):
    """Remove this run's backup directory if it never got its manifest (an incomplete backup is never used)."""

    name = "discard_backup"
    scope = "all"
    continue_on_error = True

    def run(self, ctx, host):
        if not ctx.backup_id:
            return Outcome(message="no backup was started")
        path = ctx.backup_dir(host)
        manifest = host.read_json(layout.manifest(path))
        if manifest and manifest.get("complete"):
            return Outcome(message=f"{path} is complete: kept")
        if not host.exists(path):
            return Outcome(message="nothing was written")
        host.run(f"rm -rf {q(path)}")
        return Outcome(changed=True, message=f"removed the incomplete {path}")


@register
class ConfirmRestore(Step):
    """Show what the restore will replace and ask (--yes in scripts); nothing changed until then."""

    name = "confirm_restore"
    scope = "controller"

    def describe(self, ctx, host):
        return f"would show what backup {ctx.backup_id} replaces and ask for confirmation"

    def run(self, ctx, host):
        manifest = ctx.state.manifests.get(ctx.primary.name) or {}
        items = []
        for item in manifest.get("items", []):
            if item["kind"] == "code":
                continue
            size = sum(f["size"] for f in item.get("files", {}).values())
            replaces = item.get("database") or item.get("root") or item.get("source") or item["name"]
            items.append({"name": item["name"], "replaces": str(replaces),
                          "size": "absent" if item.get("absent") else f"{size / (1 << 20):.1f} MB"})
        summary = {"backup": ctx.backup_id, "created": manifest.get("created"), "items": items,
                   "live": (ctx.previous or {}).get("id"), "release_at_backup": manifest.get("release")}
        if ctx.confirm is not None and not ctx.confirm(summary):
            raise NotConfirmed(f"restore of {ctx.backup_id} not confirmed: nothing was changed")
        return Outcome(message=f"{len(items)} item(s) of {ctx.backup_id} will replace the live ones")
