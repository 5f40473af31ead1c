"""One self-contained program per remote helper, built at send time.

Helpers under deploykit/remote/ share their protocol and file primitives
through `from _common import (...)` (and the file helpers their tree walks
through `from _tree import (...)`); a host has no deploykit installed, so the
text of each shared module replaces its import before the helper is sent.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
import threading
import types
from pathlib import Path

REMOTE_DIR = Path(__file__).resolve().parent.parent / "remote"
# `from _common import (...)` / `from _tree import (...)`: a shared module of remote/, inlined
_IMPORT = re.compile(r"^from (_[a-z]+) import (\([^)]*\)|[^\n]*)[^\n]*\n", re.M)
# `READ_ONLY = {...}` in a helper: the actions it lets a dry-run call
_READ_ONLY = re.compile(r"^READ_ONLY = (\{[^}\n]*\}|set\(\))", re.M)
# CPython 3.11 (to 3.11.7 at least) can fail ast.parse run by two threads at once ("SystemError: AST constructor
# recursion depth mismatch"): the steps of a run ask for helpers from a thread per host
_PARSING = threading.Lock()


@functools.lru_cache(maxsize=None)
def _shared_body(name: str) -> str:
    """remote/<name>.py without its docstring (it speaks of the file, not of the program it lands in)."""
    text = (REMOTE_DIR / f"{name}.py").read_text()
    with _PARSING:
        doc = ast.get_docstring(ast.parse(text), clean=False)
    if doc is not None:
        text = text.split('"""', 2)[2].lstrip("\n")
    return text


def _inline(text: str, done: set) -> str:
    """Each shared module's text in place of its first import (its own imports inlined first), once."""
    def body(m):
        name = m.group(1)
        if name in done:
            return ""
        done.add(name)
        return (f"# ---- bundled from deploykit/remote/{name}.py ----\n" + _inline(_shared_body(name), done)
                + f"# ---- end of {name} ----\n")
    return _IMPORT.sub(body, text)


@functools.lru_cache(maxsize=None)
def helper_source(module: str) -> str:
    """The source of remote/<module>.py with _common (and _tree) inlined: what the host runs."""
    return _inline((REMOTE_DIR / f"{module}.py").read_text(), set())


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


def helper_modules() -> tuple[str, ...]:
    """The helpers of remote/ (not the shared modules, not the agent, which is no helper)."""
    return tuple(sorted(p.stem for p in REMOTE_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem != "agent"))


@functools.lru_cache(maxsize=None)
def read_only_actions(module: str) -> frozenset[str]:
    """The actions remote/<module>.py declares read-only (its READ_ONLY).

    One list for both ends: a dry-run Host refuses the others before sending,
    and the helper refuses them again on the host (DEPLOYKIT_READ_ONLY=1).
    """
    m = _READ_ONLY.search((REMOTE_DIR / f"{module}.py").read_text())
    if m is None:
        raise ValueError(f"remote/{module}.py declares no READ_ONLY set")
    return frozenset(ast.literal_eval(m.group(1)))
