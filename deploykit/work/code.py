"""Code on a host: upload a commit into a release directory, link shared paths, switch `current`, set aside.

Shared by the release, recovery and rollback steps.
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from .. import layout
from ..errors import DeployError
from ..gitrepo import archive
from ..transport.host import q
from ..pyenv import render_app


def commit_archive(ctx, commit: str) -> Path:
    """`git archive` of a commit, made once per run whatever the number of hosts (removed when the run ends)."""
    with ctx.lock:
        path = ctx.temp_dir() / f"{commit}.tar"
        if not path.exists():
            archive(ctx.config.repo, commit, path)
        return path


def upload_commit(ctx, host, commit: str, tag: str | None, dest: str) -> int:
    """Put the code of a commit into dest (with a REVISION file); return the archive's size."""
    local = commit_archive(ctx, commit)
    remote_tar = f"{dest}.tar"
    part = f"{dest}.part"  # built beside, renamed into place: a release directory is never partial
    host.put(local, remote_tar, progress=ctx.bytes_progress(host, "upload"))
    host.run(f"rm -rf {q(part)}")
    host.helper("archives", "extract", {"archive": remote_tar, "dest": part}, track="extract release")
    host.run(f"rm -f {q(remote_tar)} && printf '%s\\n' {q(commit)} {q(tag or '')} > {q(part)}/REVISION && "
             f"mv -T {q(part)} {q(dest)}")
    return Path(local).stat().st_size


def built_here(host, dest: str, commit: str) -> bool:
    """dest is a complete release directory of commit (renamed into place only once whole: its REVISION says)."""
    res = host.run(f"head -n 1 {q(posixpath.join(dest, 'REVISION'))}", check=False, read_only=True)
    return res.ok and res.stdout.strip() == commit


def is_shared_file(rel: str) -> bool:
    """A shared path that names a file (db.sqlite3, .env): it must exist; a directory is made when missing."""
    return bool(posixpath.splitext(rel)[1] or posixpath.basename(rel).startswith("."))


def missing_shared_files(ctx, host) -> list[str]:
    """The shared files a release would link that are not on the host (read-only: preflight asks it)."""
    return [layout.shared(host, rel) for rel in ctx.config.shared
            if is_shared_file(rel) and not host.exists(layout.shared(host, rel))]


def link_shared(ctx, host, dest: str) -> list[str]:
    """Link shared paths from shared/ into a release directory."""
    linked = []
    for rel in ctx.config.shared:
        shared = layout.shared(host, rel)
        target = posixpath.join(dest, rel)
        if not host.exists(shared):
            if is_shared_file(rel):
                raise DeployError(f"{host.name}: shared file {shared} does not exist",
                                  hint="create it on the host (e.g. the app's settings) before releasing")
            host.run(f"mkdir -p {q(shared)}")
        host.run(f"mkdir -p {q(posixpath.dirname(target))} && rm -rf {q(target)} && ln -s {q(shared)} {q(target)}")
        linked.append(rel)
    return linked


def run_install(ctx, host, dest: str) -> int:
    for cmd in ctx.config.install:
        host.run(render_app(ctx, host, cmd, dest), cwd=dest, track="install")
    return len(ctx.config.install)


def switch_current(host, target: str) -> str | None:
    """Point `current` at target atomically; return what it pointed at before."""
    doc = host.helper("files", "atomic_symlink", {"link": layout.current(host), "target": target, "must_be_dir": True})
    return doc.get("previous")


def move_aside(ctx, host, release_id: str) -> str | None:
    """Move a release's code into failed/<id>/code (kept, never deleted); return that directory."""
    src = ctx.release_dir(host, release_id)
    if not host.exists(src):
        return None
    dest = ctx.failed_dir(host, release_id)
    if host.exists(layout.failed_code(dest)):
        dest = f"{dest}-{ctx.run_id}"
    host.run(f"mkdir -p {q(dest)}")
    host.helper("files", "move", {"src": src, "dest": layout.failed_code(dest)})
    return dest
