"""Each operation of a migration plan, classified for a release while the old code still serves.

Standard library + the app's Django (imported inside the functions). Inlined
into django_state.py like _common.py (``from _migsafety import (...)``). A
rolling release migrates once, then switches the hosts one batch after the
other: until the last batch, the *old* code runs against the *new* schema.
So each operation is judged by what it does to that old code, from the
operation itself and the project states before and after it (Django's own
objects), and on PostgreSQL also by the lock and rewrite of the SQL Django
generates for it (_pglocks):

  safe    the old code keeps working, and no lock on a table it uses lasts longer
          than a catalog change (add a nullable column or one with db_default, create
          a table, AddIndexConcurrently, drop an index or a constraint, widen a varchar)
  review  the old code keeps working but a person should look: a lock held while an
          index builds or the table is scanned (writes wait), a check constraint, code
          deploykit cannot read (RunPython, RunSQL, SeparateDatabaseAndState), an
          operation it does not know
  unsafe  the old code breaks, or the migration fails on existing rows: remove or rename
          a field or model, a NOT NULL column without a database default, a type change
          that is not a widening, SET NOT NULL, a unique constraint on an existing table,
          unique_together grown

Operations on a table created earlier in the same plan are safe: no code
uses it yet. The wording of each `why` names the table and column, so one
line is enough for an operator.
"""

import re

from _pglocks import (describe_lock, split_statements, statement_facts, summarize)

SAFE, REVIEW, UNSAFE = "safe", "review", "unsafe"
RANK = {SAFE: 0, REVIEW: 1, UNSAFE: 2}
PYTHON_ONLY = "runs Python: no SQL"
# locks under which ordinary writes wait: held longer than "brief", an operation needs a review
_WRITES_WAIT = ("SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE")
_ADVICE = {"build": "AddIndexConcurrently (or a unique index built CONCURRENTLY, then the constraint USING INDEX) "
                    "does not block writes",
           "scan": "add the constraint NOT VALID, then validate it in a later migration (SHARE UPDATE EXCLUSIVE)",
           "rewrite": "add a new column, copy the data in batches, then switch over"}


def worst(classes):
    """The most serious of several classifications (safe when there is none)."""
    return max(classes, key=lambda c: RANK[c]) if classes else SAFE


def _verdict(classification, why, tables=(), creates=(), coercible=False):
    return {"classification": classification, "why": why, "tables": [t for t in tables if t],
            "creates": [t for t in creates if t], "coercible": coercible}


def _model(state, app_label, name):
    try:
        return state.apps.get_model(app_label, name)
    except LookupError:
        return None


def _table(state, app_label, name):
    model = _model(state, app_label, name)
    return model._meta.db_table if model is not None else None


def _field(state, app_label, model_name, name):
    model = _model(state, app_label, model_name)
    if model is None:
        return None
    try:
        return model._meta.get_field(name)
    except Exception:  # FieldDoesNotExist
        return None


def _through_tables(model):
    """The auto-created many-to-many tables of a model (created and dropped with it)."""
    out = []
    for f in model._meta.local_many_to_many:
        through = getattr(f.remote_field, "through", None)
        if through is not None and not isinstance(through, str) and through._meta.auto_created:
            out.append(through._meta.db_table)
    return out


def _db_type(field, connection):
    try:
        return field.db_parameters(connection=connection).get("type")
    except Exception:
        return None


_VARCHAR = re.compile(r"^(?:varchar|character varying)\((\d+)\)$")
_NUMERIC = re.compile(r"^numeric\((\d+),\s*(\d+)\)$")


def widens(old_type, new_type):
    """A type change PostgreSQL makes without a rewrite, that takes no value the old code writes away:
    varchar(n) to varchar(m >= n) or text, numeric(p, s) to numeric(q >= p, s)."""
    old, new = (old_type or "").lower().strip(), (new_type or "").lower().strip()
    m = _VARCHAR.match(old)
    if m:
        n = _VARCHAR.match(new)
        return new in ("text", "varchar", "character varying") or bool(n and int(n.group(1)) >= int(m.group(1)))
    m = _NUMERIC.match(old)
    if m:
        n = _NUMERIC.match(new)
        return new == "numeric" or bool(n and int(n.group(1)) >= int(m.group(1)) and n.group(2) == m.group(2))
    return False


def _has_db_default(field):
    from django.db.models import NOT_PROVIDED

    return getattr(field, "db_default", NOT_PROVIDED) is not NOT_PROVIDED


def _fills_without_default(facts):
    return any(f.get("fails_with_rows") for f in facts or [])


# -- one function per kind of operation: (op, c) -> verdict; c = {app, before, after, connection, new, facts}

def _create_model(op, c):
    model = _model(c["after"], c["app"], op.name)
    table = model._meta.db_table if model is not None else None
    creates = [table] + (_through_tables(model) if model is not None else [])
    if model is not None and (model._meta.proxy or not model._meta.managed):
        return _verdict(SAFE, "a %s model: no table is created" % ("proxy" if model._meta.proxy else "unmanaged"))
    return _verdict(SAFE, "creates table %s: the old code does not use it" % table, [table], creates)


def _delete_model(op, c):
    model = _model(c["before"], c["app"], op.name)
    if model is None or model._meta.proxy or not model._meta.managed:
        return _verdict(SAFE, "no table is dropped (a proxy or unmanaged model)")
    table = model._meta.db_table
    if table in c["new"]:
        return _verdict(SAFE, "drops table %s, created in this plan: no code uses it yet" % table, [table])
    return _verdict(UNSAFE, "drops table %s, which the old code still reads and writes" % table, [table])


def _rename_model(op, c):
    old, new = _table(c["before"], c["app"], op.old_name), _table(c["after"], c["app"], op.new_name)
    if old == new:
        return _verdict(SAFE, "renames the model only: its table %s keeps its name" % old, [old])
    if old in c["new"]:
        return _verdict(SAFE, "renames table %s, created in this plan, to %s" % (old, new), [old], [new])
    return _verdict(UNSAFE, "renames table %s to %s: the old code still uses %s" % (old, new, old), [old], [new])


def _alter_model_table(op, c):
    old, new = _table(c["before"], c["app"], op.name), _table(c["after"], c["app"], op.name)
    if old == new:
        return _verdict(SAFE, "the table keeps its name %s" % old, [old])
    if old in c["new"]:
        return _verdict(SAFE, "renames table %s, created in this plan, to %s" % (old, new), [old], [new])
    return _verdict(UNSAFE, "renames table %s to %s: the old code still uses %s" % (old, new, old), [old], [new])


def _add_field(op, c):
    model = _model(c["after"], c["app"], op.model_name)
    table = model._meta.db_table if model is not None else None
    field = _field(c["after"], c["app"], op.model_name, op.name) or op.field
    where = "%s.%s" % (table, getattr(field, "column", None) or op.name)
    if table in c["new"]:
        return _verdict(SAFE, "adds %s to a table created in this plan" % where, [table])
    if field.many_to_many:
        through = getattr(field.remote_field, "through", None)
        auto = through is not None and not isinstance(through, str) and through._meta.auto_created
        creates = [through._meta.db_table] if auto else []
        return _verdict(SAFE, "adds a many-to-many table%s: the old code does not use it" %
                        (" " + creates[0] if creates else ""), [table], creates)
    if getattr(field, "generated", False):
        return _verdict(SAFE, "adds generated column %s: the old code never writes it" % where, [table])
    if field.null:
        return _verdict(SAFE, "adds nullable column %s: the old code's INSERTs leave it NULL" % where, [table])
    if _has_db_default(field):
        return _verdict(SAFE, "adds %s with a database default (db_default): the old code's INSERTs get it" % where,
                        [table])
    if _fills_without_default(c["facts"]) or (c["facts"] is None and not op.field.has_default()):
        return _verdict(UNSAFE, "adds NOT NULL column %s without a default: it fails on a table with rows, and the "
                                "old code's INSERTs leave it out" % where, [table])
    how = "a one-off default fills the existing rows" if not op.preserve_default else \
        "its default is Python's only: Django drops the column default once the rows are filled"
    return _verdict(UNSAFE, "adds NOT NULL column %s (%s): the old code's INSERTs leave it out and fail; give it "
                            "db_default, or add it nullable first" % (where, how), [table])


def _remove_field(op, c):
    model = _model(c["before"], c["app"], op.model_name)
    field = _field(c["before"], c["app"], op.model_name, op.name)
    table = model._meta.db_table if model is not None else None
    if table in c["new"]:
        return _verdict(SAFE, "removes %s from a table created in this plan" % op.name, [table])
    if field is not None and field.many_to_many:
        through = getattr(field.remote_field, "through", None)
        name = through._meta.db_table if through is not None and not isinstance(through, str) else op.name
        return _verdict(UNSAFE, "drops many-to-many table %s: the old code still uses the relation %s.%s" %
                        (name, table, op.name), [table, name])
    column = getattr(field, "column", None) or op.name
    return _verdict(UNSAFE, "drops column %s.%s: the old code still selects and writes it (every query of the "
                            "model names its columns)" % (table, column), [table])


def _rename_field(op, c):
    old = _field(c["before"], c["app"], op.model_name, op.old_name)
    new = _field(c["after"], c["app"], op.model_name, op.new_name)
    table = _table(c["after"], c["app"], op.model_name)
    if old is not None and new is not None and old.column == new.column:
        return _verdict(SAFE, "renames the field only: column %s.%s keeps its name" % (table, new.column), [table])
    if table in c["new"]:
        return _verdict(SAFE, "renames a column of a table created in this plan", [table])
    old_col = old.column if old is not None else op.old_name
    new_col = new.column if new is not None else op.new_name
    return _verdict(UNSAFE, "renames column %s.%s to %s: the old code still uses %s" % (table, old_col, new_col,
                                                                                         old_col), [table])


def _alter_field(op, c):
    old = _field(c["before"], c["app"], op.model_name, op.name)
    new = _field(c["after"], c["app"], op.model_name, op.name)
    table = _table(c["after"], c["app"], op.model_name)
    if old is None or new is None:
        return _verdict(REVIEW, "alters field %s of %s (not found in the project state)" % (op.name, op.model_name),
                        [table])
    where = "%s.%s" % (table, old.column)
    if table in c["new"]:
        return _verdict(SAFE, "alters %s of a table created in this plan" % where, [table])
    if old.many_to_many or new.many_to_many:
        return _verdict(REVIEW, "alters many-to-many field %s of %s" % (op.name, table), [table])
    unsafe, notes, coercible = [], [], False
    if old.column != new.column:
        unsafe.append("renames column %s to %s: the old code still uses %s" % (where, new.column, old.column))
    old_type, new_type = _db_type(old, c["connection"]), _db_type(new, c["connection"])
    if old_type != new_type:
        if widens(old_type, new_type):
            coercible = True
            notes.append("widens %s from %s to %s (no rewrite)" % (where, old_type, new_type))
        else:
            unsafe.append("changes the type of %s from %s to %s: the old code may write what the new type refuses, "
                          "and PostgreSQL rewrites the table under ACCESS EXCLUSIVE" % (where, old_type, new_type))
    if old.null and not new.null:
        unsafe.append("makes %s NOT NULL: the old code may still write NULL, and PostgreSQL scans the table under "
                      "ACCESS EXCLUSIVE" % where)
    elif new.null and not old.null:
        notes.append("makes %s nullable (the old code still writes it)" % where)
    if new.unique and not old.unique and not new.primary_key:
        unsafe.append("adds a unique constraint on %s: the migration fails on repeated values, and the old code's "
                      "writes of a duplicate fail" % where)
    if new.primary_key != old.primary_key:
        unsafe.append("changes the primary key of %s" % table)
    old_to = getattr(getattr(old, "remote_field", None), "model", None)
    new_to = getattr(getattr(new, "remote_field", None), "model", None)
    if old_to is not None and new_to is not None:
        if old_to._meta.label_lower != new_to._meta.label_lower:
            unsafe.append("makes %s reference %s instead of %s: the old code writes ids of the other" %
                          (where, new_to._meta.label, old_to._meta.label))
    if unsafe:
        return _verdict(UNSAFE, "; ".join(unsafe), [table], coercible=coercible)
    if _has_db_default(old) and not _has_db_default(new) and not new.null:
        return _verdict(REVIEW, "drops the database default of NOT NULL %s: old code that relied on it fails" % where,
                        [table], coercible=coercible)
    facts = c["facts"]
    if facts == []:
        return _verdict(SAFE, "; ".join(notes) or "changes %s in Python only: nothing changes in the database" % where,
                        [table], coercible=coercible)
    if notes:
        return _verdict(SAFE, "; ".join(notes), [table], coercible=coercible)
    if facts is None:
        return _verdict(REVIEW, "alters %s (its SQL could not be written)" % where, [table])
    does = sorted({f["does"] for f in facts if f["does"] != "changes no table's rows or columns"})
    return _verdict(SAFE, "alters %s%s; the old code is unaffected" % (where, ": " + ", ".join(does) if does else ""),
                    [table], coercible=coercible)


def _add_index(op, c):
    table = _table(c["after"], c["app"], op.model_name)
    name = getattr(op.index, "name", None) or "an index"
    if type(op).__name__ == "AddIndexConcurrently":
        return _verdict(SAFE, "builds index %s on %s concurrently: reads and writes go on" % (name, table), [table])
    return _verdict(SAFE, "adds index %s on %s: the old code is unaffected" % (name, table), [table])


def _remove_index(op, c):
    table = _table(c["before"], c["app"], op.model_name)
    return _verdict(SAFE, "drops index %s on %s: the old code is unaffected (its queries may be slower)" %
                    (getattr(op, "name", "") or "an index", table), [table])


def _rename_index(op, c):
    table = _table(c["after"], c["app"], op.model_name)
    return _verdict(SAFE, "renames an index on %s: the old code is unaffected" % table, [table])


def _add_constraint(op, c):
    table = _table(c["after"], c["app"], op.model_name)
    constraint = op.constraint
    kind = type(constraint).__name__
    name = getattr(constraint, "name", "") or kind
    if table in c["new"]:
        return _verdict(SAFE, "adds constraint %s to a table created in this plan" % name, [table])
    if type(op).__name__ == "AddConstraintNotValid":
        return _verdict(REVIEW, "adds %s %s NOT VALID on %s: existing rows are not checked, but the old code's writes "
                                "that break it fail" % (kind, name, table), [table])
    if kind in ("UniqueConstraint", "ExclusionConstraint"):
        return _verdict(UNSAFE, "adds %s %s on existing table %s: the migration fails when existing rows break it, "
                                "and the old code's writes that break it fail" % (kind, name, table), [table])
    if kind == "CheckConstraint":
        return _verdict(REVIEW, "adds check constraint %s on existing table %s: the migration fails when an existing "
                                "row breaks it, and so do the old code's writes that do" % (name, table), [table])
    return _verdict(REVIEW, "adds %s %s on %s" % (kind, name, table), [table])


def _remove_constraint(op, c):
    table = _table(c["before"], c["app"], op.model_name)
    return _verdict(SAFE, "drops constraint %s on %s: the old code is unaffected" % (op.name, table), [table])


def _alter_together(op, c):
    table = _table(c["after"], c["app"], op.name)
    key = op.option_name
    model_before, model_after = _model(c["before"], c["app"], op.name), _model(c["after"], c["app"], op.name)
    old = {tuple(t) for t in getattr(getattr(model_before, "_meta", None), key, ()) or ()}
    new = {tuple(t) for t in getattr(getattr(model_after, "_meta", None), key, ()) or ()}
    added = sorted(new - old)
    shown = ", ".join("(%s)" % ", ".join(t) for t in added)
    if not added or table in c["new"]:
        return _verdict(SAFE, "%s of %s loses sets or is on a new table: the old code is unaffected" % (key, table),
                        [table])
    if key == "unique_together":
        return _verdict(UNSAFE, "adds unique_together %s on existing table %s: the migration fails on repeated "
                                "values, and the old code's writes of a duplicate fail" % (shown, table), [table])
    return _verdict(SAFE, "adds %s %s on %s: the old code is unaffected" % (key, shown, table), [table])


def _alter_order(op, c):
    table = _table(c["after"], c["app"], op.name)
    if table in c["new"]:
        return _verdict(SAFE, "order_with_respect_to on a table created in this plan", [table])
    if op.order_with_respect_to:
        return _verdict(UNSAFE, "adds NOT NULL column %s._order (Django drops its default): the old code's INSERTs "
                                "leave it out and fail" % table, [table])
    return _verdict(UNSAFE, "drops column %s._order: the old code still selects it" % table, [table])


def _state_only(op, c):
    return _verdict(SAFE, "changes Django's model options only: nothing the old code sees in the database",
                    [_table(c["after"], c["app"], getattr(op, "name", ""))])


def _run_sql(op, c):
    if not op.sql:  # RunSQL.noop is ""
        return _verdict(SAFE, "raw SQL that does nothing")
    breaks = sorted({f["breaks"] for f in c["facts"] or [] if f.get("breaks")})
    if breaks:
        return _verdict(UNSAFE, "raw SQL that %s: the old code may still use what it takes away" % ", ".join(breaks))
    return _verdict(REVIEW, "raw SQL (RunSQL): deploykit cannot tell what it does to the old code; read it")


def _run_python(op, c):
    noop = getattr(type(op), "noop", None)
    if noop is not None and getattr(op.code, "__func__", op.code) is getattr(noop, "__func__", noop):
        return _verdict(SAFE, "RunPython.noop: does nothing")
    name = getattr(op.code, "__name__", "code")
    return _verdict(REVIEW, "runs Python (%s) over the data while the old code serves: deploykit cannot tell what it "
                            "does or how long it takes; read it" % name)


def _separate(op, c):
    if not op.database_operations:
        return _verdict(SAFE, "SeparateDatabaseAndState with state operations only: nothing changes in the database")
    verdicts, before = [], c["before"].clone()
    for inner in op.database_operations:
        after = before.clone()
        inner.state_forwards(c["app"], after)
        verdicts.append(classify(inner, c["app"], before, after, c["connection"], c["new"], None))
        before = after
    label = worst([v["classification"] for v in verdicts])
    tables = sorted({t for v in verdicts for t in v["tables"]})
    return _verdict(REVIEW if label == SAFE else label,
                    "database operations chosen by hand (SeparateDatabaseAndState): " +
                    "; ".join(v["why"] for v in verdicts), tables, [t for v in verdicts for t in v["creates"]])


def _database_object(op, c):
    return _verdict(SAFE, "%s: no table of the old code changes" % op.describe())


def _validate_constraint(op, c):
    table = _table(c["after"], c["app"], op.model_name)
    return _verdict(SAFE, "validates constraint %s on %s under SHARE UPDATE EXCLUSIVE: reads and writes go on" %
                    (op.name, table), [table])


HANDLERS = {
    "CreateModel": _create_model, "DeleteModel": _delete_model, "RenameModel": _rename_model,
    "AlterModelTable": _alter_model_table, "AddField": _add_field, "RemoveField": _remove_field,
    "RenameField": _rename_field, "AlterField": _alter_field, "AddIndex": _add_index, "RemoveIndex": _remove_index,
    "RenameIndex": _rename_index, "AddConstraint": _add_constraint, "RemoveConstraint": _remove_constraint,
    "AlterUniqueTogether": _alter_together, "AlterIndexTogether": _alter_together,
    "AlterOrderWithRespectTo": _alter_order, "AlterModelOptions": _state_only, "AlterModelManagers": _state_only,
    "AlterModelTableComment": _state_only, "AlterConstraint": _state_only, "RunSQL": _run_sql,
    "RunPython": _run_python, "SeparateDatabaseAndState": _separate, "CreateExtension": _database_object,
    "CreateCollation": _database_object, "RemoveCollation": _database_object,
    "ValidateConstraint": _validate_constraint,
}


def classify(op, app_label, before, after, connection, new_tables, facts):
    """{classification, why, tables, creates, coercible} of one operation.

    before/after: the ProjectState around it; new_tables: tables created
    earlier in the plan; facts: _pglocks facts of its SQL ([] when it has
    none, None when its SQL could not be written).
    """
    c = {"app": app_label, "before": before, "after": after, "connection": connection, "new": set(new_tables),
         "facts": facts}
    for klass in type(op).__mro__:  # the most specific known class (AddIndexConcurrently before AddIndex)
        handler = HANDLERS.get(klass.__name__)
        if handler is not None:
            try:
                return handler(op, c)
            except Exception as exc:  # a third-party subclass that does not look like its base
                return _verdict(REVIEW, "%s could not be classified (%s: %s): read it" %
                                (type(op).__name__, type(exc).__name__, exc))
    return _verdict(REVIEW, "an operation deploykit does not know (%s): read it" % type(op).__name__)


def escalate(verdict, locks, vendor):
    """A safe verdict needs a review when, on PostgreSQL, it holds a lock under which writes wait for longer
    than a catalog change, or has a statement nobody recognises; an unsafe one stays unsafe."""
    if verdict["classification"] != SAFE or vendor != "postgresql" or locks is None:
        return verdict
    if locks["lock"] in _WRITES_WAIT and locks["held"] in ("scan", "build", "rewrite"):
        tables = locks["table"] or ", ".join(locks["tables"]) or "the table"
        verdict = dict(verdict, classification=REVIEW,
                       why="%s; but on PostgreSQL it holds %s on %s %s (%s wait): %s" % (
                           verdict["why"], locks["lock"], tables,
                           {"scan": "while it scans", "build": "while the index builds",
                            "rewrite": "while the table is rewritten"}[locks["held"]],
                           locks["blocks"], _ADVICE[locks["held"]]))
    elif locks["unknown"]:
        verdict = dict(verdict, classification=REVIEW,
                       why=verdict["why"] + "; its SQL has a statement deploykit does not recognise: read it")
    return verdict


# -- the SQL of one operation, and a connection that writes it without a database ----------------------------

def operation_sql(op, app_label, before, after, connection, atomic=True):
    """(statements, None) Django would run for op (collect_sql: nothing is executed), or (None, why not)."""
    if not getattr(op, "reduces_to_sql", True):
        return None, PYTHON_ONLY
    try:
        # one schema editor per operation: its deferred SQL (indexes, foreign keys) is the operation's
        with connection.schema_editor(collect_sql=True, atomic=atomic) as editor:
            op.database_forwards(app_label, editor, before, after)
        return list(editor.collected_sql), None
    except Exception as exc:
        return None, "%s: %s" % (type(exc).__name__, " ".join(str(exc).split())[:300])


def write_without_database(connection):
    """Make connection write SQL offline (the plan computed on the controller against a dummy database):
    parameters are quoted by the driver's own adapter instead of the server, and the names of existing
    constraints, which only the database knows, are placeholders. Nothing connects."""
    base = connection.SchemaEditorClass

    class Offline(base):
        def execute(self, sql, params=()):
            if not self.collect_sql:
                return base.execute(self, sql, params)
            if params:
                sql = str(sql) % tuple(self.quote_value(p) for p in params)
            return base.execute(self, sql, None)

        def _constraint_names(self, model, column_names=None, **kwargs):
            kind = next((k for k in ("primary_key", "unique", "foreign_key", "index", "check") if kwargs.get(k)),
                        "constraint")
            return ["<%s of %s (%s)>" % (kind, model._meta.db_table, ", ".join(column_names or []))]

    connection.SchemaEditorClass = Offline


def plan_executor(connection, applied=None):
    """Django's MigrationExecutor; with `applied` ([[app, name], ...]) its loader takes those as the applied
    migrations instead of reading the database (the recorder is never asked)."""
    from django.db.migrations import loader as loader_module
    from django.db.migrations.executor import MigrationExecutor

    if applied is None:
        return MigrationExecutor(connection)
    rows = {(str(a), str(n)): None for a, n in applied}

    class Given(loader_module.MigrationRecorder):
        def has_table(self):
            return True

        def applied_migrations(self):
            return dict(rows)

    saved = loader_module.MigrationRecorder
    loader_module.MigrationRecorder = Given
    try:
        return MigrationExecutor(connection)
    finally:
        loader_module.MigrationRecorder = saved


def analyse_operation(op, app_label, state, connection, new_tables, index=1, with_sql=True, atomic=True):
    """One operation judged: its SQL written (nothing runs), classified, its PostgreSQL locks summed up.

    `state` (the ProjectState before it) is moved forward by the operation and
    `new_tables` grows by the tables it creates, as Migration.apply would go on.
    """
    vendor = connection.vendor
    before = state.clone()
    op.state_forwards(app_label, state)
    sql, sql_error = operation_sql(op, app_label, before, state, connection, atomic) if with_sql else (None, None)
    facts = None if sql is None else [f for s in sql for part in split_statements(s) for f in statement_facts(part)]
    verdict = classify(op, app_label, before, state, connection, new_tables, facts)
    new_tables.update(verdict["creates"])
    if verdict["coercible"]:
        for f in facts or []:
            if f["does"] == "changes a column's type":
                f.update(rewrite=False, held="brief", does="changes a column's type (no rewrite)")
    locks = summarize(facts, new_tables) if facts is not None and vendor == "postgresql" else None
    verdict = escalate(verdict, locks, vendor)
    return {"index": index, "operation": type(op).__name__, "describe": _describe(op),
            "classification": verdict["classification"], "why": verdict["why"], "tables": verdict["tables"],
            "lock": locks["lock"] if locks else None, "blocks": locks["blocks"] if locks else None,
            "held": locks["held"] if locks else None, "rewrite": locks["rewrite"] if locks else None,
            "lock_text": _lock_text(locks, vendor, sql_error, verdict["classification"]), "sql": sql or [],
            "sql_error": sql_error}


def analyse_plan(executor, plan, connection, with_sql=True, atomic=True):
    """Every operation of a forward plan, in order, classified: the `safety` action's steps and summary."""
    state = executor._create_project_state(with_applied_migrations=True)  # what executor.migrate starts from
    new_tables, steps = set(), []
    for migration, backwards in plan:
        app = migration.app_label
        step = {"app": app, "name": migration.name, "backwards": bool(backwards), "operations": [],
                "atomic": getattr(migration, "atomic", True)}
        steps.append(step)
        if backwards:  # a forward plan has none; said rather than hidden
            step.update(classification=UNSAFE, why="unapplies %s.%s" % (app, migration.name))
            continue
        for index, op in enumerate(migration.operations, 1):
            step["operations"].append(analyse_operation(op, app, state, connection, new_tables, index, with_sql,
                                                        atomic))
        step["classification"] = worst([o["classification"] for o in step["operations"]])
    counts = {k: sum(1 for s in steps for o in s["operations"] if o["classification"] == k)
              for k in (SAFE, REVIEW, UNSAFE)}
    return {"vendor": connection.vendor, "steps": steps, "counts": counts,
            "classification": worst([s["classification"] for s in steps])}


def _describe(op):
    try:
        return op.describe()
    except Exception:
        return type(op).__name__


def _lock_text(locks, vendor, sql_error, classification):
    if vendor != "postgresql":
        return "n/a (%s)" % vendor
    if locks is None:
        if sql_error == PYTHON_ONLY:
            return "none" if classification == SAFE else "unknown (runs Python)"
        return "unknown (no SQL)"
    return describe_lock(locks)
