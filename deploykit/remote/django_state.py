"""deploykit remote helper: a Django project's migration state.

Standalone (stdlib + the app's own Django): run with the app's Python as
`python django_state.py ACTION` with JSON arguments on stdin; prints one JSON
document. Uses Django's MigrationLoader and MigrationRecorder, never the text
output of manage.py.

Actions:
  state {project_dir, settings?, database?} -> {applied: {app: [name, ...]},
        leaves: {app: [name, ...]}, django: version}
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


def state(args):
    django = _setup(args)
    from django.db import connections
    from django.db.migrations.loader import MigrationLoader

    conn = connections[args.get("database") or "default"]
    loader = MigrationLoader(conn, ignore_no_migrations=True)
    order = {key: i for i, key in enumerate(_forwards(loader))}
    applied = {}
    for app, name in sorted(loader.applied_migrations, key=lambda k: (k[0], order.get(k, 1 << 30), k[1])):
        applied.setdefault(app, []).append(name)
    leaves = {}
    for app, name in loader.graph.leaf_nodes():
        leaves.setdefault(app, []).append(name)
    return {"ok": True, "changed": False, "applied": applied, "leaves": leaves,
            "django": django.get_version()}


def _forwards(loader):
    seen = []
    for leaf in loader.graph.leaf_nodes():
        for key in loader.graph.forwards_plan(leaf):
            if key not in seen:
                seen.append(key)
    return seen


ACTIONS = {"state": state}


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


if __name__ == "__main__":
    main()
