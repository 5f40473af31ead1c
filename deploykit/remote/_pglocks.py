"""The lock a PostgreSQL DDL statement takes, for how long, and whether it rewrites the table.

Standard library only (Python 3.9+). Inlined into the Django helpers that
import it (``from _pglocks import (...)``) when they are sent to a host;
_migsafety reads the SQL Django generates for each migration operation
through it. The facts are PostgreSQL's (the "ALTER TABLE" and "Explicit
Locking" chapters of its manual, PostgreSQL 11 and later: a constant or
stable default added with a column rewrites nothing), as Squawk and
django-migration-linter read them:

    ADD COLUMN                  ACCESS EXCLUSIVE, brief; a volatile default or a stored generated
                                column rewrites the table; NOT NULL without default fails on rows
    DROP COLUMN, RENAME, DROP/SET DEFAULT, DROP NOT NULL, DROP CONSTRAINT, DROP TABLE
                                ACCESS EXCLUSIVE, brief
    ALTER COLUMN TYPE           ACCESS EXCLUSIVE, table rewrite (and its indexes rebuilt)
    SET NOT NULL                ACCESS EXCLUSIVE while it scans the table
    ADD CONSTRAINT UNIQUE/PRIMARY KEY/EXCLUDE
                                ACCESS EXCLUSIVE while the index builds
    ADD CONSTRAINT CHECK        ACCESS EXCLUSIVE while it scans (brief with NOT VALID)
    ADD CONSTRAINT FOREIGN KEY  SHARE ROW EXCLUSIVE on both tables while it scans (brief with NOT VALID)
    VALIDATE CONSTRAINT         SHARE UPDATE EXCLUSIVE while it scans (reads and writes go on)
    CREATE INDEX                SHARE while it builds (writes wait)
    CREATE INDEX CONCURRENTLY   SHARE UPDATE EXCLUSIVE while it builds (reads and writes go on)
    UPDATE/INSERT/DELETE        ROW EXCLUSIVE; an UPDATE or DELETE touches every row it matches

A statement is described as {table, lock, held, rewrite, does, breaks}:
`held` is brief | scan | build | rewrite | rows; `breaks` says what the
statement takes away from code that still uses the table (a dropped column,
a rename), else None. Statements it does not know are {lock: None, does:
"not recognised"}: the operation is then for a person to review.
"""

import re

# weakest first (PostgreSQL's table-level lock modes)
LOCK_MODES = ("ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
              "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE")
# what other sessions' ordinary work (SELECT; INSERT/UPDATE/DELETE) waits for under each mode
LOCK_BLOCKS = {"ACCESS SHARE": "nothing", "ROW SHARE": "nothing", "ROW EXCLUSIVE": "nothing",
               "SHARE UPDATE EXCLUSIVE": "nothing", "SHARE": "writes", "SHARE ROW EXCLUSIVE": "writes",
               "EXCLUSIVE": "writes", "ACCESS EXCLUSIVE": "reads and writes"}
# how long a lock is held, shortest first
HELD = ("brief", "rows", "scan", "build", "rewrite")
HELD_TEXT = {"brief": "brief", "rows": "while it updates the rows", "scan": "while it scans the table",
             "build": "while the index builds", "rewrite": "while the table is rewritten"}
# functions PostgreSQL marks volatile that a column default may call: such a default rewrites the table
VOLATILE = ("random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v4", "clock_timestamp", "timeofday",
            "nextval", "txid_current", "setseed")

_pg_NAME = r'((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)'


def _pg_blank_literals(sql):
    """The statement without comments and with every string literal as '' (no keyword is found inside one)."""
    sql = re.sub(r"--[^\n]*", " ", sql)
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    sql = re.sub(r"(?:E)?'(?:[^']|'')*'", "''", sql)
    return " ".join(sql.split())


def _pg_unquote(name):
    return ".".join(part.strip('"') for part in re.findall(r'"[^"]+"|[\w$]+', name or "")) or None


def split_statements(sql):
    """Statements of one text, split on the semicolons outside quotes and parentheses (Django sometimes
    joins two: `ADD COLUMN ... REFERENCES ...; SET CONSTRAINTS ... IMMEDIATE;`)."""
    out, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0:
            out.append(sql[start:i])
            start = i + 1
    out.append(sql[start:])
    return [s.strip() for s in out if s.strip() and _pg_blank_literals(s).strip()]


def _pg_top_level_commas(text):
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _pg_fact(table, lock, held="brief", does="", rewrite=False, breaks=None, fails_with_rows=False, also=None):
    fact = {"table": table, "lock": lock, "held": held, "rewrite": rewrite, "does": does, "breaks": breaks}
    if fails_with_rows:
        fact["fails_with_rows"] = True
    if also:
        fact["also"] = also  # {table: lock} of other tables the statement locks (a foreign key's target)
    return fact


def _pg_references(text):
    return [_pg_unquote(m) for m in re.findall(r"\bREFERENCES\s+" + _pg_NAME, text, re.I)]


def _pg_volatile_default(text):
    m = re.search(r"\bDEFAULT\b(.*?)(?:\bNOT\s+NULL\b|\bNULL\b|\bCONSTRAINT\b|\bREFERENCES\b|\bCHECK\b|"
                  r"\bUNIQUE\b|\bPRIMARY\b|$)", text, re.I)
    if not m:
        return False
    expr = m.group(1).lower()
    return any(re.search(r"\b%s\s*\(" % name, expr) for name in VOLATILE)


def _pg_add_column(table, action):
    also = {t: "SHARE ROW EXCLUSIVE" for t in _pg_references(action) if t != table}
    has_default = bool(re.search(r"\bDEFAULT\b", action, re.I))
    not_null = bool(re.search(r"\bNOT\s+NULL\b", action, re.I))
    if re.search(r"\bGENERATED\s+ALWAYS\s+AS\s*\(.*\)\s*STORED\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "rewrite", "adds a stored generated column", rewrite=True, also=also)
    if _pg_volatile_default(action):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "rewrite", "adds a column with a volatile default", rewrite=True,
                     also=also)
    if re.search(r"\b(UNIQUE|PRIMARY\s+KEY)\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "build", "adds a column with a unique index", also=also,
                     fails_with_rows=not_null and not has_default)
    if not_null and not has_default:
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "adds a NOT NULL column without a default",
                     fails_with_rows=True, also=also)
    return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "adds a column" + (" with a default" if has_default else ""),
                 also=also)


def _pg_add_constraint(table, action):
    not_valid = bool(re.search(r"\bNOT\s+VALID\b", action, re.I))
    if re.search(r"\bFOREIGN\s+KEY\b", action, re.I):
        also = {t: "SHARE ROW EXCLUSIVE" for t in _pg_references(action) if t != table}
        return _pg_fact(table, "SHARE ROW EXCLUSIVE", "brief" if not_valid else "scan",
                     "adds a foreign key" + (" (not validated)" if not_valid else ""), also=also)
    if re.search(r"\b(UNIQUE|PRIMARY\s+KEY)\b.*\bUSING\s+INDEX\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "adds a constraint over an existing index")
    if re.search(r"\bUNIQUE\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "build", "adds a unique constraint")
    if re.search(r"\bPRIMARY\s+KEY\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "build", "adds a primary key")
    if re.search(r"\bEXCLUDE\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "build", "adds an exclusion constraint")
    if re.search(r"\bCHECK\b", action, re.I):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief" if not_valid else "scan",
                     "adds a check constraint" + (" (not validated)" if not_valid else ""))
    return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "adds a constraint")


def _pg_alter_table_action(table, action):
    a = action.upper()
    if re.match(r"ADD\s+(CONSTRAINT\b|FOREIGN\s+KEY|UNIQUE|PRIMARY\s+KEY|CHECK|EXCLUDE)", a):
        return _pg_add_constraint(table, action)
    if re.match(r"ADD\b", a):
        return _pg_add_column(table, action)
    if re.match(r"DROP\s+COLUMN\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "drops a column", breaks="drops a column")
    if re.match(r"DROP\s+CONSTRAINT\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "drops a constraint")
    if re.match(r"RENAME\s+CONSTRAINT\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "renames a constraint")
    if re.match(r"RENAME\s+(COLUMN\s+)?\S+\s+TO\b", a) and not re.match(r"RENAME\s+TO\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "renames a column", breaks="renames a column")
    if re.match(r"RENAME\s+TO\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "renames the table", breaks="renames the table")
    if re.match(r"VALIDATE\s+CONSTRAINT\b", a):
        return _pg_fact(table, "SHARE UPDATE EXCLUSIVE", "scan", "validates a constraint")
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "rewrite", "changes a column's type", rewrite=True)
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+SET\s+NOT\s+NULL\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "scan", "makes a column NOT NULL")
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+DROP\s+NOT\s+NULL\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "makes a column nullable")
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+(SET|DROP)\s+DEFAULT\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "changes a column's default")
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+(SET|DROP)\s+EXPRESSION\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "rewrite", "changes a generated column", rewrite=True)
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+(SET|RESET)\s+(STATISTICS|\()", a):
        return _pg_fact(table, "SHARE UPDATE EXCLUSIVE", "brief", "changes a column's statistics")
    if re.match(r"ALTER\s+(COLUMN\s+)?\S+\s+(ADD|DROP|SET)\s+(GENERATED|IDENTITY|RESTART|INCREMENT)", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "changes an identity column")
    if re.match(r"SET\s+TABLESPACE\b|SET\s+(UN)?LOGGED\b|SET\s+ACCESS\s+METHOD\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "rewrite", "moves the table", rewrite=True)
    if re.match(r"(OWNER\s+TO|SET\s+SCHEMA)\b", a):
        return _pg_fact(table, "ACCESS EXCLUSIVE", "brief", "changes the table's owner or schema",
                     breaks="moves the table to another schema" if a.startswith("SET") else None)
    return _pg_fact(table, None, "brief", "not recognised")


def statement_facts(sql):
    """[fact, ...] of one statement (an ALTER TABLE with several actions gives one fact per action)."""
    text = _pg_blank_literals(sql)
    up = text.upper()
    m = re.match(r"CREATE\s+(UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:\S+\s+)?ON\s+"
                 r"(?:ONLY\s+)?" + _pg_NAME, text, re.I)
    if m:
        unique = " unique" if m.group(1) else ""
        if m.group(2):
            return [_pg_fact(_pg_unquote(m.group(3)), "SHARE UPDATE EXCLUSIVE", "build",
                          "creates a%s index concurrently" % unique)]
        return [_pg_fact(_pg_unquote(m.group(3)), "SHARE", "build", "creates a%s index" % unique)]
    m = re.match(r"DROP\s+INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?" + _pg_NAME, text, re.I)
    if m:
        if m.group(1):
            return [_pg_fact(None, "SHARE UPDATE EXCLUSIVE", "brief", "drops an index concurrently")]
        return [_pg_fact(None, "ACCESS EXCLUSIVE", "brief", "drops an index (its table is locked)")]
    m = re.match(r"CREATE\s+(?:UNLOGGED\s+|TEMP(?:ORARY)?\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _pg_NAME, text, re.I)
    if m:
        table = _pg_unquote(m.group(1))
        also = {t: "SHARE ROW EXCLUSIVE" for t in _pg_references(text) if t != table}
        return [_pg_fact(table, None, "brief", "creates a table", also=also)]
    m = re.match(r"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _pg_NAME, text, re.I)
    if m:
        return [_pg_fact(_pg_unquote(m.group(1)), "ACCESS EXCLUSIVE", "brief", "drops a table",
                         breaks="drops the table")]
    m = re.match(r"TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?" + _pg_NAME, text, re.I)
    if m:
        return [_pg_fact(_pg_unquote(m.group(1)), "ACCESS EXCLUSIVE", "brief", "empties a table",
                      breaks="deletes every row")]
    m = re.match(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _pg_NAME + r"\s+(.*)$", text, re.I)
    if m:
        table = _pg_unquote(m.group(1))
        return [_pg_alter_table_action(table, action) for action in _pg_top_level_commas(m.group(2))]
    m = re.match(r"ALTER\s+INDEX\s+(?:IF\s+EXISTS\s+)?" + _pg_NAME + r"\s+RENAME\b", text, re.I)
    if m:
        return [_pg_fact(None, "SHARE UPDATE EXCLUSIVE", "brief", "renames an index")]
    m = re.match(r"UPDATE\s+(?:ONLY\s+)?" + _pg_NAME, text, re.I)
    if m:
        return [_pg_fact(_pg_unquote(m.group(1)), "ROW EXCLUSIVE", "rows", "updates rows")]
    m = re.match(r"DELETE\s+FROM\s+(?:ONLY\s+)?" + _pg_NAME, text, re.I)
    if m:
        return [_pg_fact(_pg_unquote(m.group(1)), "ROW EXCLUSIVE", "rows", "deletes rows")]
    m = re.match(r"INSERT\s+INTO\s+" + _pg_NAME, text, re.I)
    if m:
        return [_pg_fact(_pg_unquote(m.group(1)), "ROW EXCLUSIVE", "brief", "inserts rows")]
    if re.match(r"SET\s+CONSTRAINTS\b|SELECT\b|COMMENT\s+ON\b|(CREATE|ALTER|DROP)\s+(SEQUENCE|EXTENSION|"
                r"COLLATION|FUNCTION|TYPE|SCHEMA)\b|BEGIN\b|COMMIT\b|SET\s+(LOCAL\s+)?\w+\s*(=|TO)", up):
        return [_pg_fact(None, None, "brief", "changes no table's rows or columns")]
    return [_pg_fact(None, None, "brief", "not recognised")]


def stronger(a, b):
    """The stronger of two lock modes (None is no lock)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if LOCK_MODES.index(a) >= LOCK_MODES.index(b) else b


def longer(a, b):
    return a if HELD.index(a) >= HELD.index(b) else b


_BLOCK_LEVEL = {"nothing": 0, "writes": 1, "reads and writes": 2}


def _pg_impact(mode, held):
    """How much a lock hurts the app: what waits, times how long (then the stronger mode)."""
    return (_BLOCK_LEVEL[LOCK_BLOCKS[mode]] * (HELD.index(held) + 1), HELD.index(held), LOCK_MODES.index(mode))


def summarize(facts, new_tables=()):
    """What a list of facts does to tables that exist before the plan (new_tables do not count: nothing
    uses them yet).

    {lock, held, blocks: the lock that hurts the app most (what waits, for how long), strongest: the
    strongest mode taken at all, locks: [{table, lock, held}] each distinct one, rewrite, tables,
    breaks: [...], unknown: statements not recognised, fails_with_rows}
    """
    new = set(new_tables)
    locks, rewrite, tables, breaks, unknown, fails = [], False, [], [], 0, False
    for f in facts:
        if f["does"] == "not recognised":
            unknown += 1
            continue
        on_new = f["table"] is not None and f["table"] in new
        touched = [] if on_new else [(f["table"], f["lock"])]
        touched += sorted((f.get("also") or {}).items())  # a foreign key's target: locked even from a new table
        for table, mode in touched:
            if table is not None and table in new:
                continue
            if mode is not None:
                # a new table is empty: a constraint on it is validated at once
                entry = {"table": table, "lock": mode, "held": "brief" if on_new else f["held"]}
                if entry not in locks:
                    locks.append(entry)
            if table and table not in tables:
                tables.append(table)
        if on_new:
            continue
        rewrite = rewrite or f["rewrite"]
        if f.get("breaks"):
            breaks.append(f["breaks"])
        fails = fails or bool(f.get("fails_with_rows"))
    locks.sort(key=lambda e: _pg_impact(e["lock"], e["held"]), reverse=True)
    top = locks[0] if locks else None
    strongest = None
    for e in locks:
        strongest = stronger(strongest, e["lock"])
    return {"lock": top["lock"] if top else None, "held": top["held"] if top else None,
            "blocks": LOCK_BLOCKS[top["lock"]] if top else "nothing",
            "table": top["table"] if top else None, "strongest": strongest, "locks": locks,
            "rewrite": rewrite, "tables": tables, "breaks": breaks, "unknown": unknown, "fails_with_rows": fails}


def _pg_phrase(mode, held):
    text = mode + (", brief" if held == "brief" else " " + HELD_TEXT[held])
    if held != "brief" and LOCK_BLOCKS[mode] != "nothing":
        text += " (%s wait)" % LOCK_BLOCKS[mode]
    return text


def describe_lock(summary):
    """One short phrase: 'ACCESS EXCLUSIVE, brief', 'SHARE while the index builds (writes wait); ACCESS
    EXCLUSIVE, brief', 'none': the lock that hurts most first, then any stronger one held briefly."""
    if not summary or not summary.get("lock"):
        return "none"
    parts = [_pg_phrase(summary["lock"], summary["held"] or "brief")]
    strongest = summary.get("strongest")
    if strongest and strongest != summary["lock"] and stronger(strongest, summary["lock"]) == strongest:
        held = next(e["held"] for e in summary.get("locks") or [] if e["lock"] == strongest)
        parts.append(_pg_phrase(strongest, held))
    return "; ".join(parts)
