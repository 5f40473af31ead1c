"""The one interface every data driver implements (django-dbbackup's connector idea).

A driver backs up one item (a database or a directory) into a backup
directory on the host and verifies it beyond checksums. A restore has two
halves, so that a failure leaves the live item as it was: `build` makes the
backup's content beside the live item and checks it (row counts, owners,
checksums); `swap` puts it in place by rename, keeping the replaced item
whole; `discard` removes a build that was never swapped in.

What a driver can do beyond that is declared in `capabilities`, so that steps
ask "can it snapshot?" and never "is it PostgreSQL?":

- "dump", "restore_beside", "swap": backup, build, swap/discard (every driver)
- "snapshot": snapshot/snapshot_exists/snapshot_blocker/snapshot_bytes/held_copies/drop/prune_derived
- "row_diff": rows_lost (and rows_lost_vs a snapshot, with "snapshot")
- "copy_to": streaming the item to a host of another stage (declared for later)
"""
from __future__ import annotations

BASIC = frozenset({"dump", "restore_beside", "swap"})


class Driver:
    kind = ""  # "databases", "media" or "paths": its place in backup_order
    engine = ""
    capabilities: frozenset[str] = BASIC
    tools: tuple[str, ...] = ()  # commands the primary host needs for this driver

    def __init__(self, spec):
        self.spec = spec

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def item_name(self) -> str:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """How messages name the live item (a database name, a path)."""
        return self.item_name

    # -- read-only looks (preflight, check) ------------------------------------------
    def exists(self, ctx, host) -> bool:
        """The live item is there."""
        raise NotImplementedError

    def backup_bytes(self, ctx, host) -> int:
        """About what a backup of the live item takes on disk (0 when absent)."""
        return 0

    def preflight(self, ctx, host, live: dict | None) -> list[str]:
        """Problems a read-only look finds before anything changes; `live` is the live release's entry."""
        return []

    # -- what the app's Django uses (databases only) ---------------------------------
    def django_paths(self, host) -> list[str]:
        """Paths the app's Django should resolve to real paths (symlinks) before they are compared."""
        return []

    def django_uses_it(self, host, seen: dict, resolved: dict) -> bool:
        """Django's DATABASES entry (`seen`: ENGINE, NAME, HOST, PORT) names this very item."""
        return False

    def django_expected(self, host, resolved: dict) -> str:
        """How deploykit.yaml names the item, in the words of a mismatch message."""
        return self.item_name

    def restore_notes(self, ctx, host) -> list[str]:
        """What to report about the live item before its data is replaced (e.g. owners)."""
        return []

    # -- backup ----------------------------------------------------------------
    def backup(self, ctx, host, backup_dir: str) -> dict:
        """Write the item under backup_dir; return its manifest entry."""
        raise NotImplementedError

    def verify(self, ctx, host, backup_dir: str, item: dict) -> list[str]:
        """Problems beyond size and sha256 (e.g. pg_restore --list)."""
        return []

    # -- restore: build beside, swap ------------------------------------------------
    def build(self, ctx, host, backup_dir: str, item: dict, label: str) -> dict:
        """Make the item's backed-up content beside the live one, checked; return what swap needs (JSON)."""
        raise NotImplementedError

    def swap(self, ctx, host, built: dict, label: str) -> str:
        """Put the built content in place of the live one by rename; keep the replaced one. Idempotent."""
        raise NotImplementedError

    def discard(self, ctx, host, built: dict) -> str:
        """Remove a build that was never swapped in."""
        raise NotImplementedError

    def rows_lost(self, ctx, host, backup_dir: str, item: dict) -> dict[str, int]:
        """Per table, rows live now that a restore of this item would lose."""
        return {}

    # -- snapshots (capability "snapshot") ---------------------------------------------
    def snapshot_key(self) -> str:
        """The key of this driver's snapshot in the run state and the registry entry."""
        return self.spec.alias

    def usable_snapshot(self, ctx, host, snapshots: dict) -> str | None:
        """The snapshot (from the run's `snapshots`) that recovery can swap in, if it still exists."""
        if not self.can("snapshot"):
            return None
        snap = (snapshots or {}).get(self.snapshot_key())
        return snap if snap and self.snapshot_exists(ctx, host, snap) else None

    def snapshot_exists(self, ctx, host, snap: str) -> bool:
        return False

    def snapshot_bytes(self, ctx, host) -> int:
        """What a snapshot copies (the live item's size): with the last clone's speed, how long writers stop."""
        return 0

    def held_copies(self, ctx, host) -> list[dict]:
        """Read-only: the snapshots and set-aside copies of this item the registry records and the host still
        holds, oldest first: [{name, kind, release, created, bytes}] (`deploykit status` shows what they take)."""
        return []


def prefixed(prefix: str, files: dict) -> dict:
    """Manifest paths are relative to the backup directory."""
    return {f"{prefix}/{rel}" if prefix else rel: meta for rel, meta in files.items()}
