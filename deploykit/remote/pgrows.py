"""deploykit remote helper: compare the rows of two PostgreSQL databases on the host.

Standalone (stdlib only; uses the host's psql, with PGPASSFILE from the
environment). `python pgrows.py diff` with JSON {conn: {host, port, user},
a, b, schema?} on stdin prints {tables: {table: rows in a that are not in b}}:
the rows a restore of b over a would lose (inserted or changed since b).
Rows are compared as md5 of their text form, as multisets.
"""
import collections
import subprocess
import sys

from _common import _libpq_argv, serve


def _psql(conn, db, sql):
    argv = ["psql"] + _libpq_argv(conn) + ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("psql on %s: %s" % (db, proc.stderr.strip().splitlines()[-1:]))
    return proc.stdout


def _ident(name):
    return '"' + name.replace('"', '""') + '"'


def _tables(conn, db, schema):
    out = _psql(conn, db, "SELECT tablename FROM pg_tables WHERE schemaname = '%s' ORDER BY 1;" % schema.replace("'", "''"))
    return [line for line in out.splitlines() if line.strip()]


def _row_hashes(conn, db, schema, table):
    sql = "COPY (SELECT md5(t::text) FROM %s.%s t) TO STDOUT;" % (_ident(schema), _ident(table))
    return collections.Counter(line for line in _psql(conn, db, sql).splitlines() if line)


def diff(args):
    conn, a, b = args.get("conn", {}), args["a"], args["b"]
    schema = args.get("schema", "public")
    in_b = set(_tables(conn, b, schema))
    tables = {}
    for table in _tables(conn, a, schema):
        rows_a = _row_hashes(conn, a, schema, table)
        if table not in in_b:
            tables[table] = sum(rows_a.values())
            continue
        lost = rows_a - _row_hashes(conn, b, schema, table)
        tables[table] = sum(lost.values())
    return {"ok": True, "changed": False, "tables": tables}


READ_ONLY = {"diff"}  # what a dry-run may call
ACTIONS = {"diff": diff}


def main():
    sys.exit(serve(ACTIONS, name="pgrows.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
