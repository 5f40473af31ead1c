"""A blue/green transfer's own work: which database each colour really uses, and the checked copy of a backup set.

The two colours share one deploykit.yaml, so a database is named the same way
for both: whether they are the same database depends on where each colour's
hosts are. A SQLite database is the same when the two paths are one file of one
machine (same machine id and the same real path, or the same device and
inode); a PostgreSQL database when it is the same server (the configured host,
or the colour's own machine when the host is local) and port and name.
"""
from __future__ import annotations

import posixpath

from .. import layout
from ..drivers import database_drivers
from ..state.backups import require_verified
from ..transport.host import q
from ..transport.streamcopy import copy_tree

LOCAL = ("", "localhost", "127.0.0.1", "::1")
def _machine(host) -> str:
    res = host.run(f"cat {q(layout.MACHINE_ID)} 2>/dev/null || hostname", check=False, read_only=True)
    return res.stdout.strip() or f"{host.spec.hostname}:{host.spec.port}"


def identities(ctx, host) -> dict[str, tuple]:
    """alias -> a tuple equal for two hosts exactly when they use the same database (read-only)."""
    machine = _machine(host)
    out = {}
    for d in database_drivers(ctx.config):
        if d.engine == "sqlite":
            path = d.path(host)
            res = host.run(f"realpath -m -- {q(path)}; stat -L -c %d:%i -- {q(path)} 2>/dev/null || true",
                           check=False, read_only=True)
            lines = res.stdout.split()
            real = lines[0] if lines else path
            inode = lines[1] if len(lines) > 1 else None
            out[d.spec.alias] = ("sqlite", machine, real, inode)
        else:
            server = d.spec.host or ""
            where = machine if server in LOCAL or server.startswith("/") else server
            out[d.spec.alias] = (d.engine, where, int(d.spec.port or 5432), d.spec.name)
    return out


def same_databases(a: dict[str, tuple], b: dict[str, tuple]) -> list[str]:
    """The aliases whose databases are one: same SQLite file (path or inode), same PostgreSQL server and name."""
    same = []
    for alias, ida in a.items():
        idb = b.get(alias)
        if idb is None:
            continue
        if ida[0] == "sqlite" and idb[0] == "sqlite":
            if ida[1] == idb[1] and (ida[2] == idb[2] or (ida[3] and ida[3] == idb[3])):
                same.append(alias)
        elif ida == idb:
            same.append(alias)
    return same


def copy_backup(ctx, src, dst, backup_id: str) -> dict:
    """Copy the source's verified backup set to the target's backups dir (every file checked three ways),
    then verify it there as a restore would (manifest + checksums): what arrived, and the manifest."""
    src_dir, dst_dir = layout.backup_dir(src, backup_id), layout.backup_dir(dst, backup_id)
    dst.run(f"mkdir -p -m 700 {q(layout.backups_dir(dst))}")
    copied = copy_tree(src, src_dir, dst, dst_dir, progress=ctx.bytes_progress(dst, f"backup {backup_id}"))
    try:
        manifest = require_verified(ctx, dst, dst_dir)
    except BaseException:
        dst.run(f"rm -rf -- {q(dst_dir)}", check=False, always=True, timeout=120)  # the target as before
        raise
    return {"files": len(copied.files), "bytes": copied.bytes, "seconds": round(copied.seconds, 3),
            "dir": dst_dir, "manifest": manifest, "name": posixpath.basename(dst_dir)}
