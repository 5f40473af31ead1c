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
    django.setup()
    return django


def _connection(args):
    from django.db import connections

    return connections[args.get("database") or "default"]


def _close_connections():
    from django.db import connections

    connections.close_all()
