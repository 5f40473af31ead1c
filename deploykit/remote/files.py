#!/usr/bin/env python3
"""deploykit remote helper: files, trees, archives, backups, locks, health.

Standalone: standard library only, Python 3.9+, never imports deploykit.
The controller uploads this file to a host and runs it with the app's Python
(Ansible's module model):

    python files.py ACTION  < {"json": "arguments"}

It reads ONE JSON object of arguments from stdin (secrets and odd paths never
reach argv), writes exactly ONE JSON document to stdout and exits 0 on
success::

    {"ok": true, "changed": bool, ...fields of the action}

or exits 1 with::

    {"ok": false, "error": "one line message", "kind": "ErrorClassName"}

Tracebacks go to stderr only. Every action that would change something
accepts ``"dry_run": true``: it then changes nothing and reports ``changed``
(what it would do) plus what it would do.

Except for ``extract`` and ``mirror_restore`` (which recreate a tree with the
modes recorded in the tar), actions run under umask 0o077 and create files
0600 and directories 0700. Writes that matter are atomic: ``NAME.tmp-<pid>``,
fsync, ``os.replace``, fsync of the directory.

Manifest shape (``manifest``, ``hash_tree``, ``archive``; the ``files`` of
``mirror_restore``)::

    {"relative/posix/path": {"size": int, "sha256": "hex"},
     "a/symlink": {"link": "its target"}}
"""

import errno
import hashlib
import json
import os
import posixpath
import stat
import sys
import time

# Imported where used, to keep start-up fast (every call is one process):
# tarfile, gzip (archives), urllib/ssl/http.client (http_check), shutil,
# datetime, traceback.

from _common import (CHUNK, BadArguments, HelperError, UnknownAction, UsageError,  # noqa: F401
                     _arg, _atomic_write, _dry, _hash_stream, _fsync_dir, _makedirs, _path_arg, _remove_quietly,
                     _tmp_name, serve)


# --------------------------------------------------------------------------
# errors


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


# --------------------------------------------------------------------------
# argument helpers


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


# --------------------------------------------------------------------------
# small filesystem primitives


def _hash_file(path):
    """(sha256 hex, size) of a regular file, not following a final symlink."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile("%s is not a regular file" % path)
        return _hash_stream(f)


def _utc_now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z"
    )


def _within(path, root):
    """True when the resolved path lies inside the resolved root."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------
# tree walking and manifests


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


# --------------------------------------------------------------------------
# archives


class _HashingWriter(object):
    """File-like sink that hashes and counts what goes through it."""

    def __init__(self, f):
        self._f = f
        self.hash = hashlib.sha256()
        self.pos = 0

    def write(self, data):
        self._f.write(data)
        self.hash.update(data)
        self.pos += len(data)
        return len(data)

    def tell(self):
        return self.pos

    def flush(self):
        self._f.flush()


class _HashingReader(object):
    def __init__(self, f):
        self._f = f
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n=-1):
        data = self._f.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data


def _tarinfo(rel, st, kind, path):
    import tarfile

    ti = tarfile.TarInfo(rel)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.mtime = int(st.st_mtime)
    ti.uid = st.st_uid
    ti.gid = st.st_gid
    if kind == "file":
        ti.type = tarfile.REGTYPE
        ti.size = st.st_size
    elif kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif kind == "link":
        ti.type = tarfile.SYMTYPE
        ti.linkname = os.readlink(path)
    return ti


def act_archive(args):
    import gzip
    import tarfile

    root = _path_arg(args, "root")
    dest = _path_arg(args, "dest")
    compress = bool(args.get("compress", False))
    level = int(args.get("compresslevel", 6))
    if _within(dest, root) and os.path.isdir(root):
        raise BadArguments("dest %s lies inside the archived tree %s" % (dest, root))
    missing = not os.path.lexists(root)
    if not missing and not os.path.isdir(root):
        raise NotADirectoryError("%s is not a directory" % root)
    if _dry(args):
        return {"changed": True, "dry_run": True, "would_write": dest, "missing": missing}

    parent = os.path.dirname(dest)
    _makedirs(parent, 0o700)
    tmp = _tmp_name(dest)
    _remove_quietly(tmp)
    files = {}
    skipped = []
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            sink = _HashingWriter(raw)
            gz = None
            target = sink
            if compress:
                gz = gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=level)
                target = gz
            tar = tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT)
            try:
                if not missing:
                    for rel, kind, st, path in _walk(root):
                        if kind == "other":
                            skipped.append(rel)
                            continue
                        if kind == "file":
                            try:
                                fd2 = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                            except FileNotFoundError:
                                continue  # vanished while we walked
                            with os.fdopen(fd2, "rb") as f:
                                fst = os.fstat(f.fileno())
                                ti = _tarinfo(rel, fst, "file", path)
                                reader = _HashingReader(f)
                                tar.addfile(ti, reader)
                            files[rel] = {"size": ti.size, "sha256": reader.hash.hexdigest()}
                        else:
                            ti = _tarinfo(rel, st, kind, path)
                            tar.addfile(ti)
                            if kind == "link":
                                files[rel] = {"link": ti.linkname}
            finally:
                tar.close()
                if gz is not None:
                    gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(parent)
    out = {
        "changed": True,
        "path": dest,
        "size": sink.pos,
        "sha256": sink.hash.hexdigest(),
        "files": dict(sorted(files.items())),
        "count": len(files),
    }
    if missing:
        out["missing"] = True
    if skipped:
        out["skipped"] = skipped
    return out


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


def _check_members(tar, strict_links, links_within=None):
    """Validate every member of an open tar; return {normalised name: member}.

    links_within: absolute symlinks are accepted when they point inside this
    directory (a release's links to shared/ and to its environment in venvs/).
    """
    members = {}
    for m in tar.getmembers():
        name = _safe_relpath(m.name)
        if m.isreg() or m.isdir():
            pass
        elif m.islnk():
            _safe_relpath(m.linkname, "hard link target of %r" % m.name)
        elif m.issym():
            if strict_links:
                if os.path.isabs(m.linkname) and links_within and \
                        posixpath.normpath(m.linkname).startswith(links_within.rstrip("/") + "/"):
                    pass
                elif os.path.isabs(m.linkname):
                    raise UnsafePath("symlink %r points to absolute path %r; refused" % (m.name, m.linkname))
                joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
                if joined == ".." or joined.startswith("../"):
                    raise UnsafePath("symlink %r points outside the tree (%r); refused" % (m.name, m.linkname))
        else:
            raise UnsupportedMember("tar member %r is a device, fifo or other special file; refused" % m.name)
        members[name] = m
    return members


def _file_mode(member):
    return (member.mode & 0o777) | 0o600


def _write_member(tar, member, path, root, atomic):
    """Write a regular-file (or hard-link) member's content to path."""
    parent = os.path.dirname(path)
    if not _within(parent, root):
        raise UnsafePath("writing %s would leave %s through a symlink; refused" % (path, root))
    src = tar.extractfile(member)
    if src is None:
        raise ArchiveIncomplete("no content for tar member %r" % member.name)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if atomic:
        out_path = _tmp_name(path)
        _remove_quietly(out_path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow
    else:
        out_path = path
        if os.path.islink(path):
            os.unlink(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | nofollow
    fd = os.open(out_path, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            digest, size = _hash_stream(src, copy_to=f)
            if atomic:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(out_path, _file_mode(member))
        os.utime(out_path, (member.mtime, member.mtime))
        if atomic:
            os.replace(out_path, path)
    except BaseException:
        if atomic:
            _remove_quietly(out_path)
        raise
    return digest, size


def _place_symlink(target, path, root):
    parent = os.path.dirname(path)
    if not _within(parent, root):
        raise UnsafePath("writing %s would leave %s through a symlink; refused" % (path, root))
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError("%s is a directory; cannot replace it with a symlink" % path)
    tmp = _tmp_name(path)
    _remove_quietly(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _ensure_dir_under(root, rel_dir, dir_members):
    """Create rel_dir under root, using modes of tar dir members when known."""
    if rel_dir in ("", "."):
        return
    current = root
    so_far = ""
    for part in rel_dir.split("/"):
        so_far = posixpath.join(so_far, part) if so_far else part
        current = os.path.join(current, part)
        if os.path.lexists(current):
            if os.path.islink(current):
                if not _within(current, root):
                    raise UnsafePath("%s is a symlink leading out of %s; refused" % (current, root))
                if not os.path.isdir(current):
                    raise NotADirectoryError("%s is not a directory" % current)
            elif not os.path.isdir(current):
                raise NotADirectoryError("%s is not a directory" % current)
            continue
        m = dir_members.get(so_far)
        mode = (m.mode & 0o777) | 0o700 if m is not None else 0o755
        os.mkdir(current, mode)
        os.chmod(current, mode)


def act_extract(args):
    import tarfile

    archive = _path_arg(args, "archive")
    dest = _path_arg(args, "dest")
    strict_links = not bool(args.get("allow_external_links", False))
    links_within = args.get("links_within")
    with tarfile.open(archive, "r:*") as tar:
        members = _check_members(tar, strict_links, links_within)
        if _dry(args):
            return {"changed": True, "dry_run": True, "count": len(members)}
        if not os.path.isdir(dest):
            os.makedirs(dest)
        dir_members = {n: m for n, m in members.items() if m.isdir()}
        count = 0
        for name, m in members.items():
            if name == ".":
                continue
            path = os.path.join(dest, *name.split("/"))
            _ensure_dir_under(dest, posixpath.dirname(name), dir_members)
            if m.isdir():
                _ensure_dir_under(dest, name, dir_members)
            elif m.issym():
                _place_symlink(m.linkname, path, dest)
            else:
                _write_member(tar, m, path, dest, atomic=False)
            count += 1
        # directory modes and times last, deepest first, as tar does
        for name in sorted(dir_members, key=lambda n: n.count("/"), reverse=True):
            if name == ".":
                continue
            m = dir_members[name]
            path = os.path.join(dest, *name.split("/"))
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, (m.mode & 0o777) | 0o700)
                os.utime(path, (m.mtime, m.mtime))
    _fsync_dir(dest)
    return {"changed": True, "count": count, "dest": dest}


def _check_manifest_arg(files):
    if not isinstance(files, dict):
        raise BadArguments("argument 'files' must be a manifest object")
    clean = {}
    for rel, entry in files.items():
        norm = _safe_relpath(rel, "manifest path")
        if norm == ".":
            raise UnsafePath("manifest path %r names the root itself" % rel)
        if not isinstance(entry, dict) or not (
            ("link" in entry and isinstance(entry["link"], str))
            or (isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int))
        ):
            raise BadArguments("manifest entry for %r must have size+sha256 or link" % rel)
        clean[norm] = entry
    return clean


def _aside_path(aside, rel):
    """Where rel is kept under aside: a new path, its directory made."""
    dest = os.path.join(aside, *rel.split("/"))
    if os.path.lexists(dest):
        raise DestinationExists("aside path %s already exists" % dest)
    _makedirs(os.path.dirname(dest), 0o700)
    return dest


def _move_aside(path, aside, rel):
    import shutil

    dest = _aside_path(aside, rel)
    try:
        os.rename(path, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.move(path, dest)
    return dest


def _keep_copy(path, aside, rel):
    """Keep the current content of path under aside (hard link, else copy)."""
    import shutil

    dest = _aside_path(aside, rel)
    try:
        os.link(path, dest, follow_symlinks=False)
    except (OSError, NotImplementedError):
        if os.path.islink(path):
            os.symlink(os.readlink(path), dest)
        else:
            shutil.copy2(path, dest)
    return dest


def act_mirror_restore(args):
    import tarfile

    root = _path_arg(args, "root")
    archive = _path_arg(args, "archive")
    aside = _path_arg(args, "aside")
    wanted = _check_manifest_arg(_arg(args, "files", kind=dict))
    keep_replaced = bool(args.get("keep_replaced", True))
    rehash_all = bool(args.get("rehash_all", False))
    dry = _dry(args)
    if _within(aside, root):
        raise BadArguments("aside %s must not lie inside %s" % (aside, root))
    if os.path.lexists(root) and not os.path.isdir(root):
        raise NotADirectoryError("%s is not a directory" % root)

    with tarfile.open(archive, "r:*") as tar:
        members = _check_members(tar, strict_links=False)
        dir_members = {n: m for n, m in members.items() if m.isdir()}

        # 1. what is there now (hash only what could be unchanged)
        current = {}  # rel -> (kind, lstat, path)
        dirs_in_way = []
        if os.path.isdir(root):
            for rel, kind, st, path in _walk(root):
                if kind == "dir":
                    if rel in wanted:
                        dirs_in_way.append(rel)
                    continue
                current[rel] = (kind, st, path)
        prehash = {}
        extra = []
        restore = []
        unchanged = []
        for rel, (kind, st, path) in current.items():
            if rel not in wanted:
                extra.append(rel)
        for rel, entry in wanted.items():
            have = current.get(rel)
            if "link" in entry:
                if have is not None and have[0] == "link" and os.readlink(have[2]) == entry["link"]:
                    unchanged.append(rel)
                else:
                    restore.append(rel)
                continue
            if have is not None and have[0] == "file" and have[1].st_size == entry["size"]:
                digest, size = _hash_file(have[2])
                prehash[rel] = (digest, size)
                if digest == entry["sha256"]:
                    unchanged.append(rel)
                    continue
            restore.append(rel)
        # entries under a path we move aside (a file where a dir is wanted) go first
        extra.sort()
        missing_members = [
            rel for rel in restore
            if "link" not in wanted[rel] and (rel not in members or not (members[rel].isreg() or members[rel].islnk()))
        ]
        if missing_members:
            raise ArchiveIncomplete(
                "archive %s lacks %d file(s) of the manifest, e.g. %s"
                % (archive, len(missing_members), ", ".join(missing_members[:3]))
            )
        for rel in restore:
            m = members.get(rel)
            entry = wanted[rel]
            if m is not None and "link" not in entry and m.size != entry["size"] and m.isreg():
                raise ArchiveIncomplete(
                    "archive member %r has size %d, manifest says %d" % (rel, m.size, entry["size"])
                )
        replaced = [rel for rel in restore if rel in current]
        moved_aside = sorted(extra + dirs_in_way)
        if dry:
            return {
                "changed": bool(moved_aside or restore),
                "dry_run": True,
                "moved_aside": moved_aside,
                "restored": sorted(restore),
                "replaced_kept": sorted(replaced) if keep_replaced else [],
                "unchanged": len(unchanged),
            }

        if not os.path.isdir(root):
            os.makedirs(root)
        # 2. move aside what the manifest does not know (and dirs in the way)
        for rel in moved_aside:
            path = os.path.join(root, *rel.split("/"))
            if os.path.lexists(path):
                _move_aside(path, aside, rel)
        # 3. restore changed and missing entries, atomically per file
        kept = []
        restored_hash = {}
        for rel in sorted(restore):
            entry = wanted[rel]
            path = os.path.join(root, *rel.split("/"))
            _ensure_dir_under(root, posixpath.dirname(rel), dir_members)
            if keep_replaced and rel in current and os.path.lexists(path):
                _keep_copy(path, aside, rel)
                kept.append(rel)
            if "link" in entry:
                _place_symlink(entry["link"], path, root)
            else:
                restored_hash[rel] = _write_member(tar, members[rel], path, root, atomic=True)
                _fsync_dir(os.path.dirname(path))

    # 4. verify the tree against the manifest
    problems = []
    seen = set()
    if os.path.isdir(root):
        for rel, kind, st, path in _walk(root):
            if kind == "dir":
                continue
            seen.add(rel)
            entry = wanted.get(rel)
            if entry is None:
                problems.append("%s: not in manifest" % rel)
                continue
            if "link" in entry:
                if kind != "link" or os.readlink(path) != entry["link"]:
                    problems.append("%s: symlink mismatch" % rel)
                continue
            if kind != "file":
                problems.append("%s: not a regular file" % rel)
                continue
            if st.st_size != entry["size"]:
                problems.append("%s: size mismatch" % rel)
                continue
            if rehash_all:
                digest = _hash_file(path)[0]
            elif rel in restored_hash:
                digest = _hash_file(path)[0]
            else:
                before = current.get(rel)
                same_file = (
                    before is not None
                    and before[1].st_ino == st.st_ino
                    and before[1].st_size == st.st_size
                    and before[1].st_mtime_ns == st.st_mtime_ns
                    and rel in prehash
                )
                digest = prehash[rel][0] if same_file else _hash_file(path)[0]
            if digest != entry["sha256"]:
                problems.append("%s: sha256 mismatch" % rel)
    for rel in wanted:
        if rel not in seen:
            problems.append("%s: missing" % rel)
    if problems:
        raise VerificationFailed(
            "tree %s does not match the manifest after restore: %s%s"
            % (root, "; ".join(problems[:5]), " (+%d more)" % (len(problems) - 5) if len(problems) > 5 else "")
        )
    _fsync_dir(root)
    return {
        "changed": bool(moved_aside or restore),
        "moved_aside": moved_aside,
        "restored": sorted(restore),
        "replaced_kept": sorted(kept),
        "unchanged": len(unchanged),
        "verified": True,
        "aside": aside if (moved_aside or kept) else None,
    }


def act_build_tree(args):
    """Build the tree of an archive beside the live one: `dest` gets every file of
    the manifest (hard-linked from `live` when its content is the same, else
    extracted), then is verified against the manifest. `live` is not touched."""
    import tarfile

    archive = _path_arg(args, "archive")
    live = _path_arg(args, "live")
    dest = _path_arg(args, "dest")
    wanted = _check_manifest_arg(_arg(args, "files", kind=dict))
    if _within(dest, live) or _within(live, dest):
        raise BadArguments("%s and %s must not contain each other" % (dest, live))
    if os.path.lexists(dest):
        import shutil

        shutil.rmtree(dest)  # an unfinished build of ours: start again
    os.makedirs(dest)
    linked, extracted = 0, 0
    with tarfile.open(archive, "r:*") as tar:
        members = _check_members(tar, strict_links=False)
        dir_members = {n: m for n, m in members.items() if m.isdir()}
        for name in sorted(dir_members):
            if name != ".":
                _ensure_dir_under(dest, name, dir_members)
        for rel in sorted(wanted):
            entry = wanted[rel]
            path = os.path.join(dest, *rel.split("/"))
            _ensure_dir_under(dest, posixpath.dirname(rel), dir_members)
            if "link" in entry:
                _place_symlink(entry["link"], path, dest)
                continue
            old = os.path.join(live, *rel.split("/"))
            try:
                st = os.lstat(old)
                same = (stat.S_ISREG(st.st_mode) and st.st_size == entry["size"]
                        and _hash_file(old)[0] == entry["sha256"])
            except OSError:
                same = False
            if same:
                try:
                    os.link(old, path, follow_symlinks=False)
                    linked += 1
                    continue
                except OSError:
                    pass
            m = members.get(rel)
            if m is None or not (m.isreg() or m.islnk()):
                raise ArchiveIncomplete("archive %s lacks %s of the manifest" % (archive, rel))
            digest, size = _write_member(tar, m, path, dest, atomic=False)
            if digest != entry["sha256"] or size != entry["size"]:
                raise VerificationFailed("%s: extracted content does not match the manifest" % rel)
            extracted += 1
        for name in sorted(dir_members, key=lambda n: n.count("/"), reverse=True):
            if name == ".":
                continue
            path = os.path.join(dest, *name.split("/"))
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, (dir_members[name].mode & 0o777) | 0o700)
        if "." in dir_members:
            os.chmod(dest, (dir_members["."].mode & 0o777) | 0o700)
    files, skipped, _ = _manifest(dest)
    problems = ["%s: not in manifest" % r for r in files if r not in wanted]
    problems += ["%s: missing" % r for r in wanted if r not in files]
    problems += ["%s: differs" % r for r in wanted if r in files and files[r] != wanted[r]]
    if problems or skipped:
        raise VerificationFailed("the tree built at %s does not match the manifest: %s"
                                 % (dest, "; ".join((problems + skipped)[:5])))
    _fsync_dir(dest)
    return {"changed": True, "dest": dest, "linked": linked, "extracted": extracted, "files": len(files)}


def _exchange(a, b):
    """Atomically exchange two paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a)


def act_swap_tree(args):
    """Put the built tree `new` at `root`; the tree that was there goes to `aside` (kept whole).

    With renameat2 the two trees trade places in one step; without it, two
    renames leave `root` missing for an instant. Re-running after the swap is
    a no-op that says so."""
    root = _path_arg(args, "root")
    new = _path_arg(args, "new")
    aside = _path_arg(args, "aside")
    if not os.path.lexists(new):
        for kept in (aside, new + ".replaced"):
            if os.path.lexists(kept) and os.path.isdir(root):
                return {"changed": False, "already": True, "aside": kept}
        raise BadArguments("%s is gone: nothing to swap in" % new)
    if os.path.lexists(aside):
        raise DestinationExists("aside path %s already exists" % aside)
    _makedirs(os.path.dirname(aside), 0o700)
    if not os.path.lexists(root):
        os.rename(new, root)
        _fsync_dir(os.path.dirname(root))
        return {"changed": True, "aside": None}
    old = new + ".replaced"
    if os.path.lexists(old):
        raise DestinationExists("%s already exists" % old)
    if _exchange(root, new):
        os.rename(new, old)  # the previous tree, which now lies where the new one was built
    else:
        os.rename(root, old)
        os.rename(new, root)
    try:
        os.rename(old, aside)
        kept = aside
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        kept = old  # on another filesystem than `aside`: it stays beside the root
    _fsync_dir(os.path.dirname(root))
    return {"changed": True, "aside": kept}


# --------------------------------------------------------------------------
# backups


def act_verify_backup(args):
    """Checksums of every file of the manifest; items named in `skip` are only listed (their data will not
    be read: a recovery swapping a snapshot in needs no dump)."""
    root = _path_arg(args, "dir")
    skip = set(_arg(args, "skip", [], list))
    problems = []
    total = 0
    checked = 0
    out = {"verified": False, "problems": problems, "bytes": 0, "files": 0}
    if not os.path.isdir(root):
        problems.append("%s: backup directory missing" % root)
        return out
    mpath = os.path.join(root, "manifest.json")
    if not os.path.isfile(mpath):
        problems.append("manifest.json: missing")
        return out
    try:
        with open(mpath, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        problems.append("manifest.json: does not parse (%s)" % str(e).splitlines()[0])
        return out
    if not isinstance(manifest, dict):
        problems.append("manifest.json: not a JSON object")
        return out
    out["id"] = manifest.get("id")
    if manifest.get("complete") is not True:
        problems.append("manifest.json: backup not complete")
    items = manifest.get("items")
    if not isinstance(items, list):
        problems.append("manifest.json: no items list")
        items = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("files", {}), dict):
            problems.append("items[%d]: malformed" % i)
            continue
        if item.get("name") in skip:
            continue
        for rel, entry in sorted(item.get("files", {}).items()):
            try:
                norm = _safe_relpath(rel, "backup file")
            except UnsafePath as e:
                problems.append("%s: unsafe path (%s)" % (rel, e))
                continue
            path = os.path.join(root, *norm.split("/"))
            if not isinstance(entry, dict):
                problems.append("%s: malformed entry" % rel)
                continue
            if "link" in entry:
                if not os.path.islink(path):
                    problems.append("%s: missing" % rel)
                elif os.readlink(path) != entry["link"]:
                    problems.append("%s: symlink target mismatch" % rel)
                continue
            if not os.path.lexists(path):
                problems.append("%s: missing" % rel)
                continue
            if os.path.islink(path) or not os.path.isfile(path):
                problems.append("%s: not a regular file" % rel)
                continue
            size = os.lstat(path).st_size
            total += size
            checked += 1
            if "size" in entry and entry["size"] != size:
                problems.append("%s: size mismatch (expected %s, found %d)" % (rel, entry["size"], size))
                continue
            if "sha256" not in entry:
                problems.append("%s: no sha256 in manifest" % rel)
                continue
            digest = _hash_file(path)[0]
            if digest != entry["sha256"]:
                problems.append("%s: sha256 mismatch" % rel)
    out["bytes"] = total
    out["files"] = checked
    out["items"] = len(items)
    out["verified"] = not problems
    return out


# --------------------------------------------------------------------------
# locks


def _read_lock(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    except ValueError:
        pass
    return {"raw": text}


class _LockGuard(object):
    """flock(2) on LOCK.guard: every change of the lock file is one read-modify-write."""

    def __init__(self, path):
        self.path = path + ".guard"

    def __enter__(self):
        import fcntl

        _makedirs(os.path.dirname(self.path), 0o700)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock


def _write_lock(path, data):
    _atomic_write(path, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"))


def act_lock_acquire(args):
    path = _path_arg(args, "path")
    info = _arg(args, "info", {}, dict)
    if _dry(args):
        holder = _read_lock(path)
        return {"changed": holder is None, "dry_run": True, "acquired": holder is None, "holder": holder}
    data = dict(info)
    data["since"] = _utc_now()
    data.setdefault("heartbeat", time.time())
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is not None:
            return {"acquired": False, "changed": False, "holder": holder, "now": time.time()}
        _write_lock(path, data)
    return {"acquired": True, "changed": True, "holder": data}


def act_lock_takeover(args):
    """Replace the lock of run `expected` (declared gone by the caller) with ours; refused if someone else holds it."""
    path = _path_arg(args, "path")
    expected = _arg(args, "expected", kind=str)
    info = _arg(args, "info", {}, dict)
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is not None and holder.get("run_id") != expected:
            return {"acquired": False, "changed": False, "holder": holder, "now": time.time()}
        data = dict(info)
        data["since"] = _utc_now()
        data["heartbeat"] = time.time()
        if holder is not None:
            data["took_over"] = {k: holder.get(k) for k in ("run_id", "command", "user", "controller", "pid",
                                                            "since", "heartbeat")}
        _write_lock(path, data)
    return {"acquired": True, "changed": True, "holder": data, "previous": holder}


def act_lock_heartbeat(args):
    """Refresh our heartbeat (and merge `fields`, e.g. the run's progress); says whether the lock is still ours."""
    path = _path_arg(args, "path")
    run_id = _arg(args, "run_id", kind=str)
    fields = _arg(args, "fields", {}, dict)
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is None or holder.get("run_id") != run_id:
            return {"ours": False, "changed": False, "holder": holder}
        holder.update(fields)
        holder["heartbeat"] = time.time()
        _write_lock(path, holder)
    return {"ours": True, "changed": True, "holder": holder}


def act_lock_release(args):
    path = _path_arg(args, "path")
    run_id = args.get("run_id")
    force = bool(args.get("force", False))
    with _LockGuard(path):
        holder = _read_lock(path)
        if holder is None:
            return {"released": False, "changed": False, "holder": None, "missing": True}
        if not force and (run_id is None or holder.get("run_id") != run_id):
            return {
                "released": False,
                "changed": False,
                "holder": holder,
                "reason": "lock held by run %r, not %r" % (holder.get("run_id"), run_id),
            }
        if _dry(args):
            return {"released": True, "changed": True, "dry_run": True, "holder": holder}
        try:
            os.unlink(path)
        except FileNotFoundError:
            return {"released": False, "changed": False, "holder": None, "missing": True}
        _fsync_dir(os.path.dirname(path))
    return {"released": True, "changed": True, "holder": holder}


def act_lock_read(args):
    path = _path_arg(args, "path")
    holder = _read_lock(path)
    if holder is None:
        return {"held": False, "holder": None}
    return {"held": True, "holder": holder, "now": time.time()}


# --------------------------------------------------------------------------
# health


def act_http_check(args):
    import http.client
    import socket
    import ssl
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    url = _arg(args, "url", kind=str)
    expect = int(_arg(args, "expect_status", 200, int))
    contains = _arg(args, "contains", None, str)
    timeout = float(_arg(args, "timeout", 30.0, float))
    interval = float(_arg(args, "interval", 0.5, float))
    request_timeout = float(_arg(args, "request_timeout", 5.0, float))
    headers = _arg(args, "headers", {}, dict)
    if not url.startswith(("http://", "https://")):
        raise BadArguments("url must be http:// or https://, got %r" % url)
    handlers = []
    if not args.get("use_proxy", False):
        handlers.append(urllib.request.ProxyHandler({}))
    if not args.get("follow_redirects", True):
        handlers.append(_NoRedirect())
    if args.get("insecure", False):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    hdrs = {"User-Agent": "deploykit-http-check"}
    hdrs.update({str(k): str(v) for k, v in headers.items()})

    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    status = None
    body = ""
    last_error = None
    healthy = False
    while True:
        attempts += 1
        remaining = max(0.1, deadline - time.monotonic())
        try:
            req = urllib.request.Request(url, headers=hdrs, method="GET")
            try:
                resp = opener.open(req, timeout=min(request_timeout, remaining))
            except urllib.error.HTTPError as e:
                resp = e
            try:
                status = resp.getcode()
                raw = resp.read(1024 * 1024) or b""
            finally:
                resp.close()
            body = raw.decode("utf-8", "replace")
            last_error = None
            if status == expect and (contains is None or contains in body):
                healthy = True
        except (OSError, socket.timeout, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            last_error = "%s: %s" % (type(reason).__name__, reason)
            status = None
            body = ""
        if healthy:
            break
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
        if time.monotonic() >= deadline:
            # one last try exactly at the deadline would overrun it
            break
    out = {
        "healthy": healthy,
        "status": status,
        "body": body[:300],
        "attempts": attempts,
        "seconds": round(time.monotonic() - start, 3),
    }
    if not healthy:
        if last_error:
            out["error"] = last_error
        elif status != expect:
            out["error"] = "status %s, expected %s" % (status, expect)
        else:
            out["error"] = "body does not contain %r" % contains
    return out


# --------------------------------------------------------------------------
# links, moves, small files


def act_atomic_symlink(args):
    link = _path_arg(args, "link")
    target = _arg(args, "target", kind=str)
    if not target or "\x00" in target:
        raise BadArguments("argument 'target' is not a usable path")
    previous = None
    if os.path.islink(link):
        previous = os.readlink(link)
    elif os.path.lexists(link):
        raise NotASymlink("%s exists and is not a symlink; refusing to replace it" % link)
    if previous == target:
        return {"changed": False, "previous": previous}
    if _dry(args):
        return {"changed": True, "dry_run": True, "previous": previous}
    parent = os.path.dirname(link)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = _tmp_name(link)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(parent)
    return {"changed": True, "previous": previous}


def act_move(args):
    src = _path_arg(args, "src")
    dest = _path_arg(args, "dest")
    if not os.path.lexists(src):
        raise FileNotFoundError("%s does not exist" % src)
    if os.path.lexists(dest):
        raise DestinationExists("%s already exists; refusing to overwrite it" % dest)
    if _dry(args):
        return {"changed": True, "dry_run": True, "src": src, "dest": dest}
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
    if _dry(args):
        return {"changed": True, "dry_run": True, "path": path, "size": len(data)}
    _atomic_write(path, data, mode)
    return {"changed": True, "path": path, "size": len(data)}


def act_append_line(args):
    path = _path_arg(args, "path")
    line = _arg(args, "line", kind=str)
    if "\n" in line or "\r" in line:
        raise BadArguments("argument 'line' must be a single line")
    if _dry(args):
        return {"changed": True, "dry_run": True, "path": path}
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
    if _dry(args):
        return {"changed": True, "dry_run": True, "path": path}
    _atomic_write(path, data, mode)
    return {"changed": True, "path": path}


# --------------------------------------------------------------------------
# entry point

ACTIONS = {
    "sha256": act_sha256,
    "manifest": act_manifest,
    "hash_tree": act_hash_tree,
    "archive": act_archive,
    "mirror_restore": act_mirror_restore,
    "build_tree": act_build_tree,
    "swap_tree": act_swap_tree,
    "extract": act_extract,
    "verify_backup": act_verify_backup,
    "lock_acquire": act_lock_acquire,
    "lock_release": act_lock_release,
    "lock_read": act_lock_read,
    "lock_takeover": act_lock_takeover,
    "lock_heartbeat": act_lock_heartbeat,
    "disk_free": act_disk_free,
    "dir_size": act_dir_size,
    "http_check": act_http_check,
    "atomic_symlink": act_atomic_symlink,
    "move": act_move,
    "write_file": act_write_file,
    "append_line": act_append_line,
    "read_json": act_read_json,
    "write_json": act_write_json,
}

# These recreate an application tree with the modes recorded in the tar;
# everything else runs under a private umask.
PUBLIC_UMASK_ACTIONS = {"extract", "mirror_restore", "build_tree"}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="files.py",
                 private_umask=lambda action: action not in PUBLIC_UMASK_ACTIONS)


if __name__ == "__main__":
    sys.exit(main())
