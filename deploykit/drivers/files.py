"""Media and extra paths: a tar plus a per-file sha256 manifest; mirror restore."""
from __future__ import annotations

import posixpath

from .base import Driver


class FilesDriver(Driver):
    engine = "files"

    def __init__(self, spec):
        super().__init__(spec)
        self.kind = spec.kind

    @property
    def item_name(self) -> str:
        return f"{'media' if self.kind == 'media' else 'path'}-{self.spec.name}"

    def root(self, host) -> str:
        path = host.render(self.spec.path)
        return path if posixpath.isabs(path) else host.path(path)

    def backup(self, ctx, host, backup_dir):
        fname = f"{self.item_name}.tar"
        doc = host.helper("files", "archive", {"root": self.root(host), "dest": posixpath.join(backup_dir, fname)})
        return {"name": self.item_name, "kind": self.kind, "engine": self.engine, "root": self.root(host),
                "files": {fname: {"size": doc["size"], "sha256": doc["sha256"]}},
                "tree": doc["files"], "missing": bool(doc.get("missing"))}

    def keep_failed_state(self, ctx, host, dest_dir):
        dest = posixpath.join(dest_dir, f"{self.item_name}.failed.tar")
        doc = host.helper("files", "archive", {"root": self.root(host), "dest": dest})
        return f"{self.item_name}: {len(doc['files'])} files -> {dest}"

    def restore(self, ctx, host, backup_dir, item, aside_dir):
        fname = next(iter(item["files"]))
        doc = host.helper("files", "mirror_restore", {
            "root": self.root(host), "archive": posixpath.join(backup_dir, fname),
            "files": item["tree"], "aside": posixpath.join(aside_dir, f"{self.item_name}.added"),
        })
        return (f"{self.item_name}: {len(doc['restored'])} restored, {len(doc['moved_aside'])} added since moved aside, "
                f"{doc['unchanged']} unchanged")
