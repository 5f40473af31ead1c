"""`deploykit init`: a Django project's first deploykit.yaml, process manager files and tasks.py line.

It reads the project (project.py: manage.py, the settings module, what the
settings say, imported by the project's own Python), fills the templates
(render.py, templates/ as package data), checks that the deploykit.yaml it
would write loads with deploykit's own loader, and only then writes
(files.py: beside, then renamed into place). It never replaces a file
without --force (the old one is then kept as `<name>.orig`), never rewrites
the user's tasks.py or requirements.txt, and a second run with nothing
changed changes nothing and says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import git

from ..config import parse_config
from ..config.yamltext import load_yaml
from ..errors import ConfigError
from .files import keep_aside, read_text, write_beside
from .project import DjangoProject, InitError, read_project
from .render import render_files, template

APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEPLOY_TO = re.compile(r"^/[A-Za-z0-9_./-]+$")  # written into supervisor and systemd files as it is
TASKS_LINE = "from deploykit.tasks import ns"
HAS_TASKS_LINE = re.compile(r"^\s*from\s+deploykit\.tasks\s+import\s+(?:.*[\s,(])?ns\b", re.M)

# what happened to each file
WRITTEN, REPLACED, APPENDED, UNCHANGED, KEPT, TO_ADD = "written", "replaced", "appended", "unchanged", "kept", "to add"
CHANGES = {WRITTEN, REPLACED, APPENDED}


@dataclass
class FileOutcome:
    path: str  # relative to the project
    action: str
    detail: str = ""
    orig: str | None = None  # where the replaced file was kept

    def doc(self) -> dict:
        return {"path": self.path, "action": self.action, "detail": self.detail, "orig": self.orig}


@dataclass
class InitResult:
    project: DjangoProject
    app: str
    deploy_to: str
    port: int
    files: list[FileOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(f.action in CHANGES for f in self.files)


def default_app(project: Path, settings_module: str) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", project.name.lower()).strip("-_")
    return name or settings_module.split(".")[0].lower()


def _check_options(app: str, deploy_to: str, port: int) -> None:
    if not APP_NAME.match(app):
        raise InitError(f"--app {app!r} is not a usable name", hint="use letters, digits, '_', '.' and '-'")
    if not DEPLOY_TO.match(deploy_to) or "/../" in f"{deploy_to}/":
        raise InitError(f"--deploy-to {deploy_to!r} is not an absolute path init can write into program files",
                        hint="give an absolute path of letters, digits, '_', '.', '-' and '/', e.g. /srv/" + app)
    if not 1 <= port <= 65535:
        raise InitError(f"--port {port} is out of range", hint="give the app's port, from 1 to 65535")


def _git_notes(project: Path) -> list[str]:
    try:
        repo = git.Repo(project, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return [f"{project} is not a git repository yet: deploykit releases git tags (git init, commit, "
                "git tag v1)"]
    top = Path(repo.working_tree_dir or project).resolve()
    if top != project.resolve():
        return [f"the git repository's top is {top}, not {project}: deploykit releases the whole tree, so "
                "manage.py must be at its top"]
    if not repo.tags:
        return ["the repository has no tag yet: release takes the newest tag (git tag v1), or --tag"]
    return []


def _requirements_notes(text: str | None) -> list[str]:
    if text is None:
        return []
    if not re.search(r"^\s*gunicorn\b", text, re.M | re.I):
        return ["requirements.txt does not list gunicorn: add it (the web program runs the release's "
                "own `python -m gunicorn`)"]
    return []


def _plan_rendered(project: Path, rel: str, text: str, force: bool) -> tuple[FileOutcome, str | None]:
    """What to do with one generated file: (outcome, text to write or None)."""
    existing = read_text(project / rel)
    if existing is None:
        return FileOutcome(rel, WRITTEN), text
    if existing == text:
        return FileOutcome(rel, UNCHANGED), None
    if not force:
        return FileOutcome(rel, KEPT, "differs from what init writes; --force replaces it (keeping it as "
                                      f"{Path(rel).name}.orig)"), None
    return FileOutcome(rel, REPLACED), text


def init_project(project: str | Path = ".", *, python: str, force: bool = False, port: int = 8000,
                 app: str | None = None, deploy_to: str | None = None) -> InitResult:
    """Read the project, then write what is missing (or, with force, differs). Raises InitError before writing."""
    found = read_project(project, python)
    root = found.dir
    app = app or default_app(root, found.settings_module)
    deploy_to = (deploy_to or f"/srv/{app}").rstrip("/") or "/"
    _check_options(app, deploy_to, port)
    rendered = render_files(found, app=app, deploy_to=deploy_to, port=port)
    config_path = root / "deploykit.yaml"
    try:  # the file init writes loads with deploykit's own loader, placeholder host and all
        parse_config(load_yaml(rendered.files["deploykit.yaml"], config_path, "it"), config_path)
    except ConfigError as exc:
        raise InitError(f"the deploykit.yaml init would write does not load: {exc.one_line()}",
                        hint="this is a bug of deploykit init: please report it with your settings") from None

    result = InitResult(found, app, deploy_to, port, notes=list(rendered.notes))
    todo: list[tuple[FileOutcome, str]] = []
    for rel in ("deploykit.yaml", f"deploy/supervisor/{app}.conf", f"deploy/systemd/{app}-web.service"):
        outcome, text = _plan_rendered(root, rel, rendered.files[rel], force)
        result.files.append(outcome)
        if text is not None:
            todo.append((outcome, text))

    tasks = read_text(root / "tasks.py")
    if tasks is None:
        outcome = FileOutcome("tasks.py", WRITTEN)
        todo.append((outcome, template("tasks.py.in").template))
    elif HAS_TASKS_LINE.search(tasks):
        outcome = FileOutcome("tasks.py", UNCHANGED, "already imports deploykit's tasks")
    else:
        outcome = FileOutcome("tasks.py", TO_ADD, f"yours is left as it is: add the line '{TASKS_LINE}'")
        result.notes.append(f"add this line to tasks.py (init never rewrites yours): {TASKS_LINE}")
    result.files.append(outcome)

    ignore_entry = template("gitignore.in").template.strip()
    ignore = read_text(root / ".gitignore")
    if ignore is None:
        outcome = FileOutcome(".gitignore", WRITTEN, f"{ignore_entry} (local state: journals)")
        todo.append((outcome, ignore_entry + "\n"))
    elif ignore_entry.strip("/") in {ln.strip().strip("/") for ln in ignore.splitlines()}:  # /x, x/, /x/, x
        outcome = FileOutcome(".gitignore", UNCHANGED, f"already ignores {ignore_entry}")
    else:
        outcome = FileOutcome(".gitignore", APPENDED, f"{ignore_entry} (local state: journals)")
        todo.append((outcome, ignore + ("" if ignore.endswith("\n") or not ignore else "\n") + ignore_entry + "\n"))
    result.files.append(outcome)

    requirements = read_text(root / "requirements.txt")
    if requirements is None:
        outcome = FileOutcome("requirements.txt", WRITTEN, "Django and gunicorn: commit it before you tag")
        todo.append((outcome, rendered.files["requirements.txt"]))
        result.notes.append("requirements.txt was missing: each release installs it, so commit it before you tag")
    else:
        outcome = FileOutcome("requirements.txt", UNCHANGED, "yours (never rewritten)")
        result.notes += _requirements_notes(requirements)
    result.files.append(outcome)
    result.notes += _git_notes(root)

    for outcome, text in todo:
        dest = root / outcome.path
        if outcome.action == REPLACED:
            outcome.orig = str(keep_aside(dest).relative_to(root))
            outcome.detail = f"the old one is kept as {outcome.orig}"
        write_beside(dest, text, replace=outcome.action in (REPLACED, APPENDED))
    return result
