"""Media and extra paths: a tar plus a per-file sha256 manifest; restored beside, then swapped in."""
from __future__ import annotations

import posixpath

from .. import layout, names
from ..errors import HostCommandFailed
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
        return layout.under_deploy_to(host, host.render(self.spec.path))

    def exists(self, ctx, host) -> bool:
        return host.exists(self.root(host))

    def backup_bytes(self, ctx, host) -> int:
        return host.helper("files", "dir_size", {"path": self.root(host)})["bytes"] if self.exists(ctx, host) else 0

    def preflight(self, ctx, host, live):
        if live and not self.exists(ctx, host):
            return [f"{self.item_name}: {self.root(host)} does not exist"]
        return []

    def backup(self, ctx, host, backup_dir):
        fname = f"{self.item_name}.tar"
        doc = host.helper("archives", "archive", {"root": self.root(host), "dest": posixpath.join(backup_dir, fname)},
                          track=f"archive {self.item_name}")
        return {"name": self.item_name, "kind": self.kind, "engine": self.engine, "root": self.root(host),
                "files": {fname: {"size": doc["size"], "sha256": doc["sha256"]}},
                "tree": doc["files"], "missing": bool(doc.get("missing"))}

    def build(self, ctx, host, backup_dir, item, label):
        """The backup's tree beside the live one (a sibling, so the swap is a rename); unchanged files hard-linked."""
        root = self.root(host)
        dest = f"{root.rstrip('/')}.dk-{names.derived_name('restore', ctx.config.app, root, label)}"
        names.record(ctx, dest, "restore", engine=self.engine, item=self.item_name, label=label)
        fname = next(iter(item["files"]))
        try:
            doc = host.helper("archives", "build_tree", {"archive": posixpath.join(backup_dir, fname), "live": root,
                                                      "dest": dest, "files": item["tree"]},
                              track=f"build {self.item_name}")
        except Exception as exc:
            # never handed to swap or discard: the unfinished tree is removed here, not left beside the live one
            if host.run(f"rm -rf {_q(dest)}", check=False, always=True).ok:
                names.forget(ctx, dest)
            if isinstance(exc, HostCommandFailed):
                raise HostCommandFailed(f"{host.name}: {self.item_name}: could not rebuild {root} from the backup "
                                        f"beside it ({exc}); the live files are untouched",
                                        hint="free some disk space, then run the command again") from None
            raise
        return {"engine": self.engine, "item": self.item_name, "root": root, "new": dest, "label": label,
                "linked": doc["linked"], "extracted": doc["extracted"]}

    def swap(self, ctx, host, built, label):
        aside = posixpath.join(ctx.failed_dir(host), f"{self.item_name}.replaced-{built.get('label') or label}")
        doc = host.helper("archives", "swap_tree", {"root": built["root"], "new": built["new"], "aside": aside})
        names.forget(ctx, built["new"])
        if doc.get("already"):
            return f"{self.item_name}: already swapped in (the replaced files are in {doc.get('aside')})"
        kept = f" (the replaced files are kept in {doc['aside']})" if doc.get("aside") else ""
        return (f"{self.item_name}: swapped in, {built.get('extracted', 0)} file(s) from the backup, "
                f"{built.get('linked', 0)} unchanged{kept}")

    def discard(self, ctx, host, built):
        host.run(f"rm -rf {_q(built['new'])}")
        names.forget(ctx, built["new"])
        return f"{self.item_name}: removed the unfinished copy"


def _q(value):
    from ..transport.host import q

    return q(value)
