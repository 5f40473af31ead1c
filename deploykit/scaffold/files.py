"""Writing init's files without ever losing one: each is written beside, then renamed into place.

A new file is linked into place (so a file that appeared meanwhile is never
overwritten); a replaced file (only with --force) is first kept as
`<name>.orig` (`<name>.orig.1`, `.orig.2`, ... when that exists too), then
the new text is renamed over it. An unchanged file is not touched at all.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644


def keep_aside(dest: Path) -> Path:
    """A copy of dest as dest.orig (or the first free .orig.N); dest itself stays in place."""
    orig, n = dest.with_name(dest.name + ".orig"), 0
    while orig.exists() or orig.is_symlink():
        n += 1
        orig = dest.with_name(f"{dest.name}.orig.{n}")
    try:
        os.link(dest, orig)
    except OSError:  # a file system without hard links
        shutil.copy2(dest, orig)
    return orig


def write_beside(dest: Path, text: str, *, replace: bool) -> None:
    """Write text to a temporary file beside dest, then put it in place (rename over dest only if replace)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = dest.stat().st_mode & 0o7777 if replace and dest.exists() else NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".init-tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)  # FileExistsError rather than overwriting a file that appeared meanwhile
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
