"""The phase names hooks may use: the stage names of the built-in playbooks and of playbooks_dir."""
from __future__ import annotations

import functools
from pathlib import Path


from ..errors import ConfigError
from .yamltext import load_yaml

BUILTIN_PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def phases_in(base: Path) -> frozenset[str]:
    """The phase names of the playbooks in a directory; a malformed playbook is refused now."""
    phases: set[str] = set()
    try:
        files = sorted(base.glob("*.yml"))
    except OSError:
        files = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read this playbook: {exc}", hint="fix or remove the file") from None
        book = load_yaml(text, path, "the playbook's YAML")
        listed = book.get("phases", book.get("stages")) if isinstance(book, dict) else None  # "stages": the old key
        for st in listed if isinstance(listed, list) else []:
            if isinstance(st, dict) and isinstance(st.get("name"), str):
                phases.add(st["name"])
    return frozenset(phases)


@functools.lru_cache(maxsize=1)
def builtin_phases() -> frozenset[str]:
    return phases_in(BUILTIN_PLAYBOOKS)


def playbook_phases(playbooks_dir: Path | None) -> set[str]:
    """The phases of every playbook deploykit may run: the built-in ones and those in playbooks_dir."""
    return set(builtin_phases()) | (set(phases_in(playbooks_dir)) if playbooks_dir else set())



