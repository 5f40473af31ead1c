"""A blue/green transfer (mode copy): refusals, the checked copy of the source's backup set, the target migrated.

The run's stage is the source colour; phases marked `stage: target` run on the
target (engine: Context.focus). The other steps a transfer needs are the
backup, restore, freeze and health steps themselves (playbooks/transfer.yml).
"""
from __future__ import annotations

from .. import layout
from ..errors import DeployError, LockHeld, PreflightFailed
from ..routers import router_for
from ..state import lock as stage_lock
from ..state.releases import Registry
from ..work import transfer as work
from ..work.django import applied_message, migrate_in, warm_up_in
from ..work.health import check_health
from .base import Outcome, Step, register


class TargetLive(PreflightFailed):
    """The target colour is the one the router serves: a transfer would overwrite the live data."""


NOT_A_TRANSFER = work.NOT_A_TRANSFER
_roles = work.roles
_ends = work.ends


def _app(hosts):
    return [h for h in hosts if "app" in h.roles]


@register
class TransferRefusals(Step):
    """Refuse, changing nothing, a transfer to the live colour, from an unhealthy source, or onto the same database."""

    name = "transfer_refusals"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if _roles(ctx) is None:
            return Outcome(message=NOT_A_TRANSFER)
        source, target = _roles(ctx)
        notes = []
        if ctx.config.colours is not None:
            router = router_for(ctx.config)
            live = {h.name: router.live(ctx, h) for h in ctx.stage_hosts(ctx.config.colours.router.stage)}
            if any(colour == target for colour in live.values()):
                shown = ", ".join(f"{n}: {c or 'no colour'}" for n, c in live.items())
                raise TargetLive(f"{target} is the live colour on the router ({shown}): a transfer to it would "
                                 "replace the data it serves", hint=f"transfer to the idle colour, or switch first: "
                                 f"'deploykit switch --to {source}'")
            notes.append("router serves " + ", ".join(sorted({c or "no colour" for c in live.values()})))
        for stage in (source, target):
            if Registry.load(ctx.primary_of(stage)).live() is None:
                raise PreflightFailed(f"colour {stage} has no live release",
                                      hint=f"release one first: 'deploykit release --stage {stage}'")
        for h in _app(ctx.stage_hosts(source)):
            try:
                check_health(ctx, h, read_only=True)
            except DeployError as exc:
                raise PreflightFailed(f"the source {source} is not healthy: {exc.one_line()}",
                                      hint=f"fix {source} first ('deploykit status --stage {source}'): a transfer "
                                           "copies a healthy state only") from None
        notes.append(f"{source} healthy")
        same = work.same_databases(work.identities(ctx, ctx.primary_of(source)),
                                   work.identities(ctx, ctx.primary_of(target)))
        if same:
            raise PreflightFailed(f"{source} and {target} use the same database ({', '.join(same)}): a transfer "
                                  "would restore a database onto itself",
                                  hint="give each colour its own database (a path under its deploy_to, or its "
                                       "own PostgreSQL name or server)")
        notes.append("databases distinct")
        return Outcome(message="; ".join(notes))


@register
class CheckTargetLock(Step):
    """Refuse when another run holds the target's lock (read-only: a dead run there is the target's to finish)."""

    name = "check_target_lock"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if _roles(ctx) is None:
            return Outcome(message=NOT_A_TRANSFER)
        _, target = _roles(ctx)
        for h in ctx.stage_hosts(target):
            holder, now = stage_lock.read_lock(h)
            if holder and holder.get("run_id") != ctx.run_id:
                verdict = stage_lock.assess(holder, now, ctx.config.lock.stale_after, ctx.config.journal_dir)
                raise LockHeld(f"{h.name}: the target {target} is locked by {verdict.describe()}",
                               hint=f"wait for it, or finish it with a command on {target} "
                                    f"('deploykit check --stage {target}' shows the holder)")
        return Outcome(message=f"{target} not locked")


@register
class CopyBackup(Step):
    """Copy the source's verified backup set to the target's backups dir, each file checked on arrival."""

    name = "copy_backup"
    scope = "controller"

    def describe(self, ctx, host):
        if _roles(ctx) is None:
            return NOT_A_TRANSFER
        source, target = _roles(ctx)
        return (f"would copy {layout.backup_dir(ctx.primary_of(source), ctx.backup_id)} from {source} to "
                f"{layout.backup_dir(ctx.primary_of(target), ctx.backup_id)} on {target}, checked on arrival")

    def run(self, ctx, host):
        if _ends(ctx) is None:
            return Outcome(message=NOT_A_TRANSFER)
        src, dst = _ends(ctx)
        doc = work.copy_backup(ctx, src, dst, ctx.backup_id)
        ctx.state.manifests[dst.name] = doc.pop("manifest")
        ctx.state.transfer["copied"] = doc
        ctx.journal.record("transfer_copy", host=dst, source=src.name, **doc)
        ctx.record_progress()
        return Outcome(changed=True, message=f"{doc['files']} file(s), {doc['bytes']} bytes to {dst.name}:{doc['dir']}, "
                                             f"checked, in {doc['seconds']:.2f}s")


@register
class SyncMedia(Step):
    """Media and extra paths of the source into a tree beside the target's live one, sending only what differs."""

    name = "sync_media"
    scope = "controller"

    def describe(self, ctx, host):
        if _roles(ctx) is None:
            return NOT_A_TRANSFER
        names = [d.item_name for d in work.file_drivers(ctx)]
        return f"would sync {', '.join(names)} beside the target's own" if names else "no media or paths configured"

    def run(self, ctx, host):
        if _ends(ctx) is None:
            return Outcome(message=NOT_A_TRANSFER)
        (source, _), (src, dst) = _roles(ctx), _ends(ctx)
        done = {d["item"]: d for d in ctx.state.transfer.get("media", [])}
        notes = []
        for driver in work.file_drivers(ctx):
            if driver.item_name in done:
                if self.options.get("again"):  # a second pass, frozen: only what changed since the first
                    doc = work.resync_media(ctx, src, dst, driver, done[driver.item_name])
                    ctx.record_progress()
                    ctx.journal.record("transfer_resync", host=dst, source=src.name, **doc)
                    if not doc.get("absent"):
                        notes.append(f"{doc['item']}: again, {doc.get('sent_again', 0)} file(s) sent")
                continue
            # `with: {masked: true}` (a refresh): its media rules (exclude, keep, placeholder) apply
            rules = ctx.config.refresh.media if self.options.get("masked") and ctx.config.refresh else None
            doc = work.sync_media(ctx, src, dst, driver, media_rules=rules)
            ctx.state.transfer.setdefault("media", []).append(doc)
            ctx.journal.record("transfer_sync", host=dst, source=src.name, **doc)
            ctx.record_progress()
            notes.append(f"{doc['item']}: absent on {source}" if doc.get("absent") else
                         f"{doc['item']}: {doc['files']} file(s), {doc['sent_files']} sent "
                         f"({doc['bytes_sent']} bytes), {doc['kept_files']} unchanged")
        return Outcome(changed=bool(notes), message="; ".join(notes) or "no media or paths configured")


@register
class SwapMedia(Step):
    """Swap the synced media and paths in by rename on the target; the replaced trees are kept."""

    name = "swap_media"
    scope = "primary"

    def run(self, ctx, host):
        docs = ctx.state.transfer.get("media", [])
        notes = [work.swap_media(ctx, host, doc) for doc in docs]
        ctx.record_progress()
        return Outcome(changed=bool(docs), message="; ".join(notes) or "no media synced")


@register
class DiscardMedia(Step):
    """Remove the synced trees of a transfer that will not be swapped in; the target's own were never touched."""

    name = "discard_media"
    scope = "primary"
    continue_on_error = True

    def run(self, ctx, host):
        docs = ctx.state.transfer.get("media", [])
        notes = [work.discard_media(ctx, host, doc) for doc in docs]
        return Outcome(changed=bool(docs), message="; ".join(notes) or "no media synced")


@register
class MigrateLive(Step):
    """Migrate the restored database with the live release's own code (`current`)."""

    name = "migrate_live"
    scope = "primary"

    def describe(self, ctx, host):
        return f"would run manage.py migrate in {layout.current(host)}"

    def run(self, ctx, host):
        applied = migrate_in(ctx, host, layout.current(host))
        ctx.state.transfer["migrated"] = applied
        return Outcome(changed=bool(applied), message=applied_message(applied))


@register
class WarmUpMigrate(Step):
    """Start the target's Django (its live release) before the freeze: the migrate under it skips the start-up."""

    name = "warm_up_migrate"
    scope = "primary"
    read_only = True  # it starts a process that asks nothing of the database

    def run(self, ctx, host):
        warm_up_in(ctx, host, layout.current(host))
        return Outcome(message=f"Django of {layout.current(host)} started")


@register
class TransferReport(Step):
    """Journal what the transfer did: the freeze seconds, the bytes copied."""

    name = "transfer_report"
    scope = "controller"

    def run(self, ctx, host):
        if _roles(ctx) is None:
            return Outcome(message=NOT_A_TRANSFER)
        source, target = _roles(ctx)
        copied = ctx.state.transfer.get("copied") or {}
        ctx.journal.record("transfer", source=source, target=target, mode=ctx.options.get("mode"),
                           backup=ctx.backup_id, freeze_seconds=ctx.state.freeze_seconds,
                           bytes=copied.get("bytes"), migrated=ctx.state.transfer.get("migrated"))
        frozen = f"{ctx.state.freeze_seconds:.2f}" if ctx.state.freeze_seconds is not None else "?"
        return Outcome(message=f"{source} -> {target}: writes frozen {frozen} s")


@register
class ReleaseLocks(Step):
    """Free every lock this run holds, on every stage it locked (the source's, the target's, the router's);
    finishing a dead transfer, the locks that run left there too (the procedure has dealt with them)."""

    name = "release_locks"
    scope = "controller"
    continue_on_error = True

    def run(self, ctx, host):
        freed = []
        for h in list(ctx.locked):
            with ctx.lock:
                if h not in ctx.locked:
                    continue
                ctx.locked.remove(h)
            stage_lock.release(h, ctx.run_id)
            freed.append(h.name)
        dead = (ctx.state.dead_run or {}).get("run_id")
        if dead and _roles(ctx) is not None:  # finishing a dead transfer: its locks on the target and router too
            others = [_roles(ctx)[1]] + ([ctx.config.colours.router.stage] if ctx.config.colours else [])
            for h in [h for stage in others for h in ctx.stage_hosts(stage)]:
                holder, _ = stage_lock.read_lock(h)
                if holder and holder.get("run_id") == dead:
                    stage_lock.release(h, dead)
                    freed.append(f"{h.name} (of run {dead})")
        return Outcome(changed=bool(freed), message=f"unlocked {', '.join(freed)}" if freed else "nothing locked")
