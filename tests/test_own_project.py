"""A user's own Django project, from `django-admin startproject` to releases, a rollback and a recovery.

Nothing of the sample project is used: the project is made here with the
test venv's Django (`startproject`, `startapp`, `makemigrations`), committed
and tagged like a user would (v1: an app with a model and a page; v2: a
second migration and a visible change; v3-broken: a page that raises, so
its health check fails). `deploykit init` (the console script) writes its
files; the test then fills in only what init marks as placeholders (the
host address, deploy_to, python, the supervisord.conf and the SSH files of
the rig's host, and, because the rig has no network, the venv lines of a
host without PyPI), installs the generated supervisor program file into the
host's supervisord, creates the SQLite file the config's comment asks for,
and runs `deploykit check`, `release`, `rollback` as an operator would.
Every step is checked by what gunicorn answers, the rows and migrations in
the SQLite database written through the app, and `current`.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from deploykit_testing.ports import free_port
from deploykit_testing.supervisor import Supervisor

pytestmark = pytest.mark.rig

BIN = Path(sys.executable).parent
APP = "blog"  # the project directory's name: init's default app name
STAGE = "production"

MODELS_V1 = '''from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
'''

MODELS_V2 = MODELS_V1 + '''    pinned = models.BooleanField(default=False)
'''

VIEWS = '''from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Note


def index(request):
    {body}


@csrf_exempt
def add(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    note = Note.objects.create(text=request.POST["text"])
    return JsonResponse({{"id": note.id, "text": note.text}}, status=201)
'''

INDEX_V1 = 'return HttpResponse(f"notes v1: {Note.objects.count()} notes", content_type="text/plain")'
INDEX_V2 = ('return HttpResponse(f"notes v2: {Note.objects.count()} notes, "\n'
            '                        f"{Note.objects.filter(pinned=True).count()} pinned", content_type="text/plain")')
INDEX_BROKEN = 'raise RuntimeError("broken on purpose")'

URLS = '''from django.contrib import admin
from django.urls import path

from notes import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", views.index),
    path("notes/", views.add),
]
'''


# --------------------------------------------------------------------------- the user's side

def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed beside {sys.executable} (pip install -e '.[dev]')"
    return str(path)


def user_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "PYTHONPATH"}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.org",
            "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.org"}


def sh(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def commit_and_tag(project: Path, tag: str) -> None:
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", tag)
    sh(project, "git", "tag", tag)


def make_project(project: Path) -> None:
    """startproject + startapp + makemigrations, three tags, as a developer makes them."""
    project.mkdir()
    python = sys.executable
    sh(project, tool("django-admin"), "startproject", "blogsite", ".")
    sh(project, python, "manage.py", "startapp", "notes")
    settings = project / "blogsite" / "settings.py"
    text = settings.read_text()
    assert text.count("INSTALLED_APPS = [\n") == 1
    settings.write_text(text.replace("INSTALLED_APPS = [\n", "INSTALLED_APPS = [\n    'notes',\n"))
    (project / "blogsite" / "urls.py").write_text(URLS)
    (project / "notes" / "models.py").write_text(MODELS_V1)
    (project / "notes" / "views.py").write_text(VIEWS.format(body=INDEX_V1))
    sh(project, python, "manage.py", "makemigrations", "notes")
    versions = {name: sh(project, python, "-c", f"import importlib.metadata as m; print(m.version({name!r}))")
                .stdout.strip() for name in ("Django", "gunicorn")}
    (project / "requirements.txt").write_text("".join(f"{k}=={v}\n" for k, v in versions.items()))
    (project / ".gitignore").write_text("db.sqlite3\n__pycache__/\n")
    sh(project, "git", "init", "-q", "-b", "main")
    commit_and_tag(project, "v1")

    (project / "notes" / "models.py").write_text(MODELS_V2)
    sh(project, python, "manage.py", "makemigrations", "notes", "--name", "note_pinned")
    (project / "notes" / "views.py").write_text(VIEWS.format(body=INDEX_V2))
    commit_and_tag(project, "v2")

    (project / "notes" / "views.py").write_text(VIEWS.format(body=INDEX_BROKEN))
    commit_and_tag(project, "v3-broken")
    (project / "db.sqlite3").unlink(missing_ok=True)  # makemigrations' local database: not the hosts' concern


def fill_in(path: Path, edits: list[tuple[str, str]]) -> None:
    """Replace each placeholder init wrote (exactly once each), as a user does in an editor."""
    text = path.read_text()
    for old, new in edits:
        assert text.count(old) == 1, f"{path.name}: expected one {old!r}:\n{text}"
        text = text.replace(old, new)
    path.write_text(text)


def deploykit(project: Path, *args: str) -> subprocess.CompletedProcess:
    """The `deploykit` console script, run in the project as an operator runs it."""
    return subprocess.run([tool("deploykit"), *args], cwd=project, env=user_env(), capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)


def json_lines(cp: subprocess.CompletedProcess) -> list[dict]:
    lines = cp.stdout.splitlines()
    assert lines, cp.stderr
    docs = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a --json stdout line is not JSON: {line!r}\n{cp.stderr[-2000:]}")
    assert docs[-1]["event"] == "result" and all(d.get("event") != "result" for d in docs[:-1]), docs[-1]
    return docs


# --------------------------------------------------------------------------- what the host shows

def http(port: int, path: str = "/", data: dict | None = None) -> tuple[int, str]:
    """(status, body) from the host's gunicorn; connection refusals (a restart) are retried for a while."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=body, timeout=15) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, text FROM notes_note ORDER BY id").fetchall()


def columns(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[1] for r in con.execute("PRAGMA table_info(notes_note)")]


def migrations(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY id")]


def live(deploy_to: Path) -> tuple[str, list[str]]:
    """(the release `current` points at, [commit, tag] of its REVISION)."""
    current = deploy_to / "current"
    return os.readlink(current), (current / "REVISION").read_text().split()


# --------------------------------------------------------------------------- the test

def test_own_project_from_init_to_rollback_and_recovery(tmp_path, ssh_rig_factory):
    project = tmp_path / APP
    make_project(project)
    port = free_port("127.0.0.1")

    init = deploykit(project, "init", "--port", str(port))
    assert init.returncode == 0, init.stdout + init.stderr
    assert "next: put your server in deploykit.yaml" in init.stdout
    for name in ("deploykit.yaml", f"deploy/supervisor/{APP}.conf", f"deploy/systemd/{APP}-web.service", "tasks.py"):
        assert (project / name).is_file(), name
    assert (project / "tasks.py").read_text().splitlines()[-1] == "from deploykit.tasks import ns"
    assert (project / ".gitignore").read_text() == "db.sqlite3\n__pycache__/\n.deploykit/\n"
    again = deploykit(project, "init", "--port", str(port), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    result = json_lines(again)[-1]
    assert result["ok"] is True and result["code"] == 0 and result["changed"] is False
    assert {f["action"] for f in result["files"]} == {"unchanged"}, result["files"]

    rig = ssh_rig_factory(1)
    host = rig.hosts[0]
    deploy_to = host.deploy_to
    db = deploy_to / "shared" / "db.sqlite3"

    # the host, prepared as README's "Install into your own project" says: the program file installed
    # in supervisord (deploy_to and the user filled in), the SQLite file the config's comment asks for
    conf_d = host.root / "conf.d"
    conf_d.mkdir()
    program = conf_d / f"{APP}.conf"
    shutil.copy(project / "deploy" / "supervisor" / f"{APP}.conf", program)
    fill_in(program, [("user=deploy ", f"user={rig.user} ")])
    program.write_text(program.read_text().replace(f"/srv/{APP}", str(deploy_to)))
    sup = Supervisor.start(host.root / "sv", {}, includes=[conf_d / "*.conf"])
    try:
        db.parent.mkdir(parents=True)
        db.touch()

        fill_in(project / "deploykit.yaml", [
            ("deploy@your-server.invalid", f"{rig.user}@{host.address}:{host.port}"),
            (f"deploy_to: /srv/{APP} ", f"deploy_to: {deploy_to} "),
            ("python: /usr/bin/python3 ", f"python: {sys.executable} "),
            ("conf: /etc/supervisor/supervisord.conf}", f"conf: {sup.conf}}}"),
            ("known_hosts: ~/.ssh/known_hosts ", f"known_hosts: {rig.known_hosts} "),
            ("# identity: ~/.ssh/id_ed25519 ", f"identity: {rig.client_key} "),
            # no network here: the environment is built from what the host's Python has
            ("system_site_packages: false", "system_site_packages: true"),
            ("pip_args: []", "pip_args: [--no-index]"),
        ])

        check = deploykit(project, "check", "--stage", STAGE)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "every check passed" in check.stdout
        assert not (deploy_to / "current").exists() and not (deploy_to / "releases").exists()

        # v1, with --json: every stdout line is one JSON object, the result last
        cp = deploykit(project, "release", "--stage", STAGE, "--tag", "v1", "--json")
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
        docs = json_lines(cp)
        assert docs[-1]["ok"] is True and docs[-1]["code"] == 0 and docs[-1]["command"] == "release"
        assert any(d.get("event") == "step" and d.get("step") == "health_check" for d in docs)
        v1_release, revision = live(deploy_to)
        assert revision[1] == "v1"
        assert os.path.realpath(deploy_to / "current" / "db.sqlite3") == str(db.resolve())
        assert http(port) == (200, "notes v1: 0 notes")
        status, body = http(port, "/notes/", {"text": "first"})
        assert status == 201 and json.loads(body)["text"] == "first"
        assert rows(db) == [(1, "first")] and migrations(db) == ["0001_initial"]
        assert sup.status(f"{APP}-web") == "RUNNING"

        # v2: its migration applied, its page served, the rows kept
        cp = deploykit(project, "release", "--stage", STAGE, "--tag", "v2")
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
        assert live(deploy_to)[1][1] == "v2"
        assert migrations(db) == ["0001_initial", "0002_note_pinned"] and "pinned" in columns(db)
        assert http(port) == (200, "notes v2: 1 notes, 0 pinned")
        assert http(port, "/notes/", {"text": "second"})[0] == 201
        assert rows(db) == [(1, "first"), (2, "second")]

        # back to v1: 0002 unapplied with v2's code, the code switched, every row kept
        cp = deploykit(project, "rollback", "--stage", STAGE, "--to-tag", "v1")
        assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
        assert live(deploy_to) == (v1_release, revision)
        assert migrations(db) == ["0001_initial"] and "pinned" not in columns(db)
        assert rows(db) == [(1, "first"), (2, "second")]
        assert http(port) == (200, "notes v1: 2 notes")

        # v3-broken: its health check fails, the release is undone: exit 1 and v1 serves as before
        cp = deploykit(project, "release", "--stage", STAGE, "--tag", "v3-broken", "--json")
        assert cp.returncode == 1, cp.stdout[-3000:] + cp.stderr[-3000:]
        result = json_lines(cp)[-1]
        assert result["ok"] is False and result["code"] == 1 and result["failed_phase"] == "verify", result
        assert result["recovery"]["ok"] is True, result["recovery"]
        assert live(deploy_to) == (v1_release, revision)
        assert migrations(db) == ["0001_initial"] and "pinned" not in columns(db)
        assert rows(db) == [(1, "first"), (2, "second")]
        assert http(port) == (200, "notes v1: 2 notes")
        assert sup.status(f"{APP}-web") == "RUNNING"
        assert [p.name for p in (deploy_to / "failed").iterdir()], "the broken release is kept aside"
    finally:
        sup.shutdown()
