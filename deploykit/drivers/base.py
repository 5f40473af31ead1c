"""The one interface every data driver implements (django-dbbackup's connector idea).

A driver backs up one item (a database or a directory) into a backup
directory on the host and verifies it beyond checksums. A restore has two
halves, so that a failure leaves the live item as it was: `build` makes the
backup's content beside the live item and checks it (row counts, owners,
checksums); `swap` puts it in place by rename, keeping the replaced item
whole; `discard` removes a build that was never swapped in.
"""
from __future__ import annotations


class Driver:
    kind = ""  # "databases", "media" or "paths": its place in backup_order
    engine = ""

    def __init__(self, spec):
        self.spec = spec

    @property
    def item_name(self) -> str:
        raise NotImplementedError

    def backup(self, ctx, host, backup_dir: str) -> dict:
        """Write the item under backup_dir; return its manifest entry."""
        raise NotImplementedError

    def verify(self, ctx, host, backup_dir: str, item: dict) -> list[str]:
        """Problems beyond size and sha256 (e.g. pg_restore --list)."""
        return []

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

    def describe_restore(self, item: dict) -> str:
        return f"restore {self.item_name} from the backup"


def prefixed(prefix: str, files: dict) -> dict:
    """Manifest paths are relative to the backup directory."""
    return {f"{prefix}/{rel}" if prefix else rel: meta for rel, meta in files.items()}
