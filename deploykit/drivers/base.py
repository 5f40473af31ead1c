"""The one interface every data driver implements (django-dbbackup's connector idea).

A driver backs up one item (a database or a directory) into a backup
directory on the host, verifies it beyond checksums, restores it, and keeps a
copy of the failed state before a restore replaces it.
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

    def keep_failed_state(self, ctx, host, dest_dir: str) -> str:
        """Copy what is live now into dest_dir before a restore replaces it."""
        raise NotImplementedError

    def restore(self, ctx, host, backup_dir: str, item: dict, aside_dir: str) -> str:
        """Put the item back as it was at backup time; return a short summary."""
        raise NotImplementedError

    def rows_lost(self, ctx, host, backup_dir: str, item: dict) -> dict[str, int]:
        """Per table, rows live now that a restore of this item would lose."""
        return {}

    def describe_restore(self, item: dict) -> str:
        return f"restore {self.item_name} from the backup"


def prefixed(prefix: str, files: dict) -> dict:
    """Manifest paths are relative to the backup directory."""
    return {f"{prefix}/{rel}" if prefix else rel: meta for rel, meta in files.items()}
