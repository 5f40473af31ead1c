"""Run with the project's own Python (`deploykit init --python`): what its Django settings say, as one JSON line.

Standalone on purpose (like the remote helpers): the controller's deploykit
may live in another environment than the project's Django, so this file is
run by path with that interpreter, in the project directory, and imports
nothing of deploykit. It imports the settings module only (no app code, no
database connection) and prints one line, `MARKER` + JSON, last on stdout;
whatever the settings print themselves is ignored by the reader.

    python probe.py SETTINGS_MODULE
"""
import importlib.util
import json
import os
import sys
import traceback

MARKER = "DEPLOYKIT-PROBE "


def _text(value):
    return "" if value is None else str(value)


def _local(app, project):
    """Whether an INSTALLED_APPS entry is a package of the project itself (found under its directory)."""
    top = app.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    where = (spec.submodule_search_locations and list(spec.submodule_search_locations)) or [spec.origin or ""]
    return any(os.path.realpath(w).startswith(project + os.sep) for w in where if w)


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - not installed, or no metadata
        return None


def probe(module):
    project = os.path.realpath(os.getcwd())
    if project not in [os.path.realpath(p or ".") for p in sys.path]:
        sys.path.insert(0, project)
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    try:
        import django
    except ImportError as exc:
        return {"ok": False, "stage": "django", "error": f"{type(exc).__name__}: {exc}"}
    from django.conf import settings
    try:
        apps = list(settings.INSTALLED_APPS)  # the first access imports the settings module
    except BaseException as exc:  # noqa: BLE001 - whatever the settings raise is the answer
        last = traceback.extract_tb(exc.__traceback__)[-1:] or None
        where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
        return {"ok": False, "stage": "settings", "error": f"{type(exc).__name__}: {exc}{where}"}
    databases = {}
    for alias, cfg in (getattr(settings, "DATABASES", None) or {}).items():
        databases[alias] = {key: _text(cfg.get(key)) for key in ("ENGINE", "NAME", "USER", "HOST", "PORT")}
    return {
        "ok": True,
        "django": django.get_version(),
        "gunicorn": _version("gunicorn"),
        "python": sys.executable,
        "project": project,
        "databases": databases,
        "media_root": _text(getattr(settings, "MEDIA_ROOT", "")),
        "static_root": _text(getattr(settings, "STATIC_ROOT", None)),
        "installed_apps": apps,
        "local_apps": [a for a in apps if _local(a, project)],
        "base_dir": _text(getattr(settings, "BASE_DIR", None)),
        "wsgi_application": _text(getattr(settings, "WSGI_APPLICATION", None)),
        "allowed_hosts": [str(h) for h in getattr(settings, "ALLOWED_HOSTS", [])],
        "debug": bool(getattr(settings, "DEBUG", False)),
    }


def main(argv):
    if len(argv) != 2:
        print("usage: probe.py SETTINGS_MODULE", file=sys.stderr)
        return 2
    doc = probe(argv[1])
    sys.stdout.flush()
    print(MARKER + json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
