#!/usr/bin/env python3
"""deploykit remote helper: SQLite backup, restore and checksums.

Standalone: standard library only, Python 3.9+, never imports deploykit.
Same protocol as files.py::

    python sqlite.py ACTION  < {"json": "arguments"}

One JSON object of arguments on stdin; exactly one JSON document on stdout;
exit 0 with ``{"ok": true, "changed": bool, ...}`` or exit 1 with
``{"ok": false, "error": "one line", "kind": "ErrorClassName"}``.
Tracebacks go to stderr. With DEPLOYKIT_READ_ONLY=1 (a dry-run) only the
actions in READ_ONLY run. Everything runs under umask 0o077: backups are 0600 in
0700 directories.

Actions:
  backup {src, dest}            online copy with the SQLite backup API (safe
                                while the app writes, WAL too), atomic, 0600,
                                then integrity_check of the copy.
  restore {src, dest, aside?}   integrity_check src, copy next to dest, fsync,
                                keep the old dest (and its -wal) at aside,
                                drop dest's -wal/-shm/-journal, os.replace.
  checksums {path}              {tables: {name: {rows, md5}}}, rows ordered by
                                every column.
  info {path}                   {exists, size, tables: {name: rows}}.
"""

import errno
import hashlib
import json
import os
import sqlite3
import stat
import sys

from _common import (CHUNK, BadArguments, HelperError, UnknownAction, UsageError,  # noqa: F401
                     _fsync_dir, _hash_stream, _makedirs, _path_arg, _remove_quietly, _tmp_name, serve)

BUSY_TIMEOUT = 30.0


class MissingDatabase(HelperError):
    pass


class CorruptDatabase(HelperError):
    pass


class DestinationExists(HelperError):
    pass


class CopyMismatch(HelperError):
    pass


# --------------------------------------------------------------------------
# helpers


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path):
    with open(path, "rb") as f:
        return _hash_stream(f)


def _require_db(path, what="database"):
    if not os.path.exists(path):
        raise MissingDatabase("%s %s does not exist" % (what, path))
    if not os.path.isfile(path):
        raise MissingDatabase("%s %s is not a regular file" % (what, path))


def _uri(path, **params):
    import urllib.parse

    query = "&".join("%s=%s" % (k, v) for k, v in params.items())
    return "file:%s%s" % (urllib.parse.quote(path), ("?" + query) if query else "")


def _connect_ro(path):
    """Read-only connection that never creates the file."""
    conn = sqlite3.connect(_uri(path, mode="ro"), uri=True, timeout=BUSY_TIMEOUT)
    return conn


def _qi(name):
    return '"%s"' % name.replace('"', '""')


def _tables(conn):
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def _row_counts(conn):
    out = {}
    for name in _tables(conn):
        try:
            out[name] = conn.execute("SELECT COUNT(*) FROM %s" % _qi(name)).fetchone()[0]
        except sqlite3.DatabaseError:
            out[name] = None  # e.g. a virtual table whose module is not loaded
    return out


def _integrity(conn):
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    result = [r[0] for r in rows]
    if result != ["ok"]:
        raise CorruptDatabase("integrity_check failed: %s" % "; ".join(str(r) for r in result[:5]))


def _md5():
    try:
        return hashlib.md5(usedforsecurity=False)
    except TypeError:  # pragma: no cover - very old builds
        return hashlib.md5()


def _encode_value(v):
    if isinstance(v, bytes):
        return {"b": v.hex()}
    if isinstance(v, float):
        return {"f": repr(v)}
    return v


# --------------------------------------------------------------------------
# actions


def act_backup(args):
    src = _path_arg(args, "src")
    dest = _path_arg(args, "dest")
    _require_db(src)
    if os.path.abspath(src) == os.path.abspath(dest):
        raise BadArguments("src and dest are the same file")
    parent = os.path.dirname(dest)
    _makedirs(parent, 0o700)
    tmp = _tmp_name(dest)
    for suffix in ("", "-journal", "-wal", "-shm"):
        _remove_quietly(tmp + suffix)
    # the copy is created 0600 before SQLite writes a byte into it
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        src_conn = sqlite3.connect(src, timeout=BUSY_TIMEOUT)
        try:
            dst_conn = sqlite3.connect(tmp)
            try:
                # pages=-1: one step under one read transaction, so the copy is a
                # consistent snapshot and is not restarted by concurrent writers.
                src_conn.backup(dst_conn, pages=-1)
                # a self-contained single file, whatever the source's journal mode
                dst_conn.execute("PRAGMA journal_mode=DELETE")
                _integrity(dst_conn)
                tables = _row_counts(dst_conn)
            finally:
                dst_conn.close()
        finally:
            src_conn.close()
        _fsync_file(tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        for suffix in ("", "-journal", "-wal", "-shm"):
            _remove_quietly(tmp + suffix)
        raise
    _fsync_dir(parent)
    digest, size = _sha256(dest)
    return {"changed": True, "path": dest, "size": size, "sha256": digest, "tables": tables,
            "integrity": "ok"}


def act_restore(args):
    src = _path_arg(args, "src")
    dest = _path_arg(args, "dest")
    aside = _path_arg(args, "aside", None)
    _require_db(src, "backup")
    if src == dest:
        raise BadArguments("src and dest are the same file")
    if os.path.exists(src + "-wal") and os.path.getsize(src + "-wal") > 0:
        raise BadArguments(
            "%s has a non-empty -wal file: its committed pages would be lost by a file copy; "
            "restore from a copy made by the 'backup' action" % src
        )
    conn = _connect_ro(src)
    try:
        _integrity(conn)
        tables = _row_counts(conn)
    finally:
        conn.close()
    dest_exists = os.path.lexists(dest)
    if aside is not None and dest_exists:
        for suffix in ("", "-wal", "-journal"):
            if os.path.lexists(aside + suffix):
                raise DestinationExists("aside path %s already exists" % (aside + suffix))
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    mode = stat.S_IMODE(os.stat(dest).st_mode) if dest_exists else 0o600
    tmp = _tmp_name(dest)
    _remove_quietly(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            copied, size = _hash_stream(fin, copy_to=fout)
            fout.flush()
            os.fsync(fout.fileno())
        src_digest = _sha256(src)[0]
        if copied != src_digest:
            raise CopyMismatch("copy of %s changed while it was read" % src)
        os.chmod(tmp, mode)

        kept_at = None
        if dest_exists and aside is not None:
            _makedirs(os.path.dirname(aside), 0o700)
            # hard link: dest stays in place until the final os.replace
            try:
                os.link(dest, aside)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                import shutil

                shutil.copy2(dest, aside)
                os.chmod(aside, 0o600)
            kept_at = aside
        # the old database's side files must not be applied to the new one;
        # committed pages still in the -wal travel with the kept copy
        for suffix in ("-wal", "-journal", "-shm"):
            side = dest + suffix
            if not os.path.lexists(side):
                continue
            if kept_at is not None and suffix != "-shm":
                try:
                    os.rename(side, aside + suffix)
                    continue
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    import shutil

                    shutil.copy2(side, aside + suffix)
            os.unlink(side)
        os.replace(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(parent)
    if kept_at is not None:
        _fsync_dir(os.path.dirname(aside))
    return {"changed": True, "path": dest, "previous_kept_at": kept_at, "size": size,
            "sha256": copied, "tables": tables}


def act_checksums(args):
    path = _path_arg(args, "path")
    _require_db(path)
    conn = _connect_ro(path)
    try:
        out = {}
        for name in _tables(conn):
            cols = [r[1] for r in conn.execute("PRAGMA table_info(%s)" % _qi(name)).fetchall()]
            order = ", ".join(_qi(c) for c in cols) if cols else "rowid"
            h = _md5()
            rows = 0
            cur = conn.execute("SELECT * FROM %s ORDER BY %s" % (_qi(name), order))
            while True:
                batch = cur.fetchmany(1000)
                if not batch:
                    break
                for row in batch:
                    h.update(json.dumps([_encode_value(v) for v in row], sort_keys=True).encode("utf-8"))
                    h.update(b"\n")
                    rows += 1
            out[name] = {"rows": rows, "md5": h.hexdigest()}
    finally:
        conn.close()
    return {"tables": out}


def _row_counter(conn, name):
    import collections

    counter = collections.Counter()
    cur = conn.execute("SELECT * FROM %s" % _qi(name))
    while True:
        batch = cur.fetchmany(1000)
        if not batch:
            break
        for row in batch:
            counter[json.dumps([_encode_value(v) for v in row], sort_keys=True)] += 1
    return counter


def act_rowdiff(args):
    """Rows of database `a` that are not in `b` (as multisets), per table of a:
    what restoring b over a would lose."""
    a, b = _path_arg(args, "a"), _path_arg(args, "b")
    _require_db(a)
    _require_db(b)
    ca, cb = _connect_ro(a), _connect_ro(b)
    try:
        in_b = set(_tables(cb))
        out = {}
        for name in _tables(ca):
            rows_a = _row_counter(ca, name)
            lost = rows_a if name not in in_b else rows_a - _row_counter(cb, name)
            out[name] = sum(lost.values())
    finally:
        ca.close()
        cb.close()
    return {"tables": out}


def act_info(args):
    path = _path_arg(args, "path")
    if not os.path.exists(path):
        return {"exists": False, "size": None, "tables": {}}
    _require_db(path)
    conn = _connect_ro(path)
    try:
        tables = _row_counts(conn)
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return {"exists": True, "size": os.path.getsize(path), "tables": tables, "journal_mode": journal}


READ_ONLY = {"checksums", "rowdiff", "info"}  # what a dry-run may call

ACTIONS = {
    "rowdiff": act_rowdiff,
    "backup": act_backup,
    "restore": act_restore,
    "checksums": act_checksums,
    "info": act_info,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="sqlite.py", read_only=READ_ONLY,
                 private_umask=lambda action: True)


if __name__ == "__main__":
    sys.exit(main())
