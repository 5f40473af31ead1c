#!/usr/bin/env python3
"""deploykit remote helper: look for original values in a refreshed database (the proof of a refresh).

Standalone (stdlib only; runs the host's psql and pg_dump; the password is in
the environment). ``python proof.py scan`` (READ_ONLY) with
{"psql": [argv prefix of psql for the target], "pg_dump": [argv of a plain
pg_dump of it to stdout], "proof_key": hex, "exact": b64 dk64, "normalised":
b64 dk64, "min_length": 4} looks at every value a masked original could hide
in, and answers where and how often one was found, never what:

    {"tables": {t: {"rows", "values_checked"}}, "checked": n, "literals": n,
     "found": [{"where": "table.column" | "pg_dump", "how": "exact" | "normalised", "count": n}],
     "seconds": s}

One pass over the data: the plain pg_dump's COPY data is every table's rows,
so each value is read once; the catalog (asked with psql) says which columns
are text-like (text, varchar, char, citext, xml, json, jsonb, domains over
them, arrays of them): their values are checked whole, JSON values (and text
that parses as a JSON document) by every string leaf, arrays by element.
Columns of other types are checked whole too, except numbers, booleans,
dates and times, uuids and oids, whose text can be no masked original.
Tables whose rows the dump did not hold (materialized views, data excluded
from the dump, or no pg_dump given) are read with psql COPY. Outside the COPY
data, every string literal of the dump (comments, defaults, view and function
bodies, dollar-quoted too) is checked, JSON and arrays within as above.

A value is compared as it is (its digest among "exact") and normalised (case
and whitespace folded, among "normalised"); values whose normalised form is
shorter than min_length are never digested, so never compared.
"""
import json
import re
import sys
import time

from _common import BadArguments, HelperError, serve
from _copytext import (MIN_LENGTH, NULL, decode_field, digester, digests_b64, iter_lines, membership, normalise,
                       split_line, tool_error)

SKIPPED_TYPES = ("int2", "int4", "int8", "float4", "float8", "numeric", "bool", "date", "time", "timetz",
                 "timestamp", "timestamptz", "interval", "uuid", "oid", "money", "serial", "bigserial")
CACHE_CAP = 1 << 15  # distinct clean values remembered per column (statuses, countries repeat)

CATALOG_SQL = r"""COPY (
SELECT n.nspname, c.relname, c.relkind, a.attname,
       CASE WHEN b.typname IN ('json', 'jsonb') THEN 'json'
            WHEN b.typcategory = 'A' AND e.typname IN ('json', 'jsonb') THEN 'json[]'
            WHEN b.typcategory = 'A' AND (e.typcategory = 'S' OR e.typname = 'xml') THEN 'text[]'
            WHEN b.typcategory = 'S' OR b.typname = 'xml' THEN 'text'
            WHEN b.typname IN (%s) OR (b.typcategory = 'A' AND e.typname IN (%s)) THEN 'skip'
            ELSE 'other' END
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
  LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
 WHERE c.relkind IN ('r', 'm')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%%'
   AND n.nspname NOT LIKE 'pg\_temp\_%%'
 ORDER BY 1, 2, a.attnum
) TO STDOUT""" % ((", ".join("'%s'" % t for t in SKIPPED_TYPES),) * 2)
TEXT_KINDS = ("text", "json", "text[]", "json[]")


class ScanFailed(HelperError):
    pass


# --------------------------------------------------------------------------
# what one value is compared as


class Checker(object):
    """Counts, per place and way, the values whose digest is an original's. Each check says whether it
    found anything (so a column may remember its clean values)."""

    def __init__(self, proof_key, exact, normalised, min_length):
        self.digest = digester(proof_key)
        self.exact = membership(exact)
        self.normal = membership(normalised)
        self.min = min_length
        self.found = {}

    def text(self, text, where):
        """One text value, whole."""
        norm = normalise(text)
        if len(norm) < self.min:
            return False
        d = self.digest(text)
        if self.exact(d):
            how = "exact"
        elif self.normal(d if norm == text else self.digest(norm)):
            how = "normalised"
        else:
            return False
        key = (where, how)
        self.found[key] = self.found.get(key, 0) + 1
        return True

    def json_text(self, text, where):
        """A JSON document: its text whole, and every string leaf (and key)."""
        hit = self.text(text, where)
        try:
            doc = json.loads(text)
        except ValueError:
            return hit
        return self.leaves(doc, where) or hit

    def leaves(self, node, where):
        hit = False
        if isinstance(node, str):
            hit = self.text(node, where)
            if node.lstrip()[:1] in ("{", "["):  # a JSON document inside a string (encoded twice)
                try:
                    inner = json.loads(node)
                except ValueError:
                    return hit
                if isinstance(inner, (dict, list)):
                    hit = self.leaves(inner, where) or hit
        elif isinstance(node, dict):
            for key, value in node.items():
                hit = self.text(key, where) or hit
                hit = self.leaves(value, where) or hit
        elif isinstance(node, list):
            for value in node:
                hit = self.leaves(value, where) or hit
        return hit

    def maybe_json(self, text, where):
        """Text that may hold a JSON document: whole, and by leaf when it parses as an object or array."""
        hit = self.text(text, where)
        if text.lstrip()[:1] in ("{", "["):
            try:
                doc = json.loads(text)
            except ValueError:
                return hit
            if isinstance(doc, (dict, list)):
                hit = self.leaves(doc, where) or hit
        return hit

    def array(self, text, where, json_items):
        """A PostgreSQL array literal: the literal whole, and every element."""
        hit = self.text(text, where)
        for item in parse_array(text):
            if item is not None:
                hit = (self.json_text(item, where) if json_items else self.maybe_json(item, where)) or hit
        return hit

    def report(self):
        return [{"where": where, "how": how, "count": n} for (where, how), n in sorted(self.found.items())]


def parse_array(text):
    """The elements (str, or None for NULL) of a PostgreSQL array literal, nested arrays flattened."""
    i, n = 0, len(text)
    if text.startswith("["):  # dimension decoration: [1:2]={...}
        i = text.find("=") + 1
    out = []
    while i < n:
        ch = text[i]
        if ch in "{},":
            i += 1
        elif ch == '"':
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            out.append("".join(buf))
            i += 1
        elif ch.isspace():
            i += 1
        else:
            j = i
            while j < n and text[j] not in ",}":
                j += 1
            item = text[i:j].strip()
            out.append(None if item.upper() == "NULL" else item)
            i = j
    return out


class Column(object):
    """How one column's COPY fields are checked: by its kind, with a cache of clean values seen."""

    __slots__ = ("where", "fn", "cache", "misses", "min")

    def __init__(self, where, kind, checker):
        self.where, self.min = where, checker.min
        self.cache = set()
        self.misses = 0
        if kind == "json":
            self.fn = checker.json_text
        elif kind == "text[]":
            self.fn = lambda text, where: checker.array(text, where, False)
        elif kind == "json[]":
            self.fn = lambda text, where: checker.array(text, where, True)
        elif kind == "text":
            self.fn = checker.maybe_json
        elif kind == "skip":
            self.fn = None
        else:
            self.fn = checker.text


def _check_fields(columns, fields, checker):
    """Check one row's fields; returns how many values (not NULL) were looked at."""
    n = 0
    for col, field in zip(columns, fields):
        fn = col.fn
        if fn is None or field == NULL:
            continue
        n += 1
        if len(field) < col.min:  # its normalised form is shorter still: never an original
            continue
        cache = col.cache
        if cache is None:
            fn(decode_field(field), col.where)
        elif field not in cache and not fn(decode_field(field), col.where):  # clean: remember it
            if len(cache) < CACHE_CAP:
                cache.add(field)
            else:
                col.misses += 1
                if col.misses > CACHE_CAP:  # a column of distinct values: the cache does not pay
                    col.cache = None
    return n


# --------------------------------------------------------------------------
# the database: its catalog, its tables, its dump


def _run(argv, what):
    import subprocess
    import os

    env = dict(os.environ)
    env.setdefault("PGCLIENTENCODING", "UTF8")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
    except OSError as e:
        raise ScanFailed("cannot start %s (%s): %s" % (argv[0], what, e.strerror or e))


def _end(proc, what):
    err = proc.stderr.read().decode("utf-8", "replace").splitlines()
    rc = proc.wait()
    if rc != 0:
        raise ScanFailed("%s failed (exit %d): %s" % (what, rc, tool_error(err)))


def _psql_copy(psql, sql, what):
    """The lines of a COPY ... TO STDOUT run with psql (bytes, no newline), streamed."""
    proc = _run(list(psql) + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], what)
    try:
        for line in iter_lines(proc.stdout.read):
            yield line
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _end(proc, what)


def _ident(name):
    return '"' + name.replace('"', '""') + '"'


def catalog(psql):
    """{(schema, table): {"name": how the report names it, "kind": relkind, "columns": [(column, kind)]}}."""
    tables = {}
    for line in _psql_copy(psql, CATALOG_SQL, "psql (the catalog)"):
        schema, table, relkind, column, kind = split_line(line)
        entry = tables.setdefault((schema, table), {
            "name": table if schema == "public" else "%s.%s" % (schema, table), "kind": relkind, "columns": []})
        entry["columns"].append((column, kind))
    return tables


_IDENT = re.compile(r'"((?:[^"]|"")*)"|([^\s.,()"]+)')
_COPY = re.compile(r"^COPY (.+?) (?:\((.*)\) )?FROM stdin;$")


def _names(text):
    return [(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
            for m in _IDENT.finditer(text)]


def _copy_header(line):
    """(schema, table, [columns]) of a pg_dump `COPY ... FROM stdin;` line, or None."""
    m = _COPY.match(line)
    if not m:
        return None
    parts = _names(m.group(1))
    if len(parts) == 1:
        parts = ["public"] + parts
    if len(parts) != 2:
        return None
    return parts[0], parts[1], _names(m.group(2) or "")


# SQL text outside COPY data: comments and quoted names skipped, every literal checked
_TOKEN = re.compile(r"""(--[^\n]*)|("(?:[^"]|"")*")|([Ee]'(?:[^'\\]|\\.|'')*')|('(?:[^']|'')*')"""
                    r"""|(\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$)""", re.S)
_E_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _e_string(body):
    out, i, n = [], 0, len(body)
    while i < n:
        ch = body[i]
        if ch == "\\" and i + 1 < n:
            nxt = body[i + 1]
            out.append(_E_ESCAPES.get(nxt, nxt))
            i += 2
        elif ch == "'" and body[i + 1:i + 2] == "'":
            out.append("'")
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def literals(sql, depth=0):
    """Every string literal of SQL text (dollar-quoted bodies too, and the literals inside them)."""
    pos = 0
    while True:
        m = _TOKEN.search(sql, pos)
        if not m:
            return
        pos = m.end()
        if m.group(3) is not None:
            yield _e_string(m.group(3)[2:-1])
        elif m.group(4) is not None:
            yield m.group(4)[1:-1].replace("''", "'")
        elif m.group(5) is not None:
            end = sql.find(m.group(5), pos)
            if end < 0:
                end = len(sql)
            body = sql[pos:end]
            pos = end + len(m.group(5))
            yield body
            if depth < 3:
                for inner in literals(body, depth + 1):
                    yield inner


def _is_object(text):
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _check_sql(text, checker):
    n = 0
    for literal in literals(text):
        n += 1
        if literal.lstrip().startswith("{") and not _is_object(literal):
            checker.array(literal, "pg_dump", False)  # an array literal ('{a,b}'::text[])
        else:
            checker.maybe_json(literal, "pg_dump")
    return n


def _scan_dump(argv, tables, checker, stats):
    """Read the plain dump once: COPY data by its columns' kinds, the SQL around it by its literals."""
    proc = _run(list(argv), "pg_dump")
    seen = set()
    sql = []
    literal_count = 0
    try:
        lines = iter_lines(proc.stdout.read)
        for raw in lines:
            if raw.startswith(b"COPY ") and raw.endswith(b"FROM stdin;"):
                head = _copy_header(raw.decode("utf-8", "surrogateescape"))
                if head is not None:
                    literal_count += _check_sql("\n".join(sql), checker)
                    sql = []
                    schema, table, names = head
                    info = tables.get((schema, table))
                    kinds = dict(info["columns"]) if info else {}
                    name = info["name"] if info else (table if schema == "public" else "%s.%s" % (schema, table))
                    columns = [Column("%s.%s" % (name, c), kinds.get(c, "other"), checker) for c in names]
                    rows = checked = 0
                    for data in _until_end(lines):
                        rows += 1
                        checked += _check_fields(columns, data.split(b"\t"), checker)
                    entry = stats.setdefault(name, {"rows": 0, "values_checked": 0})
                    entry["rows"] += rows
                    entry["values_checked"] += checked
                    seen.add((schema, table))
                    continue
            sql.append(raw.decode("utf-8", "surrogateescape"))
        literal_count += _check_sql("\n".join(sql), checker)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _end(proc, "pg_dump")
    return seen, literal_count


def _until_end(lines):
    for line in lines:
        if line == b"\\.":
            return
        yield line


def _scan_table(psql, schema, table, info, checker, stats):
    """A table the dump did not hold: its text-like columns, read with psql COPY."""
    cols = [(c, k) for c, k in info["columns"] if k != "skip"]
    name = info["name"]
    entry = stats.setdefault(name, {"rows": 0, "values_checked": 0})
    if not cols:
        return
    sql = "COPY (SELECT %s FROM %s.%s) TO STDOUT" % (", ".join(_ident(c) for c, _k in cols), _ident(schema),
                                                      _ident(table))
    columns = [Column("%s.%s" % (name, c), k, checker) for c, k in cols]
    for line in _psql_copy(psql, sql, "psql (reading %s)" % name):
        entry["rows"] += 1
        entry["values_checked"] += _check_fields(columns, line.split(b"\t"), checker)


def _argv(args, name, required=True):
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise BadArguments("argument %r must be a list of strings (an argv)" % name)
    return value


def scan(args):
    start = time.monotonic()
    psql = _argv(args, "psql")
    pg_dump = _argv(args, "pg_dump", required=False)
    try:
        proof_key = bytes.fromhex(args.get("proof_key") or "")
    except ValueError:
        raise BadArguments("proof_key must be hex text")
    if not 1 <= len(proof_key) <= 64:
        raise BadArguments("proof_key must be 1 to 64 bytes")
    min_length = args.get("min_length", MIN_LENGTH)
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
        raise BadArguments("min_length must be a whole number of at least 1")
    try:
        exact, normalised = digests_b64(args.get("exact")), digests_b64(args.get("normalised"))
    except ValueError as e:
        raise BadArguments("exact and normalised must be base64 dk64 digest lists: %s" % e)
    checker = Checker(proof_key, exact, normalised, min_length)
    tables = catalog(psql)
    stats = {}
    seen, literal_count = set(), 0
    if pg_dump:
        seen, literal_count = _scan_dump(pg_dump, tables, checker, stats)
    for key in sorted(tables):
        if key not in seen:
            _scan_table(psql, key[0], key[1], tables[key], checker, stats)
    values = sum(t["values_checked"] for t in stats.values())
    return {"tables": stats, "checked": values + literal_count, "literals": literal_count,
            "found": checker.report(), "seconds": round(time.monotonic() - start, 3)}


READ_ONLY = {"scan"}  # what a dry-run may call
ACTIONS = {"scan": scan}


def main():
    sys.exit(serve(ACTIONS, name="proof.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
