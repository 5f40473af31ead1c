"""The value types of deploykit.yaml, each refusing bad input with the wording operators know.

Each type is an `Annotated` pydantic type whose validator does the whole check
(pydantic coerces nothing: `yes` is not a boolean, `1.0` is not a port) and
raises a `Problem`: a one-line problem and a hint, turned into a ConfigError
with the key path by `problems.py`. A `Label` says how the key reference
names the type, so the README's types come from the same place as the checks.
"""
from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

ROLES = frozenset({"app", "primary", "db", "web", "worker"})
BACKUP_KINDS = ("databases", "media", "paths")
PG_MAX_IDENTIFIER = 63  # bytes: NAMEDATALEN - 1; PostgreSQL silently truncates longer names

ADDRESS = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>[^:@\s/]+)(?::(?P<port>[0-9]+))?$")
IDENTIFIER = re.compile(r"^\w+$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$", re.ASCII)
MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)

# Tokens a hint may hold, filled in with the key path by problems.py.
KEY = "<key>"  # the key itself ('timeout')
WHERE = "<where>"  # the mapping that holds it ('health[0]', or 'the top level')


@dataclass(frozen=True)
class Label:
    """How the key reference names a type ('text', 'number > 0', 'list of text'); callable when it is computed."""

    text: Any

    def __str__(self) -> str:
        return self.text() if callable(self.text) else self.text


def problem(text: str, hint: str, at: tuple = ()) -> PydanticCustomError:
    """A refusal; `at` names keys below the one being validated (an unknown key, a bad name)."""
    return PydanticCustomError("deploykit", "{problem}", {"problem": text, "hint": hint, "at": tuple(at)})


def show(value: Any) -> str:
    """A short one-line repr for messages."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  (an int too long to print, a broken object)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def of_kind(value: Any, *kinds: type) -> Any:
    """value when it is one of kinds (a bool is never an int), else the 'expected int, got str' refusal."""
    if (bool in kinds or not isinstance(value, bool)) and isinstance(value, kinds):
        return value
    names = " or ".join(k.__name__ for k in kinds)
    raise problem(f"expected {names}, got {type_name(value)} {show(value)}", f"give '{KEY}' a {names} value")


def _typed(kind: type, label: str, check) -> Any:
    return Annotated[kind, PlainValidator(check), Label(label)]


def _text(value: Any) -> str:
    of_kind(value, str)
    if not value.strip():
        raise problem("empty", f"give '{KEY}' a value or remove it")
    return value


def _no_tilde(value: str) -> str:
    if value.startswith("~"):
        raise problem(f"{value!r} starts with '~', which the host never expands",
                      "write the absolute path (e.g. /home/deploy/...)")
    return value


def _host_dir(value: Any) -> str:
    value = _no_tilde(_text(value))
    if not value.startswith("/"):
        raise problem(f"must be an absolute path, got {value!r}", "write it from the root, e.g. /srv/app")
    if posixpath.normpath(value) in ("/", "//"):
        raise problem("is the root directory",
                      "give the app its own directory (releases/, shared/ and backups/ are created in it)")
    return value


def _pg_name(value: Any) -> str:
    value = _text(value)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > PG_MAX_IDENTIFIER:
        raise problem(f"{value!r} is {size} bytes in UTF-8; PostgreSQL silently truncates names to "
                      f"{PG_MAX_IDENTIFIER} bytes", f"use a name of at most {PG_MAX_IDENTIFIER} bytes")
    return value


def _env_name(value: Any) -> str:
    value = _text(value)
    if not ENV_NAME.match(value):
        raise problem(f"{value!r} is not an environment variable name",
                      "name the controller's environment variable that holds the password, e.g. APP_PG_PASSWORD")
    return value


def _module(value: Any) -> str:
    value = _text(value)
    if not MODULE.match(value):
        raise problem(f"{value!r} is not a Python module path", "write the dotted module, e.g. mysite.settings")
    return value


def _address(value: Any) -> str:
    value = _text(value)
    if value == "local":
        return value
    m = ADDRESS.match(value)
    if not m:
        raise problem(f"cannot read {value!r}", "write it as user@host:port, e.g. deploy@10.0.0.5:22")
    port = int(m["port"] or 22)
    if not 1 <= port <= 65535:
        raise problem(f"port {port} is out of range", "write it as user@host:port with a port from 1 to 65535")
    return value


def parse_address(address: str) -> tuple[str | None, str, int]:
    """(user, hostname, SSH port) of a validated address; ('local' is (None, 'localhost', 0))."""
    if address == "local":
        return None, "localhost", 0
    m = ADDRESS.match(address)
    return m["user"], m["host"], int(m["port"] or 22)


def _roles(value: Any) -> set[str]:
    """Built-in roles and the operator's own (declared in the top-level 'roles:', checked by the loader)."""
    of_kind(value, list)
    for role in value:
        if not isinstance(role, str) or not IDENTIFIER.match(role):
            raise problem(f"unknown role {show(role)}", f"use roles from {', '.join(sorted(ROLES))} or a name "
                                                        "declared in 'roles:'")
    if not value:
        raise problem("empty", f"give the host at least one role from {', '.join(sorted(ROLES))}")
    return set(value)


def _backup_order(value: Any) -> list[str]:
    of_kind(value, list)
    for item in value:
        if not isinstance(item, str) or item not in BACKUP_KINDS:
            raise problem(f"unknown item {show(item)}", f"use items from {', '.join(BACKUP_KINDS)}")
    for item in value:
        if value.count(item) > 1:
            raise problem(f"{item!r} is listed twice", "list each kind once")
    return list(value)


def _var_values(value: Any) -> dict[str, Any]:
    of_kind(value, dict)
    names(value, "var name", IDENTIFIER, "letters, digits and _, used as {name}")
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise problem(f"expected text or a number, got {type_name(item)} {show(item)}",
                          "give the var a text or number value (quote it: 'true', '')", at=(key,))
    return dict(value)


def _headers(value: Any) -> dict[str, str]:
    of_kind(value, dict)
    names(value, "header name", HEADER_NAME, "letters, digits and - such as Host or X-Forwarded-Proto")
    seen: dict[str, str] = {}
    out = {}
    for name, item in value.items():
        if name.lower() in seen:
            raise problem(f"{name!r} is given twice (as {seen[name.lower()]!r} too)",
                          "HTTP header names ignore case: give each header once", at=(name,))
        seen[name.lower()] = name
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise problem(f"expected text, got {type_name(item)} {show(item)}",
                          "give the header a text value, e.g. 'Host: shop.example.com'", at=(name,))
        text = str(item)
        if re.search(r"[\r\n\0]", text):
            raise problem("holds a line break", "give the header a value on one line", at=(name,))
        out[name] = text
    return out


def _json_paths(value: Any) -> dict[str, Any]:
    of_kind(value, dict)
    if not value:
        raise problem("empty", "give at least one dotted path and its value, e.g. {status: ok, db.ok: true}")
    for path in value:
        if not isinstance(path, str) or not all(part.strip() for part in path.split(".")):
            raise problem(f"{show(path)} is not a dotted path",
                          "name a field of the JSON body as key.key (a list item as key.0), e.g. db.ok",
                          at=(str(path),))
        bad = _not_json(value[path])
        if bad is not None:
            raise problem(f"expected a JSON value, got {type_name(bad)} {show(bad)}",
                          "give text, a number, true, false, null, a list or a mapping", at=(path,))
    return dict(value)


def _not_json(value: Any) -> Any:
    """The first part of value a JSON body cannot hold (a date, bytes, NaN), or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, list):
        return next((bad for item in value if (bad := _not_json(item)) is not None), None)
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return k
            if (bad := _not_json(item)) is not None:
                return bad
        return None
    return value


def _keep_releases(value: Any) -> int:
    of_kind(value, int)
    if value < 2:
        raise problem(f"must be at least 2, got {show(value)}", "keep the live release and the one before it")
    return value


def _engine(value: Any) -> str:
    value = _text(value)
    engines = engine_names()
    if value not in engines:
        raise problem(f"unsupported engine {value!r}", f"use one of {', '.join(sorted(engines))}")
    return value


def engine_names() -> list[str]:
    """The database engines: the drivers' registry is the only list (imported late: drivers import config)."""
    from ..drivers import ENGINES
    return sorted(ENGINES)


def names(data: dict, what: str, pattern: re.Pattern | None = None, example: str = "") -> None:
    """The keys of an open mapping (stages, aliases, vars, phases) are non-empty text (matching pattern)."""
    for key in data:
        if not isinstance(key, str) or not key.strip() or (pattern is not None and not pattern.match(key)):
            rule = f" ({example})" if example else ""
            raise problem(f"{show(key)} is not a valid {what}{rule}", f"name each {what} with text{rule}",
                          at=(str(key),))


def Number(minimum: float = 0.0, inclusive: bool = False) -> Any:
    """A finite number above `minimum` (at least, when inclusive)."""
    bound = f"at least {minimum:g}" if inclusive else f"more than {minimum:g}"

    def check(value: Any) -> float:
        of_kind(value, int, float)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
            raise problem(f"must be a number {bound}, got {number:g}", f"give '{KEY}' a number {bound}")
        return number
    return _typed(float, f"number {'≥' if inclusive else '>'} {minimum:g}", check)


def Whole(low: int | None = None, high: int | None = None) -> Any:
    """A whole number from low to high."""
    span = f"from {low} to {high}" if high is not None else f"at least {low}"

    def check(value: Any) -> int:
        of_kind(value, int)
        if (low is not None and value < low) or (high is not None and value > high):
            raise problem(f"must be {span}, got {show(value)}", f"give '{KEY}' a whole number {span}")
        return value
    label = "whole number" if low is None else f"whole number {span}"
    return _typed(int, label, check)


def OneOf(*choices: str) -> Any:
    """One of a few fixed words (a mode)."""
    def check(value: Any) -> str:
        value = _text(value)
        if value not in choices:
            raise problem(f"unknown value {value!r}", f"use one of: {', '.join(choices)}")
        return value
    return _typed(str, "one of " + ", ".join(choices), check)


def TextList(scalars: bool = False) -> Any:
    """A list of non-empty strings (with scalars: numbers too, as text)."""
    def check(value: Any) -> list[str]:
        of_kind(value, list)
        out = []
        for i, item in enumerate(value):
            ok = isinstance(item, str) or (scalars and isinstance(item, (int, float)) and not isinstance(item, bool))
            if not ok or not str(item).strip():
                raise problem(f"expected a non-empty string, got {type_name(item)} {show(item)}",
                              "write each entry as text (quote it if needed)", at=(i,))
            out.append(str(item))
        return out
    return _typed(list, "list of text", check)


def check_of(annotated: Any):
    """The validator function of one of these types, to run it again where a model decides (per engine)."""
    return next(m.func for m in annotated.__metadata__ if hasattr(m, "func"))


Text = _typed(str, "text", _text)
AnyText = _typed(str, "text", lambda v: of_kind(v, str))
Flag = _typed(bool, "true or false", lambda v: of_kind(v, bool))
HostPath = _typed(str, "path on the host", lambda v: _no_tilde(_text(v)))
HostDir = _typed(str, "absolute path on the host", _host_dir)
LocalPath = _typed(str, "path on the controller", _text)
PgName = _typed(str, "text (≤ 63 bytes)", _pg_name)
EnvName = _typed(str, "environment variable name", _env_name)
ModulePath = _typed(str, "dotted module path", _module)
Address = _typed(str, "'local' or user@host:port", _address)
Roles = _typed(set, "list of roles", _roles)
BackupOrder = _typed(list, "list of databases, media, paths", _backup_order)
Vars = _typed(dict, "mapping of name to text or number", _var_values)
Headers = _typed(dict, "mapping of header name to text", _headers)
JsonPaths = _typed(dict, "mapping of dotted path to value", _json_paths)
KeepReleases = _typed(int, "whole number at least 2", _keep_releases)
Engine = _typed(str, lambda: "one of " + ", ".join(engine_names()), _engine)
