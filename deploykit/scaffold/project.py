"""What `deploykit init` reads of a Django project: manage.py, its settings module, what the settings say.

The settings are imported by the project's own interpreter (`--python`) in a
subprocess running probe.py, so deploykit never needs the project's
requirements and the project's code never runs inside deploykit. Every
failure is one DeployError naming the problem and the fix; nothing is
written before this has succeeded.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeployError
from .probe import MARKER

PROBE = Path(__file__).with_name("probe.py")
PROBE_TIMEOUT = 120  # seconds: importing settings is quick, but a cold interpreter on a busy machine is not


class InitError(DeployError):
    """The project cannot be read: nothing was written."""


@dataclass
class DjangoProject:
    """A Django project as its settings describe it (paths as the settings resolve them on this machine)."""

    dir: Path
    settings_module: str
    settings_from: str  # "manage.py" or "DJANGO_SETTINGS_MODULE"
    python: str
    django: str
    gunicorn: str | None
    databases: dict[str, dict]
    media_root: str
    static_root: str
    installed_apps: list[str]
    local_apps: list[str]
    base_dir: str
    wsgi_application: str
    allowed_hosts: list[str] = field(default_factory=list)
    debug: bool = False

    @property
    def wsgi_target(self) -> str:
        """gunicorn's `module:callable` for WSGI_APPLICATION ('mysite.wsgi.application': 'mysite.wsgi:application')."""
        module, _, name = self.wsgi_application.rpartition(".")
        if module:
            return f"{module}:{name}"
        return f"{self.settings_module.rpartition('.')[0] or self.settings_module}.wsgi:application"

    def relative(self, path: str) -> str | None:
        """`path` relative to the project directory when it lies inside it (as in every release), else None."""
        if not path:
            return None
        real, top = os.path.realpath(path), os.path.realpath(self.dir)
        if real == top or not real.startswith(top + os.sep):
            return None
        return os.path.relpath(real, top).replace(os.sep, "/")


def find_manage_py(project: Path) -> Path:
    if not project.is_dir():
        raise InitError(f"no directory at {project}", hint="pass --project DIR, the directory that holds manage.py")
    manage = project / "manage.py"
    if manage.is_file():
        return manage
    below = sorted(p for p in project.glob("*/manage.py") if p.is_file())
    hint = (f"run 'deploykit init --project {below[0].parent}': deploykit releases the git tree whose top holds "
            "manage.py" if below else "run it in a Django project (django-admin startproject NAME .) or pass "
            "--project DIR")
    raise InitError(f"no manage.py in {project}", hint=hint)


def settings_in_manage_py(manage: Path) -> str | None:
    """The module of manage.py's `os.environ.setdefault("DJANGO_SETTINGS_MODULE", "...")`, if it has one."""
    try:
        tree = ast.parse(manage.read_text(encoding="utf-8"), str(manage))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "setdefault"
                and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args)
                and node.args[0].value == "DJANGO_SETTINGS_MODULE" and isinstance(node.args[1].value, str)):
            return node.args[1].value
    return None


def settings_module_of(manage: Path) -> tuple[str, str]:
    """(module, where it came from): manage.py's default (what the hosts run), else $DJANGO_SETTINGS_MODULE."""
    found = settings_in_manage_py(manage)
    if found:
        return found, "manage.py"
    env = os.environ.get("DJANGO_SETTINGS_MODULE", "").strip()
    if env:
        return env, "DJANGO_SETTINGS_MODULE"
    raise InitError(f"{manage} does not set DJANGO_SETTINGS_MODULE and the environment has none",
                    hint="set DJANGO_SETTINGS_MODULE=yourproject.settings and run init again")


def _python_hint(project: Path, python: str) -> str:
    for candidate in (".venv/bin/python", "venv/bin/python", "env/bin/python"):
        if (project / candidate).exists() and os.path.realpath(project / candidate) != os.path.realpath(python):
            return f"pass --python {project / candidate} (the project's own environment)"
    return "pass --python PATH, an interpreter where Django and the project's requirements are installed"


def read_project(project: str | os.PathLike, python: str) -> DjangoProject:
    """Find manage.py and the settings module, then ask `python` what the settings say."""
    project = Path(project).expanduser().absolute()
    if os.sep in python:  # a path is the user's, from where they typed it (a bare name is looked up in PATH)
        python = os.path.abspath(os.path.expanduser(python))
    manage = find_manage_py(project)
    module, source = settings_module_of(manage)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": module, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([python, str(PROBE), module], cwd=project, env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise InitError(f"no Python at {python}", hint=_python_hint(project, python)) from None
    except PermissionError:
        raise InitError(f"{python} cannot be run", hint=_python_hint(project, python)) from None
    except subprocess.TimeoutExpired:
        raise InitError(f"importing {module} with {python} took over {PROBE_TIMEOUT}s",
                        hint="make the settings importable without waiting on a network or a database") from None
    lines = [line[len(MARKER):] for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise InitError(f"{python} could not read the settings {module}: {last}", hint=_python_hint(project, python))
    doc = json.loads(lines[-1])
    if not doc["ok"]:
        if doc["stage"] == "django":
            raise InitError(f"{python} cannot import Django ({doc['error']})", hint=_python_hint(project, python))
        raise InitError(f"the settings {module} (from {source}) cannot be imported with {python}: {doc['error']}",
                        hint="fix the settings, or " + _python_hint(project, python).replace("pass", "run init with")
                        + "; nothing was written")
    return DjangoProject(dir=project, settings_module=module, settings_from=source, python=doc["python"],
                         django=doc["django"], gunicorn=doc["gunicorn"], databases=doc["databases"],
                         media_root=doc["media_root"], static_root=doc["static_root"],
                         installed_apps=doc["installed_apps"], local_apps=doc["local_apps"],
                         base_dir=doc["base_dir"], wsgi_application=doc["wsgi_application"],
                         allowed_hosts=doc["allowed_hosts"], debug=doc["debug"])
