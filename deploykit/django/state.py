"""Where the on-host state lives, seen from inside a release."""
from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from .. import layout


def deploy_root() -> Path:
    """settings.DEPLOYKIT_ROOT, else <deploy_to> derived from BASE_DIR (<deploy_to>/releases/<id>)."""
    root = getattr(settings, "DEPLOYKIT_ROOT", None)
    if root:
        return Path(root)
    base = Path(getattr(settings, "BASE_DIR", Path.cwd())).resolve()
    if base.parent.name == layout.RELEASES:
        return base.parent.parent
    raise CommandError("cannot find the deploy root: set DEPLOYKIT_ROOT in settings "
                       f"(the directory holding {layout.RELEASES}/, {layout.CURRENT} and {layout.STATE_DIR}/)")


def registry() -> dict:
    path = deploy_root() / layout.REGISTRY_FILE
    if not path.exists():
        raise CommandError(f"no release registry at {path}: nothing was released here with deploykit")
    return json.loads(path.read_text())
