#!/usr/bin/env python3
"""deploykit remote helper: tar archives of trees, trees built from them beside the live one, backup checks.

Standalone (stdlib only, Python 3.9+; _common.py and _tree.py are inlined
when it is sent). Protocol: see _common.py. ``extract``, ``mirror_restore``
and ``build_tree`` recreate a tree with the modes recorded in the tar; the
other actions run under umask 0o077.
"""

import errno
import hashlib
import json
import os
import posixpath
import stat
import sys

from _common import (BadArguments, _arg, _fsync_dir, _hash_stream, _makedirs, _path_arg,
                     _remove_quietly, _symlink_replace, _tmp_name, serve)
from _tree import (ArchiveIncomplete, DestinationExists, UnsafePath, UnsupportedMember, VerificationFailed,
                   _hash_file, _manifest, _safe_relpath, _walk, _within)


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


# the smallest valid file of each kind a placeholder can be (padded after its end, which readers ignore)
def _png():
    """A valid 1x1 transparent PNG (built here, so its checksums are right by construction)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00")) + chunk(b"IEND", b""))


_PNG = _png()
_GIF = bytes.fromhex("47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b")
_JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c"
                      "1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b"
                      "080001000101011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b5"
                      "100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c115"
                      "52d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a6364"
                      "65666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7"
                      "b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008"
                      "010100003f00fbd3ffd9")
_PDF = (b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n")
_KINDS = ((b"\x89PNG", _PNG, b"\0"), (b"GIF8", _GIF, b"\0"), (b"\xff\xd8\xff", _JPEG, b"\0"),
          (b"%PDF", _PDF, b"%"))


def placeholder(head, size):
    """A file standing in for one of `size` bytes that starts with `head`: the same type (PNG, GIF, JPEG,
    PDF; else text) and size class (the power of two at or below its size), made without its content."""
    size_class = 0 if size <= 0 else 1 << (size.bit_length() - 1)
    for magic, body, pad in _KINDS:
        if head.startswith(magic):
            return body + pad * max(0, size_class - len(body))
    line = b"placeholder\n"
    return (line * (size_class // len(line) + 1))[:size_class]


def _media_action(rel, rules, default):
    """exclude, keep or placeholder for one entry: the longest rule prefix that holds it, else the default."""
    for prefix, action in rules:
        if rel == prefix.rstrip("/") or rel.startswith(prefix if prefix.endswith("/") else prefix + "/"):
            return action
    return default


def act_archive(args):
    import gzip
    import io
    import tarfile

    root = _path_arg(args, "root")
    dest = _path_arg(args, "dest")
    compress = bool(args.get("compress", False))
    level = int(args.get("compresslevel", 6))
    # files the receiver has already ({rel: {size, sha256}}): listed in the manifest, left out of the archive
    have = _arg(args, "skip", {}, dict)
    # media rules (a refresh): [[prefix, exclude|keep|placeholder], ...] and the default action; an excluded
    # entry is not archived, a placeholder file is archived as placeholder() of it: its bytes never leave here
    rules = sorted((tuple(r) for r in _arg(args, "rules", [], list)), key=lambda r: -len(r[0]))
    default = _arg(args, "default", "keep", str)
    if any(a not in ("exclude", "keep", "placeholder") for _p, a in rules) or default not in (
            "exclude", "keep", "placeholder"):
        raise BadArguments("media rules are exclude, keep or placeholder")
    left_out = placeholders = excluded = 0
    if _within(dest, root) and os.path.isdir(root):
        raise BadArguments("dest %s lies inside the archived tree %s" % (dest, root))
    missing = not os.path.lexists(root)
    if not missing and not os.path.isdir(root):
        raise NotADirectoryError("%s is not a directory" % root)

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
                        action = _media_action(rel, rules, default) if (rules or default != "keep") else "keep"
                        if action == "exclude":
                            excluded += kind == "file"
                            continue
                        if kind == "file" and action == "placeholder":
                            try:
                                with open(path, "rb") as f:
                                    body = placeholder(f.read(16), os.fstat(f.fileno()).st_size)
                            except FileNotFoundError:
                                continue
                            digest = hashlib.sha256(body).hexdigest()
                            files[rel] = {"size": len(body), "sha256": digest}
                            placeholders += 1
                            if have.get(rel) == files[rel]:
                                left_out += 1
                                continue
                            ti = _tarinfo(rel, st, "file", path)
                            ti.size = len(body)
                            tar.addfile(ti, io.BytesIO(body))
                            continue
                        if kind == "file" and rel in have and st.st_size == have[rel].get("size"):
                            try:
                                digest, size = _hash_file(path)
                            except FileNotFoundError:
                                continue  # vanished while we walked
                            if digest == have[rel].get("sha256"):
                                files[rel] = {"size": size, "sha256": digest}
                                left_out += 1
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
        "left_out": left_out,
        "placeholders": placeholders,
        "excluded": excluded,
    }
    if missing:
        out["missing"] = True
    if skipped:
        out["skipped"] = skipped
    return out


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
    _symlink_replace(target, path)


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
        moved_aside = sorted(extra + dirs_in_way)
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


ACTIONS = {
    "archive": act_archive,
    "extract": act_extract,
    "mirror_restore": act_mirror_restore,
    "build_tree": act_build_tree,
    "swap_tree": act_swap_tree,
    "verify_backup": act_verify_backup,
}

# These recreate an application tree with the modes recorded in the tar;
# everything else runs under a private umask.
PUBLIC_UMASK_ACTIONS = {"extract", "mirror_restore", "build_tree"}
READ_ONLY = {"verify_backup"}  # what a dry-run may call


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="archives.py", read_only=READ_ONLY,
                 private_umask=lambda action: action not in PUBLIC_UMASK_ACTIONS)


if __name__ == "__main__":
    sys.exit(main())
