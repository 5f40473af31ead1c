"""pydantic's validation errors as deploykit's one-line ConfigError: file, key path, problem, hint."""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..errors import ConfigError
from .fields import KEY, WHERE


def key_path(parts) -> str:
    """'stages.prod.hosts[0].address' from ('stages', 'prod', 'hosts', 0, 'address')."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def fail(path: Path, key: str, problem: str, hint: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}", hint=hint)


def from_validation(exc: ValidationError, path: Path) -> ConfigError:
    """The first refusal (models validate in the order of their keys, as the file reads)."""
    err = exc.errors(include_url=False)[0]
    ctx = err.get("ctx") or {}
    parts = list(err["loc"])
    if err["type"] == "deploykit":
        parts += list(ctx.get("at", ()))
        problem, hint = ctx["problem"], ctx["hint"]
    elif err["type"] == "missing":
        problem, hint = "missing", f"add '{KEY}:' to {WHERE}"
    else:  # not expected: every field has a deploykit check; still one line
        problem, hint = " ".join(str(err["msg"]).split()), "see the key reference in README.rst"
    where = key_path(parts[:-1]) or "the top level"
    last = str(parts[-1]) if parts else "(top)"
    hint = hint.replace(KEY, last).replace(WHERE, where)
    return fail(path, key_path(parts) or "(top)", problem, hint)
