"""What the Django helpers share: Django set up the app's way, its connections.

Standard library + the app's Django. A helper imports it with one line,
``from _django import (...)``; sent to a host, the controller puts this
file's text in place of that line (deploykit.transport.bundle), as it does
for _common.py.
"""

import os
import re
import sys


def _setup(args):
    """Django as the app sets it up: inside manage.py (shell -c) it is ready; run directly, from project_dir."""
    import django
    from django.apps import apps

    if apps.ready:  # inside manage.py (shell -c): the app set Django up its own way
        return django
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
    if args.get("offline") is not None:
        _offline_databases(args["offline"])
    django.setup()
    return django


def _offline_databases(engines):
    """Replace the settings' DATABASES, before anything connects, by databases of the same engines that
    cannot be reached (a socket directory that does not exist; SQLite in memory): what is asked is then
    answered without a database (the controller's copy of a tag, see django_state's `safety`)."""
    from django.conf import settings

    configured = dict(getattr(settings, "DATABASES", None) or {})
    engines = engines or {}
    out = {}
    for alias in sorted(set(configured) | set(engines)):
        engine = engines.get(alias) or (configured.get(alias) or {}).get("ENGINE") or "django.db.backends.sqlite3"
        sqlite = "sqlite" in engine
        out[alias] = {"ENGINE": engine, "NAME": ":memory:" if sqlite else "deploykit_offline", "USER": "",
                      "PASSWORD": "", "HOST": "" if sqlite else "/nonexistent/deploykit-offline", "PORT": "",
                      "OPTIONS": {}}
    settings.DATABASES = out


def _connection(args):
    from django.db import connections

    return connections[args.get("database") or "default"]


def _close_connections():
    from django.db import connections

    connections.close_all()
