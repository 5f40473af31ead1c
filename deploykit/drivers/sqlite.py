"""SQLite: consistent copies through the backup API; restored by an atomic replace, the replaced file kept."""
from __future__ import annotations

import posixpath

from .. import layout
from ..errors import DeployError, HostCommandFailed
from .base import BASIC, Driver


class SQLiteDriver(Driver):
    kind = "databases"
    engine = "sqlite"
    capabilities = BASIC | {"row_diff"}

    @property
    def item_name(self) -> str:
        return f"db-{self.spec.alias}"

    def path(self, host) -> str:
        return layout.under_deploy_to(host, host.render(self.spec.name))

    def django_paths(self, host):
        return [self.path(host)]

    def django_uses_it(self, host, seen, resolved):
        expected = resolved.get(self.path(host), self.path(host))
        return "sqlite" in (seen.get("ENGINE") or "") and seen.get("NAME") == expected

    def django_expected(self, host, resolved):
        return f"sqlite {resolved.get(self.path(host), self.path(host))!r}"

    def exists(self, ctx, host) -> bool:
        return host.exists(self.path(host))

    def backup_bytes(self, ctx, host) -> int:
        return host.helper("files", "dir_size", {"path": self.path(host)})["bytes"] if self.exists(ctx, host) else 0

    def preflight(self, ctx, host, live):
        if live and not self.exists(ctx, host):
            return [f"{self.spec.alias}: the SQLite database {self.path(host)} does not exist while release "
                    f"{live['id']} is live (relative names are relative to deploy_to)"]
        return []

    def backup(self, ctx, host, backup_dir):
        src = self.path(host)
        item = {"name": self.item_name, "kind": self.kind, "engine": self.engine,
                "alias": self.spec.alias, "source": src, "files": {}}
        if not host.exists(src):
            if ctx.previous:
                raise DeployError(f"{host.name}: the SQLite database {src} does not exist while release "
                                  f"{ctx.previous['id']} is live: a backup of it would restore nothing",
                                  hint="check databases.{alias}.name (relative names are relative to deploy_to); "
                                       "'deploykit check' compares it with the path Django uses")
            item["absent"] = True
            return item
        fname = f"{self.item_name}.sqlite3"
        doc = host.helper("sqlite", "backup", {"src": src, "dest": posixpath.join(backup_dir, fname)},
                          track=f"backup {self.item_name}")
        item["files"] = {fname: {"size": doc["size"], "sha256": doc["sha256"]}}
        item["meta"] = {"tables": doc.get("tables", {})}
        return item

    def build(self, ctx, host, backup_dir, item, label):
        """Check the backup's copy (integrity, row counts); the copy itself is made by the atomic swap."""
        built = {"engine": self.engine, "item": self.item_name, "dest": self.path(host), "label": label,
                 "absent": bool(item.get("absent"))}
        if item.get("absent"):
            return built
        fname = next(iter(item["files"]))
        src = posixpath.join(backup_dir, fname)
        info = host.helper("sqlite", "info", {"path": src})
        expected = (item.get("meta") or {}).get("tables")
        if expected is not None and info.get("tables") != expected:
            raise HostCommandFailed(f"{host.name}: {src} holds other row counts than the backup recorded",
                                    hint="the backup may be damaged; the live database is untouched")
        built.update(src=src, tables=info.get("tables"))
        return built

    def swap(self, ctx, host, built, label):
        dest = built["dest"]
        aside = posixpath.join(ctx.failed_dir(host), f"{self.item_name}.replaced-{built.get('label') or label}.sqlite3")
        if built.get("absent"):
            if host.exists(dest):
                host.helper("files", "move", {"src": dest, "dest": aside})
                return f"{self.item_name}: did not exist at backup time; the database since is kept at {aside}"
            return f"{self.item_name}: absent then and now"
        if host.exists(aside):
            return f"{self.item_name}: already swapped in (the replaced database is kept at {aside})"
        doc = host.helper("sqlite", "restore", {"src": built["src"], "dest": dest, "aside": aside})
        if built.get("tables") is not None and doc.get("tables") != built["tables"]:
            raise HostCommandFailed(f"{host.name}: {dest} was restored with other row counts than the backup")
        kept = f" (the replaced database is kept at {doc['previous_kept_at']})" if doc.get("previous_kept_at") else ""
        return f"{self.item_name}: replaced atomically{kept}"

    def discard(self, ctx, host, built):
        return f"{self.item_name}: nothing built"

    def rows_lost(self, ctx, host, backup_dir, item):
        live = self.path(host)
        if not host.exists(live):
            return {}
        if item.get("absent"):
            tables = host.helper("sqlite", "checksums", {"path": live})["tables"]
            return {t: v["rows"] for t, v in tables.items()}
        fname = next(iter(item["files"]))
        return host.helper("sqlite", "rowdiff", {"a": live, "b": posixpath.join(backup_dir, fname)})["tables"]
