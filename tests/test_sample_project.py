"""The sample "library" Django project and the git repository built from it.

Everything here runs the real thing: a real git repository, `git archive`
trees, `manage.py` in subprocesses with the venv's Python, SQLite files and
media in tmp_path, and one real gunicorn. An optional test repeats the
migration scenarios on a throwaway PostgreSQL cluster when the server
binaries are installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import git
import pytest

from deploykit_testing.samplerepo import (
    APP_VERSIONS,
    BRANCHES,
    LAST_MIGRATIONS,
    PARENTS,
    TAGS,
    SAMPLE_DIR,
    SampleRepoError,
    archive_tag,
    build_sample_repo,
    tag_commits,
)

PY = sys.executable
GOOD_TAGS = ["v1.0", "v1.1", "v1.2"]

CLIENT_SCRIPT = r"""
import json, sys
import django
django.setup()
from django.test import Client
client = Client(raise_request_exception=False)
out = {}
for path in sys.argv[1:]:
    response = client.get(path)
    out[path] = [response.status_code, json.loads(response.content)]
print(json.dumps(out))
"""

POST_SCRIPT = r"""
import json
import django
django.setup()
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
client = Client()
response = client.post("/api/books/", {
    "title": "Posted", "author": "Poster",
    "cover": SimpleUploadedFile("posted.png", b"posted-cover-bytes", content_type="image/png"),
})
bad = client.post("/api/books/", {"title": ""})
print(json.dumps([response.status_code, json.loads(response.content), bad.status_code]))
"""


# --------------------------------------------------------------------------- helpers

def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("DB_", "DJANGO_", "PG")) and k not in ("MEDIA_ROOT", "SECRET_KEY", "DEBUG")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "libsite.settings"
    env.update(extra)
    return env


def sqlite_env(workdir: Path, name: str = "db.sqlite3") -> dict[str, str]:
    return clean_env(DB_ENGINE="sqlite", DB_NAME=str(workdir / name), MEDIA_ROOT=str(workdir / "media"))


def run(tree: Path, args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} in {tree} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def manage(tree: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(tree, ["manage.py", *args], env, check=check)


def get(tree: Path, env: dict[str, str], *paths: str) -> dict[str, list]:
    return json.loads(run(tree, ["-c", CLIENT_SCRIPT, *paths], env).stdout)


def seed(tree: Path, env: dict[str, str], *args: str) -> dict:
    return json.loads(manage(tree, env, "seed_library", *args).stdout)


def applied(db: Path, app: str = "library") -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT name FROM django_migrations WHERE app = ? ORDER BY id", (app,))]


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> git.Repo:
    return build_sample_repo(tmp_path_factory.mktemp("samplerepo") / "library")


@pytest.fixture(scope="module")
def trees(repo, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trees")
    return {tag: archive_tag(repo, tag, root / tag) for tag in TAGS}


# --------------------------------------------------------------------------- the repository

def test_tags_branches_and_parents(repo):
    commits = tag_commits(repo)
    assert list(commits) == TAGS
    assert sorted(t.name for t in repo.tags) == sorted(TAGS)
    for tag in TAGS:
        ref = repo.tags[tag]
        assert ref.tag is not None, f"{tag} is not an annotated tag"
        assert ref.tag.message.strip() == tag
        commit = ref.commit
        assert commit.message.strip() == tag
        parent = PARENTS[tag]
        if parent is None:
            assert commit.parents == ()
        else:
            assert [p.hexsha for p in commit.parents] == [commits[parent]]
        if BRANCHES[tag] != "main":
            assert repo.heads[BRANCHES[tag]].commit.hexsha == commits[tag]
    dates = [repo.tags[t].commit.committed_date for t in TAGS]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)
    assert repo.active_branch.name == "main"
    assert repo.head.commit.hexsha == commits["v1.2"]
    assert not repo.is_dirty(untracked_files=True)
    assert {h.name for h in repo.heads} == set(BRANCHES.values())


def test_trees_are_clean_and_build_is_deterministic(repo, tmp_path):
    for tag in TAGS:
        entries = {e.path: e.mode for e in repo.tags[tag].commit.tree.traverse() if e.type == "blob"}
        assert not [p for p in entries if "__pycache__" in p or p.endswith((".pyc", ".pyo", ".sample-delete"))]
        assert entries["manage.py"] == 0o100755
        assert entries["libsite/settings.py"] == 0o100644
    again = build_sample_repo(tmp_path / "again")
    assert tag_commits(again) == tag_commits(repo)


def test_overlay_delete_list_and_byte_code_are_honoured(tmp_path):
    sample = tmp_path / "sample"
    shutil.copytree(SAMPLE_DIR, sample)
    (sample / "base" / "library" / "__pycache__").mkdir(exist_ok=True)
    (sample / "base" / "library" / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"junk")
    (sample / "base" / "stray.pyc").write_bytes(b"junk")
    (sample / "v1.3-broken-health" / ".sample-delete").write_text("# gone in this tag\nREADME.md\nlibrary/admin.py\n")
    repo = build_sample_repo(tmp_path / "repo", sample_dir=sample)
    paths = {tag: {e.path for e in repo.tags[tag].commit.tree.traverse() if e.type == "blob"} for tag in TAGS}
    assert "README.md" in paths["v1.2"] and "README.md" not in paths["v1.3-broken-health"]
    assert "library/admin.py" not in paths["v1.3-broken-health"]
    assert "README.md" in paths["v1.3-broken-migration"]  # a sibling overlay is unaffected
    assert not [p for tree in paths.values() for p in tree if p.endswith(".pyc") or ".sample-delete" in p]

    (sample / "v1.3-broken-health" / ".sample-delete").write_text("../outside\n")
    with pytest.raises(SampleRepoError, match="relative path inside the tree"):
        build_sample_repo(tmp_path / "repo2", sample_dir=sample)


def test_build_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SampleRepoError, match="not an empty directory"):
        build_sample_repo(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_builds_and_lists_tags(tmp_path):
    proc = subprocess.run(
        [PY, "-m", "deploykit_testing.samplerepo", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for tag, line in zip(TAGS, lines):
        assert line.split()[0] == tag and len(line.split()[1]) == 40
    bad = subprocess.run(
        [PY, "-m", "deploykit_testing.samplerepo", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1


def test_git_archive_extracts_each_tag(trees):
    for tag, tree in trees.items():
        assert (tree / "manage.py").is_file()
        assert f'APP_VERSION = "{APP_VERSIONS[tag]}"' in (tree / "libsite" / "version.py").read_text()
        migrations = sorted(p.stem for p in (tree / "library" / "migrations").glob("0*.py"))
        assert migrations[-1] == LAST_MIGRATIONS[tag]
        # every number up to the last is covered exactly once: by its own file or by a squash (0001_squashed_0004_...)
        covered = []
        for stem in migrations:
            m = re.match(r"(\d{4})_squashed_(\d{4})_", stem)
            covered += list(range(int(m[1]), int(m[2]) + 1)) if m else [int(stem[:4])]
        assert covered == list(range(1, int(LAST_MIGRATIONS[tag][:4]) + 1))
        assert not list(tree.rglob("__pycache__"))


# --------------------------------------------------------------------------- each good release on SQLite

@pytest.mark.parametrize("tag", GOOD_TAGS)
def test_release_tree_works_on_sqlite(tag, trees, tmp_path):
    tree, env = tmp_path / "tree", sqlite_env(tmp_path)
    shutil.copytree(trees[tag], tree)  # collectstatic writes into the tree (STATIC_ROOT)
    manage(tree, env, "migrate", "--noinput", "-v0")
    assert applied(tmp_path / "db.sqlite3")[-1] == LAST_MIGRATIONS[tag]
    manage(tree, env, "check")
    manage(tree, env, "makemigrations", "--check", "--dry-run")
    manage(tree, env, "collectstatic", "--noinput", "-v0")
    assert (tree / "staticfiles" / "admin" / "css" / "base.css").is_file()

    summary = seed(tree, env, "--books", "3", "--with-covers")
    assert summary["created"] == 3 and summary["books"] == 3 and len(summary["covers"]) == 3
    covers = [tmp_path / "media" / name for name in summary["covers"]]
    assert all(p.parent == tmp_path / "media" / "covers" and p.is_file() for p in covers)
    assert len({p.read_bytes() for p in covers}) == 3, "cover files must differ"

    out = get(tree, env, "/", "/health/", "/api/books/")
    assert out["/"] == [200, {"app": "library", "version": APP_VERSIONS[tag], "books": 3}]
    assert out["/health/"] == [200, {"status": "ok", "version": APP_VERSIONS[tag]}]
    status, body = out["/api/books/"]
    assert status == 200 and [b["cover"] for b in body["books"]] == summary["covers"]


def test_api_post_creates_a_book_with_cover(trees, tmp_path):
    tree, env = trees["v1.0"], sqlite_env(tmp_path)
    manage(tree, env, "migrate", "--noinput", "-v0")
    status, book, bad_status = json.loads(run(tree, ["-c", POST_SCRIPT], env).stdout)
    assert status == 201 and bad_status == 400
    assert book["title"] == "Posted" and book["author"] == "Poster"
    assert book["cover"].startswith("covers/posted")
    assert (tmp_path / "media" / book["cover"]).read_bytes() == b"posted-cover-bytes"


def test_health_fails_when_the_database_is_unusable(trees, tmp_path):
    env = sqlite_env(tmp_path)  # never migrated: the tables do not exist
    out = get(trees["v1.0"], env, "/health/")
    status, body = out["/health/"]
    assert status == 500 and body["status"] == "error" and "no such table" in body["error"]


def test_env_file_is_read_and_environment_wins(trees, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(trees["v1.0"], tree)
    (tree / ".env").write_text(
        "# sample .env\n"
        f"DB_NAME={tmp_path / 'from-file.sqlite3'}\n"
        "MEDIA_ROOT = 'media-from-file'\n"
        "SECRET_KEY=from-file\n"
        "DEBUG=true\n"
    )
    script = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps([str(s.DATABASES['default']['NAME']), str(s.MEDIA_ROOT), s.SECRET_KEY, s.DEBUG,"
        " s.DATABASES['default']['ENGINE'], str(s.STATIC_ROOT)]))"
    )
    name, media, key, debug, engine, static = json.loads(run(tree, ["-c", script], clean_env()).stdout)
    assert name == str(tmp_path / "from-file.sqlite3")
    assert media == str(tree / "media-from-file")
    assert (key, debug, engine) == ("from-file", True, "django.db.backends.sqlite3")
    assert static == str(tree / "staticfiles")
    overridden = json.loads(run(tree, ["-c", script], clean_env(DB_NAME="/elsewhere.db", DEBUG="0")).stdout)
    assert overridden[0] == "/elsewhere.db" and overridden[3] is False and overridden[2] == "from-file"
    bad = run(tree, ["manage.py", "check"], clean_env(DB_ENGINE="oracle"), check=False)
    assert bad.returncode != 0 and "DB_ENGINE='oracle' is not supported" in bad.stderr


# --------------------------------------------------------------------------- upgrades, downgrades, broken releases

def test_upgrade_through_tags_then_downgrade_with_newer_code(trees, tmp_path):
    env, db = sqlite_env(tmp_path), tmp_path / "db.sqlite3"
    manage(trees["v1.0"], env, "migrate", "--noinput", "-v0")
    seed(trees["v1.0"], env, "--books", "3", "--with-covers")

    manage(trees["v1.1"], env, "migrate", "--noinput", "-v0")
    assert applied(db)[-2:] == ["0002_genre_book_genre", "0003_default_genres"]
    books = get(trees["v1.1"], env, "/api/books/")["/api/books/"][1]["books"]
    assert [b["genre"] for b in books] == ["fiction"] * 3  # the data migration ran

    manage(trees["v1.2"], env, "migrate", "--noinput", "-v0")
    out = get(trees["v1.2"], env, "/", "/api/books/")
    assert out["/"][1] == {"app": "library", "version": "1.2", "books": 3}
    assert all(b["isbn"] == "" and b["genre"] == "fiction" for b in out["/api/books/"][1]["books"])

    # Back to v1.0: unapply with the newer code (it has the migration files).
    manage(trees["v1.2"], env, "migrate", "library", "0001", "--noinput", "-v0")
    assert applied(db) == ["0001_initial"]
    assert not {"library_genre"} & tables(db)
    manage(trees["v1.0"], env, "migrate", "--check")  # nothing left to apply for v1.0
    out = get(trees["v1.0"], env, "/", "/health/")
    assert out["/"][1]["books"] == 3 and out["/health/"] == [200, {"status": "ok", "version": "1.0"}]

    # ...and forward again: the data migration runs again.
    manage(trees["v1.2"], env, "migrate", "--noinput", "-v0")
    books = get(trees["v1.2"], env, "/api/books/")["/api/books/"][1]["books"]
    assert [b["genre"] for b in books] == ["fiction"] * 3


def test_broken_health_release(trees, tmp_path):
    env, tree = sqlite_env(tmp_path), trees["v1.3-broken-health"]
    manage(trees["v1.2"], env, "migrate", "--noinput", "-v0")
    seed(trees["v1.2"], env, "--books", "2")
    manage(tree, env, "migrate", "--noinput", "-v0")
    assert applied(tmp_path / "db.sqlite3")[-1] == "0005_book_pages"
    manage(tree, env, "check")
    manage(tree, env, "makemigrations", "--check", "--dry-run")
    out = get(tree, env, "/", "/health/", "/api/books/")
    assert out["/"] == [200, {"app": "library", "version": "1.3", "books": 2}]
    assert out["/health/"][0] == 500 and "broken on purpose" in out["/health/"][1]["error"]
    assert [b["pages"] for b in out["/api/books/"][1]["books"]] == [100, 100]
    manage(tree, env, "migrate", "library", "0004", "--noinput", "-v0")  # reversible
    assert applied(tmp_path / "db.sqlite3")[-1] == "0004_book_isbn"


def test_broken_migration_release_on_sqlite(trees, tmp_path):
    env, tree, db = sqlite_env(tmp_path), trees["v1.3-broken-migration"], tmp_path / "db.sqlite3"
    manage(tree, env, "check")
    manage(tree, env, "makemigrations", "--check", "--dry-run")
    manage(trees["v1.2"], env, "migrate", "--noinput", "-v0")
    seed(trees["v1.2"], env, "--books", "2")
    proc = manage(tree, env, "migrate", "--noinput", check=False)
    assert proc.returncode != 0
    assert "RuntimeError: migration fails halfway on purpose" in proc.stderr
    assert "Applying library.0005_book_pages... OK" in proc.stdout
    names = applied(db)
    assert "0005_book_pages" in names and "0006_review" not in names
    assert "library_review" in tables(db)  # created before the failure, left behind
    with sqlite3.connect(db) as con:
        assert [r[0] for r in con.execute("SELECT pages FROM library_book ORDER BY id")] == [42, 42]


# --------------------------------------------------------------------------- a real WSGI server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_serves_health(trees, tmp_path):
    tree, env = trees["v1.2"], sqlite_env(tmp_path)
    manage(tree, env, "migrate", "--noinput", "-v0")
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [PY, "-m", "gunicorn", "--chdir", str(tree), "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--timeout", "20", "libsite.wsgi"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline, body = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited {proc.returncode}: {(tmp_path / 'gunicorn.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=2) as resp:
                    body = (resp.status, json.loads(resp.read()))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):  # still starting (a loaded machine)
                time.sleep(0.1)
        assert body == (200, {"status": "ok", "version": "1.2"}), (tmp_path / "gunicorn.log").read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- PostgreSQL (optional)

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def pg_cluster():
    """A throwaway PostgreSQL cluster on a Unix socket (trust auth); skipped without the server binaries."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    pytest.importorskip("psycopg")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root without runuser")
        prefix = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="dk-sample-pg-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=60)
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "30",
                        "-o", f"-k {base} -c listen_addresses='' -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL cluster: {exc.stderr.decode(errors='replace')[-300:]}")
    try:
        yield {"DB_HOST": str(base), "DB_USER": "postgres", "DB_PORT": "5432"}
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_migration_scenarios_on_postgresql(trees, tmp_path, pg_cluster):
    import psycopg

    def pg_env(dbname: str) -> dict[str, str]:
        return clean_env(DB_ENGINE="postgresql", DB_NAME=dbname, MEDIA_ROOT=str(tmp_path / "media"), **pg_cluster)

    def query(dbname: str, sql: str) -> list[tuple]:
        with psycopg.connect(host=pg_cluster["DB_HOST"], user="postgres", dbname=dbname) as con:
            return con.execute(sql).fetchall()

    with psycopg.connect(host=pg_cluster["DB_HOST"], user="postgres", dbname="postgres", autocommit=True) as con:
        con.execute("CREATE DATABASE up")
        con.execute("CREATE DATABASE broken")

    env = pg_env("up")
    manage(trees["v1.0"], env, "migrate", "--noinput", "-v0")
    seed(trees["v1.0"], env, "--books", "3")
    for tag in ("v1.1", "v1.2", "v1.3-broken-health"):
        manage(trees[tag], env, "migrate", "--noinput", "-v0")
    assert query("up", "SELECT g.name, b.pages FROM library_book b JOIN library_genre g ON g.id = b.genre_id") \
        == [("fiction", 100)] * 3
    assert get(trees["v1.3-broken-health"], env, "/health/")["/health/"][0] == 500
    manage(trees["v1.3-broken-health"], env, "migrate", "library", "0001", "--noinput", "-v0")
    assert query("up", "SELECT name FROM django_migrations WHERE app = 'library'") == [("0001_initial",)]
    assert get(trees["v1.0"], env, "/health/")["/health/"] == [200, {"status": "ok", "version": "1.0"}]

    env = pg_env("broken")
    manage(trees["v1.2"], env, "migrate", "--noinput", "-v0")
    seed(trees["v1.2"], env, "--books", "2")
    proc = manage(trees["v1.3-broken-migration"], env, "migrate", "--noinput", check=False)
    assert proc.returncode != 0 and "migration fails halfway on purpose" in proc.stderr
    names = [r[0] for r in query("broken", "SELECT name FROM django_migrations WHERE app = 'library' ORDER BY id")]
    assert names[-1] == "0005_book_pages"
    assert query("broken", "SELECT to_regclass('library_review') IS NOT NULL") == [(True,)]
    assert query("broken", "SELECT pages FROM library_book ORDER BY id") == [(42,), (42,)]
