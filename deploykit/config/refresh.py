"""The `refresh:` section resolved: deploykit.yaml's rules and the rules file's, merged into one spec.

The rules file (refresh.rules_file) holds `rules:` in the same form as
deploykit.yaml; it is read here, with the loader, so its problems are one-line
ConfigErrors naming that file and key before anything connects. A rules file
that does not exist yet is no problem (`deploykit refresh --init-rules` writes
it): the spec says so, and the refresh's own checks stop on the columns left
without a rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ValidationError

from ..errors import ConfigError
from .fields import problem
from .models import Refresh, Section, key
from .problems import fail, from_validation
from .rules import Rules
from .specs import RefreshSpec
from .yamltext import check_no_nul, load_yaml

DEFAULT_RULES_FILE = "refresh-rules.yaml"  # where --init-rules writes when refresh.rules_file is not set


class RulesFile(Section):
    """A rules file: `rules:` as under refresh: in deploykit.yaml."""

    shape: ClassVar = ("expected a mapping with 'rules:'", "start the file with 'rules:' and the rules under it")

    rules: Rules = key("the rules", "rules: {auth.User.email: email}", default_factory=dict)

    @classmethod
    def expand(cls, data):
        """A file of rules without 'rules:' above them is told so (before Section's unknown key)."""
        extra = sorted((str(k) for k in data if k != "rules")) if isinstance(data, dict) else []
        if extra:
            raise problem("unknown key", "put every rule under 'rules:' (as under refresh: in deploykit.yaml)",
                          at=(extra[0],))
        return data


def read_rules_file(path: Path) -> dict[str, dict]:
    """The canonical rules of a rules file (ConfigError naming the file for anything wrong in it)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}", hint="check the file's permissions") \
            from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1})", hint="save the file as UTF-8") from None
    raw = load_yaml(text, path, "the YAML syntax of the rules file")
    if raw is None:
        return {}
    check_no_nul(raw, path)
    try:
        return RulesFile.model_validate(raw).rules
    except ValidationError as exc:
        raise from_validation(exc, path) from None


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve(path: Path, doc: Refresh | None, rules_file: Path | None) -> RefreshSpec | None:
    """The refresh spec of deploykit.yaml at path; rules_file: refresh.rules_file resolved (or None)."""
    if doc is None:
        return None
    rules, sources = dict(doc.rules), dict.fromkeys(doc.rules, str(path))
    found = rules_file is not None and _exists(rules_file)
    if rules_file is not None and not found and rules_file.exists():
        raise fail(path, "refresh.rules_file", f"{rules_file} is not a file", "name a YAML file of rules")
    if found:
        for rule_key, rule in read_rules_file(rules_file).items():
            if rule_key in rules:
                raise fail(rules_file, f"rules.{rule_key}", f"is also given in {path} (refresh.rules)",
                           "give each column one rule: remove it from one of the two files")
            rules[rule_key], sources[rule_key] = rule, str(rules_file)
    return RefreshSpec(key_env=doc.key_env, rules=rules, rule_sources=sources, rules_file=rules_file,
                       rules_file_found=found, subset=dict(doc.subset), media=dict(doc.media),
                       proof_sample=doc.proof.sample)
