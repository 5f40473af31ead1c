"""Rules by the key they were written under, resolved to the source's columns: {table: {column: rule}}.

`app_label.Model.field` goes through the app's model metadata (its db_table
and the field's column: renames and custom tables are the app's business);
`table.column` is checked against the database's own columns. Anything that
names nothing, or a rule its column cannot take (a JSON rule on an integer, a
fixed value on a unique column, NULL on a NOT NULL column), is refused before
anything is read, naming the rule and the nearest known name.
"""
from __future__ import annotations

from typing import Any

from ..errors import RefreshRuleInvalid
from .catalog import Catalog, Column, did_you_mean

# what a rule may write into a column of each type family (None: a type deploykit cannot judge, all allowed)
ALLOWED = {
    "text": {"keep", "null", "fixed", "hash", "email", "phone", "format", "ip", "faker", "json"},
    "json": {"keep", "null", "fixed", "json"},
    "inet": {"keep", "null", "fixed", "ip"},
    "number": {"keep", "null", "fixed", "format", "phone"},
    "date": {"keep", "null", "fixed"},
    "bool": {"keep", "null", "fixed"},
    "uuid": {"keep", "null", "fixed"},
    "bytes": {"keep", "null", "fixed"},
}


class _Refusals:
    """The first refusal is raised, with how many more there are: one line, the fix for the first."""

    def __init__(self):
        self.found: list[tuple[str, str]] = []

    def add(self, message: str, hint: str) -> None:
        self.found.append((message, hint))

    def raise_first(self) -> None:
        if self.found:
            message, hint = self.found[0]
            more = len(self.found) - 1
            raise RefreshRuleInvalid(message + (f" ({more} more rule{'s' if more > 1 else ''} refused)"
                                                if more else ""), hint=hint)


def _locate_field(cat: Catalog, key: str, refusals: _Refusals) -> Column | None:
    app_label, object_name, name = key.split(".")
    if app_label not in cat.app_labels():
        refusals.add(f"refresh rule {key!r}: the app has no app label {app_label!r}",
                     did_you_mean(app_label, cat.app_labels()))
        return None
    model = cat.model(app_label, object_name)
    if model is None:
        names = [m["object_name"] for m in cat.models if m["app_label"] == app_label]
        refusals.add(f"refresh rule {key!r}: app {app_label!r} has no model {object_name!r}",
                     did_you_mean(object_name, names))
        return None
    field = next((f for f in model["fields"] if name in (f["name"], f["attname"])), None)
    if field is None:
        refusals.add(f"refresh rule {key!r}: {model['label']} has no field {name!r} stored in a column of its own",
                     did_you_mean(name, [f["name"] for f in model["fields"]]))
        return None
    if model["db_table"] not in cat.tables:
        refusals.add(f"refresh rule {key!r}: {model['label']}'s table {model['db_table']!r} is not in the source "
                     "database", "migrate the source, or give the rule to a table the database has")
        return None
    column = cat.column(model["db_table"], field["column"])
    if column is None:
        refusals.add(f"refresh rule {key!r}: column {field['column']!r} of {model['db_table']!r} is not in the "
                     "source database", "migrate the source, or give the rule to a column the database has")
    return column


def _locate_column(cat: Catalog, key: str, refusals: _Refusals) -> Column | None:
    table, name = key.split(".")
    if table not in cat.tables:
        refusals.add(f"refresh rule {key!r}: the source database has no table {table!r}",
                     did_you_mean(table, cat.tables))
        return None
    column = cat.column(table, name)
    if column is None:
        refusals.add(f"refresh rule {key!r}: table {table!r} has no column {name!r}",
                     did_you_mean(name, [c.name for c in cat.tables[table]]))
    return column


def locate(cat: Catalog, key: str, refusals: _Refusals) -> Column | None:
    """The column a rule key names (app_label.Model.field or table.column)."""
    return (_locate_field if key.count(".") == 2 else _locate_column)(cat, key, refusals)


def _check(key: str, column: Column, rule: dict, refusals: _Refusals) -> None:
    kind, family = rule["kind"], column.family
    where = f"{column.table}.{column.name}"
    allowed = ALLOWED.get(family)
    if allowed is not None and kind not in allowed:
        article = "an" if kind[0] in "aeiou" else "a"
        refusals.add(f"refresh rule {key!r}: {article} {kind} rule cannot write into {where} ({column.data_type})",
                     f"give it one of: {', '.join(sorted(allowed))}")
    elif kind == "fixed" and column.unique:
        refusals.add(f"refresh rule {key!r}: {where} is unique, and a fixed value would be the same in every row",
                     "give a unique column a rule that keeps values apart: hash, email, format or faker")
    elif kind == "null" and column.is_null_allowed is False:
        refusals.add(f"refresh rule {key!r}: {where} is NOT NULL", "give it a value: {fixed: TEXT}, hash or format")


def resolve(rules: dict[str, dict], model_columns: Any, db_columns: dict) -> dict[str, dict[str, dict]]:
    """{table: {column: canonical rule}} of rules keyed app_label.Model.field or table.column (keep included).

    Raises RefreshRuleInvalid for a key that names nothing (the nearest name as hint), two keys for one column,
    or a rule its column cannot take.
    """
    cat = Catalog.build(model_columns, db_columns)
    refusals = _Refusals()
    out: dict[str, dict[str, dict]] = {}
    given: dict[tuple[str, str], str] = {}
    for key in sorted(rules):
        column = locate(cat, key, refusals)
        if column is None:
            continue
        place = (column.table, column.name)
        if place in given:
            refusals.add(f"refresh rules {given[place]!r} and {key!r} both name {column.table}.{column.name}",
                         "give each column one rule: remove one of them")
            continue
        given[place] = key
        _check(key, column, rules[key], refusals)
        out.setdefault(column.table, {})[column.name] = rules[key]
    refusals.raise_first()
    return out


def resolve_subset(subset: dict[str, str], model_columns: Any, db_columns: dict) -> dict[str, str]:
    """{table: SQL condition} of a subset keyed by table or app_label.Model."""
    cat = Catalog.build(model_columns, db_columns)
    refusals = _Refusals()
    out: dict[str, str] = {}
    given: dict[str, str] = {}
    for key in sorted(subset):
        if "." in key:
            app_label, object_name = key.split(".")
            model = cat.model(app_label, object_name)
            if model is None:
                labels = [m["label"] for m in cat.models]
                refusals.add(f"refresh subset {key!r}: the app has no model {key!r}", did_you_mean(key, labels))
                continue
            table = model["db_table"]
        else:
            table = key
        if table not in cat.tables:
            refusals.add(f"refresh subset {key!r}: the source database has no table {table!r}",
                         did_you_mean(table, cat.tables))
            continue
        if table in given:
            refusals.add(f"refresh subsets {given[table]!r} and {key!r} both name table {table!r}",
                         "give each table one condition (combine them with AND)")
            continue
        given[table] = key
        out[table] = subset[key]
    refusals.raise_first()
    return out
