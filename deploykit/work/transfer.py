"""A blue/green transfer's own work: which database each colour really uses, and the checked copy of a backup set.

The two colours share one deploykit.yaml, so a database is named the same way
for both: whether they are the same database depends on where each colour's
hosts are. A SQLite database is the same when the two paths are one file of one
machine (same machine id and the same real path, or the same device and
inode). A PostgreSQL database is the same when it has the same name on the same
server, and which server a colour reaches is asked of the server itself (its
system identifier, made by initdb), not read from the config: with no host or
port configured each colour's host reaches the server its own environment names
(PGHOST, PGPORT, a local socket), and one server reached under two spellings
(localhost and 127.0.0.1, a DNS name and its address) is still one. A cluster
copied from the other at the file level (a physical standby, or a promoted copy
of one) keeps the system identifier: that too is refused, the safe side.
"""
from __future__ import annotations

import posixpath

from .. import layout
from ..drivers import database_drivers, drivers_for
from ..errors import DeployError, PreflightFailed
from ..state.backups import require_verified, write_manifest
from ..transport.host import q
from ..transport.streamcopy import copy_tree, sync_tree

# which server this is: initdb's random 64-bit id of the cluster (read-only, any role may call it)
SERVER_ID_SQL = "SELECT system_identifier FROM pg_control_system();"
# seconds the newest change under a media tree must lie before its stamp for the stamp to be trusted
# (ctime ticks at the kernel's coarse clock, a few milliseconds; a second is far above it, and above small
# clock steps)
SETTLED_S = 1.0
NOT_A_TRANSFER = "not a transfer (no source and target stages): nothing to do"


def roles(ctx) -> tuple[str, str] | None:
    """(source, target) of the transfer; None for a playbook described by name on one stage (a dry-run)."""
    stages = ctx.options.get("stages") or {}
    if "source" not in stages or "target" not in stages:
        return None
    return stages["source"], stages["target"]


def ends(ctx):
    """(the source's primary, the target's primary) of the transfer; None when the run is not one."""
    both = roles(ctx)
    return None if both is None else (ctx.primary_of(both[0]), ctx.primary_of(both[1]))


def _machine(host) -> str:
    res = host.run(f"cat {q(layout.MACHINE_ID)} 2>/dev/null || hostname", check=False, read_only=True)
    return res.stdout.strip() or f"{host.spec.hostname}:{host.spec.port}"


def identities(ctx, host) -> dict[str, tuple]:
    """alias -> a tuple equal for two hosts exactly when they use the same database (read-only)."""
    machine, out = None, {}
    for d in database_drivers(ctx.config):
        if d.engine == "sqlite":
            machine = machine or _machine(host)
            path = d.path(host)
            res = host.run(f"realpath -m -- {q(path)}; stat -L -c %d:%i -- {q(path)} 2>/dev/null || true",
                           check=False, read_only=True)
            lines = res.stdout.split()
            real = lines[0] if lines else path
            inode = lines[1] if len(lines) > 1 else None
            out[d.spec.alias] = ("sqlite", machine, real, inode)
        else:
            out[d.spec.alias] = (d.engine, server_id(ctx, host, d), d.spec.name)
    return out


def server_id(ctx, host, driver) -> str:
    """The system identifier of the PostgreSQL server `driver` reaches from `host` (asked of it, read-only)."""
    try:
        got = driver.value(ctx, host, SERVER_ID_SQL)
    except DeployError as exc:
        raise PreflightFailed(f"{host.name}: cannot ask the PostgreSQL server of {driver.spec.alias} which server "
                              f"it is: {exc.one_line()}",
                              hint="a transfer must know the two colours use two databases; check that the "
                                   f"host reaches its server as {driver.spec.admin_user or 'the admin role'}") from None
    if not got.strip().lstrip("-").isdigit():
        raise PreflightFailed(f"{host.name}: the PostgreSQL server of {driver.spec.alias} answered {got!r} for "
                              "its system identifier", hint="is it PostgreSQL 9.6 or newer?")
    return got.strip()


def same_databases(a: dict[str, tuple], b: dict[str, tuple]) -> list[str]:
    """The aliases whose databases are one: same SQLite file (path or inode), same PostgreSQL server (system
    identifier) and name."""
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
    its databases only (media and paths go by sync_media), sealed there with a manifest of what arrived and
    verified as a restore would: what arrived, and that manifest."""
    src_dir, dst_dir = layout.backup_dir(src, backup_id), layout.backup_dir(dst, backup_id)
    sealed = ctx.state.sealed.get(src.name)  # sealed and verified by this run, under its lock: not read again
    source = sealed if sealed and sealed.get("id") == backup_id else require_verified(ctx, src, src_dir)
    items = [i for i in source["items"] if i["kind"] == "databases"]
    dst.run(f"mkdir -p -m 700 {q(layout.backups_dir(dst))}")
    # each file's digest is the manifest's: what the relay reads must be what was verified
    files = {rel: meta for i in items for rel, meta in i["files"].items()}
    copied = copy_tree(src, src_dir, dst, dst_dir, progress=ctx.bytes_progress(dst, f"backup {backup_id}"),
                       listing=files)
    try:
        extra = {k: v for k, v in source.items() if k not in ("id", "created", "app", "stage", "host", "run_id",
                                                               "complete", "items")}
        write_manifest(ctx, dst, dst_dir, backup_id, items, **extra, copied_from=f"{src.name}:{src_dir}")
        manifest = require_verified(ctx, dst, dst_dir)
    except BaseException:
        dst.run(f"rm -rf -- {q(dst_dir)}", check=False, always=True, timeout=120)  # the target as before
        raise
    return {"files": len(copied.files), "bytes": copied.bytes, "seconds": round(copied.seconds, 3),
            "dir": dst_dir, "manifest": manifest}


def file_drivers(ctx) -> list:
    """The media and extra paths: they move by sync_tree, only the files that differ."""
    return [d for d in drivers_for(ctx.config) if d.engine == "files"]


def staging(root: str, run_id: str) -> str:
    """Where the target's new tree is made, beside its live one (the swap is a rename)."""
    return f"{root.rstrip('/')}.dk-transfer-{run_id}"


def _sync_into(ctx, src, dst, driver, new: str, what: str, media_rules: dict | None = None):
    """sync_tree the source's tree into `new` beside the target's live one; the scratch archives are removed
    whatever happens, and the tree `new` held before is not kept."""
    scratch_src, scratch_dst = layout.scratch_dir(src, ctx.run_id), layout.scratch_dir(dst, ctx.run_id)
    try:
        got = sync_tree(src, driver.root(src), dst, new, src_scratch=scratch_src, dst_scratch=scratch_dst,
                        aside=f"{new}.before", progress=ctx.bytes_progress(dst, what), media_rules=media_rules)
    finally:
        for host, path in ((src, scratch_src), (dst, scratch_dst)):
            host.run(f"rm -rf -- {q(path)}", check=False, always=True, timeout=60)
    dst.run(f"rm -rf -- {q(new + '.before')}")
    return got


def sync_media(ctx, src, dst, driver, media_rules: dict | None = None) -> dict:
    """Make a tree beside the target's live one equal to the source's (writes frozen there): the target's
    files hard-linked into it first, so that only the files that differ are sent. Nothing live changes.
    `media_rules`: a refresh's (streamcopy.sync_tree): excluded and placeholder files."""
    root = driver.root(dst)
    new = staging(root, ctx.run_id)
    doc = {"item": driver.item_name, "root": root, "new": new, "swapped": False}
    if not src.exists(driver.root(src)):
        return {**doc, "absent": True}
    dst.run(f"rm -rf -- {q(new)}")
    if dst.exists(root):
        dst.run(f"cp -al -- {q(root)} {q(new)}")
    stamp = _stamp(src, driver)  # before the pass: whatever changes during it shows in the frozen pass's stamp
    try:
        got = _sync_into(ctx, src, dst, driver, new, f"sync {driver.item_name}", media_rules)
    except BaseException:
        dst.run(f"rm -rf -- {q(new)} {q(new + '.before')}", check=False, always=True, timeout=120)
        raise
    return {**doc, "files": got.files, "sent_files": got.sent_files, "kept_files": got.kept_files,
            "bytes_sent": got.bytes_sent, "stamp": stamp}


def _stamp(src, driver) -> str | None:
    """The source tree's stat stamp when it can be trusted (nothing changed within SETTLED_S before it)."""
    got = src.helper("files", "tree_stamp", {"root": driver.root(src)})
    return got.get("stamp") if got.get("settled_s", 0) > SETTLED_S else None


def resync_media(ctx, src, dst, driver, doc: dict) -> dict:
    """Bring a synced tree (not swapped in yet) up to date with the source again: only the files that changed
    since the last pass are sent (the first pass ran while the source served; this one runs frozen)."""
    if doc.get("absent") or doc.get("swapped"):
        return doc
    if doc.get("stamp") and _stamp(src, driver) == doc["stamp"]:
        # not one entry of the source changed since before the first pass: the tree built then is its copy
        doc.update(passes=doc.get("passes", 1) + 1, sent_again=0, unchanged_again=True)
        return doc
    got = _sync_into(ctx, src, dst, driver, doc["new"], f"sync {driver.item_name} again")
    doc.update(files=got.files, passes=doc.get("passes", 1) + 1, sent_again=got.sent_files,
               sent_files=doc.get("sent_files", 0) + got.sent_files,
               bytes_sent=doc.get("bytes_sent", 0) + got.bytes_sent)
    return doc


def swap_media(ctx, host, doc: dict) -> str:
    """The synced tree in place of the target's live one by rename; the replaced one kept in failed/."""
    if doc.get("absent") or doc.get("swapped"):
        return f"{doc['item']}: {'absent on the source' if doc.get('absent') else 'swapped in already'}"
    aside = posixpath.join(layout.failed_dir(host, f"transfer-{ctx.run_id}"), f"{doc['item']}.replaced")
    got = host.helper("archives", "swap_tree", {"root": doc["root"], "new": doc["new"], "aside": aside})
    doc["swapped"] = True
    kept = f" (the replaced files are kept in {got['aside']})" if got.get("aside") else ""
    return f"{doc['item']}: swapped in, {doc.get('sent_files', 0)} file(s) sent, {doc.get('kept_files', 0)} unchanged{kept}"


def discard_media(ctx, host, doc: dict) -> str:
    if doc.get("swapped") or doc.get("absent"):
        return f"{doc['item']}: nothing to remove"
    host.run(f"rm -rf -- {q(doc['new'])}")
    return f"{doc['item']}: removed the synced copy"
