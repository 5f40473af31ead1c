"""What the source has: the app's models (remote/django_columns.py `columns`) beside the database's own columns.

    model_columns: the `columns` answer, {user_model, models: [{app_label, object_name, db_table, fields: [...]}]}
    db_columns:    {table: [{column, data_type, max_length, unique, nullable?, udt_name?}]}, in column order:
                   what DB_COLUMNS_SQL answers (information_schema, the current schema's base tables)

The database is the truth about what is copied; the models say what a column
means (an EmailField, the user model) and let rules name a field instead of a
column.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

# One JSON document: {table: [{column, data_type, udt_name, max_length, nullable, unique}]} for the base tables
# of the current schema (where Django's tables are). unique: a unique index on that one column alone (a primary
# key too), neither partial nor on an expression. Run by psql -AtX as the admin; no value is interpolated.
DB_COLUMNS_SQL = """
SELECT coalesce(json_object_agg(t.table_name, t.columns ORDER BY t.table_name), '{}'::json)
FROM (
  SELECT c.table_name, json_agg(json_build_object(
           'column', c.column_name, 'data_type', c.data_type, 'udt_name', c.udt_name,
           'max_length', c.character_maximum_length, 'nullable', c.is_nullable = 'YES',
           'unique', EXISTS (
             SELECT 1 FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
               AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
               AND a.attname = c.column_name))
         ORDER BY c.ordinal_position) AS columns
  FROM information_schema.columns c
  JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
  WHERE c.table_schema = current_schema() AND tb.table_type = 'BASE TABLE'
  GROUP BY c.table_name
) t
""".strip()

# Column types by family: what a rule may write there, and which columns can hold personal text.
FAMILIES = {
    "text": {"text", "character varying", "varchar", "character", "char", "bpchar", "citext", "name"},
    "json": {"json", "jsonb"},
    "inet": {"inet", "cidr"},
    "number": {"smallint", "integer", "bigint", "numeric", "decimal", "real", "double precision", "int2", "int4",
               "int8", "float4", "float8", "serial", "bigserial", "smallserial"},
    "date": {"date", "timestamp with time zone", "timestamp without time zone", "timestamp", "timestamptz",
             "time", "time with time zone", "time without time zone", "timetz"},
    "bool": {"boolean", "bool"},
    "uuid": {"uuid"},
    "bytes": {"bytea"},
}
_FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}
# Django internal types, when the database does not say (a model whose table is not there)
_INTERNAL = {"CharField": "text", "TextField": "text", "EmailField": "text", "SlugField": "text",
             "URLField": "text", "FilePathField": "text", "FileField": "text", "ImageField": "text",
             "JSONField": "json", "GenericIPAddressField": "inet", "IPAddressField": "text",
             "BooleanField": "bool", "NullBooleanField": "bool", "UUIDField": "uuid", "BinaryField": "bytes",
             "DateField": "date", "DateTimeField": "date", "TimeField": "date"}


def type_family(data_type: str | None, udt_name: str | None = None) -> str | None:
    """'text', 'json', 'inet', 'number', 'date', 'bool', 'uuid', 'bytes', or None (arrays, other types)."""
    if not data_type:
        return None
    name = re.sub(r"\(.*\)", "", str(data_type)).strip().lower()
    if name == "user-defined" and udt_name:
        name = str(udt_name).lower()
    return _FAMILY_OF.get(name)


def nearest(name: str, known) -> str | None:
    """The known name closest to name (case aside), for a hint."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return lowered[name.lower()]
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[found[0]] if found else None


def did_you_mean(name: str, known, what: str = "name") -> str:
    """A hint: the nearest known name, or a few of them."""
    known = sorted(known)
    close = nearest(name, known)
    if close:
        return f"did you mean {close!r}?"
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return f"use a known {what} ({shown or 'none'})"


@dataclass
class Column:
    """One column of the source, with what the database and (when a model stores a field there) the model say."""

    table: str
    name: str
    data_type: str | None = None
    udt_name: str | None = None
    max_length: int | None = None
    unique: bool = False
    nullable: bool | None = None  # None: not known
    model: dict | None = None  # the model whose table this is
    field: dict | None = None  # the model's field stored in this column

    @property
    def family(self) -> str | None:
        if self.data_type:
            return type_family(self.data_type, self.udt_name)
        if self.field is not None:
            return type_family(self.field.get("db_type")) or _INTERNAL.get(self.field.get("internal_type"))
        return None

    @property
    def field_key(self) -> str | None:
        """app_label.Model.field of the field stored here."""
        if self.field is None:
            return None
        return f"{self.model['app_label']}.{self.model['object_name']}.{self.field['name']}"

    @property
    def is_null_allowed(self) -> bool | None:
        if self.nullable is not None:
            return self.nullable
        return None if self.field is None else bool(self.field.get("null"))


@dataclass
class Catalog:
    """The source's tables and columns, and the models that describe them."""

    models: list[dict]
    tables: dict[str, list[Column]] = field(default_factory=dict)
    user_model: str | None = None

    @classmethod
    def build(cls, model_columns: Any, db_columns: dict) -> "Catalog":
        if isinstance(model_columns, dict):
            models, user = list(model_columns.get("models") or []), model_columns.get("user_model")
        else:
            models, user = list(model_columns or []), None
        by_table: dict[str, dict] = {}
        for m in models:
            by_table.setdefault(m["db_table"], m)  # two models on one table: the first (sorted) describes it
        tables = {}
        for table, cols in (db_columns or {}).items():
            model = by_table.get(table)
            fields = {f["column"]: f for f in model["fields"]} if model else {}
            tables[table] = [Column(table, c["column"], c.get("data_type"), c.get("udt_name"), c.get("max_length"),
                                    bool(c.get("unique")), c.get("nullable"), model, fields.get(c["column"]))
                              for c in cols]
        return cls(models, tables, user)

    def column(self, table: str, name: str) -> Column | None:
        return next((c for c in self.tables.get(table, ()) if c.name == name), None)

    def model(self, app_label: str, object_name: str) -> dict | None:
        return next((m for m in self.models if m["app_label"] == app_label
                     and m["object_name"].lower() == object_name.lower()), None)

    def app_labels(self) -> list[str]:
        return sorted({m["app_label"] for m in self.models})
