"""One self-contained program per remote helper, built at send time.

Helpers under deploykit/remote/ share their protocol and file primitives
through `from _common import (...)`; a host has no deploykit installed, so
the text of remote/_common.py replaces that import before the helper is sent.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
import types
from pathlib import Path

REMOTE_DIR = Path(__file__).resolve().parent.parent / "remote"
_IMPORT = re.compile(r"^from _common import (\([^)]*\)|[^\n]*)[^\n]*\n", re.M)


@functools.lru_cache(maxsize=None)
def _common_body() -> str:
    text = (REMOTE_DIR / "_common.py").read_text()
    doc = ast.get_docstring(ast.parse(text), clean=False)
    if doc is not None:  # the module docstring speaks of the file, not of the program it lands in
        text = text.split('"""', 2)[2].lstrip("\n")
    return "# ---- bundled from deploykit/remote/_common.py ----\n" + text + "# ---- end of _common ----\n"


@functools.lru_cache(maxsize=None)
def helper_source(module: str) -> str:
    """The source of remote/<module>.py with _common inlined: what the host runs."""
    text = (REMOTE_DIR / f"{module}.py").read_text()
    bundled, n = _IMPORT.subn(lambda m: _common_body(), text, count=1)
    return bundled


@functools.lru_cache(maxsize=None)
def helper_digest(module: str) -> str:
    """A short content hash: the agent caches a helper's source under it."""
    return hashlib.sha256(helper_source(module).encode()).hexdigest()[:16]


def load_helper(module: str) -> types.ModuleType:
    """A helper as a module of this process (the deploykit.django app uses django_state's planning)."""
    mod = types.ModuleType(f"deploykit_remote_{module}")
    mod.__file__ = str(REMOTE_DIR / f"{module}.py")
    exec(compile(helper_source(module), mod.__file__, "exec"), mod.__dict__)
    return mod
