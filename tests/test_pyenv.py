"""Per-release Python environments and the Django helper run through manage.py, on the local machine.

The helpers run exactly as on a host: remote/pyenv.py with the base Python
(this venv, as in the test rig and the demo: `python:` is itself a venv),
JSON on stdin; the Django helper inside a release's manage.py through a
LocalHost. The wheels come from the hand-written test wheelhouse; no network.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import git
import pytest

from deploykit import djangoapp
from deploykit.config import parse_config
from deploykit.errors import DryRunWrite
from deploykit_testing.samplerepo import archive_tag, build_sample_repo
from deploykit.transport.host import make_host
from deploykit_testing.wheelhouse import build_wheelhouse

REMOTE = Path(__file__).resolve().parent.parent / "deploykit" / "remote"
BASE_REQS = "Django>=4.2,<6\ngunicorn>=21\npsycopg[binary]>=3.1\n"


def pyenv(action: str, args: dict, python: str = sys.executable, ok: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, str(REMOTE / "pyenv.py"), action], input=json.dumps(args), capture_output=True,
                          text=True, timeout=300, env=env)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    doc = json.loads(lines[0])
    assert doc["ok"] is ok, doc
    if not ok:
        assert "\n" not in doc["error"] and proc.returncode == 1
    return doc


def release(tmp_path: Path, name: str, requirements: str) -> Path:
    d = tmp_path / "releases" / name
    d.mkdir(parents=True)
    (d / "requirements.txt").write_text(requirements)
    return d


def ensure_args(release_dir: Path, wheels: Path, **extra) -> dict:
    return {"release_dir": str(release_dir), "requirements": "requirements.txt", "system_site_packages": True,
            "pip_args": ["--no-index", "--find-links", str(wheels)],
            "venvs_dir": str(release_dir.parent.parent / "venvs"), **extra}


def run_py(python: Path | str, code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return build_wheelhouse(tmp_path_factory.mktemp("wheels"))


def test_wheelhouse_is_deterministic_and_valid(wheels, tmp_path):
    again = build_wheelhouse(tmp_path / "again")
    names = sorted(p.name for p in wheels.glob("*.whl"))
    assert names == ["dk_sample_extra-1.0-py3-none-any.whl", "dk_sample_extra-1.1-py3-none-any.whl",
                     "dk_sample_extra-1.3-py3-none-any.whl", "dk_shelf-1.0-py3-none-any.whl",
                     "dk_shelf-2.0-py3-none-any.whl"]
    for name in names:
        assert (wheels / name).read_bytes() == (again / name).read_bytes()
        with zipfile.ZipFile(wheels / name) as zf:
            info = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            rows = list(csv.reader(io.StringIO(zf.read(info).decode())))
            assert {r[0] for r in rows} == set(zf.namelist())
            for path, digest, size in rows:
                if path == info:
                    assert digest == size == ""
                    continue
                data = zf.read(path)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={expected}" and int(size) == len(data)
    with zipfile.ZipFile(wheels / "dk_shelf-2.0-py3-none-any.whl") as zf:
        migrations = sorted(n.rsplit("/", 1)[1] for n in zf.namelist() if "/migrations/0" in n)
    assert migrations == ["0001_squashed_0003_shelf_label.py", "0004_shelf_colour.py"]


def test_env_built_once_then_reused_and_sees_the_base_layer(wheels, tmp_path):
    r1 = release(tmp_path, "r1", BASE_REQS + "dk-sample-extra==1.0\n")
    first = pyenv("ensure", ensure_args(r1, wheels))
    assert not first["reused"] and first["changed"]
    assert first["own_freeze"] == ["dk-sample-extra==1.0"]  # Django, gunicorn, psycopg: from the base layer
    assert "dk-sample-extra==1.0" in first["freeze"] and any(line.startswith("Django==") for line in first["freeze"])
    env = Path(first["path"])
    assert env.parent == tmp_path / "venvs" and len(env.name) == 64 and env.name == first["key"]
    assert os.readlink(r1 / ".venv") == str(env)
    marker = json.loads((env / ".deploykit-complete").read_text())
    assert marker["key"] == first["key"] and marker["freeze"] == first["freeze"]
    # the env's python: its own package, and Django from the base venv (the .pth), not copied
    out = run_py(r1 / ".venv" / "bin" / "python",
                 "import dk_sample_extra, django, gunicorn, sys; print(dk_sample_extra.__version__, sys.prefix, "
                 "django.__file__.startswith(sys.prefix))")
    assert out.split() == ["1.0", str(r1 / ".venv"), "False"]

    # same requirements in another release: the same environment, untouched (no pip run, nothing rebuilt)
    r2 = release(tmp_path, "r2", BASE_REQS + "dk-sample-extra==1.0\n")
    built = {p.relative_to(env): (p.stat().st_ino, p.stat().st_mtime_ns) for p in env.rglob("*") if p.is_file()}
    second = pyenv("ensure", ensure_args(r2, wheels))
    assert {p.relative_to(env): (p.stat().st_ino, p.stat().st_mtime_ns) for p in env.rglob("*") if p.is_file()} \
        == built
    assert second["reused"] and second["key"] == first["key"] and second["freeze"] == first["freeze"]
    assert os.readlink(r2 / ".venv") == str(env)
    # other requirements (or pip_args, or system_site_packages): another key
    r3 = release(tmp_path, "r3", BASE_REQS + "dk-sample-extra==1.1\n")
    third = pyenv("ensure", ensure_args(r3, wheels))
    assert third["key"] != first["key"] and third["own_freeze"] == ["dk-sample-extra==1.1"]
    assert pyenv("probe", ensure_args(r1, wheels, system_site_packages=False))["key"] != first["key"]
    assert pyenv("probe", ensure_args(r1, wheels, pip_args=["--no-index", "--find-links", str(wheels), "-q"]))["key"] \
        != first["key"]


def test_included_requirement_files_are_part_of_the_key(wheels, tmp_path):
    r1 = release(tmp_path, "r1", "-r base.txt\n")
    (r1 / "base.txt").write_text(BASE_REQS + "dk-sample-extra==1.0\n")
    k1 = pyenv("probe", ensure_args(r1, wheels))["key"]
    (r1 / "base.txt").write_text(BASE_REQS + "dk-sample-extra==1.1\n")
    assert pyenv("probe", ensure_args(r1, wheels))["key"] != k1


def test_an_interrupted_build_is_garbage_and_is_rebuilt(wheels, tmp_path):
    r1 = release(tmp_path, "r1", BASE_REQS + "dk-sample-extra==1.0\n")
    probe = pyenv("probe", ensure_args(r1, wheels))
    assert not probe["complete"]
    half = Path(probe["path"])
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "python").write_text("#!/bin/sh\nexit 99\n")  # what a killed build may leave
    doc = pyenv("ensure", ensure_args(r1, wheels))
    assert not doc["reused"] and (half / ".deploykit-complete").is_file()
    assert run_py(r1 / ".venv" / "bin" / "python", "import dk_sample_extra; print(dk_sample_extra.__version__)") == "1.0"
    # a failed build leaves nothing behind and says why in one line
    bad = release(tmp_path, "bad", "dk-sample-extra==9.9\n")
    err = pyenv("ensure", ensure_args(bad, wheels), ok=False)
    assert "pip install -r requirements.txt failed" in err["error"] and "dk-sample-extra==9.9" in err["error"]
    assert not (tmp_path / "venvs" / pyenv("probe", ensure_args(bad, wheels))["key"]).exists()
    assert not (bad / ".venv").exists()
    missing = tmp_path / "releases" / "missing"
    missing.mkdir()
    assert "requirements file" in pyenv("ensure", ensure_args(missing, wheels), ok=False)["error"]


def test_rebuild_from_a_recorded_freeze_installs_exactly_it(wheels, tmp_path):
    """Unpinned requirements would pick the newest wheel; the recorded own freeze pins the rebuild."""
    r1 = release(tmp_path, "r1", "dk-sample-extra\n")
    doc = pyenv("ensure", ensure_args(r1, wheels, constraints=["dk-sample-extra==1.0", "-e /somewhere", "# comment"]))
    assert doc["own_freeze"] == ["dk-sample-extra==1.0"] and doc["constrained"]
    r2 = release(tmp_path, "r2", "dk-sample-extra\n# another env\n")
    assert pyenv("ensure", ensure_args(r2, wheels))["own_freeze"] == ["dk-sample-extra==1.3"]


def test_a_venv_base_with_system_site_packages_is_shadowed_not_changed(wheels, tmp_path):
    """`python:` is itself a venv holding dk-sample-extra 1.0: a release pinning 1.1 gets 1.1 in its own env."""
    base_rel = release(tmp_path, "base", BASE_REQS + "dk-sample-extra==1.0\n")
    base = Path(pyenv("ensure", ensure_args(base_rel, wheels))["path"]) / "bin" / "python"
    r1 = release(tmp_path, "r1", BASE_REQS + "dk-sample-extra==1.1\n")
    doc = pyenv("ensure", ensure_args(r1, wheels, venvs_dir=str(tmp_path / "venvs2")), python=str(base))
    assert doc["own_freeze"] == ["dk-sample-extra==1.1"] and doc["inputs"]["base_layer"]
    assert "dk-sample-extra==1.1" in doc["freeze"] and "dk-sample-extra==1.0" not in doc["freeze"]
    assert run_py(r1 / ".venv" / "bin" / "python",
                  "import dk_sample_extra, django; print(dk_sample_extra.__version__)") == "1.1"
    assert run_py(base, "import dk_sample_extra; print(dk_sample_extra.__version__)") == "1.0"


def test_prune_removes_only_unreferenced_environments(wheels, tmp_path):
    r1 = release(tmp_path, "r1", BASE_REQS + "dk-sample-extra==1.0\n")
    r2 = release(tmp_path, "r2", BASE_REQS + "dk-sample-extra==1.1\n")
    k1 = pyenv("ensure", ensure_args(r1, wheels))["key"]
    k2 = pyenv("ensure", ensure_args(r2, wheels))["key"]
    (tmp_path / "venvs" / "not-a-key").mkdir()
    os.symlink(r2, tmp_path / "current")
    subprocess.run(["rm", "-rf", str(r2)], check=True)  # pruned release; current dangles
    doc = pyenv("prune", {"deploy_to": str(tmp_path)})
    assert doc["removed"] == [k2] and doc["kept"] == [k1]
    assert sorted(p.name for p in (tmp_path / "venvs").iterdir()) == sorted([k1, "not-a-key"])


# -- the Django helper inside manage.py ---------------------------------------------------

@pytest.fixture(scope="module")
def dotenv_release(tmp_path_factory, wheels):
    """v1.2-dotenv extracted as a release with its environment and a .env naming an SQLite database."""
    root = tmp_path_factory.mktemp("dotenv")
    repo = build_sample_repo(root / "repo")
    rel = archive_tag(git.Repo(repo.working_tree_dir), "v1.2-dotenv", root / "releases" / "r1")
    pyenv("ensure", ensure_args(rel, wheels))
    (root / "shared").mkdir()
    (root / "shared" / "app.sqlite3").touch()
    (rel / ".env").write_text(f"DATABASE_URL=sqlite:///{root}/shared/app.sqlite3\nSECRET_KEY=x\n")
    return root, rel


def local_ctx(root: Path, databases: dict):
    raw = {"deploy_to": str(root), "python": sys.executable, "settings_module": "libsite.settings",
           "stages": {"s": {"hosts": ["local"]}}, "databases": databases}
    cfg = parse_config(raw, root / "deploykit.yaml")

    class Ctx:
        config = cfg
    return Ctx(), make_host(cfg.stages["s"][0], cfg)


def test_helper_sees_the_database_manage_py_sees(dotenv_release):
    root, rel = dotenv_release
    ctx, host = local_ctx(root, {"default": {"engine": "sqlite", "path": "shared/app.sqlite3"}})
    seen = djangoapp.django_databases(ctx, host, str(rel))
    assert seen["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert seen["default"]["NAME"] == str(root / "shared" / "app.sqlite3")
    assert djangoapp.check_database_identity(ctx, host, str(rel)) == []
    # what the helper saw when it set Django up itself (no .env): SQLite next to the code
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "libsite.settings"}
    env.pop("DATABASE_URL", None)
    direct = subprocess.run([str(rel / ".venv" / "bin" / "python"), str(REMOTE / "django_state.py"), "databases"],
                            input=json.dumps({"project_dir": str(rel)}), capture_output=True, text=True, env=env)
    assert json.loads(direct.stdout)["databases"]["default"]["NAME"] == str(rel / "db.sqlite3")
    # the state read through manage.py: the empty database of .env, graph-aware fields
    state = djangoapp.migration_state(ctx, host, str(rel))
    assert state["applied"] == {} and state["leaves"]["library"] == ["0004_book_isbn"]
    assert set(state) >= {"applied", "replaced", "unmatched", "leaves"}


def test_identity_problems_name_both_databases(dotenv_release):
    root, rel = dotenv_release
    ctx, host = local_ctx(root, {"default": {"engine": "sqlite", "path": "shared/other.sqlite3"},
                                 "reports": {"engine": "postgresql", "name": "reports", "owner": "r"}})
    problems = djangoapp.check_database_identity(ctx, host, str(rel))
    assert problems == [
        f"local: database 'default': the app uses sqlite3 '{root}/shared/app.sqlite3', "
        f"deploykit.yaml says sqlite '{root}/shared/other.sqlite3'",
        "local: database 'reports' of deploykit.yaml is not in the app's DATABASES (default)"]
    pg = {"ENGINE": "django.db.backends.postgresql", "NAME": "library", "HOST": "10.0.0.5", "PORT": "", "USER": "u"}
    ctx, host = local_ctx(root, {"default": {"engine": "postgresql", "name": "library", "owner": "o",
                                             "host": "10.0.0.5", "port": 5432}})
    assert djangoapp.database_problems(ctx, host, {"default": pg}, {}) == []
    assert djangoapp.database_problems(ctx, host, {"default": {**pg, "PORT": "5433"}}, {}) == [
        "local: database 'default': the app uses postgresql 'library' on 10.0.0.5:5433, "
        "deploykit.yaml says postgresql 'library' on 10.0.0.5:5432"]


def test_migrate_refuses_to_unapply_what_the_target_had(dotenv_release):
    """The helper's own guard: a forbidden migration (or one a squash replaces) is never unapplied."""
    root, rel = dotenv_release
    ctx, host = local_ctx(root, {"default": {"engine": "sqlite", "path": "shared/app.sqlite3"}})
    done = djangoapp.django_helper(ctx, host, str(rel), "migrate", {"targets": [["library", "0004_book_isbn"]]})
    assert "library.0004_book_isbn" in done["applied"]
    graph = djangoapp.migration_graph(ctx, host, str(rel))
    assert graph["nodes"]["library"] == ["0001_initial", "0002_genre_book_genre", "0003_default_genres",
                                         "0004_book_isbn"]
    args = {"targets": [["library", "0002_genre_book_genre"]], "forbid": [["library", "0003_default_genres"]]}
    refused = djangoapp.django_helper(ctx, host, str(rel), "migrate", args, check=False)
    assert not refused["ok"] and refused["error"].endswith("the target release had: library.0003_default_genres")
    assert djangoapp.migration_state(ctx, host, str(rel))["applied"]["library"][-1] == "0004_book_isbn"
    args["forbid"] = [["library", "0002_genre_book_genre"]]
    done = djangoapp.django_helper(ctx, host, str(rel), "migrate", args)
    assert done["unapplied"] == ["library.0004_book_isbn", "library.0003_default_genres"]


def test_one_django_start_up_answers_a_run_and_a_dry_run_cannot_migrate(dotenv_release):
    """Every question of a run to one release is answered by one Django (a session); a dry-run's refuses writes."""
    root, rel = dotenv_release
    ctx, host = local_ctx(root, {"default": {"engine": "sqlite", "path": "shared/app.sqlite3"}})
    try:
        djangoapp.django_databases(ctx, host, str(rel))
        session = host._sessions[("django", str(rel))]
        done = djangoapp.django_helper(ctx, host, str(rel), "apply")
        assert "library.0004_book_isbn" in done["applied"] and done["state"]["applied"]["library"][-1] == "0004_book_isbn"
        assert "Applying library.0004_book_isbn... OK" in done["output"]
        out = djangoapp.django_helper(ctx, host, str(rel), "collectstatic")["output"]
        assert "static files copied" in out
        assert djangoapp.migration_state(ctx, host, str(rel))["applied"]["library"][-1] == "0004_book_isbn"
        assert "no issues" in djangoapp.django_helper(ctx, host, str(rel), "check", {"args": ["--tag", "models"]})["output"]
        bad = djangoapp.django_helper(ctx, host, str(rel), "check", {"args": ["--tag", "no-such-tag"]}, check=False)
        assert not bad["ok"] and "no-such-tag" in bad["error"]
        assert host._sessions == {("django", str(rel)): session} and session.alive
        # killed while idle (an interrupt's leftovers): the next question goes to a new Django, once
        host.kill_marked(f"DEPLOYKIT_CMD={session.token}", grace=2)
        done = djangoapp.django_helper(ctx, host, str(rel), "apply")
        assert done["applied"] == [] and host._sessions[("django", str(rel))] is not session
    finally:
        host.close()
    assert not session.alive

    ctx, dry = local_ctx(root, {"default": {"engine": "sqlite", "path": "shared/app.sqlite3"}})
    dry.read_only = True
    try:
        with pytest.raises(DryRunWrite):
            djangoapp.django_helper(ctx, dry, str(rel), "migrate", {"targets": [["library", "0001_initial"]]})
        # past the controller's own check, the helper refuses too: a dry-run cannot write
        answer = djangoapp.ask(ctx, dry, str(rel), "migrate", {"project_dir": str(rel),
                                                              "targets": [["library", "0001_initial"]]}, 60)
        assert answer["ok"] is False and "read-only" in answer["error"]
        assert djangoapp.migration_state(ctx, dry, str(rel))["applied"]["library"][-1] == "0004_book_isbn"
        assert not dry.tracked  # nothing written to the run's pid file either
    finally:
        dry.close()
