"""The library entry points behind the invoke tasks.

Each function checks its input before it contacts a host (bad input changes
nothing), runs a playbook, and returns a RunResult that keeps what every host
did. Tasks turn results and errors into output and exit codes.
"""
from __future__ import annotations

import os
import socket

from . import steps  # noqa: F401  (registers the built-in steps)
from .backupset import MANIFEST, list_backups, new_backup_id, verify
from .config import Config
from .context import Context
from .errors import BackupInvalid, DeployError, LockHeld
from .gitrepo import Revision, resolve
from .journal import read_lock, release_lock
from .planning import PlanError, find_target
from .playbook import Reporter, RunResult, run_playbook
from .releases import Registry, new_release_id
from .steps.rollback import PENDING


def _run(ctx: Context, playbook: str, reporter: Reporter | None) -> RunResult:
    try:
        result = run_playbook(ctx, playbook, reporter)
        result.data.update({"release_id": ctx.release_id, "backup_id": ctx.backup_id,
                            "previous": ctx.previous["id"] if ctx.previous else None,
                            "journal": str(ctx.journal.local_path)})
        return result
    finally:
        ctx.close()


def release(config: Config, stage: str, tag: str | None = None, *, dry_run: bool = False,
            reporter: Reporter | None = None) -> RunResult:
    """Back up, release TAG (default: the newest tag), verify; recover on failure."""
    revision = resolve(config.repo, tag)  # an unknown tag stops here, before any host
    ctx = Context(config, stage, command="release", dry_run=dry_run, options={"tag": tag})
    ctx.revision = revision
    ctx.release_id = new_release_id(revision.commit)
    ctx.backup_id = new_backup_id(f"pre-{revision.commit[:7]}")
    return _run(ctx, "release", reporter)


def _pending_takeover(ctx: Context, target: dict) -> bool:
    """A rollback to the same target that died half-way is finished, not refused.

    Its lock is taken over when the pending-rollback record names the run
    holding the lock and that run is not alive on this controller.
    """
    pending = ctx.primary.read_json(ctx.state_path(ctx.primary, PENDING))
    if not pending:
        return False
    if pending.get("to") != target["id"]:
        raise DeployError(f"a rollback to {pending.get('to')} (run {pending.get('run_id')}) did not finish",
                          hint="run that same rollback again to finish it, or 'invoke unlock' if you are sure")
    holder = read_lock(ctx.primary)
    if holder and holder.get("run_id") != pending.get("run_id"):
        return False  # someone else holds the lock: acquire_lock will refuse with their name
    if holder and holder.get("controller") == socket.gethostname() and _alive(holder.get("pid")) \
            and not _ended(ctx, holder.get("run_id", "")):
        raise LockHeld(f"the rollback run {holder.get('run_id')} is still running (pid {holder.get('pid')})")
    busy = ctx.primary.run("pgrep -f '[d]eploykit-django_state.py'", check=False).stdout.split()
    if busy:
        raise LockHeld(f"{ctx.primary.name}: a migration of the interrupted run {pending.get('run_id')} is still "
                       f"running (pid {', '.join(busy)})", hint="wait for it to end, then run the same rollback again")
    for host in ctx.hosts:
        held = read_lock(host)
        if held and held.get("run_id") == pending.get("run_id"):
            release_lock(host, pending["run_id"])
    ctx.journal.record("resume", previous_run=pending.get("run_id"), target=target["id"])
    return True


def _ended(ctx: Context, run_id: str) -> bool:
    """The run's local journal says it ended (its process may live on, e.g. a test or a notebook)."""
    path = ctx.config.journal_dir / f"{run_id}.jsonl"
    try:
        return '"event": "run_end"' in path.read_text()
    except OSError:
        return False


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def rollback(config: Config, stage: str, *, to_tag: str | None = None, to_commit: str | None = None,
             to_release: str | None = None, with_data: bool = False, confirm=None, dry_run: bool = False,
             reporter: Reporter | None = None) -> RunResult:
    """Go back to an earlier release (default: the one before the live one).

    Migrations the target did not have are unapplied with the newer code,
    then the code is switched; rows are kept. Irreversible migrations stop it
    before anything changes, unless `with_data`: then the target's backup is
    restored, after `confirm(loss_report)` says yes.
    """
    tag_commit = resolve(config.repo, to_tag).commit if to_tag else None  # unknown tag: stop before any host
    ctx = Context(config, stage, command="rollback", dry_run=dry_run,
                  options={"with_data": with_data, "tag": to_tag})
    try:
        registry = Registry.load(ctx.primary)
        live = registry.live()
        if not live:
            raise DeployError(f"stage {stage} has no live release", hint="release one first with 'invoke release'")
        try:
            target = find_target(registry.releases, live, tag=to_tag, commit=to_commit, release_id=to_release,
                                 tag_commit=tag_commit)
        except PlanError as exc:
            raise DeployError(str(exc), hint=exc.hint) from None
        ctx.failed, ctx.previous, ctx.release_id = live, target, live["id"]
        ctx.revision = Revision(target.get("commit") or "", target.get("tag"), target.get("tags", []), "")
        if not dry_run:
            _pending_takeover(ctx, target)
    except BaseException:
        ctx.close()
        raise
    try:
        result = run_playbook(ctx, "rollback_plan", reporter)
        result.data.update({"release_id": live["id"], "target": target["id"], "plan": ctx.state.get("plan"),
                            "loss": ctx.state.get("loss"), "journal": str(ctx.journal.local_path)})
        if not result.ok:
            return result
        if with_data and not dry_run and confirm is not None and not confirm(ctx.state.get("loss") or {}):
            ctx.unlock_all()
            result.ok = False
            result.error = DeployError("rollback not confirmed: nothing was changed",
                                       hint="pass --yes to confirm the loss in scripts")
            return result
        applied = run_playbook(ctx, "rollback_data" if with_data else "rollback", reporter)
        result.records += applied.records
        result.ok, result.error, result.failed_stage = applied.ok, applied.error, applied.failed_stage
        result.data["backup_id"] = ctx.backup_id
        return result
    finally:
        ctx.close()


def backup(config: Config, stage: str, *, dry_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Take a verified backup set now."""
    ctx = Context(config, stage, command="backup", dry_run=dry_run, options={"label": "manual"})
    ctx.backup_id = new_backup_id("manual")
    try:
        ctx.previous = Registry.load(ctx.primary).live()
    except BaseException:
        ctx.close()
        raise
    return _run(ctx, "backup", reporter)


def restore(config: Config, stage: str, backup_id: str, *, dry_run: bool = False,
            reporter: Reporter | None = None) -> RunResult:
    """Restore a verified backup's databases and files (refuses one that does not verify)."""
    ctx = Context(config, stage, command="restore", dry_run=dry_run)
    try:
        if backup_id not in list_backups(ctx.primary):
            raise BackupInvalid(f"no backup {backup_id!r} on {ctx.primary.name}")
    except BaseException:
        ctx.close()
        raise
    ctx.backup_id = backup_id
    return _run(ctx, "restore", reporter)


def list_releases(config: Config, stage: str) -> list[dict]:
    ctx = Context(config, stage, command="releases")
    try:
        releases = Registry.load(ctx.primary).releases
        present = set(list_backups(ctx.primary))
        for r in releases:
            if r.get("backup_id") in present:
                r["backup_bytes"] = ctx.primary.helper("files", "dir_size", {"path": ctx.backup_dir(ctx.primary, r["backup_id"])})["bytes"]
        return releases
    finally:
        ctx.close()


def list_backup_sets(config: Config, stage: str) -> list[dict]:
    """Every backup on the primary with size, items and verification state."""
    ctx = Context(config, stage, command="backups")
    rows = []
    try:
        host = ctx.primary
        for bid in list_backups(host):
            path = host.path("backups", bid)
            ok, problems, manifest = verify(ctx, host, path)
            if manifest is None:
                manifest = host.read_json(f"{path}/{MANIFEST}") or {}
            size = host.helper("files", "dir_size", {"path": path})["bytes"]
            rows.append({"id": bid, "bytes": size, "verified": ok, "problems": problems,
                         "items": [i["name"] for i in manifest.get("items", [])],
                         "release": manifest.get("release"), "for_release": manifest.get("for_release"),
                         "created": manifest.get("created")})
        return rows
    finally:
        ctx.close()


def unlock(config: Config, stage: str) -> list[dict]:
    """Free the stage lock on every host; return who held it and since when."""
    ctx = Context(config, stage, command="unlock")
    freed = []
    try:
        for host in ctx.hosts:
            holder = read_lock(host)
            if holder:
                release_lock(host, holder.get("run_id", ""), force=True)
                ctx.journal.record("unlock", host=host, holder=holder)
                freed.append({"host": host.name, **holder})
        return freed
    finally:
        ctx.close()
