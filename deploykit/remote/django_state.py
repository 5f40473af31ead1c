"""deploykit remote helper: a Django project's migration state, plans and unapply.

Standalone (stdlib + the app's own Django): run with the app's Python as
`python django_state.py ACTION` with JSON arguments on stdin; prints one JSON
document. Uses Django's MigrationLoader, MigrationRecorder and
MigrationExecutor, never the text output of manage.py.

Actions (all take project_dir, settings?, database?):
  state   -> {applied: {app: [name, ...]}, leaves: {app: [name, ...]}, django}
  plan    {targets: [[app, name|null], ...]} -> {steps: [{app, name, backwards,
           irreversible: [op descriptions], sql: [...]}], irreversible: [...]}
  migrate {targets: [[app, name|null], ...]} -> {changed, unapplied: [...], applied: [...], state}
  databases -> {databases: {alias: {engine, name, host, port}}}   (read-only)
"""
import json
import os
import re
import sys


def _setup(args):
    project_dir = args["project_dir"]
    os.chdir(project_dir)
    sys.path.insert(0, project_dir)
    settings = args.get("settings")
    if not settings:
        try:
            with open(os.path.join(project_dir, "manage.py")) as fh:
                m = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", fh.read())
            settings = m.group(1) if m else None
        except OSError:
            settings = None
    if settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings
    import django

    django.setup()
    return django


def _connection(args):
    from django.db import connections

    return connections[args.get("database") or "default"]


def _forwards(graph):
    seen, order = set(), []
    for leaf in sorted(graph.leaf_nodes()):
        for key in graph.forwards_plan(leaf):
            if key not in seen:
                seen.add(key)
                order.append(key)
    return order


def read_state(connection):
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connection, ignore_no_migrations=True)
    order = {key: i for i, key in enumerate(_forwards(loader.graph))}
    applied = {}
    for app, name in sorted(loader.applied_migrations, key=lambda k: (k[0], order.get(k, 1 << 30), k[1])):
        applied.setdefault(app, []).append(name)
    leaves = {}
    for app, name in sorted(loader.graph.leaf_nodes()):
        leaves.setdefault(app, []).append(name)
    return {"applied": applied, "leaves": leaves}


def state(args):
    django = _setup(args)
    out = read_state(_connection(args))
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
    executor = MigrationExecutor(connection)
    executor.migrate(targets, plan=executor.migration_plan(targets))
    return {"ok": True, "changed": bool(steps),
            "unapplied": ["%s.%s" % (s["app"], s["name"]) for s in steps if s["backwards"]],
            "applied": ["%s.%s" % (s["app"], s["name"]) for s in steps if not s["backwards"]],
            "state": read_state(connection)}


def databases(args):
    """The databases Django itself uses, per alias: engine, name, host, port (never the password)."""
    _setup(args)
    from django.conf import settings

    out = {}
    for alias, conf in settings.DATABASES.items():
        out[alias] = {"engine": conf.get("ENGINE") or "", "name": str(conf.get("NAME") or ""),
                      "host": conf.get("HOST") or "", "port": str(conf.get("PORT") or "")}
    return {"ok": True, "changed": False, "databases": out}


ACTIONS = {"state": state, "plan": plan, "migrate": migrate, "databases": databases}


def main():
    try:
        action = sys.argv[1] if len(sys.argv) > 1 else ""
        if action not in ACTIONS:
            raise ValueError("unknown action %r (known: %s)" % (action, ", ".join(sorted(ACTIONS))))
        raw = sys.stdin.read()
        args = json.loads(raw) if raw.strip() else {}
        out = ACTIONS[action](args)
    except Exception as exc:  # one JSON document, whatever happened
        sys.stdout.write(json.dumps({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc),
                                     "kind": type(exc).__name__}) + "\n")
        sys.exit(1)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
