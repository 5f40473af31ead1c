"""Reading YAML text for the config and the playbooks: every failure is a one-line ConfigError."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import yamlload
from ..errors import ConfigError
from .fields import show


def load_yaml(text: str, path: Path, what: str) -> Any:
    """The document in text; `what` names what to fix in a syntax error's hint."""
    try:
        return yamlload.load(text)
    except yamlload.DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc.path}: duplicate key {show(exc.key)} at line {exc.line} "
                          f"(first at line {exc.first_line})",
                          hint="keep only one of them: YAML would silently use the last") from None
    except yaml.YAMLError as exc:
        where, problem = yamlload.error_line(exc, text)
        raise ConfigError(f"{path}: malformed YAML at {where}: {problem}", hint=f"fix {what}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply", hint="flatten the structure") from None


def check_no_nul(raw: Any, path: Path) -> None:
    """No NUL byte in any key or value: no shell command, path or name can carry one."""
    seen: set[int] = set()
    todo = [(raw, "")]
    while todo:
        value, where = todo.pop()
        if isinstance(value, str):
            if "\0" in value:
                raise ConfigError(f"{path}: {where or '(top)'}: contains a NUL byte", hint="remove the \\0 character")
        elif isinstance(value, (dict, list, tuple, set, frozenset)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                for k, v in value.items():
                    child = yamlload._join(where, k)
                    if isinstance(k, str) and "\0" in k:
                        shown = child.replace("\0", "\\0")
                        raise ConfigError(f"{path}: {shown}: contains a NUL byte", hint="remove the \\0 character")
                    todo.append((v, child))
            else:
                todo.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
