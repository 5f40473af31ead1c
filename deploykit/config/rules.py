"""The masking rules of `refresh:` as the operator writes them, read into the canonical rules the masking receives.

    accounts.User.email: email               -> {"kind": "email"}
    shop_customer.note: null                 -> {"kind": "null"}
    accounts.User.password: {fixed: "!"}     -> {"kind": "fixed", "value": "!"}
    accounts.User.username: {hash: {length: 12}}  -> {"kind": "hash", "length": 12}
    accounts.User.first_name: {faker: first_name} -> {"kind": "faker", "provider": "first_name", "locale": "en_US"}
    legacy_log.payload: {json: {user.email: email}} -> {"kind": "json", "paths": {"user.email": {"kind": "email"}}}

Only the shape is checked here (the file alone can tell): whether a key names a
real model, field, table or column is for deploykit.anonymize.resolve, with the
app's own model metadata and the database's columns. `to_surface` writes a
canonical rule back the way it is read, for the rules file --init-rules writes.
"""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from pydantic import PlainValidator

from .fields import ENV_NAME, KEY, Label, of_kind, problem, show, type_name

KINDS = ("keep", "null", "fixed", "hash", "email", "phone", "format", "ip", "faker", "json")
BARE = ("keep", "null", "hash", "email", "phone", "format", "ip")  # kinds written as one word
HASH_LENGTH = (8, 64)  # hex characters of a keyed hash
DEFAULT_LOCALE = "en_US"
MEDIA_ACTIONS = ("placeholder", "exclude", "keep")
MIN_PROOF_SAMPLE = 10_000

PART = re.compile(r"^[^\s.\"']+$")  # one part of a key: a name without dots, spaces or quotes
PROVIDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$", re.ASCII)
LOCALE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2})?$", re.ASCII)
KINDS_TEXT = "keep, null, email, phone, format, ip, {fixed: TEXT}, {hash: {length: N}}, {faker: PROVIDER}, " \
             "{json: {PATH: RULE}}"


def _kind_hint(word: str) -> str:
    close = difflib.get_close_matches(word, KINDS, n=1, cutoff=0.6)
    return (f"did you mean {close[0]!r}? " if close else "") + f"use one of: {KINDS_TEXT}"


def _no_args(kind: str, value: Any, at: tuple) -> dict:
    """{email: null} and {email: {}} are email too."""
    if value is None or value == {}:
        return {"kind": kind, **({"length": None} if kind == "hash" else {})}
    raise problem(f"{kind} takes no settings, got {show(value)}", f"write '{kind}' alone", at=at)


def _fixed(value: Any, at: tuple) -> dict:
    if isinstance(value, str):
        return {"kind": "fixed", "value": value}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"kind": "fixed", "value": str(value)}
    if value is None:
        raise problem("fixed needs a value, got null", "write 'null' alone for NULL, or quote the text: {fixed: ''}",
                      at=at)
    raise problem(f"fixed needs text, got {type_name(value)} {show(value)}",
                  "quote the value as the column's text form, e.g. {fixed: '!'} or {fixed: 'false'}", at=at)


def _hash(value: Any, at: tuple) -> dict:
    if value is None or value == {}:
        return {"kind": "hash", "length": None}
    if not isinstance(value, dict):
        raise problem(f"expected {{length: N}}, got {type_name(value)} {show(value)}",
                      "write 'hash' alone or {hash: {length: 12}}", at=at)
    extra = sorted((str(k) for k in value if k != "length"))
    if extra:
        raise problem("unknown key", "hash takes only 'length' (hex characters)", at=at + (extra[0],))
    length = value.get("length")
    if length is None:
        return {"kind": "hash", "length": None}
    low, high = HASH_LENGTH
    if isinstance(length, bool) or not isinstance(length, int) or not low <= length <= high:
        raise problem(f"must be a whole number from {low} to {high}, got {show(length)}",
                      f"give the hash's length in hex characters, {low} to {high} (default: the original's)",
                      at=at + ("length",))
    return {"kind": "hash", "length": length}


def _faker(value: Any, at: tuple) -> dict:
    if isinstance(value, str):
        value = {"provider": value}
    if not isinstance(value, dict):
        raise problem(f"faker needs a provider, got {show(value)}",
                      "name a Faker provider: {faker: first_name} or {faker: {provider: name, locale: de_DE}}", at=at)
    extra = sorted(str(k) for k in value if k not in ("provider", "locale"))
    if extra:
        raise problem("unknown key", "faker takes 'provider' and 'locale'", at=at + (extra[0],))
    provider, locale = value.get("provider"), value.get("locale", DEFAULT_LOCALE)
    if provider is None:
        raise problem("faker needs a provider", "name a Faker provider, e.g. {faker: first_name}", at=at)
    if not isinstance(provider, str) or not PROVIDER.match(provider):
        raise problem(f"{show(provider)} is not a Faker provider name",
                      "name a Faker method such as first_name, last_name, name, street_address, city, postcode",
                      at=at + ("provider",))
    if not isinstance(locale, str) or not LOCALE.match(locale):
        raise problem(f"{show(locale)} is not a locale", "write a Faker locale such as en_US, de_DE or fr",
                      at=at + ("locale",))
    return {"kind": "faker", "provider": provider, "locale": locale}


def json_path_problem(path: Any) -> str | None:
    """Why `path` is no dotted JSON path (None: it is one)."""
    if not isinstance(path, str) or not path:
        return f"{show(path)} is not a dotted path"
    for part in path.split("."):
        if not part or part != part.strip():
            return f"{path!r} has an empty part or one with spaces around it"
        if "*" in part and part != "*":
            return f"{path!r}: '*' stands for a whole part (every item or value), not for part of a name"
    return None


def _json(value: Any, at: tuple) -> dict:
    if not isinstance(value, dict) or not value:
        raise problem(f"json needs paths, got {show(value)}",
                      "map dotted paths to rules, e.g. {json: {user.email: email, phones.*: phone}}", at=at)
    paths = {}
    for path, rule in value.items():
        why = json_path_problem(path)
        if why:
            raise problem(why, "write a path as key.key, with * for every item of a list or value of an object "
                               "(e.g. contacts.*.email)", at=at + (str(path),))
        paths[path] = parse_rule(rule, at + (path,), in_json=True)
    names = sorted(paths)
    for a, b in zip(names, names[1:]):
        if b.startswith(a + "."):
            raise problem(f"{a!r} and {b!r}: one is inside the other",
                          "give a rule to the outer path or to the paths inside it, not both", at=at + (b,))
    return {"kind": "json", "paths": paths}


MAKERS = {"fixed": _fixed, "hash": _hash, "faker": _faker, "json": _json}


def parse_rule(value: Any, at: tuple = (), in_json: bool = False) -> dict:
    """The canonical rule of one YAML value (a bare null is the kind null)."""
    if value is None:
        return {"kind": "null"}
    if isinstance(value, str):
        if value in BARE:
            return _no_args(value, None, at)
        if value in MAKERS:
            raise problem(f"{value} needs settings", f"write it as a mapping: {_example(value)}", at=at)
        raise problem(f"unknown rule kind {value!r}", _kind_hint(value), at=at)
    if not isinstance(value, dict):
        raise problem(f"expected a rule, got {type_name(value)} {show(value)}", f"use one of: {KINDS_TEXT}", at=at)
    if len(value) != 1:
        found = ", ".join(sorted(map(str, value))) or "none"
        raise problem(f"a rule is one kind, found: {found}", f"write one of: {KINDS_TEXT}", at=at)
    (kind, settings), = value.items()
    if not isinstance(kind, str) or kind not in KINDS:
        raise problem(f"unknown rule kind {show(kind)}", _kind_hint(str(kind)), at=at)
    if kind == "json" and in_json:
        raise problem("a json rule inside a json rule", "give the inner values their own rules by a longer path",
                      at=at)
    if kind in MAKERS:
        return MAKERS[kind](settings, at + (kind,))
    return _no_args(kind, settings, at + (kind,))


def _example(kind: str) -> str:
    return {"fixed": "{fixed: '!'}", "hash": "{hash: {length: 12}}", "faker": "{faker: first_name}",
            "json": "{json: {user.email: email}}"}[kind]


def key_problem(key: Any, parts: tuple[int, ...]) -> str | None:
    """Why `key` is no dotted name of len in parts (None: it is one)."""
    if not isinstance(key, str) or not all(PART.match(p) for p in key.split(".")):
        return f"{show(key)} is not a dotted name"
    if len(key.split(".")) not in parts:
        return f"{key!r} has {len(key.split('.'))} part(s)"
    return None


def _rules(value: Any) -> dict[str, dict]:
    of_kind(value, dict)
    out = {}
    for key, rule in value.items():
        why = key_problem(key, (2, 3))
        if why:
            raise problem(why, "name a Django field as app_label.Model.field or a column as table.column",
                          at=(str(key),))
        out[key] = parse_rule(rule, (key,))
    return out


def _subset(value: Any) -> dict[str, str]:
    of_kind(value, dict)
    out = {}
    for key, where in value.items():
        why = key_problem(key, (1, 2))
        if why:
            raise problem(why, "name a table or a Django model as app_label.Model", at=(str(key),))
        if not isinstance(where, str) or not where.strip():
            raise problem(f"expected an SQL condition as text, got {type_name(where)} {show(where)}",
                          "quote the condition, e.g. \"created > now() - interval '30 days'\"", at=(key,))
        out[key] = where
    return out


def media_prefix_problem(prefix: Any) -> str | None:
    if not isinstance(prefix, str) or not prefix.strip():
        return f"{show(prefix)} is not a directory of the media"
    parts = prefix.rstrip("/").split("/")
    if prefix.startswith(("/", "~")) or any(p in ("", ".", "..") for p in parts):
        return f"{prefix!r} is not a path inside the media directory"
    return None


def _media(value: Any) -> dict[str, str]:
    of_kind(value, dict)
    out = {"default": "keep"}
    for prefix, action in value.items():
        if prefix != "default":
            why = media_prefix_problem(prefix)
            if why:
                raise problem(why, "name a directory relative to the media root, e.g. avatars/", at=(str(prefix),))
        if action not in MEDIA_ACTIONS:
            raise problem(f"unknown action {show(action)}", f"use one of: {', '.join(MEDIA_ACTIONS)}",
                          at=(str(prefix),))
        name = "default" if prefix == "default" else prefix.rstrip("/") + "/"
        if name in out and prefix != "default":
            raise problem(f"{name!r} is given twice", "give each directory one action", at=(str(prefix),))
        out[name] = action
    return out


def _sample(value: Any) -> int | None:
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_PROOF_SAMPLE:
        raise problem(f"expected all or a whole number of at least {MIN_PROOF_SAMPLE}, got {show(value)}",
                      f"write 'all', or a sample of at least {MIN_PROOF_SAMPLE} values per column")
    return value


def _key_env(value: Any) -> str:
    of_kind(value, str)
    if not ENV_NAME.match(value):
        raise problem(f"{value!r} is not an environment variable name",
                      f"name the controller's environment variable that holds the masking key, e.g. "
                      f"{KEY}: DEPLOYKIT_REFRESH_KEY (the key itself never goes in a file)")
    return value


def to_surface(rule: dict) -> Any:
    """The YAML value a canonical rule is read from (parse_rule(to_surface(r)) == r)."""
    kind = rule["kind"]
    if kind == "null":
        return None
    if kind == "fixed":
        return {"fixed": rule["value"]}
    if kind == "hash":
        return {"hash": {}} if rule.get("length") is None else {"hash": {"length": rule["length"]}}
    if kind == "faker":
        if rule.get("locale", DEFAULT_LOCALE) == DEFAULT_LOCALE:
            return {"faker": rule["provider"]}
        return {"faker": {"provider": rule["provider"], "locale": rule["locale"]}}
    if kind == "json":
        return {"json": {path: to_surface(r) for path, r in rule["paths"].items()}}
    return kind


def _typed(kind: type, label: str, check) -> Any:
    return Annotated[kind, PlainValidator(check), Label(label)]


Rules = _typed(dict, "mapping of app_label.Model.field or table.column to a rule", _rules)
Subset = _typed(dict, "mapping of table or app_label.Model to an SQL condition", _subset)
Media = _typed(dict, "mapping of media directory to placeholder, exclude or keep", _media)
ProofSample = _typed(int, f"all or a whole number ≥ {MIN_PROOF_SAMPLE}", _sample)
KeyEnv = _typed(str, "environment variable name", _key_env)
