"""deploykit remote helper: a Django project's databases, migration state, plans and unapply.

Standalone (stdlib + the app's own Django). deploykit runs it *inside the
app's manage.py*, with the release's own Python environment:

    cd RELEASE && RELEASE/.venv/bin/python manage.py shell -v 0 -c BOOTSTRAP

where BOOTSTRAP reads this file's source and the JSON arguments from stdin,
so it runs after manage.py did whatever the app does (load a .env, pick the
settings module) and after django.setup(): it sees the database the app
sees. Run directly (`python django_state.py ACTION`, JSON on stdin) it sets
Django up itself from project_dir. Either way it prints one JSON document as
the last line of stdout. With the single argument --session it answers
requests, one JSON line each, until stdin ends (one Django start-up for a
run's every question: _common.serve_session). Uses Django's MigrationLoader, MigrationRecorder
and MigrationExecutor, never the text output of manage.py.

Actions (all take database?; run directly, also project_dir and settings?):
  state     -> {applied: {app: [graph node, ...]}, replaced: {app: [name, ...]},
               unmatched: {app: [name, ...]}, leaves: {app: [name, ...]}, django}
               applied lists the graph nodes Django considers applied, in graph
               order (a fully applied squash is one node); replaced: applied
               rows replaced by an applied squash; unmatched: applied rows with
               no migration file (and no squash replacing them).
  graph     -> state + {nodes: {app: [name, ...]} (graph order),
               replaces: {app: {name: [[app, name], ...]}} (squash nodes)}
  plan      {targets: [[app, name|null], ...]} -> {steps: [{app, name, backwards,
             replaces, irreversible: [op descriptions], sql: [...]}], irreversible: [...]}
  migrate   {targets, forbid?: [[app, name], ...]} -> {changed, unapplied: [...], applied: [...], state}
             refuses a plan unapplying a forbidden migration (or a squash replacing one)
  apply     -> {applied: [app.name, ...], state, output}: `manage.py migrate --noinput`
             (call_command, system checks included) with the state before and after
  collectstatic -> {output}: `manage.py collectstatic --noinput`
  check     {args: [...]} -> {output}: `manage.py check ARGS` (read-only)
  databases {resolve?: [path, ...]} -> {databases: {alias: {ENGINE, NAME, HOST, PORT, USER}},
             resolved: {path: realpath}}; a SQLite NAME is its absolute real path
  safety    {targets?: [[app, name], ...] (default: every leaf of this code's graph, as `migrate`),
             applied?: [[app, name], ...] (taken as the applied migrations: the database is not read),
             offline?: {alias: ENGINE} (run directly only: DATABASES replaced by unreachable ones of those
             engines, the SQL written without a database), sql?: true}
          -> {vendor, django, offline, targets, unmatched: {app: [name]}, classification, counts: {safe,
              review, unsafe}, steps: [{app, name, backwards, atomic, classification, operations: [
                {index, operation, describe, classification: safe|review|unsafe, why, tables, lock, blocks,
                 held, rewrite, lock_text, sql: [...], sql_error}]}]}
             the forward plan, each operation judged for the old code still serving (_migsafety)
"""
import os
import sys

from _common import end_session, progress, serve, serve_session
from _django import _close_connections, _connection, _setup
from _migsafety import (analyse_plan, plan_executor, write_without_database)


def _forwards(graph):
    seen, order = set(), []
    for leaf in sorted(graph.leaf_nodes()):
        for key in graph.forwards_plan(leaf):
            if key not in seen:
                seen.add(key)
                order.append(key)
    return order


def _state_of(loader):
    graph = loader.graph
    order = {key: i for i, key in enumerate(_forwards(graph))}
    applied_keys = set(loader.applied_migrations)
    nodes_applied = sorted((k for k in applied_keys if k in graph.nodes), key=lambda k: (k[0], order.get(k, 0), k[1]))
    replaced_by_applied = set()
    for key in nodes_applied:
        for old in getattr(graph.nodes[key], "replaces", None) or []:
            replaced_by_applied.add(tuple(old))
    applied, replaced, unmatched, leaves = {}, {}, {}, {}
    for app, name in nodes_applied:
        applied.setdefault(app, []).append(name)
    for app, name in sorted(k for k in applied_keys if k not in graph.nodes):
        (replaced if (app, name) in replaced_by_applied else unmatched).setdefault(app, []).append(name)
    for app, name in sorted(graph.leaf_nodes()):
        leaves.setdefault(app, []).append(name)
    return {"applied": applied, "replaced": replaced, "unmatched": unmatched, "leaves": leaves}


def _loader(connection):
    from django.db.migrations.loader import MigrationLoader

    return MigrationLoader(connection, ignore_no_migrations=True)


def read_state(connection):
    """Applied migrations as Django's loader sees them: graph nodes in graph order, leaves from the graph."""
    return _state_of(_loader(connection))


def read_graph(connection):
    """read_state + every node per app in graph order + what each squash node replaces."""
    loader = _loader(connection)
    out = _state_of(loader)
    nodes, replaces = {}, {}
    for app, name in _forwards(loader.graph):
        nodes.setdefault(app, []).append(name)
        migration = loader.graph.nodes[(app, name)]
        if getattr(migration, "replaces", None):
            replaces.setdefault(app, {})[name] = [list(k) for k in migration.replaces]
    out.update({"nodes": nodes, "replaces": replaces})
    return out


def state(args):
    django = _setup(args)
    out = read_state(_connection(args))
    out.update({"ok": True, "changed": False, "django": django.get_version()})
    return out


def graph(args):
    django = _setup(args)
    out = read_graph(_connection(args))
    out.update({"ok": True, "changed": False, "django": django.get_version()})
    return out


def _targets(args):
    return [(app, name) for app, name in args.get("targets", [])]


def describe_op(op):
    text = op.describe() if hasattr(op, "describe") else type(op).__name__
    return "%s (%s)" % (type(op).__name__, text)


def irreversible_ops(migration):
    """Operations Django cannot run backwards (RunPython without reverse_code, ...)."""
    return [describe_op(op) for op in migration.operations if not getattr(op, "reversible", True)]


def build_plan(connection, targets, with_sql=True):
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(targets)
    steps, irreversible = [], []
    for migration, backwards in plan:
        bad = irreversible_ops(migration) if backwards else []
        step = {"app": migration.app_label, "name": migration.name, "backwards": backwards,
                "replaces": [list(k) for k in getattr(migration, "replaces", None) or []],
                "irreversible": bad, "atomic": getattr(migration, "atomic", True)}
        if bad:
            irreversible.append("%s.%s: %s" % (migration.app_label, migration.name, "; ".join(bad)))
        if with_sql and not bad:
            try:
                step["sql"] = executor.loader.collect_sql([(migration, backwards)])
            except Exception as exc:  # SQL that cannot be shown is not a reason to fail the plan
                step["sql"] = ["-- cannot show SQL: %s" % exc]
        steps.append(step)
    return steps, irreversible


def forbidden_steps(steps, forbid):
    """Backward steps that would unapply a forbidden migration (itself, or one its squash replaces)."""
    forbid = {tuple(k) for k in forbid or []}
    bad = []
    for s in steps:
        if not s["backwards"]:
            continue
        covered = {(s["app"], s["name"])} | {tuple(k) for k in s.get("replaces") or []}
        if covered & forbid:
            bad.append("%s.%s" % (s["app"], s["name"]))
    return bad


def plan(args):
    _setup(args)
    steps, irreversible = build_plan(_connection(args), _targets(args), args.get("sql", True))
    return {"ok": True, "changed": False, "steps": steps, "irreversible": irreversible}


def migrate(args):
    """Migrate to the targets with this code; a step already done is not done again."""
    _setup(args)
    from django.db.migrations.executor import MigrationExecutor

    connection = _connection(args)
    targets = _targets(args)
    steps, irreversible = build_plan(connection, targets, with_sql=False)
    if irreversible and not args.get("allow_irreversible"):
        return {"ok": False, "error": "irreversible: " + "; ".join(irreversible), "kind": "IrreversibleError",
                "irreversible": irreversible}
    bad = forbidden_steps(steps, args.get("forbid"))
    if bad:
        return {"ok": False, "kind": "ForbiddenError",
                "error": "the plan would unapply migrations the target release had: " + ", ".join(bad)}
    def told(action, migration=None, fake=False):
        """Each migration as it starts and ends (the executor's own callback), for the operator."""
        verb = {"apply_start": "Applying", "unapply_start": "Unapplying"}.get(action)
        if verb and migration is not None:
            progress("%s %s.%s..." % (verb, migration.app_label, migration.name))
        elif action in ("apply_success", "unapply_success") and migration is not None:
            progress("%s.%s OK" % (migration.app_label, migration.name))

    executor = MigrationExecutor(connection, progress_callback=told)
    executor.migrate(targets, plan=executor.migration_plan(targets))
    return {"ok": True, "changed": bool(steps),
            "unapplied": ["%s.%s" % (s["app"], s["name"]) for s in steps if s["backwards"]],
            "applied": ["%s.%s" % (s["app"], s["name"]) for s in steps if not s["backwards"]],
            "state": read_state(connection)}


def safety(args):
    """The forward plan to this code's leaves, each operation classified for a release while the old code serves.

    With `applied` the plan starts from those migrations (the controller's
    copy of a tag, with the live state read from the host); with `offline`
    nothing connects: the SQL is written as Django would, constraint names
    of the live database excepted.
    """
    django = _setup(args)
    connection = _connection(args)
    offline = args.get("offline") is not None
    if offline:
        write_without_database(connection)
    executor = plan_executor(connection, args.get("applied"))
    targets = _targets(args) or sorted(executor.loader.graph.leaf_nodes())
    plan_ = executor.migration_plan(targets)
    out = analyse_plan(executor, plan_, connection, with_sql=args.get("sql", True), atomic=not offline)
    out.update({"ok": True, "changed": False, "django": django.get_version(), "offline": offline,
                "targets": [list(t) for t in targets], "unmatched": _state_of(executor.loader)["unmatched"]})
    return out


def _command(name, *argv, **options):
    """Run a management command as `manage.py NAME ARGV` would (system checks included); its output."""
    import io

    from django.core.management import call_command

    class Told(io.StringIO):
        """Keeps the whole output and tells each line as it is written (a migration's "Applying ..."
        at its flush, before it runs: the operator sees which one a long migrate is in)."""

        pending = ""

        def write(self, text):
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                if line.strip():
                    progress(line.rstrip())
            return super().write(text)

        def flush(self):
            if self.pending.strip():
                progress(self.pending.rstrip())

    out = Told()
    call_command(name, *argv, stdout=out, stderr=out, **options)
    return out.getvalue()


def apply(args):
    """`manage.py migrate --noinput`, with the state before and after read in the same start-up."""
    _setup(args)
    connection = _connection(args)
    before = read_state(connection)["applied"]
    output = _command("migrate", interactive=False, skip_checks=False, database=connection.alias)
    after = read_state(connection)
    applied = ["%s.%s" % (app, name) for app, names in after["applied"].items()
               for name in names if name not in before.get(app, [])]
    return {"ok": True, "changed": bool(applied), "applied": applied, "state": after, "output": output}


def collectstatic(args):
    """`manage.py collectstatic --noinput` (into the release's STATIC_ROOT)."""
    _setup(args)
    output = _command("collectstatic", interactive=False, skip_checks=False)
    return {"ok": True, "changed": True, "output": output}


def check(args):
    """`manage.py check ARGS`: Django's system checks (an error found is a failed action)."""
    _setup(args)
    return {"ok": True, "changed": False, "output": _command("check", *[str(a) for a in args.get("args", [])])}


def _sqlite_path(name):
    name = str(name)
    if not name or name == ":memory:" or name.startswith("file:"):
        return name
    return os.path.realpath(name)


def databases(args):
    """The database each alias of the app's settings points at (nothing is connected)."""
    _setup(args)
    from django.db import connections

    out = {}
    for alias in connections:
        cfg = connections[alias].settings_dict
        engine = cfg.get("ENGINE") or ""
        name = cfg.get("NAME")
        if name is not None and "sqlite" in engine:
            name = _sqlite_path(name)
        out[alias] = {"ENGINE": engine, "NAME": None if name is None else str(name),
                      "HOST": str(cfg.get("HOST") or ""), "PORT": str(cfg.get("PORT") or ""),
                      "USER": str(cfg.get("USER") or "")}
    resolved = {p: os.path.realpath(p) for p in args.get("resolve") or []}
    return {"ok": True, "changed": False, "databases": out, "resolved": resolved}


ACTIONS = {"state": state, "graph": graph, "plan": plan, "migrate": migrate, "databases": databases,
           "apply": apply, "collectstatic": collectstatic, "check": check, "safety": safety}
READ_ONLY = {"state", "graph", "plan", "databases", "check", "safety"}


def main():
    if sys.argv[1:] == ["--session"]:  # many requests, one Django start-up (see _common.serve_session)
        end_session(serve_session(ACTIONS, READ_ONLY, after=_close_connections, typed_errors=True))
    sys.exit(serve(ACTIONS, name="django_state.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
