"""Each release's own Python environment, seen from the controller.

On each app host (built by the standalone helper remote/pyenv.py, run with
the base interpreter `python:`)::

    <deploy_to>/venvs/<key>/                 one environment per key, immutable once complete
    <deploy_to>/venvs/<key>/.deploykit-complete   written last: key inputs, pip freeze, own freeze
    <deploy_to>/releases/<id>/.venv -> <deploy_to>/venvs/<key>

key = sha256 of the base interpreter's real path and version, the release's
requirements (and the files they include), pip_args and
system_site_packages (then also the base venv's site-packages). Releases
with the same key share one environment; the app's processes find theirs
through `<deploy_to>/current/.venv`.

Everything deploykit runs with the app's code (manage.py, the Django helper,
`{python}` in install commands, hooks and health commands) uses
`<release>/.venv/bin/python`; `python:` only creates environments and runs
the stdlib helpers.
"""
from __future__ import annotations

import posixpath
import re

from . import layout
from .errors import DeployError
from .transport.host import q

VENVS = layout.VENVS
HELPER = "pyenv"


def env_python(release_dir: str) -> str:
    return posixpath.join(release_dir, ".venv", "bin", "python")


def app_python(config, host, release_dir: str) -> str:
    """A shell word naming the Python that runs the app's code in release_dir.

    The release's `.venv/bin/python`; `python:` when venv is off, or for a
    release made before deploykit gave each release its environment.
    """
    base = q(host.python)
    if config.venv is None:
        return base
    env_py = q(env_python(release_dir))
    return f'"$(if [ -x {env_py} ]; then echo {env_py}; else echo {base}; fi)"'


def app_python_path(ctx, host, release_dir: str) -> str:
    """The same as a path (one round trip to the host)."""
    if ctx.config.venv is not None:
        path = env_python(release_dir)
        if host.run(f"test -x {q(path)}", check=False, read_only=True).ok:
            return path
    return host.python


def render_app(ctx, host, text: str, release_dir: str) -> str:
    """host.render() where `{python}` is the Python of the release in release_dir."""
    values = dict(host.spec.template_vars())
    if "{python}" in text:
        values["python"] = app_python_path(ctx, host, release_dir)
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]) if m[1] in values else m[0], text)


def _args(ctx, host, release_dir: str, **extra) -> dict:
    spec = ctx.config.venv
    return {"release_dir": release_dir, "requirements": spec.requirements,
            "pip_args": [host.render(a) for a in spec.pip_args],
            "system_site_packages": spec.system_site_packages,
            "venvs_dir": layout.venvs_dir(host), **extra}


def record_of(doc: dict) -> dict:
    """What the registry keeps of a host's environment for a release."""
    inputs = doc.get("inputs") or {}
    return {"key": doc["key"], "path": doc["path"], "python": inputs.get("python"),
            "python_version": (inputs.get("version") or "").split()[0] or None,
            "requirements_sha256": inputs.get("requirements"), "pip_args": inputs.get("pip_args"),
            "system_site_packages": inputs.get("system_site_packages"),
            "freeze": doc.get("freeze") or [], "own_freeze": doc.get("own_freeze") or []}


def ensure_env(ctx, host, release_dir: str, constraints: list[str] | None = None) -> dict:
    """The release's environment, reused when its key exists, else built; `.venv` linked to it.

    constraints (a recorded own freeze) pin what a rebuild installs. Returns
    the helper's answer (key, path, reused, seconds, freeze, own_freeze, ...).
    """
    args = _args(ctx, host, release_dir, constraints=constraints or [])
    doc = host.helper(HELPER, "ensure", args, check=False, track="venv")
    if not doc.get("ok"):
        req = posixpath.join(release_dir, ctx.config.venv.requirements)
        error = doc.get("error") or "no answer"
        if "not found" in error and "requirements" in error:
            raise DeployError(f"{host.name}: {req} not found: each release's environment is built from it",
                              hint="add it to the repository, set venv.requirements, or 'venv: false' for the shared interpreter")
        raise DeployError(f"{host.name}: cannot build the release's Python environment: {error}",
                          hint=f"run the same pip install on {host.name} to see why (pip_args: "
                               f"{' '.join(args['pip_args']) or 'none'}); nothing live was changed")
    with ctx.lock:
        ctx.state.env[host.name] = record_of(doc)
    return doc


def ensure_recorded_env(ctx, host, release_dir: str, entry: dict) -> dict:
    """ensure_env for a release recorded in the registry: a rebuild installs exactly its recorded own freeze."""
    envs = entry.get("env") or {}
    rec = envs.get(host.name) or next(iter(envs.values()), {})
    return ensure_env(ctx, host, release_dir, constraints=rec.get("own_freeze"))


def describe(doc: dict) -> str:
    key = doc["key"]
    if doc.get("reused"):
        return f"env {key} reused ({doc['seconds']:.2f} s)"
    how = " from the recorded freeze" if doc.get("constrained") else ""
    return f"env {key} built{how} in {doc['seconds']:.1f} s ({doc.get('method')}): {', '.join(doc.get('own_freeze') or []) or 'nothing of its own'}"


def prune_envs(host) -> list[str]:
    """Remove the environments that no release directory left on the host links to."""
    doc = host.helper(HELPER, "prune", {"deploy_to": host.deploy_to})
    return doc.get("removed", [])


def registry_fields(ctx) -> dict:
    """Fields of a release's registry entry: per host, its environment's key and freezes."""
    envs = ctx.state.env
    return {"env": dict(envs)} if envs else {}
