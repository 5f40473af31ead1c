"""What the file helpers share: their errors, tree walks, manifests and safe relative paths.

Standard library only. Inlined, like _common.py, into each helper that
imports it (``from _tree import (...)``) when the helper is sent to a host.

Manifest shape (``manifest``, ``hash_tree``, ``archive``; the ``files`` of
``mirror_restore``)::

    {"relative/posix/path": {"size": int, "sha256": "hex"},
     "a/symlink": {"link": "its target"}}
"""

import os
import posixpath
import stat

from _common import (BadArguments, HelperError, _hash_stream)


class UnsafePath(HelperError):
    """A tar member or manifest path that is absolute or climbs out with '..'."""


class UnsupportedMember(HelperError):
    pass


class ArchiveIncomplete(HelperError):
    pass


class VerificationFailed(HelperError):
    pass


class DestinationExists(HelperError):
    pass


class NotARegularFile(HelperError):
    pass


class NotASymlink(HelperError):
    pass


def _mode_arg(args, name, default):
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        raise BadArguments("argument %r must be a mode" % name)
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            raise BadArguments("argument %r must be an octal mode like '0640'" % name)
    else:
        raise BadArguments("argument %r must be a mode" % name)
    if not 0 <= mode <= 0o7777:
        raise BadArguments("argument %r is not a file mode: %r" % (name, value))
    return mode


def _hash_file(path):
    """(sha256 hex, size) of a regular file, not following a final symlink."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile("%s is not a regular file" % path)
        return _hash_stream(f)


def _within(path, root):
    """True when the resolved path lies inside the resolved root."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _walk(root):
    """Yield (relpath, kind, lstat, abspath) for everything under root, sorted.

    kind: 'file', 'link', 'dir' or 'other'. Symlinks are never followed.
    """
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            if not rel_dir:
                raise
            continue  # a subdirectory vanished while we walked
        subdirs = []
        for entry in entries:
            rel = posixpath.join(rel_dir, entry.name) if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while we walked (a live tree)
            if stat.S_ISLNK(st.st_mode):
                yield rel, "link", st, entry.path
            elif stat.S_ISDIR(st.st_mode):
                yield rel, "dir", st, entry.path
                subdirs.append(rel)
            elif stat.S_ISREG(st.st_mode):
                yield rel, "file", st, entry.path
            else:
                yield rel, "other", st, entry.path
        stack.extend(reversed(subdirs))


def _manifest(root, hash_sizes=None):
    """Manifest of root -> (files dict, skipped list, missing bool)."""
    if not os.path.lexists(root):
        return {}, [], True
    if not os.path.isdir(root):
        raise NotADirectoryError("%s is not a directory" % root)
    files = {}
    skipped = []
    for rel, kind, _st, path in _walk(root):
        if kind == "file":
            try:
                digest, size = _hash_file(path)
            except FileNotFoundError:
                continue  # vanished while we walked
            files[rel] = {"size": size, "sha256": digest}
        elif kind == "link":
            files[rel] = {"link": os.readlink(path)}
        elif kind == "other":
            skipped.append(rel)
    return dict(sorted(files.items())), skipped, False


def _safe_relpath(name, what="tar member"):
    """Normalise a relative posix path; refuse absolute paths and '..'."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePath("%s %r is not a usable path" % (what, name))
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath("%s %r is an absolute path; refused" % (what, name))
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafePath("%s %r climbs out with '..'; refused" % (what, name))
    norm = posixpath.normpath(name)
    if norm in (".", ""):
        return "."
    return norm
