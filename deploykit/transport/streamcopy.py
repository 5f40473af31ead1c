"""Host-to-host copies: files streamed from a host of one stage to a host of another, checked on arrival.

Blue/green transfer and refresh move backup sets between stages. The bytes go
source host -> controller -> target host over two SSH channels (the hosts need
not reach each other), in chunks, never held whole in memory. Every file is
checked three times: its sha256 on the source before sending, the sha256 of
the bytes the controller relayed, and the sha256 of what the target wrote;
all three must agree. A file is written beside its destination (`.part-…`)
and renamed into place only once checked; a directory is built beside
(`.part-…`) and renamed into place only once every file in it is checked. So
the target has the state before or the state after, never a torn copy: a
failure at any point removes the partial copy and leaves what was there.
"""
from __future__ import annotations

import hashlib
import posixpath
import secrets
import time
from dataclasses import dataclass, field

from ..errors import DeployError
from .host import Host, q

CHUNK = 1 << 20


class CopyCorrupt(DeployError):
    """The bytes that arrived are not the bytes that left: the copy was discarded."""

    hint = "nothing was replaced on the target; check the source file and the target's disk, then copy again"


@dataclass
class CopiedFile:
    rel: str
    size: int
    sha256: str
    seconds: float


@dataclass
class CopyResult:
    """What arrived where: the files (each checked) and the total."""

    source: str
    target: str
    files: list[CopiedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def _part(path: str) -> str:
    return f"{path}.part-{secrets.token_hex(4)}"


def _relay(src: Host, src_path: str, dst: Host, dst_part: str, progress=None) -> tuple[int, str]:
    """Stream one file; return (bytes, sha256 of the bytes relayed). `progress(n)`: n more bytes relayed."""
    reader = src.open_stream(f"cat -- {q(src_path)}", write=False, read_only=True)
    try:
        writer = dst.open_stream(f"umask 077 && cat > {q(dst_part)}", write=True)
    except BaseException:
        reader.abort()
        raise
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
            if progress:
                progress(len(chunk))
    except BrokenPipeError:  # the writing command ended early (a full disk, say): its exit status says why
        reader.abort()
        got = writer.close()
        raise DeployError(f"{dst.name}: writing {dst_part} failed (exit {got.exited}): "
                          f"{got.tail() or 'it stopped reading'}", hint="check the free space on the target host")
    except BaseException:
        writer.abort()
        reader.abort()
        raise
    got, sent = writer.close(), reader.close()
    if not sent.ok:
        raise DeployError(f"{src.name}: reading {src_path} failed (exit {sent.exited}): {sent.tail()}")
    if not got.ok:
        raise DeployError(f"{dst.name}: writing {dst_part} failed (exit {got.exited}): {got.tail()}",
                          hint="check the free space on the target host")
    return size, digest.hexdigest()


def _checked(src: Host, src_path: str, dst: Host, dst_part: str, rel: str, progress=None,
             before: dict | None = None) -> CopiedFile:
    """Copy one file to dst_part and prove it arrived whole; raise CopyCorrupt otherwise.

    `before`: the file's {sha256, size} on the source when the caller has just read them (a tree's listing);
    else they are read here first. Either way three digests must agree: the source's, the relayed bytes', the
    target's."""
    start = time.monotonic()
    before = before or src.helper("files", "sha256", {"path": src_path})
    size, relayed = _relay(src, src_path, dst, dst_part, progress)
    arrived = dst.helper("files", "sha256", {"path": dst_part})
    if not (before["sha256"] == relayed == arrived["sha256"]) or before["size"] != size or arrived["size"] != size:
        raise CopyCorrupt(f"{rel}: sha256 on {src.name} {before['sha256'][:12]} ({before['size']} bytes), relayed "
                          f"{relayed[:12]} ({size}), on {dst.name} {arrived['sha256'][:12]} ({arrived['size']})")
    return CopiedFile(rel, size, relayed, time.monotonic() - start)


class _Sent:
    """Bytes relayed so far, told to `progress(sent, total)` (ctx.bytes_progress throttles it)."""

    def __init__(self, progress, total: int | None):
        self.progress, self.total, self.sent = progress, total, 0

    def __call__(self, n: int) -> None:
        self.sent += n
        if self.progress:
            self.progress(self.sent, self.total)


def copy_file(src: Host, src_path: str, dst: Host, dst_path: str, *, mode: int = 0o600,
              progress=None) -> CopyResult:
    """Copy one file; the destination is replaced by rename only once the copy is checked.

    `progress(sent, total)` is told the bytes relayed as they go (total unknown: None).
    """
    start = time.monotonic()
    part = _part(dst_path)
    dst.run(f"mkdir -p -m 700 {q(posixpath.dirname(dst_path))}")
    try:
        copied = _checked(src, src_path, dst, part, posixpath.basename(dst_path), _Sent(progress, None))
        dst.run(f"chmod {mode:o} {q(part)} && mv -f -- {q(part)} {q(dst_path)}")
    except BaseException:
        dst.run(f"rm -f -- {q(part)}", check=False, always=True, timeout=60)
        raise
    return CopyResult(src.name, dst.name, [copied], time.monotonic() - start)


def copy_tree(src: Host, src_dir: str, dst: Host, dst_dir: str, *, progress=None, skip=(),
              listing: dict | None = None) -> CopyResult:
    """Copy every file of a directory (a backup set, say) to a new directory on another host.

    `skip`: relative paths left out (a transfer sends media by sync_tree, not inside the set).
    `listing`: the files to copy, {rel: {size, sha256}}, when the caller holds a verified manifest of
    them; else the source directory is listed and hashed first.

    Refuses to replace an existing dst_dir. Symbolic links and special files
    are refused: a backup set holds regular files only. `progress(sent, total)`
    is told the bytes relayed of the whole tree.
    """
    start = time.monotonic()
    if listing is not None:
        listing = {"files": {rel: meta for rel, meta in listing.items() if rel not in set(skip)}}
    else:
        listing = src.helper("files", "manifest", {"root": src_dir})
        if listing.get("missing"):
            raise DeployError(f"{src.name}: {src_dir} does not exist")
        listing["files"] = {rel: meta for rel, meta in listing["files"].items() if rel not in set(skip)}
    odd = [rel for rel, meta in listing["files"].items() if "link" in meta] + list(listing.get("skipped") or [])
    if odd:
        raise DeployError(f"{src.name}: {src_dir} holds links or special files ({', '.join(sorted(odd)[:3])})",
                          hint="only regular files are copied between hosts")
    if dst.exists(dst_dir):
        raise DeployError(f"{dst.name}: {dst_dir} exists already", hint="copy into a new directory")
    part = _part(dst_dir.rstrip("/"))
    result = CopyResult(src.name, dst.name)
    sent = _Sent(progress, sum(meta.get("size", 0) for meta in listing["files"].values()))
    try:
        dst.run(f"mkdir -p -m 700 {q(part)}")
        for rel in sorted(listing["files"]):
            target = posixpath.join(part, rel)
            dst.run(f"mkdir -p -m 700 {q(posixpath.dirname(target))}")
            # the listing's digest is the source's: bytes relayed otherwise (the file changed since) are refused
            copied = _checked(src, posixpath.join(src_dir, rel), dst, target, rel, sent, before=listing["files"][rel])
            result.files.append(copied)
        dst.run(f"mv -T -- {q(part)} {q(dst_dir)}")
    except BaseException:
        dst.run(f"rm -rf -- {q(part)}", check=False, always=True, timeout=120)
        raise
    result.seconds = time.monotonic() - start
    return result


@dataclass
class SyncResult:
    """A tree made equal to another host's: what was sent, and how much of it the target already had."""

    source: str
    target: str
    files: int = 0  # files of the tree now on the target
    sent_files: int = 0  # of which sent (new or changed)
    kept_files: int = 0  # of which the target had already (hard-linked from its previous tree)
    bytes_sent: int = 0  # size of the archive that went over the wire
    aside: str | None = None  # where the target's previous tree was kept
    seconds: float = 0.0


def sync_tree(src: Host, src_root: str, dst: Host, dst_root: str, *, src_scratch: str, dst_scratch: str,
              aside: str, progress=None, media_rules: dict | None = None) -> SyncResult:
    """Make dst_root on dst equal to src_root on src, sending only the files that differ.

    Both sides are listed with per-file sha256. The source packs the files the
    target lacks or holds with other content (every directory too, for its
    mode), in an archive under src_scratch; it is copied checked (copy_file:
    three sha256 agree) into dst_scratch. The target's new tree is built beside
    the live one — unchanged files hard-linked from it, the rest extracted and
    checked against the source's manifest — and swapped in by rename; the
    previous tree is kept whole at `aside`. The source is only read (its
    scratch archive is removed), and until the swap the target has its old
    tree untouched: a failure at any point leaves it as it was.

    `media_rules` ({"prefix/": exclude|keep|placeholder, "default": ...}, a refresh's): excluded entries are
    left out, placeholder files are replaced on the source by a file of the same type and size class, so
    their bytes never leave it.
    """
    start = time.monotonic()
    theirs = dst.helper("files", "manifest", {"root": dst_root})
    have = {rel: meta for rel, meta in (theirs.get("files") or {}).items() if "sha256" in meta}
    token = secrets.token_hex(4)
    packed = posixpath.join(src_scratch, f"sync-{token}.tar")
    arrived = posixpath.join(dst_scratch, f"sync-{token}.tar")
    built = f"{dst_root.rstrip('/')}.part-{token}"
    src.run(f"mkdir -p -m 700 {q(src_scratch)}")
    try:
        args = {"root": src_root, "dest": packed, "skip": have}
        if media_rules:
            args["rules"] = [[p, a] for p, a in media_rules.items() if p != "default"]
            args["default"] = media_rules.get("default", "keep")
        doc = src.helper("archives", "archive", args, track="pack changed files")
        if doc.get("missing"):
            raise DeployError(f"{src.name}: {src_root} does not exist", hint="nothing was changed on the target")
        copy_file(src, packed, dst, arrived, progress=progress)
    finally:
        src.run(f"rm -f -- {q(packed)}", check=False, always=True, timeout=60)
    try:
        made = dst.helper("archives", "build_tree", {"archive": arrived, "live": dst_root, "dest": built,
                                                   "files": doc["files"]}, track="build synced tree")
        swapped = dst.helper("archives", "swap_tree", {"root": dst_root, "new": built, "aside": aside})
    except BaseException:
        dst.run(f"rm -rf -- {q(built)}", check=False, always=True, timeout=120)
        raise
    finally:
        dst.run(f"rm -f -- {q(arrived)}", check=False, always=True, timeout=60)
    return SyncResult(src.name, dst.name, files=made["files"], sent_files=made["extracted"],
                      kept_files=made["linked"], bytes_sent=doc["size"], aside=swapped.get("aside"),
                      seconds=time.monotonic() - start)
