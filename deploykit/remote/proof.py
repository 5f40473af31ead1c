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

How a refresh calls it: with "screen" (base64 ds32 of the originals' screen
values) and neither "exact" nor "normalised", the originals' digests never
reach this host. Every value the screen flags (every original, and about one
other value in a few thousand) is answered as its two digests, normalised and
as it is, under "candidates" ({where: base64 of 16-byte pairs}, "flagged"
their number); the controller, which alone holds the originals' digests,
decides which are found (deploykit.work.refresh.decide). More than
MAX_CANDIDATES flagged values fail the scan.

A value is compared normalised (case and whitespace folded: its digest among
"normalised") and, when that finds it, as it is (among "exact": exact when
it is there, normalised if not). An exact original is a normalised one too,
as the controller builds both lists from the same values, so one digest
decides most values. Values whose normalised form is shorter than
min_length are never digested, so never compared.
"""
import base64
import itertools
import json
import os
import re
import subprocess
import sys
import time

from _common import BadArguments, HelperError, serve
from _copytext import (MIN_LENGTH, NULL, decode_field, digester, digests_b64, iter_blocks, iter_lines,
                       lowered_blob, membership, normalise, plain_fields, split_line, Screen, ToolStderr,
                       unpack_screen)
from _forks import Pool, receive, send

SKIPPED_TYPES = ("int2", "int4", "int8", "float4", "float8", "numeric", "bool", "date", "time", "timetz",
                 "timestamp", "timestamptz", "interval", "uuid", "oid", "money", "bit", "varbit")
CACHE_CAP = 1 << 15  # distinct clean values remembered per column (statuses, countries repeat)
MAX_JOBS = 4  # worker processes checking rows by default (at most; one per CPU)
# values the screen may flag before the scan gives up (a copy full of originals): 16 bytes each here, as the
# old way sent 16 bytes per original the other way (the screen flags ~5% of values at 7 million originals)
MAX_CANDIDATES = 50_000_000

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


class ScanFailed(HelperError):
    pass


# --------------------------------------------------------------------------
# what one value is compared as


class Checker(object):
    """Counts, per place and way, the values whose digest is an original's. Each check says whether it
    found anything (so a column may remember its clean values)."""

    def __init__(self, proof_key, exact, normalised, min_length, screen=None):
        self.digest = digester(proof_key)
        self.screen = Screen(screen) if screen is not None else None
        self.min = min_length
        self.found = {}
        self.candidates = None
        if exact is None:  # candidates: the controller holds the originals' digests and decides
            if self.screen is None:
                raise BadArguments("without the originals' digests, a screen is needed")
            self.exact = self.normal = None
            self.candidates, self.flagged, self.maybe = {}, 0, self.screen.text()
            return
        # with a screen, few values reach the digests: their bitmaps are built only if they pay
        self.exact = membership(exact, lazy=screen is not None)
        self.normal = membership(normalised, lazy=screen is not None)

    def text(self, text, where):
        """One text value, whole."""
        norm = normalise(text)
        if len(norm) < self.min:
            return False
        if self.candidates is not None:
            return self.candidate(text, norm, where)
        d = self.digest(norm)
        if not self.normal(d):  # an exact original is a normalised one too: one digest decides most values
            return False
        how = "exact" if self.exact(d if norm == text else self.digest(text)) else "normalised"
        key = (where, how)
        self.found[key] = self.found.get(key, 0) + 1
        return True

    def candidate(self, text, norm, where):
        """A value the screen flags: its digests (normalised, and as it is) kept for the controller, which
        alone holds the originals', packed (16 bytes a value). True: it may be one (a column does not
        remember it as clean)."""
        if not self.maybe(norm):
            return False
        self.flagged += 1
        if self.flagged > MAX_CANDIDATES:
            raise ScanFailed("more than %d values passed the screen: the copy holds original values, or "
                             "far more of them than the screen was made for" % MAX_CANDIDATES)
        d = self.digest(norm)
        pairs = self.candidates.get(where)
        if pairs is None:
            pairs = self.candidates[where] = bytearray()
        pairs += d.to_bytes(8, "big") + (d if norm == text else self.digest(text)).to_bytes(8, "big")
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


KIND_CODES = {"text": 0, "json": 1, "text[]": 2, "json[]": 3, "other": 4, "skip": 5}
TEXT, JSON, TEXT_ARRAY, JSON_ARRAY, OTHER, SKIP = range(6)


class Column(object):
    """One column of a table's COPY data: where a find is reported, how its values are read, and the clean
    values already seen (statuses, countries repeat; a column of distinct values stops remembering)."""

    __slots__ = ("where", "kind", "cache", "misses")

    def __init__(self, where, kind):
        self.where, self.kind = where, KIND_CODES.get(kind, OTHER)
        self.cache = set()
        self.misses = 0


def check_block(columns, data, checker):
    """Check a block of COPY text (lines joined by newlines) of one table; returns how many values (not
    NULL) were looked at.

    With a screen, column by column: a column's fields of the whole block are normalised and screened by
    C loops (`lowered`, `Screen.flags`), and only the values it flags are digested (Checker.text); a
    column whose block holds an escape, odd whitespace or JSON-looking text, and JSON and array columns,
    are checked value by value (check_rows). Without one, row by row (check_rows)."""
    screen = checker.screen
    if screen is None or not data:
        return check_rows(columns, data.split(b"\n"), checker)
    width = len(columns)
    fields = data.replace(b"\n", b"\t").split(b"\t")
    if len(fields) != (data.count(b"\n") + 1) * width:
        return check_rows(columns, data.split(b"\n"), checker)  # (says which row is malformed)
    n = 0
    for i, col in enumerate(columns):
        if col.kind == SKIP:
            continue
        values = fields[i::width]
        if NULL in values:
            values = list(filter(NULL.__ne__, values))
        n += len(values)
        if not values:
            continue
        blob = lowered_blob(values) if col.kind in (TEXT, OTHER) else None
        if blob is not None and col.kind == TEXT and (blob.startswith((b"{", b"[")) or b"\n{" in blob
                                                      or b"\n[" in blob):
            blob = None  # JSON-looking text: checked by its leaves too
        if blob is None and col.kind in (TEXT, OTHER):
            values, odd = plain_fields(values)
            if col.kind == TEXT:  # JSON-looking text: checked by its leaves too
                odd += [v for v in values if v[:1] in (b"{", b"[")]
                values = [v for v in values if v[:1] not in (b"{", b"[")]
            check_values(col, odd, checker)
            blob = b"\n".join(values).lower() if values else None
        if blob is None:
            if col.kind not in (TEXT, OTHER):
                check_values(col, values, checker)
            continue
        lows = blob.split(b"\n")
        flags = screen.flags(lows)
        if 1 in flags:
            for j in itertools.compress(range(len(values)), flags):
                checker.text(values[j].decode("utf-8", "surrogateescape"), col.where)
    return n


def check_values(col, values, checker):
    """Check one column's values (COPY fields, none NULL) one by one, as check_rows does."""
    for field in values:
        if len(field) < checker.min:
            continue
        text = field.decode("utf-8", "surrogateescape") if b"\\" not in field else decode_field(field)
        kind = col.kind
        if kind == TEXT:
            checker.maybe_json(text, col.where)
        elif kind == JSON:
            checker.json_text(text, col.where)
        elif kind == TEXT_ARRAY:
            checker.array(text, col.where, False)
        elif kind == JSON_ARRAY:
            checker.array(text, col.where, True)
        else:
            checker.text(text, col.where)


def check_rows(columns, lines, checker):
    """Check a block of COPY text lines of one table; returns how many values (not NULL) were looked at.

    The common case (a plain text value, no JSON inside) is checked inline (normalise, the keyed digest,
    the bitmap of the originals' digests: most values end there); the rest by Checker's methods."""
    minlen = checker.min
    normal, text_check = checker.normal, checker.text
    copy, from_bytes = checker.digest.keyed.copy, int.from_bytes
    inline = normal is not None and hasattr(normal, "bitmap")  # candidates: every value through text()
    bitmap, shift = (normal.bitmap, normal.shift) if inline else (None, 0)
    wanted = [(i, c) for i, c in enumerate(columns) if c.kind != SKIP]
    width = len(columns)
    n = 0
    for line in lines:
        fields = line.split(b"\t")
        if len(fields) != width:
            raise ScanFailed("%s: a row of %d fields, the COPY header names %d columns"
                             % (columns[0].where.rsplit(".", 1)[0] if columns else "?", len(fields), width))
        for i, col in wanted:
            field = fields[i]
            if field == NULL:
                continue
            n += 1
            if len(field) < minlen:  # its normalised form is shorter still: never an original
                continue
            cache = col.cache
            if cache is not None and field in cache:
                continue
            text = field.decode("utf-8", "surrogateescape") if b"\\" not in field else decode_field(field)
            kind = col.kind
            if kind == TEXT and text[:1] not in ("{", "[") and not inline:
                hit = text_check(text, col.where)
            elif kind == TEXT and text[:1] not in ("{", "["):
                low = text.lower()  # normalise(text), inline
                if not (low.isprintable() and "  " not in low and low[:1] != " " and low[-1:] != " "):
                    low = " ".join(low.split())
                hit = False
                if len(low) >= minlen:
                    h = copy()
                    h.update(low.encode("utf-8", "surrogateescape"))
                    d = from_bytes(h.digest(), "big")
                    j = d >> shift
                    if bitmap[j >> 3] & (1 << (j & 7)) and normal(d):
                        hit = text_check(text, col.where)  # counts it, exact or normalised
            elif kind == TEXT:
                hit = checker.maybe_json(text, col.where)
            elif kind == JSON:
                hit = checker.json_text(text, col.where)
            elif kind == TEXT_ARRAY:
                hit = checker.array(text, col.where, False)
            elif kind == JSON_ARRAY:
                hit = checker.array(text, col.where, True)
            else:
                hit = text_check(text, col.where)
            if cache is not None and not hit:
                if len(cache) < CACHE_CAP:
                    cache.add(field)
                else:
                    col.misses += 1
                    if col.misses > CACHE_CAP:  # a column of distinct values: remembering does not pay
                        col.cache = None
    return n


class LocalSink(object):
    """Checks blocks of rows in this process."""

    def __init__(self, checker):
        self.checker = checker
        self.columns = {}
        self.checked = {}

    def rows(self, name, colspecs, lines):
        if lines:
            self.block(name, colspecs, b"\n".join(lines))

    def block(self, name, colspecs, data):
        columns = self.columns.get(name)
        if columns is None:
            columns = self.columns[name] = [Column(where, kind) for where, kind in colspecs]
        self.checked[name] = self.checked.get(name, 0) + check_block(columns, data, self.checker)

    def finish(self):
        """(found {(where, how): n}, values checked {table: n}, candidates {where: 16-byte pairs} or None)."""
        return self.checker.found, self.checked, self.checker.candidates


def _scan_worker(checker):
    """What a forked worker runs: blocks of rows in; at the end, its finds and counts out."""
    def work(inbox, outbox):
        sink = LocalSink(checker)
        while True:
            msg = receive(inbox)
            if msg is None:
                send(outbox, ("done",) + sink.finish())
                return
            sink.block(msg[0], msg[1], msg[2])
    return work


class ForkSink(object):
    """Checks blocks of rows in forked workers (the digests are shared copy-on-write), one block each in
    turn; the finds and counts are summed at the end. The reader, pg_dump and the workers run at once."""

    def __init__(self, checker, jobs):
        self.pool = Pool(jobs, _scan_worker(checker))
        self.turn = 0

    def rows(self, name, colspecs, lines):
        if lines:
            self.pool.put(self.turn % len(self.pool), (name, colspecs, b"\n".join(lines)))
            self.turn += 1

    def finish(self):
        found, checked, candidates = {}, {}, {}
        try:
            for k in range(len(self.pool)):
                self.pool.put(k, None)
            for k in range(len(self.pool)):
                _done, their_found, their_checked, theirs = self.pool.answer(k)
                for key, n in their_found.items():
                    found[key] = found.get(key, 0) + n
                for key, n in their_checked.items():
                    checked[key] = checked.get(key, 0) + n
                for where, pairs in (theirs or {}).items():
                    candidates.setdefault(where, bytearray()).extend(pairs)
        finally:
            self.pool.close()
        return found, checked, candidates

    def abort(self):
        self.pool.close()


# --------------------------------------------------------------------------
# the database: its catalog, its tables, its dump


def _run(argv, what):
    env = dict(os.environ)
    env.setdefault("PGCLIENTENCODING", "UTF8")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
    except OSError as e:
        raise ScanFailed("cannot start %s (%s): %s" % (argv[0], what, e.strerror or e))
    proc.tail = ToolStderr(proc.stderr)
    proc.tail.start()
    return proc


def _end(proc, what):
    while proc.stdout.read(1 << 20):  # whatever follows an end-of-data line: the tool must not wait on it
        pass
    rc = proc.wait()
    if rc != 0:
        raise ScanFailed("%s failed (exit %d): %s" % (what, rc, proc.tail.error()))
    proc.tail.join(5)


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


def _colspecs(tables, schema, table, names):
    """The report's name of a table and (where, kind) of its columns, from the catalog."""
    info = tables.get((schema, table))
    kinds = dict(info["columns"]) if info else {}
    name = info["name"] if info else (table if schema == "public" else "%s.%s" % (schema, table))
    return name, tuple(("%s.%s" % (name, c), kinds.get(c, "other")) for c in names)


def _scan_dump(argv, tables, sink, checker, rows):
    """Read the plain dump once: COPY data to the sink by blocks, the SQL around it by its literals.
    Returns the tables whose data it held, and how many literals were checked."""
    proc = _run(list(argv), "pg_dump")
    seen, sql, literal_count = set(), [], 0
    current = None  # (name, colspecs) of the COPY block being read
    try:
        for lines in iter_blocks(proc.stdout.read, stop=False):
            i, n = 0, len(lines)
            while i < n:
                if current is None:
                    line = lines[i]
                    i += 1
                    head = None
                    if line.startswith(b"COPY ") and line.endswith(b"FROM stdin;"):
                        head = _copy_header(line.decode("utf-8", "surrogateescape"))
                    if head is None:
                        sql.append(line.decode("utf-8", "surrogateescape"))
                        continue
                    literal_count += _check_sql("\n".join(sql), checker)
                    sql = []
                    schema, table, names = head
                    current = _colspecs(tables, schema, table, names)
                    seen.add((schema, table))
                    rows.setdefault(current[0], 0)
                    continue
                try:
                    j = lines.index(b"\\.", i)
                except ValueError:
                    j = n
                if j > i:
                    sink.rows(current[0], current[1], lines[i:j])
                    rows[current[0]] += j - i
                i = j
                if j < n:
                    i += 1
                    current = None
        literal_count += _check_sql("\n".join(sql), checker)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _end(proc, "pg_dump")
    return seen, literal_count


def _scan_table(psql, schema, table, info, sink, rows):
    """A table the dump did not hold: its columns that can hold text, read with psql COPY (a table with
    none is only counted)."""
    cols = [c for c, k in info["columns"] if k != "skip"]
    name = info["name"]
    if not cols:
        sql = "COPY (SELECT count(*) FROM %s.%s) TO STDOUT" % (_ident(schema), _ident(table))
        rows[name] = int(b"".join(_psql_copy(psql, sql, "psql (counting %s)" % name)))
        return
    rows.setdefault(name, 0)
    sql = "COPY (SELECT %s FROM %s.%s) TO STDOUT" % (", ".join(_ident(c) for c in cols), _ident(schema),
                                                      _ident(table))
    name, colspecs = _colspecs({(schema, table): info}, schema, table, cols)
    proc = _run(list(psql) + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], "psql (reading %s)" % name)
    try:
        for lines in iter_blocks(proc.stdout.read):
            sink.rows(name, colspecs, lines)
            rows[name] += len(lines)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _end(proc, "psql (reading %s)" % name)


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
    exact = normalised = None
    if args.get("exact") is not None or args.get("normalised") is not None:
        try:
            exact, normalised = digests_b64(args.get("exact")), digests_b64(args.get("normalised"))
        except ValueError as e:
            raise BadArguments("exact and normalised must be base64 dk64 digest lists: %s" % e)
    jobs = args.get("jobs")
    if jobs is None:
        jobs = min(MAX_JOBS, os.cpu_count() or 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise BadArguments("jobs must be a whole number of at least 1")
    screen = args.get("screen")
    if screen is not None:
        try:
            screen = unpack_screen(base64.b64decode(screen, validate=True))
        except ValueError as e:
            raise BadArguments("screen must be a base64 ds32 list: %s" % e)
    checker = Checker(proof_key, exact, normalised, min_length, screen)
    tables = catalog(psql)
    rows = {}
    sink = ForkSink(checker, jobs) if jobs > 1 else LocalSink(checker)
    try:
        seen, literal_count = set(), 0
        if pg_dump:
            seen, literal_count = _scan_dump(pg_dump, tables, sink, checker, rows)
        for key in sorted(tables):
            if key not in seen:
                _scan_table(psql, key[0], key[1], tables[key], sink, rows)
        found, checked, candidates = sink.finish()
    except BaseException:
        if isinstance(sink, ForkSink):
            sink.abort()
        raise
    if isinstance(sink, ForkSink):
        for key, n in found.items():  # the workers' finds, added to the literals' own
            checker.found[key] = checker.found.get(key, 0) + n
        for where, pairs in (candidates or {}).items():
            checker.candidates.setdefault(where, bytearray()).extend(pairs)
    stats = {name: {"rows": n, "values_checked": checked.get(name, 0)} for name, n in sorted(rows.items())}
    values = sum(t["values_checked"] for t in stats.values())
    report = {"tables": stats, "checked": values + literal_count, "literals": literal_count,
              "found": checker.report(), "seconds": round(time.monotonic() - start, 3), "jobs": jobs}
    if checker.candidates is not None:  # 16 bytes a flagged value: its two digests, big-endian uint64
        report["candidates"] = {where: base64.b64encode(bytes(pairs)).decode("ascii")
                                for where, pairs in sorted(checker.candidates.items())}
        report["flagged"] = sum(len(p) for p in checker.candidates.values()) // 16
    return report


READ_ONLY = {"scan"}  # what a dry-run may call
ACTIONS = {"scan": scan}


def main():
    sys.exit(serve(ACTIONS, name="proof.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
