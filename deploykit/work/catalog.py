"""What a PostgreSQL database holds, read from its catalog: tables, their columns, keys and foreign keys.

A refresh copies table by table, so it needs each table's columns in COPY
order (generated columns left out: COPY cannot write them), which columns are
unique on their own (masked outputs must stay unique there), the varchar
limits (masked outputs must fit) and the single-column foreign keys (a subset
follows them). One read-only query answers it all as JSON. Tables of the
schema `public` are named by their name, others as `schema.table`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

CATALOG_SQL = r"""
WITH t AS (
  SELECT c.oid, n.nspname, c.relname,
         CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e'))
SELECT coalesce(json_agg(json_build_object(
  'name', t.name, 'schema', t.nspname, 'table', t.relname,
  'rows_estimate', (SELECT reltuples::bigint FROM pg_class WHERE oid = t.oid),
  'bytes', pg_total_relation_size(t.oid),
  'columns', (SELECT coalesce(json_agg(json_build_object(
        'column', a.attname, 'data_type', format_type(a.atttypid, a.atttypmod),
        'base_type', (SELECT typname FROM pg_type WHERE oid = CASE WHEN ty.typelem <> 0 AND ty.typlen = -1
                                                                  THEN ty.typelem ELSE a.atttypid END),
        'array', ty.typelem <> 0 AND ty.typlen = -1,
        'max_length', CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4
                           THEN a.atttypmod - 4 END,
        'not_null', a.attnotnull,
        'unique', EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indisunique
                          AND i.indnatts = 1 AND i.indkey[0] = a.attnum AND i.indpred IS NULL),
        'primary_key', EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indisprimary
                               AND i.indnatts = 1 AND i.indkey[0] = a.attnum)
      ) ORDER BY a.attnum), '[]'::json)
      FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
      WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
  'foreign_keys', (SELECT coalesce(json_agg(json_build_object(
        'name', k.conname,
        'columns', (SELECT json_agg(attname ORDER BY ord) FROM unnest(k.conkey) WITH ORDINALITY AS u(num, ord)
                    JOIN pg_attribute ON attrelid = k.conrelid AND attnum = u.num),
        'references', (SELECT CASE WHEN n2.nspname = 'public' THEN c2.relname ELSE n2.nspname || '.' || c2.relname END
                       FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace WHERE c2.oid = k.confrelid),
        'referenced_columns', (SELECT json_agg(attname ORDER BY ord)
                               FROM unnest(k.confkey) WITH ORDINALITY AS u(num, ord)
                               JOIN pg_attribute ON attrelid = k.confrelid AND attnum = u.num)
      ) ORDER BY k.conname), '[]'::json)
      FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'f')
) ORDER BY t.name), '[]'::json)
FROM t;
"""

TEXT_TYPES = {"text", "varchar", "bpchar", "char", "name", "citext", "json", "jsonb", "xml"}


@dataclass(frozen=True)
class Column:
    column: str
    data_type: str
    base_type: str
    array: bool = False
    max_length: int | None = None
    not_null: bool = False
    unique: bool = False
    primary_key: bool = False

    @property
    def text_like(self) -> bool:
        return self.base_type in TEXT_TYPES


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    references: str
    referenced_columns: tuple[str, ...]


@dataclass
class Table:
    name: str
    schema: str
    table: str
    columns: list[Column]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    rows_estimate: int = 0
    bytes: int = 0

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.column == name), None)


def parse(text: str) -> dict[str, Table]:
    """name -> Table, from CATALOG_SQL's one JSON value."""
    out = {}
    for t in json.loads(text.strip() or "[]"):
        cols = [Column(**c) for c in t["columns"]]
        fks = [ForeignKey(k["name"], tuple(k["columns"]), k["references"], tuple(k["referenced_columns"]))
               for k in t["foreign_keys"]]
        out[t["name"]] = Table(t["name"], t["schema"], t["table"], cols, fks, max(0, t["rows_estimate"] or 0),
                               t["bytes"] or 0)
    return out


def read(ctx, driver, host, db: str) -> str:
    """The catalog of database `db` on host as JSON text (read-only; `parse` reads it)."""
    return driver.psql(ctx, host, CATALOG_SQL, db=db, read_only=True).stdout.strip()


def as_db_columns(tables: dict[str, Table]) -> dict[str, list[dict]]:
    """table -> [{column, data_type, udt_name, max_length, nullable, unique}]: what deploykit.anonymize resolves
    rules and classifies columns against."""
    return {name: [{"column": c.column, "data_type": c.data_type, "udt_name": ("_" if c.array else "") + c.base_type,
                    "max_length": c.max_length, "nullable": not c.not_null, "unique": c.unique or c.primary_key}
                    for c in t.columns]
            for name, t in tables.items()}
