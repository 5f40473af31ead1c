"""The README's key reference, generated from the models' field metadata.

    python -m deploykit.config.reference                    # print it
    python -m deploykit.config.reference --write README.rst # rewrite the marked section

Every key of deploykit.yaml with its type, default, a one-line description
and an example; tests/test_config_models.py fails when README.rst's section
differs from what the models say.
"""
from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .fields import Label
from .models import Document, Section, yaml_key

BEGIN = ".. BEGIN KEY REFERENCE"
END = ".. END KEY REFERENCE"
HEADER = ("..  Generated from deploykit/config/models.py by\n"
          "    python -m deploykit.config.reference --write README.rst; edit the models, not this text.")


def _label(annotation) -> str | None:
    """The Label of a field's type, looking through Optional and Annotated."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Label):
            return str(meta)
    for arg in typing.get_args(annotation):
        found = _label(arg)
        if found:
            return found
    return None


def _section_in(annotation) -> tuple[type[Section] | None, str]:
    """The section model a field holds, and the path suffix to reach its keys ('', '[]', '.<name>')."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _section_in(typing.get_args(annotation)[0])
    if origin is list:
        inner, suffix = _section_in(typing.get_args(annotation)[0])
        return inner, "[]" + suffix
    if origin is dict:
        inner, suffix = _section_in(typing.get_args(annotation)[1])
        return inner, ".<name>" + suffix
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation, ""
    for arg in typing.get_args(annotation):  # Optional[Section]
        if arg is not type(None):
            found = _section_in(arg)
            if found[0] is not None:
                return found
    return None, ""


def _type_text(info: FieldInfo, section: type[Section] | None) -> str:
    label = next((str(m) for m in info.metadata if isinstance(m, Label)), None) or _label(info.annotation)
    if label:
        return label
    return "mapping" if section is not None else "value"


def _default_text(info: FieldInfo) -> str:
    extra = info.json_schema_extra or {}
    if isinstance(extra, dict) and extra.get("default_text"):
        return str(extra["default_text"])
    if info.is_required():
        return "required"
    value = info.default if info.default is not PydanticUndefined else info.default_factory()
    if isinstance(value, Section):
        return "see its keys"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def entries(model: type[Section] = Document, prefix: str = "") -> list[dict]:
    """One entry per key, depth first in the models' order: key, type, default, description, example."""
    out = []
    for name, info in model.model_fields.items():
        name = yaml_key(name, info)
        section, suffix = _section_in(info.annotation)
        out.append({"key": f"{prefix}{name}", "type": _type_text(info, section), "default": _default_text(info),
                    "description": info.description or "", "example": (info.examples or [""])[0]})
        if section is not None:
            out += entries(section, f"{prefix}{name}{suffix}.")
    return out


def render() -> str:
    """The reference as reStructuredText, between (and including) the markers."""
    lines = [BEGIN, "", HEADER, ""]
    for e in entries():
        lines.append(f"``{e['key']}`` ({e['type']}; default: {e['default']})")
        lines.append(f"    {e['description']}. Example: ``{e['example']}``")
    lines += ["", END]
    return "\n".join(lines)


def rewrite(text: str) -> str:
    """text with its marked section replaced by the current reference."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no '{BEGIN}' ... '{END}' section")
    return text[:start] + render() + text[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploykit.config.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FILE", help="rewrite the marked section of FILE (README.rst)")
    args = parser.parse_args(argv)
    if not args.write:
        print(render())
        return 0
    path = Path(args.write)
    try:
        path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"reference: {path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
