"""Rollback to any tag: migrations unapplied with the newer code, rows kept, nothing irreversible by surprise."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import git
import pytest

from deploykit import api
from deploykit_testing.samplerepo import archive_tag
from deploykit_testing._proc import command_lines, process_name
from deploykit_testing.stage import OWNER, OWNER_PASSWORD
from tests.test_bad_input import assert_refused


def registry(host) -> list[tuple[str, str]]:
    doc = json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())
    return [(r["tag"], r["status"]) for r in doc["releases"]]


def rows(st, sql: str) -> list[tuple]:
    with st.pg.connect(st.db) as conn:
        return conn.execute(sql).fetchall()


def all_rows(st) -> dict[str, collections.Counter]:
    """Every row of every table, as text, to count what changed."""
    with st.pg.connect(st.db) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: collections.Counter(r[0] for r in conn.execute(f'SELECT t::text FROM public."{t}" t')) for t in tables}


def fresh_schema(st, tag: str, tmp_path) -> str:
    """Schema of a fresh install of `tag`: a new database migrated by the tag's own code."""
    db = f"fresh_{uuid.uuid4().hex[:8]}"
    st.pg.create_database(db, OWNER)
    tree = archive_tag(git.Repo(st.repo), tag, tmp_path / f"fresh-{tag}")
    env = {**os.environ, "DB_ENGINE": "postgresql", "DB_NAME": db, "DB_USER": OWNER, "DB_PASSWORD": OWNER_PASSWORD,
           "DB_HOST": st.pg.host, "DB_PORT": str(st.pg.port), "MEDIA_ROOT": str(tmp_path / "fresh-media")}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=tree, env=env, check=True,
                   capture_output=True)
    return st.pg.schema(db)


V10_BOOK = "SELECT id, title, author_id, cover, created FROM library_book ORDER BY id"
V10_AUTHOR = "SELECT id, name FROM library_author ORDER BY id"


@pytest.fixture
def three_releases(stage_factory):
    """v1.0, v1.1, v1.2 released in turn, books written after each; keep_releases
    prunes v1.0's code, so rolling back to it re-deploys it from git."""
    st = stage_factory(1, keep_releases=2)
    cfg = st.config()
    for i, tag in enumerate(("v1.0", "v1.1", "v1.2")):
        assert api.release(cfg, st.name, tag).ok
        st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", f"after-{tag}")
    return st


def assert_back_on_v10(st, tmp_path, books, authors, media):
    assert st.pg.schema(st.db) == fresh_schema(st, "v1.0", tmp_path)
    assert rows(st, V10_BOOK) == books and len(books) == 6  # including the books written on v1.2
    assert rows(st, V10_AUTHOR) == authors
    assert st.media_checksums() == media
    assert [r[0] for r in rows(st, "SELECT name FROM django_migrations WHERE app = 'library'")] == ["0001_initial"]
    assert st.get(st.primary, "/")[1]["version"] == "1.0"
    assert st.revision(st.primary)[1] == "v1.0"
    assert registry(st.primary) == [("v1.0", "live"), ("v1.1", "superseded"), ("v1.2", "rolled-back")]
    assert not (st.primary.deploy_to / ".deploykit" / "lock").exists()
    assert not (st.primary.deploy_to / ".deploykit" / "pending.json").exists()


def operator_command(st, *args) -> str:
    """A management command of the optional deploykit.django app, run on the host."""
    env = {**os.environ, "EXTRA_APPS": "deploykit.django"}
    cp = subprocess.run([sys.executable, "manage.py", *args], cwd=st.primary.deploy_to / "current", env=env,
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    return " ".join(cp.stdout.split())


def test_rollback_to_tag_unapplies_and_keeps_rows(three_releases, tmp_path):
    st = three_releases
    books, authors, media = rows(st, V10_BOOK), rows(st, V10_AUTHOR), st.media_checksums()
    v10 = next(r for r in json.loads((st.primary.deploy_to / ".deploykit/releases.json").read_text())["releases"]
               if r["tag"] == "v1.0")
    assert not (st.primary.deploy_to / "releases" / v10["id"]).exists()  # pruned by keep_releases
    # snapshots follow keep_releases too: v1.0's (taken before v1.0 went live) is gone
    doc = json.loads((st.primary.deploy_to / ".deploykit/releases.json").read_text())
    ids = [r["id"] for r in doc["releases"]]
    snaps = sorted(m["release"] for n, m in doc["derived"].items() if m["kind"] == "snapshot" and n in st.pg.databases())
    assert snaps == sorted(ids[1:])
    assert all(n in st.pg.databases() for n, m in doc["derived"].items() if m["kind"] == "snapshot")
    untouched = st.snapshot()
    shown = operator_command(st, "deploykit_releases")
    assert "v1.0" in shown and "library:0004_book_isbn" in shown and "live" in shown
    plan = operator_command(st, "deploykit_plan", "--to-tag", "v1.0")
    assert "library: 0004_book_isbn -> 0001_initial" in plan and "-- unapply library.0002_genre_book_genre" in plan
    assert st.snapshot() == untouched

    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.0")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert_back_on_v10(st, tmp_path, books, authors, media)
    assert (st.primary.deploy_to / "releases" / v10["id"] / "REVISION").read_text().split()[1] == "v1.0"
    listing = st.cli("releases", "--host", st.name)
    assert listing.returncode == 0 and "rolled-back" in listing.stdout and "library:0001_initial" in listing.stdout


def test_dry_run_prints_the_plan_and_changes_nothing(three_releases):
    st = three_releases
    tree, data = st.tree(), st.snapshot()

    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.0", "--dry-run")

    assert cp.returncode == 0, cp.stderr
    out = " ".join(cp.stdout.split())
    assert "library: 0004_book_isbn -> 0001_initial" in out
    for name in ("0004_book_isbn", "0003_default_genres", "0002_genre_book_genre"):
        assert f"unapply library.{name}" in out
    assert "DROP COLUMN" in out and "would switch" in out and "would stop web" in out
    assert st.tree() == tree
    assert st.snapshot() == data


def test_killed_sshd_during_unapply_then_rerun_finishes(three_releases, tmp_path):
    st = three_releases
    books, authors, media = rows(st, V10_BOOK), rows(st, V10_AUTHOR), st.media_checksums()
    cfg = st.config()
    results = []
    worker = threading.Thread(target=lambda: results.append(api.rollback(cfg, st.name, to_tag="v1.0")))
    worker.start()
    deadline = time.monotonic() + 120
    killed = False
    while worker.is_alive() and time.monotonic() < deadline and not killed:
        ps = command_lines(under=st.primary.deploy_to)  # this host's helper, not another worker's
        if any("deploykit-django_state.py" in line and process_name(pid) == "dk migrate" for pid, line in ps.items()):
            st.primary.kill()
            killed = True
        time.sleep(0.01)
    worker.join()
    assert killed, f"the unapply was never seen running: {results[0].error}"
    assert not results[0].ok  # the connection died under it
    assert (st.primary.deploy_to / ".deploykit" / "pending.json").exists()
    # let an orphaned helper end, as an operator would before rerunning
    while any("deploykit-django_state.py" in line for line in command_lines(under=st.primary.deploy_to).values()):
        time.sleep(0.1)
    st.primary.restart()

    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.0")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert_back_on_v10(st, tmp_path, books, authors, media)


def test_irreversible_migration_refused_then_with_data(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.2").ok
    st.manage("seed_library", "--books", "3", "--with-covers", "--prefix", "  spaced   title ")
    at_backup, state_at_backup = all_rows(st), st.snapshot()
    assert api.release(cfg, st.name, "v2.0").ok  # rewrites titles: irreversible
    st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "after-v2")
    tree, data = st.tree(), st.snapshot()

    refused = st.cli("rollback", "--host", st.name, "--to-tag", "v1.2")
    assert_refused(refused, "irreversible", "library.0005_normalize_titles", "--with-data")
    assert st.tree() == tree and st.snapshot() == data
    assert st.revision(st.primary)[1] == "v2.0"

    no = api.rollback(cfg, st.name, to_tag="v1.2", with_data=True, confirm=lambda loss: False)
    assert not no.ok and "not confirmed" in no.error.one_line()
    assert st.tree(ignore_journal=True) == {k: v for k, v in tree.items() if ".deploykit/journal" not in k}
    assert st.snapshot() == data

    now = all_rows(st)
    expected = {t: sum((now[t] - at_backup.get(t, collections.Counter())).values()) for t in now}
    seen = []
    result = api.rollback(cfg, st.name, to_tag="v1.2", with_data=True, confirm=lambda loss: seen.append(loss) or True)

    assert result.ok, result.error
    assert seen[0]["db-default"] == expected
    assert expected["library_book"] == 5  # 3 titles rewritten + 2 books written since
    after = st.snapshot()
    assert after == state_at_backup
    assert st.get(st.primary, "/")[1]["version"] == "1.2"
    assert registry(st.primary) == [("v1.2", "live"), ("v2.0", "rolled-back")]


def _twin_of(repo: git.Repo, tag: str, chars: int = 2) -> str:
    """A commit with the tree of `tag` whose sha starts like tag's: an ambiguous prefix."""
    base = repo.tags[tag].commit
    env = {"GIT_AUTHOR_DATE": "2024-01-02T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-02T00:00:00Z"}
    for i in range(20000):
        sha = repo.git.commit_tree(base.tree.hexsha, "-p", base.hexsha, "-m", f"twin {i}", env=env)
        if sha[:chars] == base.hexsha[:chars]:
            return sha
    raise AssertionError("no twin found")


def test_bad_rollback_targets_change_nothing(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    repo = git.Repo(st.repo)
    name = f"v1.0-twin-{uuid.uuid4().hex[:6]}"
    repo.create_tag(name, ref=_twin_of(repo, "v1.0"))
    for tag in ("v1.0", name, "v1.1"):
        assert api.release(cfg, st.name, tag).ok
    tree, data = st.tree(), st.snapshot()

    assert_refused(st.cli("rollback", "--host", st.name, "--to-tag", "v9.9"), "unknown tag 'v9.9'")
    assert_refused(st.cli("rollback", "--host", st.name, "--to-tag", "v1.2"), "never released")
    prefix = repo.tags["v1.0"].commit.hexsha[:2]
    assert_refused(st.cli("rollback", "--host", st.name, "--to-commit", prefix), "ambiguous", "more characters")
    assert_refused(st.cli("rollback", "--host", st.name, "--to-release", "20000101T000000Z-nope"), "no release")

    assert st.tree() == tree
    assert st.snapshot() == data
    # a unique prefix is enough
    cp = st.cli("rollback", "--host", st.name, "--to-commit", repo.tags["v1.0"].commit.hexsha[:7])
    assert cp.returncode == 0, cp.stderr
    assert st.revision(st.primary)[1] == "v1.0"
