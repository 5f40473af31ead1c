#!/usr/bin/env python3
"""deploykit remote helper: checksums, manifests, sizes, links, moves and small files.

Standalone (stdlib only, Python 3.9+; _common.py and _tree.py are inlined
when it is sent). Protocol: see _common.py. Actions run under umask 0o077 and
create files 0600 and directories 0700; writes that matter are atomic
(``NAME.tmp-<pid>``, fsync, ``os.replace``, fsync of the directory).
"""

import json
import os
import stat
import sys

from _common import (BadArguments, _arg, _atomic_write, _fsync_dir, _makedirs, _path_arg, _symlink_replace,
                     serve)
from _tree import (DestinationExists, NotASymlink, _hash_file, _manifest, _mode_arg, _walk)


def act_sha256(args):
    path = _path_arg(args, "path")
    digest, size = _hash_file(path)
    return {"sha256": digest, "size": size}


def act_manifest(args):
    return _manifest_answer(_path_arg(args, "root") if "root" in args else _path_arg(args, "dir"))


def act_hash_tree(args):
    return _manifest_answer(_path_arg(args, "dir") if "dir" in args else _path_arg(args, "root"))


def _manifest_answer(root):
    files, skipped, missing = _manifest(root)
    out = {"files": files}
    if missing:
        out["missing"] = True
    if skipped:
        out["skipped"] = skipped
    return out


def act_tree_stamp(args):
    """A digest of every entry's path, kind, mode, size, inode, mtime and ctime under root (nothing is read).

    Two equal stamps mean nothing under root changed in between, provided no
    entry had changed just before the first stamp: a file's ctime ticks at the
    kernel's coarse clock, so a second write in the same tick keeps it. The
    answer says how many seconds before the stamp the newest ctime is
    (`settled_s`); a caller trusts the stamp only when that is well above the
    tick (ctime cannot be set by a program, unlike mtime).
    """
    import hashlib
    import time
    root = _path_arg(args, "root")
    now = time.time_ns()
    if not os.path.lexists(root):
        return {"missing": True}
    h, newest, entries = hashlib.sha256(), 0, 0
    for rel, kind, st, path in _walk(root):
        link = os.readlink(path) if kind == "link" else ""
        h.update(("%s\0%s\0%o\0%d\0%d\0%d\0%d\0%s\n" % (rel, kind, st.st_mode, st.st_size, st.st_ino,
                                                             st.st_mtime_ns, st.st_ctime_ns, link)).encode(
            "utf-8", "surrogateescape"))
        newest = max(newest, st.st_ctime_ns)
        entries += 1
    top = os.lstat(root)
    newest = max(newest, top.st_ctime_ns)
    h.update(("%o %d %d" % (top.st_mode, top.st_ino, top.st_ctime_ns)).encode())
    return {"stamp": h.hexdigest(), "entries": entries, "settled_s": (now - newest) / 1e9}


def act_dir_size(args):
    root = _path_arg(args, "path")
    if not os.path.lexists(root):
        return {"bytes": 0, "files": 0, "missing": True}
    if not os.path.isdir(root):
        st = os.lstat(root)
        return {"bytes": st.st_size, "files": 1}
    total = 0
    count = 0
    for _rel, kind, st, _path in _walk(root):
        if kind == "file":
            total += st.st_size
            count += 1
    return {"bytes": total, "files": count}


def act_disk_free(args):
    path = _path_arg(args, "path")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    st = os.statvfs(probe)
    return {
        "free_bytes": st.f_bavail * st.f_frsize,
        "total_bytes": st.f_blocks * st.f_frsize,
        "checked_path": probe,
    }


def act_atomic_symlink(args):
    link = _path_arg(args, "link")
    target = _arg(args, "target", kind=str)
    if not target or "\x00" in target:
        raise BadArguments("argument 'target' is not a usable path")
    if args.get("must_be_dir") and not os.path.isdir(os.path.join(os.path.dirname(link), target)):
        raise BadArguments("%s is not a directory on this host: %s is left as it was" % (target, link))
    previous = None
    if os.path.islink(link):
        previous = os.readlink(link)
    elif os.path.lexists(link):
        raise NotASymlink("%s exists and is not a symlink; refusing to replace it" % link)
    if previous == target:
        return {"changed": False, "previous": previous}
    parent = os.path.dirname(link)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    _symlink_replace(target, link)
    _fsync_dir(parent)
    return {"changed": True, "previous": previous}


def act_move(args):
    src = _path_arg(args, "src")
    dest = _path_arg(args, "dest")
    if not os.path.lexists(src):
        raise FileNotFoundError("%s does not exist" % src)
    if os.path.lexists(dest):
        raise DestinationExists("%s already exists; refusing to overwrite it" % dest)
    parent = os.path.dirname(dest)
    _makedirs(parent, _mode_arg(args, "dir_mode", 0o700))
    os.rename(src, dest)
    _fsync_dir(parent)
    _fsync_dir(os.path.dirname(src))
    return {"changed": True, "src": src, "dest": dest}


def _same_content(path, data, mode):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode or st.st_size != len(data):
        return False
    with open(path, "rb") as f:
        return f.read() == data


def act_write_file(args):
    path = _path_arg(args, "path")
    mode = _mode_arg(args, "mode", 0o600)
    if "content_b64" in args:
        import base64

        data = base64.b64decode(_arg(args, "content_b64", kind=str))
    else:
        data = _arg(args, "content", kind=str).encode("utf-8")
    if _same_content(path, data, mode):
        return {"changed": False, "path": path, "size": len(data)}
    _atomic_write(path, data, mode)
    return {"changed": True, "path": path, "size": len(data)}


def act_append_line(args):
    path = _path_arg(args, "path")
    line = _arg(args, "line", kind=str)
    if "\n" in line or "\r" in line:
        raise BadArguments("argument 'line' must be a single line")
    _makedirs(os.path.dirname(path), 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        data = (line + "\n").encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"changed": True, "path": path}


def act_read_json(args):
    path = _path_arg(args, "path")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {"exists": False, "data": None}
    return {"exists": True, "data": json.loads(raw.decode("utf-8"))}


def act_write_json(args):
    path = _path_arg(args, "path")
    if "data" not in args:
        raise BadArguments("missing argument 'data'")
    data = (json.dumps(args["data"], indent=2, sort_keys=True) + "\n").encode("utf-8")
    mode = _mode_arg(args, "mode", 0o600)
    if _same_content(path, data, mode):
        return {"changed": False, "path": path}
    _atomic_write(path, data, mode)
    return {"changed": True, "path": path}


# what a dry-run may call
READ_ONLY = {"sha256", "manifest", "hash_tree", "tree_stamp", "dir_size", "disk_free", "read_json"}

ACTIONS = {
    "sha256": act_sha256,
    "manifest": act_manifest,
    "hash_tree": act_hash_tree,
    "tree_stamp": act_tree_stamp,
    "dir_size": act_dir_size,
    "disk_free": act_disk_free,
    "atomic_symlink": act_atomic_symlink,
    "move": act_move,
    "write_file": act_write_file,
    "append_line": act_append_line,
    "read_json": act_read_json,
    "write_json": act_write_json,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="files.py", read_only=READ_ONLY,
                 private_umask=lambda action: True)


if __name__ == "__main__":
    sys.exit(main())
