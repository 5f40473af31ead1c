"""Subsets of a refresh: which rows of each table are copied, so that every foreign key still holds.

`subset: {orders: "created > now() - interval '30 days'"}` keeps the orders
of the last 30 days; every table whose foreign key points at a filtered table
keeps only the rows that point at a kept row (or at nothing), and so on down
the references. Referenced tables are not reduced: a kept row's parents are
all there. The conditions are the operator's SQL, run on the source only, in
read-only transactions.

A filtered table that reaches itself again through its own references (a
self-reference, a cycle) is refused: a kept row's parent could be left out.
So is a filtered table referenced by a foreign key of several columns.
"""
from __future__ import annotations

from ..errors import DeployError
from ..sqltext import ident
from ..work.catalog import Table


def qualified(table: Table) -> str:
    return f"{ident(table.schema)}.{ident(table.table)}"


def plan(tables: dict[str, Table], conditions: dict[str, str]) -> dict[str, str]:
    """table -> the WHERE condition of its rows to copy (only tables that are reduced)."""
    for name in conditions:
        if name not in tables:
            raise DeployError(f"subset: no table {name!r} in the source database",
                              hint="name a table (or app_label.Model) of the source")
    reduced = set(conditions)  # the filtered tables and every table referring to one, down the references
    while True:
        more = {t.name for t in tables.values() if t.name not in reduced
                and any(fk.references in reduced for fk in t.foreign_keys)}
        if not more:
            break
        reduced |= more
    where: dict[str, str] = {}

    def filtered(name: str, path: tuple[str, ...]) -> str | None:
        """The condition of `name`'s rows (None: all rows): its own, and each reduced parent's kept rows."""
        if name not in reduced:
            return None
        if name in path:
            raise DeployError(f"subset: {' -> '.join(path[path.index(name):] + (name,))}: a reduced table "
                              "references itself again", hint="drop the subset that reaches these tables")
        if name in where:
            return where[name]
        parts = [f"({conditions[name]})"] if name in conditions else []
        for fk in tables[name].foreign_keys:
            parent = fk.references
            if parent not in tables or parent not in reduced:
                continue
            parent_where = filtered(parent, path + (name,))
            if len(fk.columns) != 1:
                raise DeployError(f"subset: {name} references the reduced table {parent} by several columns "
                                  f"({fk.name})", hint="subsets follow single-column foreign keys only")
            col, ref = ident(fk.columns[0]), ident(fk.referenced_columns[0])
            parts.append(f"({col} IS NULL OR {col} IN (SELECT {ref} FROM {qualified(tables[parent])} "
                         f"WHERE {parent_where}))")
        where[name] = " AND ".join(parts)
        return where[name]

    for name in sorted(tables):
        filtered(name, ())
    return where


def select(table: Table, columns: list[str], where: str | None) -> str:
    """The SELECT a refresh reads one table with (its rows to copy, in COPY column order)."""
    cols = ", ".join(ident(c) for c in columns)
    return f"SELECT {cols} FROM {qualified(table)}" + (f" WHERE {where}" if where else "")
