"""`deploykit init` on real `django-admin startproject` projects, without hosts.

The settings are really imported (by the test venv's Python, as `--python`
would); what init writes is read back with deploykit's own loader, and its
promises are checked on the files: nothing replaced without --force (then
the old file kept as NAME.orig), the user's tasks.py never rewritten, the
.gitignore entry appended once, a second run changing nothing, a project
whose settings cannot be imported refused in one line with nothing written.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploykit.config import load_config
from deploykit.scaffold import init_project
from deploykit.scaffold.project import InitError

BIN = Path(sys.executable).parent


def env(**extra) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "PYTHONPATH"}
    return {**base, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def startproject(dir: Path, name: str = "mysite") -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "django-admin"), "startproject", name, str(dir)], check=True, capture_output=True,
                   env=env(), timeout=120)
    return dir


def deploykit(cwd: Path, *args: str, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "deploykit"), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env(**extra_env), stdin=subprocess.DEVNULL)


def tree(dir: Path) -> dict[str, str]:
    return {str(p.relative_to(dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dir.rglob("*")) if p.is_file()}


def append_settings(project: Path, text: str, name: str = "mysite") -> None:
    settings = project / name / "settings.py"
    settings.write_text(settings.read_text() + "\n" + text)


def test_a_fresh_project_gets_a_config_that_loads_as_written(tmp_path):
    project = startproject(tmp_path / "shop")
    cp = deploykit(project, "init")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    written = {"deploykit.yaml", "deploy/supervisor/shop.conf", "deploy/systemd/shop-web.service", "tasks.py",
               ".gitignore", "requirements.txt"}
    assert written <= set(tree(project)), sorted(tree(project))
    assert not [p for p in project.rglob("*") if p.name.endswith((".orig", ".init-tmp")) or p.name == "__pycache__"]

    cfg = load_config(project / "deploykit.yaml")  # placeholder host and all
    assert cfg.app == "shop" and cfg.settings_module == "mysite.settings" and cfg.deploy_to == "/srv/shop"
    (host,) = cfg.stages["production"]
    assert (host.user, host.hostname, host.port) == ("deploy", "your-server.invalid", 22)
    assert host.roles == {"app", "primary"} and host.vars == {"port": 8000}
    text = (project / "deploykit.yaml").read_text()
    assert "# FILL IN" in text and "\n    # headers: {Host: " in text and "{ssh_port}" in text
    (db,) = cfg.databases
    assert (db.alias, db.engine, db.name) == ("default", "sqlite", "shared/db.sqlite3")
    assert cfg.shared == ["db.sqlite3"] and cfg.data_paths == [] and cfg.collectstatic is False
    http, manage = cfg.health
    assert (http.kind, http.url, http.expect_status) == ("http", "http://127.0.0.1:{port}/", 200)
    assert (manage.kind, manage.command) == ("manage", "check")
    (web,) = cfg.processes
    assert (web.manager, web.program, web.conf) == ("supervisor", "shop-web", "/etc/supervisor/supervisord.conf")

    conf = (project / "deploy" / "supervisor" / "shop.conf").read_text()
    assert "[program:shop-web]\n" in conf
    assert ("command=/srv/shop/current/.venv/bin/python -m gunicorn mysite.wsgi:application "
            "--bind 127.0.0.1:8000") in conf
    for option in ("directory=/srv/shop/current", "autorestart=true", "stopasgroup=true", "killasgroup=true"):
        assert f"\n{option}\n" in conf, option
    unit = (project / "deploy" / "systemd" / "shop-web.service").read_text()
    assert "\nWorkingDirectory=/srv/shop/current\n" in unit and "--bind 127.0.0.1:8000" in unit
    assert "sudo cp deploy/systemd/shop-web.service /etc/systemd/system/" in unit
    assert (project / "tasks.py").read_text().splitlines()[-1] == "from deploykit.tasks import ns"
    assert (project / ".gitignore").read_text() == ".deploykit/\n"
    assert "gunicorn" in (project / "requirements.txt").read_text()

    before = tree(project)
    again = deploykit(project, "init")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do, nothing was changed" in again.stdout
    assert tree(project) == before


def test_replacing_needs_force_and_keeps_the_old_file(tmp_path):
    project = startproject(tmp_path / "blog")
    init_project(project, python=sys.executable)
    config = project / "deploykit.yaml"
    mine = config.read_text().replace("deploy@your-server.invalid", "me@web1.example.org")
    config.write_text(mine)

    kept = init_project(project, python=sys.executable, port=8100)
    assert {f.path: f.action for f in kept.files}["deploykit.yaml"] == "kept" and not kept.changed
    assert config.read_text() == mine
    assert not (project / "deploykit.yaml.orig").exists()

    forced = init_project(project, python=sys.executable, port=8100, force=True)
    actions = {f.path: (f.action, f.orig) for f in forced.files}
    assert actions["deploykit.yaml"] == ("replaced", "deploykit.yaml.orig")
    assert actions["deploy/supervisor/blog.conf"] == ("replaced", "deploy/supervisor/blog.conf.orig")
    assert (project / "deploykit.yaml.orig").read_text() == mine
    assert "vars: {port: 8100}" in config.read_text() and "127.0.0.1:8100" in \
        (project / "deploy" / "supervisor" / "blog.conf").read_text()
    config.write_text(mine)
    init_project(project, python=sys.executable, port=8100, force=True)
    assert (project / "deploykit.yaml.orig").read_text() == mine  # an earlier .orig is never overwritten
    assert (project / "deploykit.yaml.orig.1").read_text() == mine


def test_the_users_tasks_py_and_gitignore_are_respected(tmp_path):
    project = startproject(tmp_path / "site")
    tasks = "from invoke import task\n\n\n@task\ndef hello(c):\n    print('hi')\n"
    (project / "tasks.py").write_text(tasks)
    (project / ".gitignore").write_text("*.pyc\n/media")  # no newline at the end
    cp = deploykit(project, "init", "--json")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    docs = [json.loads(line) for line in cp.stdout.splitlines()]
    result = docs[-1]
    assert result["event"] == "result" and result["ok"] is True and result["code"] == 0
    actions = {f["path"]: f["action"] for f in result["files"]}
    assert actions["tasks.py"] == "to add" and actions[".gitignore"] == "appended"
    assert any("from deploykit.tasks import ns" in note for note in result["notes"])
    assert (project / "tasks.py").read_text() == tasks
    assert (project / ".gitignore").read_text() == "*.pyc\n/media\n.deploykit/\n"

    (project / "tasks.py").write_text(tasks + "from deploykit.tasks import ns\n")
    again = init_project(project, python=sys.executable)
    assert {f.path: f.action for f in again.files}["tasks.py"] == "unchanged"
    assert {f.path: f.action for f in again.files}[".gitignore"] == "unchanged"
    assert not again.changed


def test_postgresql_media_and_static_settings_are_mapped(tmp_path):
    project = startproject(tmp_path / "shop")
    append_settings(project, """
DATABASES = {
    "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "USER": "shop_owner",
                "PASSWORD": "not-read", "HOST": "db.internal", "PORT": "5433"},
    "legacy": {"ENGINE": "django.db.backends.mysql", "NAME": "old"},
}
MEDIA_ROOT = BASE_DIR / "uploads"
STATIC_ROOT = BASE_DIR / "staticfiles"
""")
    result = init_project(project, python=sys.executable)
    cfg = load_config(project / "deploykit.yaml")
    (db,) = cfg.databases
    assert (db.engine, db.name, db.owner, db.host, db.port, db.admin_user) == \
        ("postgresql", "shop", "shop_owner", "db.internal", 5433, "postgres")
    (media,) = cfg.data_paths
    assert (media.name, media.path, media.kind) == ("media", "shared/uploads", "media")
    assert cfg.shared == ["uploads"] and cfg.collectstatic is True
    text = (project / "deploykit.yaml").read_text()
    assert "not-read" not in text  # passwords stay out of the file
    assert "legacy: django.db.backends.mysql 'old': deploykit has no driver" in " ".join(
        line.strip("# ") for line in text.splitlines())
    assert any("PostgreSQL client tools" in n for n in result.notes)
    assert any("legacy" in n and "not backed up" in n for n in result.notes)
    assert "psycopg" in (project / "requirements.txt").read_text()


def test_paths_outside_the_project_are_explained(tmp_path):
    project = startproject(tmp_path / "app")
    append_settings(project, f"""
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "{tmp_path / 'data' / 'app.db'}"}}}}
MEDIA_ROOT = "{tmp_path / 'files'}"
""")
    result = init_project(project, python=sys.executable)
    cfg = load_config(project / "deploykit.yaml")
    assert cfg.databases[0].name == "shared/app.db" and cfg.data_paths[0].path == "shared/files"
    assert cfg.shared == []
    text = (project / "deploykit.yaml").read_text()
    assert f"NAME is {tmp_path / 'data' / 'app.db'}, outside the project" in " ".join(
        line.strip("# ") for line in text.splitlines())
    assert any("outside the project" in n for n in result.notes)


def test_settings_that_cannot_be_imported_are_refused_and_nothing_is_written(tmp_path):
    project = startproject(tmp_path / "bad")
    append_settings(project, "import module_that_is_not_there\n")
    before = tree(project)
    cp = deploykit(project, "init")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deploykit: error: the settings mysite.settings"), cp.stderr
    assert "No module named 'module_that_is_not_there'" in lines[0] and "(hint: " in lines[0]
    assert tree(project) == before

    cp = deploykit(project, "init", "--json")
    doc = json.loads(cp.stdout.strip().splitlines()[-1])
    assert cp.returncode == 2 and doc["ok"] is False and doc["code"] == 2 and doc["event"] == "result"
    assert tree(project) == before


def test_no_project_or_no_django_is_one_line_with_a_hint(tmp_path):
    (tmp_path / "empty").mkdir()
    cp = deploykit(tmp_path / "empty", "init")
    assert cp.returncode == 2 and "no manage.py in" in cp.stderr and "(hint: " in cp.stderr
    project = startproject(tmp_path / "nodjango")
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    cp = deploykit(project, "init", "--python", str(venv / "bin" / "python"))
    assert cp.returncode == 2 and "cannot import Django" in cp.stderr and "--python" in cp.stderr, cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1
    assert not (project / "deploykit.yaml").exists()


def test_the_settings_module_comes_from_manage_py_else_the_environment(tmp_path):
    project = startproject(tmp_path / "proj", name="core")
    result = init_project(project, python=sys.executable)
    assert (result.project.settings_module, result.project.settings_from) == ("core.settings", "manage.py")
    manage = project / "manage.py"
    manage.write_text(manage.read_text().replace("os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'core.settings')",
                                                 "pass"))
    with pytest.raises(InitError, match="does not set DJANGO_SETTINGS_MODULE"):
        init_project(project, python=sys.executable)
    os.environ["DJANGO_SETTINGS_MODULE"] = "core.settings"
    try:
        result = init_project(project, python=sys.executable)
    finally:
        del os.environ["DJANGO_SETTINGS_MODULE"]
    assert (result.project.settings_module, result.project.settings_from) == ("core.settings",
                                                                              "DJANGO_SETTINGS_MODULE")
