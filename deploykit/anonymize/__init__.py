"""The rules side of the anonymized refresh, on the controller: pure logic over what the source has.

    resolve(rules, model_columns, db_columns) -> {table: {column: rule}}   rules to columns (resolve.py)
    resolve_subset(subset, model_columns, db_columns) -> {table: condition}
    classify(model_columns, db_columns, resolved) -> [Finding]             privacy by default (classify.py)
    require_rules(findings)                                                 PersonalColumnsWithoutRule
    init_rules_text(findings, existing) / write_rules_file(path, text)      --init-rules (rulesfile.py)

model_columns is remote/django_columns.py's `columns` answer; db_columns what
catalog.DB_COLUMNS_SQL answers on the source. Canonical rules come from
deploykit.config.rules. Nothing here reaches a host.
"""
from __future__ import annotations

from ..errors import PersonalColumnsWithoutRule
from .catalog import DB_COLUMNS_SQL, Catalog, type_family
from .classify import Finding, classify
from .resolve import resolve, resolve_subset
from .rulesfile import init_rules_text, rules_file_path, write_rules_file


def require_rules(findings: list[Finding]) -> None:
    """Stop before anything is copied when a personal-looking column has no rule."""
    if findings:
        raise PersonalColumnsWithoutRule(findings)


__all__ = ["DB_COLUMNS_SQL", "Catalog", "Finding", "PersonalColumnsWithoutRule", "classify", "init_rules_text",
           "require_rules", "resolve", "resolve_subset", "rules_file_path", "type_family", "write_rules_file"]
