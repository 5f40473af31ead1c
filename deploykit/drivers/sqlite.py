"""SQLite: consistent copies through the backup API; restore by atomic replace."""
from __future__ import annotations

import posixpath

from .base import Driver


class SQLiteDriver(Driver):
    kind = "databases"
    engine = "sqlite"

    @property
    def item_name(self) -> str:
        return f"db-{self.spec.alias}"

    def path(self, host) -> str:
        name = host.render(self.spec.name)
        return name if posixpath.isabs(name) else host.path(name)

    def backup(self, ctx, host, backup_dir):
        src = self.path(host)
        item = {"name": self.item_name, "kind": self.kind, "engine": self.engine,
                "alias": self.spec.alias, "source": src, "files": {}}
        if not host.exists(src):
            item["absent"] = True  # restore moves a database created since aside
            return item
        fname = f"{self.item_name}.sqlite3"
        doc = host.helper("sqlite", "backup", {"src": src, "dest": posixpath.join(backup_dir, fname)})
        item["files"] = {fname: {"size": doc["size"], "sha256": doc["sha256"]}}
        item["meta"] = {"tables": doc.get("tables", {})}
        return item

    def keep_failed_state(self, ctx, host, dest_dir):
        src = self.path(host)
        if not host.exists(src):
            return f"{self.item_name}: no database file"
        dest = posixpath.join(dest_dir, f"{self.item_name}.failed.sqlite3")
        host.helper("sqlite", "backup", {"src": src, "dest": dest})
        return f"{self.item_name} -> {dest}"

    def restore(self, ctx, host, backup_dir, item, aside_dir):
        dest = self.path(host)
        aside = posixpath.join(aside_dir, f"{self.item_name}.replaced.sqlite3")
        if item.get("absent"):
            if host.exists(dest):
                host.helper("files", "move", {"src": dest, "dest": aside})
                return f"{self.item_name}: did not exist at backup time; moved to {aside}"
            return f"{self.item_name}: absent then and now"
        fname = next(iter(item["files"]))
        host.helper("sqlite", "restore", {"src": posixpath.join(backup_dir, fname), "dest": dest, "aside": aside})
        return f"{self.item_name}: replaced atomically"

    def rows_lost(self, ctx, host, backup_dir, item):
        live = self.path(host)
        if not host.exists(live):
            return {}
        if item.get("absent"):
            tables = host.helper("sqlite", "checksums", {"path": live})["tables"]
            return {t: v["rows"] for t, v in tables.items()}
        fname = next(iter(item["files"]))
        return host.helper("sqlite", "rowdiff", {"a": live, "b": posixpath.join(backup_dir, fname)})["tables"]
