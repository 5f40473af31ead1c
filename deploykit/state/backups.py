"""Backup sets: ordered items in `backups/<id>/` with a manifest of sizes and sha256.

The manifest is written last, with `complete: true`; a backup without it is
incomplete and never restored. Verification recomputes every checksum on the
host and asks each driver for its own check (pg_restore --list).
"""
from __future__ import annotations

import posixpath

from .. import layout
from ..drivers import database_drivers, driver_for_item, drivers_for
from ..errors import BackupInvalid
from ..transport.host import q
from .journal import utc_now, utc_stamp

MANIFEST = layout.MANIFEST


def new_backup_id(label: str = "") -> str:
    return f"{utc_stamp()}{'-' + label if label else ''}"


def prepare_dir(host, path: str) -> None:
    host.run(f"mkdir -p {q(posixpath.dirname(path))} && mkdir -p -m 700 {q(path)} && chmod 700 {q(path)}")


def code_item(ctx, host, backup_dir: str) -> dict | None:
    """Tarball of what `current` points at, or None before the first release."""
    current = host.realpath(layout.current(host))
    if not current or not host.exists(current):
        return None
    doc = host.helper("archives", "archive", {"root": current, "dest": layout.code_archive(backup_dir),
                                           "compress": True})
    return {"name": "code", "kind": "code", "engine": "tar", "release_dir": current,
            "release_id": posixpath.basename(current),
            "files": {layout.CODE_ARCHIVE: {"size": doc["size"], "sha256": doc["sha256"]}}}


def data_items(ctx, host, backup_dir: str, databases_only: bool = False) -> list[dict]:
    drivers = database_drivers(ctx.config) if databases_only else drivers_for(ctx.config)
    return [driver.backup(ctx, host, backup_dir) for driver in drivers]


def write_manifest(ctx, host, backup_dir: str, backup_id: str, items: list[dict], **extra) -> dict:
    manifest = {"id": backup_id, "created": utc_now(), "app": ctx.config.app, "stage": ctx.stage,
                "host": host.name, "run_id": ctx.run_id, "complete": True, **extra, "items": items}
    host.write_json(layout.manifest(backup_dir), manifest)
    return manifest


def verify(ctx, host, backup_dir: str, skip=()) -> tuple[bool, list[str], dict | None]:
    """(verified, problems, manifest) for one host's part of a backup; items in `skip` are not read."""
    doc = host.helper("archives", "verify_backup", {"dir": backup_dir, "skip": sorted(skip)})
    problems = list(doc.get("problems", []))
    manifest = host.read_json(layout.manifest(backup_dir)) if doc.get("verified") else None
    if manifest:
        for item in manifest["items"]:
            if item["kind"] == "code" or item["name"] in skip:
                continue
            try:
                problems += driver_for_item(ctx.config, item).verify(ctx, host, backup_dir, item)
            except KeyError:
                problems.append(f"{item['name']}: not in this configuration")
    return (not problems and bool(doc.get("verified"))), problems, manifest


def require_verified(ctx, host, backup_dir: str, skip=()) -> dict:
    ok, problems, manifest = verify(ctx, host, backup_dir, skip)
    if not ok:
        shown = "; ".join(problems[:3]) or "does not verify"
        raise BackupInvalid(f"{host.name}: backup {posixpath.basename(backup_dir)} is not usable: {shown}")
    return manifest


def list_backups(host) -> list[str]:
    res = host.run(f"ls -1 {q(layout.backups_dir(host))} 2>/dev/null", check=False, read_only=True)
    return sorted(line.strip() for line in res.stdout.splitlines() if line.strip())


def newest_verified(ctx, host) -> dict | None:
    """The newest backup on host that verifies: {id, created, age_seconds}; None when none does."""
    for bid in reversed(list_backups(host)):
        ok, _problems, manifest = verify(ctx, host, layout.backup_dir(host, bid))
        if ok:
            created = (manifest or {}).get("created")
            return {"id": bid, "created": created, "age_seconds": age_seconds(created)}
    return None


def age_seconds(created: str | None) -> float | None:
    """Seconds since a manifest's `created` (UTC, as utc_now writes it); None when unreadable."""
    import time
    from datetime import datetime, timezone

    try:
        at = datetime.strptime(created or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return round(time.time() - at.timestamp(), 1)
