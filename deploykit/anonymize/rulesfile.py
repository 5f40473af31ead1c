"""`deploykit refresh --init-rules`: a rules file with a suggestion for each personal-looking column.

The text is the shape refresh.rules_file reads (`rules:`, in YAML's flow form
per rule), each suggestion under a comment saying why the column looked
personal, so the operator reviews a file rather than a list. It is written
beside and linked into place, never over an existing file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from ..config.refresh import DEFAULT_RULES_FILE
from ..config.rules import to_surface
from ..errors import DeployError, RulesFileExists
from .classify import Finding

HEADER = """\
# Masking rules of the anonymized refresh (deploykit refresh), read through refresh.rules_file.
# Written by 'deploykit refresh --init-rules': each rule below is a suggestion for a column that looks
# personal and had no rule. Check each one; write 'keep' for a column that holds nothing personal.
# Kinds: keep, null, email, phone, format, ip, {fixed: TEXT}, {hash: {length: N}}, {faker: PROVIDER},
# {json: {dotted.path: RULE}}. Keys: app_label.Model.field, or table.column for a table no model manages.
"""
PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.$-]*$")  # read back as the same text by any YAML loader
YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _text(value: str) -> str:
    """A string as YAML reads it back exactly: plain when that is safe, else double-quoted (JSON's escapes)."""
    if PLAIN.match(value) and value.lower() not in YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def surface_text(value: Any) -> str:
    """One rule's YAML surface (config.rules.to_surface's output) in flow form."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_text(str(k))}: {surface_text(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a rule's surface: {value!r}")


def _comment(text: str) -> str:
    return "# " + " ".join(str(text).split())


def init_rules_text(findings: Iterable[Finding], existing: dict[str, dict] | None = None) -> str:
    """The YAML text of a rules file: `existing` (canonical rules by key, kept as they are) first, then a
    suggestion for each finding under a comment saying why, grouped by table."""
    existing = dict(existing or {})
    lines = [HEADER.rstrip("\n"), "rules:"]
    if existing:
        lines.append("  # the rules given before")
        lines += [f"  {_text(key)}: {surface_text(to_surface(rule))}" for key, rule in sorted(existing.items())]
    table = None
    count = 0
    for f in findings:
        if f.key in existing:
            continue
        if f.table != table:
            if table is not None or existing:
                lines.append("")
            table = f.table
        where = f"{f.table}.{f.column}"
        lines.append(f"  {_comment(f'{where}: {f.why}' if f.field else f'{where} (no model): {f.why}')}")
        lines.append(f"  {_text(f.key)}: {surface_text(f.suggestion)}")
        count += 1
    if not existing and not count:
        lines[-1] = "rules: {}"
        lines.append("# no column looked personal without a rule")
    return "\n".join(lines) + "\n"


def rules_file_path(config) -> Path:
    """Where --init-rules writes: refresh.rules_file, else refresh-rules.yaml beside deploykit.yaml."""
    refresh = getattr(config, "refresh", None)
    if refresh is not None and refresh.rules_file is not None:
        return Path(refresh.rules_file)
    return Path(config.project_dir) / DEFAULT_RULES_FILE


def write_rules_file(path: str | os.PathLike, text: str) -> Path:
    """Write text to a new file at path: beside it first (fsync'ed), then linked into place, which refuses
    an existing file (RulesFileExists) however late it appeared. Where hard links are not supported, a
    rename after the check."""
    path = Path(path)
    if os.path.lexists(path):
        raise RulesFileExists(f"{path} already exists; --init-rules does not overwrite it")
    if not path.parent.is_dir():
        raise DeployError(f"cannot write {path}: {path.parent} is not a directory",
                          hint="create the directory, or point refresh.rules_file elsewhere")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if os.path.lexists(tmp):  # left by an earlier, interrupted write of this process id
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise RulesFileExists(f"{path} already exists; --init-rules does not overwrite it") from None
        except OSError:  # no hard links here (some network or FUSE file systems)
            if os.path.lexists(path):
                raise RulesFileExists(f"{path} already exists; --init-rules does not overwrite it") from None
            os.rename(tmp, path)
    except OSError as exc:
        raise DeployError(f"cannot write {path}: {exc.strerror or exc}", hint="check the directory's permissions") \
            from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    _fsync_dir(path.parent)
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
