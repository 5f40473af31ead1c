"""The YAML loader for deploykit.yaml and playbooks: YAML 1.2 scalars, no duplicate keys.

PyYAML implements YAML 1.1, where `on`, `off`, `yes`, `no`, `y` and `n` are
booleans: the README's own hook `{run: ..., on: primary}` was read as
`{run: ..., True: primary}`. 1.1 also reads `1:30` as the integer 90, `0777`
as 511 and `2024-01-31` as a date. This loader resolves plain scalars with
the YAML 1.2 core schema instead: booleans are only true/True/TRUE and
false/False/FALSE; integers are decimal, `0o` octal or `0x` hex; floats,
`.inf` and `.nan`; null is `~`, null/Null/NULL or nothing. Everything else
is a string. Merge keys (`<<: *anchor`) still work.

A mapping that names the same key twice is an error (`DuplicateKey`, a
`yaml.YAMLError`) naming the key, its path and both lines, instead of
PyYAML's silent last-one-wins.
"""
from __future__ import annotations

import re

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

BOOL = "tag:yaml.org,2002:bool"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
NULL = "tag:yaml.org,2002:null"
MERGE = "tag:yaml.org,2002:merge"
_REPLACED = {BOOL, INT, FLOAT, NULL, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}


class Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's implicit scalars.

    Pure Python on purpose: libyaml's composer (CSafeLoader) recurses in C and
    crashes the interpreter on deeply nested input, where this one raises
    RecursionError, which the callers turn into a one-line error.
    """


_RESOLVERS = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first, _tag, _rx in [
        ("tTfF", BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$"),
        (["~", "n", "N", ""], NULL, r"^(?:~|null|Null|NULL|)$"),
        ("-+0123456789", INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
        ("-+.0123456789", FLOAT, r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                 r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")]:
    for _ch in _first:
        _RESOLVERS.setdefault(_ch, []).append((_tag, re.compile(_rx)))


def _construct_int(loader: Loader, node: ScalarNode) -> int:
    text = loader.construct_scalar(node)
    try:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)
    except ValueError:
        raise ConstructorError(None, None, f"cannot read {text!r} as an integer", node.start_mark) from None


def _construct_bool(loader: Loader, node: ScalarNode) -> bool:
    text = loader.construct_scalar(node)
    if text.lower() not in ("true", "false"):
        raise ConstructorError(None, None, f"cannot read {text!r} as a boolean (true or false)", node.start_mark)
    return text.lower() == "true"


def _construct_float(loader: Loader, node: ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    low = text.lower()
    if low.lstrip("+-") == ".inf":
        return float("-inf") if low.startswith("-") else float("inf")
    if low == ".nan":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise ConstructorError(None, None, f"cannot read {text!r} as a number", node.start_mark) from None


Loader.yaml_implicit_resolvers = _RESOLVERS
Loader.add_constructor(INT, _construct_int)
Loader.add_constructor(BOOL, _construct_bool)
Loader.add_constructor(FLOAT, _construct_float)
Loader.add_constructor(MERGE, SafeConstructor.construct_scalar)  # a lone `<<` value is text


class DuplicateKey(ConstructorError):
    """The same key twice in one mapping."""

    def __init__(self, path: str, key, line: int, first_line: int, mark):
        self.path, self.key, self.line, self.first_line = path, key, line, first_line
        super().__init__(None, None, f"duplicate key {key!r} at line {line} (first at line {first_line})", mark)


def _join(path: str, key) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_duplicates(loader: Loader, root) -> None:
    """Walk the node graph (iteratively: aliases may make it deep or cyclic) for repeated keys."""
    seen_nodes: set[int] = set()
    todo = [(root, "")]
    while todo:
        node, path = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            todo.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE:
                    todo.append((value_node, path))
                    continue
                key = loader.construct_object(key_node, deep=True) if isinstance(key_node, ScalarNode) else None
                child = _join(path, key) if key is not None else path
                todo.append((value_node, child))
                if key is None:
                    continue
                try:
                    marker = (type(key), key)
                    hash(marker)
                except TypeError:
                    continue
                if marker in first:
                    raise DuplicateKey(child, key, key_node.start_mark.line + 1, first[marker], key_node.start_mark)
                first[marker] = key_node.start_mark.line + 1


def load(text: str):
    """Parse one YAML document (None when empty).

    Raises yaml.YAMLError (DuplicateKey for a repeated key), or RecursionError when nested too deeply.
    """
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(loader, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def error_line(exc: yaml.YAMLError, text: str = "") -> tuple[str, str]:
    """(where, problem) of a YAML error, for a one-line message: ('line 3, column 5', 'found ...')."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}"
    elif isinstance(exc, yaml.reader.ReaderError):
        before = text[:exc.position]
        where = f"line {before.count(chr(10)) + 1}, column {exc.position - before.rfind(chr(10))}"
    else:
        where = "somewhere"
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        problem = f"special character {shown} is not allowed in YAML"
    else:
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0] or "invalid YAML"
    return where, " ".join(str(problem).split())
