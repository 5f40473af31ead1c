"""The library entry points behind the invoke tasks.

Each function checks its input before it contacts a host (bad input changes
nothing), runs a playbook, and returns a RunResult that keeps what every host
did. Tasks turn results and errors into output and exit codes.
"""
from __future__ import annotations

from . import steps  # noqa: F401  (registers the built-in steps)
from .backupset import MANIFEST, list_backups, new_backup_id, verify
from .config import Config
from .context import Context
from .errors import BackupInvalid, DeployError
from .gitrepo import Revision, resolve
from .journal import read_lock, release_lock
from .playbook import Reporter, RunResult, run_playbook
from .releases import Registry, new_release_id


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


def _live_and_previous(ctx: Context) -> tuple[dict, dict]:
    registry = Registry.load(ctx.primary)
    live = registry.live()
    if not live:
        raise DeployError(f"stage {ctx.stage} has no live release", hint="release one first with 'invoke release'")
    previous = registry.get(live.get("previous") or "")
    if not previous:
        raise DeployError(f"release {live['id']} has no earlier release to roll back to",
                          hint="restore a backup with 'invoke restore --backup ID' instead")
    if not live.get("backup_id"):
        raise DeployError(f"release {live['id']} has no pre-release backup recorded",
                          hint="restore a backup by hand with 'invoke restore --backup ID'")
    return live, previous


def rollback(config: Config, stage: str, *, dry_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Undo the live release: previous code, and its pre-release data backup."""
    ctx = Context(config, stage, command="rollback", dry_run=dry_run, options={"undo_status": "rolled-back"})
    try:
        live, previous = _live_and_previous(ctx)
    except BaseException:
        ctx.close()
        raise
    ctx.release_id = live["id"]
    ctx.previous = previous
    ctx.backup_id = live["backup_id"]
    ctx.revision = Revision(live.get("commit") or "", live.get("tag"), live.get("tags", []), "")
    return _run(ctx, "rollback", reporter)


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
        return Registry.load(ctx.primary).releases
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
