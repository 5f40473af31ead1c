"""A refresh's post-data (indexes, keys, triggers) in two turns: a table's own indexes and constraints as soon
as its rows are in, everything else (foreign keys first of all: they need the other table's key) after.

While the largest masked table still streams, the tables copied before it get their indexes built beside
it, instead of all of them after the last row. The items come from the schema dump's own table of contents
(``pg_restore --list --section=post-data``): what runs early and what runs after are its lines, split, so
together they are exactly the post-data a single pg_restore would run. A line whose fields cannot be read
without doubt (a name with a space) simply waits for the second turn.
"""
from __future__ import annotations

from ..transport.host import q

EARLY_KINDS = ("INDEX", "CONSTRAINT")  # a table's own: unique, primary key, check, exclusion (not FK CONSTRAINT)


def items(ctx, driver, dst, schema_file: str) -> list[str]:
    """The post-data lines of the schema dump's table of contents, in its order (comments dropped)."""
    out = dst.run(f"pg_restore --list --section=post-data {q(schema_file)}", read_only=True).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith(";")]


def index_tables(ctx, driver, src) -> dict[tuple[str, str], tuple[str, str]]:
    """(schema, index) -> (schema, table) of the source's indexes (read-only)."""
    rows = driver.query(ctx, src, "SELECT schemaname, indexname, schemaname, tablename FROM pg_indexes "
                                  "WHERE schemaname NOT IN ('pg_catalog', 'information_schema');",
                        db=driver.spec.name)
    return {(r[0], r[1]): (r[2], r[3]) for r in rows if len(r) == 4}


def table_of(line: str, indexes: dict) -> tuple[str, str] | None:
    """The (schema, table) whose own index or constraint a TOC line makes, or None (it waits).

    ``ID; TABLEOID OID INDEX SCHEMA NAME OWNER`` and ``ID; TABLEOID OID CONSTRAINT SCHEMA TABLE NAME OWNER``.
    """
    parts = line.split()
    if len(parts) == 7 and parts[3] == "INDEX":
        return indexes.get((parts[4], parts[5]))
    if len(parts) == 8 and parts[3] == "CONSTRAINT":
        return parts[4], parts[5]
    return None


def split(lines: list[str], indexes: dict) -> tuple[dict[tuple[str, str], list[str]], list[str]]:
    """({(schema, table): its early lines}, the lines of the second turn), each in the list's order."""
    early: dict[tuple[str, str], list[str]] = {}
    later = []
    for line in lines:
        table = table_of(line, indexes)
        if table is None:
            later.append(line)
        else:
            early.setdefault(table, []).append(line)
    return early, later
