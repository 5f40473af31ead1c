"""Migrations judged for a release while the old code still serves (a rolling release).

The plan of the migrations from the live release to a revision is read with
Django's MigrationExecutor and each operation classified safe, review or
unsafe (remote/_migsafety.py, through django_state's `safety` action), where
Django's objects are: with the *new* code, which has the migration files.

Where that code is:

- on the host, when a release directory of the revision's commit is there
  (the release under way after its upload, or a release of that commit made
  before): the helper runs inside that release's manage.py with its own
  Python environment, against the real database. This is what a release does.
- else on the controller, from a `git archive` of the revision, the helper run
  directly with a Python that imports the project's settings (`--python`,
  default the one running deploykit), its DATABASES replaced by unreachable
  databases of the engines the host's Django reports, and the applied
  migrations read (read-only) from the live release on the host. Why not put
  the code on the host: `deploykit plan` is read-only (its hosts refuse every
  write, as a dry-run's do), and a tag's code with its own environment on a
  host is exactly a release's upload and install, under the stage lock. The
  classification is the same either way (it reads the operations and the
  project states); the SQL lacks only the names of existing constraints,
  which only the database knows (placeholders; the locks do not depend on them).

unsafe_operations/refuse_unsafe are what a rolling release calls on the plan
before anything changes.
"""
from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import tarfile
from pathlib import Path

from ..djangoapp import django_databases, django_helper, manage_env, migration_state
from ..errors import DeployError, HostCommandFailed, UnsafeForRollingRelease
from ..gitrepo import archive
from ..state.releases import Registry
from ..transport.bundle import helper_source

HELPER = "django_state"
CODE_STATUSES = ("live", "superseded", "rolled-back")  # releases whose directory holds their whole code
DJANGO_ENGINES = {"postgresql": "django.db.backends.postgresql", "sqlite": "django.db.backends.sqlite3"}


def code_on_host(ctx, host, commit: str) -> str | None:
    """A release directory on host holding the code of `commit`: the release under way (after its upload),
    else the newest recorded release of that commit whose directory is still there."""
    candidates = []
    if ctx.release_id and ctx.revision is not None and ctx.revision.commit == commit:
        candidates.append(ctx.release_dir(host))
    for entry in reversed(Registry.load(host).releases):
        if entry.get("commit") == commit and entry.get("status") in CODE_STATUSES:
            candidates.append(ctx.release_dir(host, entry["id"]))
    for path in candidates:
        if host.exists(posixpath.join(path, "manage.py")):
            return path
    return None


def classify_in(ctx, host, release_dir: str) -> dict:
    """The `safety` answer of the Django in release_dir on host (its own Python, the real database)."""
    doc = django_helper(ctx, host, release_dir, "safety")
    doc["source"] = {"where": "host", "host": host.name, "release_dir": release_dir}
    return doc


def live_facts(ctx, host) -> tuple[list, dict, str | None]:
    """(applied migrations as [[app, name]], {alias: ENGINE}, live release dir or None), read-only, from the
    live release's Django; with no live release: nothing applied, the engines of deploykit.yaml."""
    live = Registry.load(host).live()
    live_dir = ctx.release_dir(host, live["id"]) if live else None
    if live_dir and host.exists(posixpath.join(live_dir, "manage.py")):
        state = migration_state(ctx, host, live_dir)
        rows = sorted({(app, name) for field in ("applied", "replaced", "unmatched")
                       for app, names in (state.get(field) or {}).items() for name in names})
        engines = {alias: cfg.get("ENGINE") for alias, cfg in django_databases(ctx, host, live_dir).items()}
        return [list(r) for r in rows], engines, live_dir
    engines = {db.alias: DJANGO_ENGINES.get(db.engine, db.engine) for db in ctx.config.databases}
    return [], engines, None


def _extract(tar: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    with tarfile.open(tar) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(dest, filter="data")
        else:  # Python < 3.11.4
            archive.extractall(dest)


def classify_checkout(ctx, host, revision, python: str | None = None) -> dict:
    """The `safety` answer computed on the controller from a checkout of `revision` (see the module doc)."""
    python = python or sys.executable
    applied, engines, live_dir = live_facts(ctx, host)
    tree = ctx.temp_dir() / f"plan-{revision.commit[:12]}"
    if not tree.exists():
        _extract(archive(ctx.config.repo, revision.commit, ctx.temp_dir() / f"plan-{revision.commit}.tar"), tree)
    program = ctx.temp_dir() / f"deploykit-{HELPER}.py"
    program.write_text(helper_source(HELPER))
    args = {"project_dir": str(tree), "applied": applied, "offline": engines}
    if ctx.config.settings_module:
        args["settings"] = ctx.config.settings_module
    env = {**os.environ, **(manage_env(ctx) or {}), "DEPLOYKIT_READ_ONLY": "1"}
    name = revision.tag or revision.commit[:10]
    hint = (f"release {name} first (a release classifies with its own code on the host), or pass --python an "
            "interpreter that has the app's requirements")
    try:
        proc = subprocess.run([python, str(program), "safety"], input=json.dumps(args), cwd=tree, env=env,
                              capture_output=True, text=True, timeout=ctx.config.command_timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"cannot classify the migrations of {name} on the controller with {python}: {exc}",
                          hint=hint) from None
    lines = proc.stdout.strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not doc.get("ok"):
        said = (doc or {}).get("error") or (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise DeployError(f"cannot classify the migrations of {name} on the controller with {python}: {said}",
                          hint=hint)
    doc["source"] = {"where": "controller", "python": python, "checkout": str(tree), "host": host.name,
                     "state_from": live_dir,
                     "why": f"the code of {name} is not on {host.name} yet (only a release puts it there)"}
    return doc


def migration_plan(ctx, host, revision, python: str | None = None) -> dict:
    """The forward plan from what the database has to `revision`, each operation classified (the helper's
    `safety` answer, see remote/django_state.py) + source, from (the live release) and to (the revision)."""
    where = code_on_host(ctx, host, revision.commit)
    try:
        doc = classify_in(ctx, host, where) if where else classify_checkout(ctx, host, revision, python)
    except HostCommandFailed as exc:
        raise DeployError(f"cannot classify the migrations of {revision.tag or revision.commit[:10]}: "
                          f"{exc.one_line()}", hint="run 'manage.py check' in that release on the host") from None
    live = Registry.load(host).live()
    doc["from"] = {k: live.get(k) for k in ("id", "tag", "commit")} if live else None
    doc["to"] = {"tag": revision.tag, "commit": revision.commit}
    return doc


def operations(plan: dict):
    """(step, operation) of every operation of a plan, in order."""
    for step in plan.get("steps") or []:
        for op in step.get("operations") or []:
            yield step, op


def unsafe_operations(plan: dict) -> list[dict]:
    """The operations of a plan the old code does not survive, in plan order: each {app, migration, index,
    operation, describe, why, lock_text}. A step that unapplies a migration counts as one."""
    out = []
    for step in plan.get("steps") or []:
        if step.get("backwards"):
            out.append({"app": step["app"], "migration": step["name"], "index": 0, "operation": "unapply",
                        "describe": f"unapply {step['app']}.{step['name']}", "why": step.get("why") or "",
                        "lock_text": ""})
        for op in step.get("operations") or []:
            if op["classification"] == "unsafe":
                out.append({"app": step["app"], "migration": step["name"], "index": op["index"],
                            "operation": op["operation"], "describe": op["describe"], "why": op["why"],
                            "lock_text": op.get("lock_text") or ""})
    return out


def refuse_unsafe(plan: dict) -> None:
    """Raise UnsafeForRollingRelease when a plan has an operation the old code does not survive."""
    unsafe = unsafe_operations(plan)
    if unsafe:
        raise UnsafeForRollingRelease(unsafe)


def counts_text(plan: dict) -> str:
    c = plan.get("counts") or {}
    n = sum(c.values())
    return (f"{len(plan.get('steps') or [])} migration(s), {n} operation(s): {c.get('unsafe', 0)} unsafe, "
            f"{c.get('review', 0)} to review, {c.get('safe', 0)} safe")


def source_text(plan: dict) -> str:
    src = plan.get("source") or {}
    if src.get("where") == "host":
        return f"classified on {src.get('host')} with the code in {src.get('release_dir')}"
    return (f"classified on the controller ({src.get('python')}) from a checkout: {src.get('why')}; applied "
            f"migrations read from {src.get('host')}" + ("" if src.get("state_from") else " (no live release)"))


def plan_lines(plan: dict) -> list[str]:
    """One line per operation, for a step's diff and plain output."""
    lines = []
    for step, op in operations(plan):
        lines.append(f"{op['classification']:<6} {step['app']}.{step['name']} #{op['index']} {op['describe']} "
                     f"[{op.get('lock_text') or '-'}]: {op['why']}")
    return lines
