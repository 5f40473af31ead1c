"""Rollbacks across squashed migrations, the sample's and a third-party app's (shipped as a wheel, like wagtail).

v1.4-shelf: library 0001..0004, dk_shelf 1.0 (0001..0003).
v1.5-squashed: library 0001_squashed_0004 + 0005, dk_shelf 2.0 (0001_squashed_0003 + 0004); the
replaced files are gone. The registry must record the real leaves, a rollback to v1.4-shelf must
unapply only 0005 and 0004, and a rollback to a release older than the squashes' start must be
refused, never planned as "unapply everything".
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import git

from deploykit import api
from deploykit_testing.samplerepo import archive_tag
from deploykit_testing.stage import OWNER, OWNER_PASSWORD
from tests.test_bad_input import assert_refused


def registry(host) -> dict[str, dict]:
    doc = json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())
    return {r["tag"]: r for r in doc["releases"]}


def rows(st, sql: str) -> list[tuple]:
    with st.pg.connect(st.db) as conn:
        return conn.execute(sql).fetchall()


def fresh_schema(st, tag: str, python: str, tmp_path) -> str:
    """Schema of a fresh install of `tag`, migrated by the tag's own code in an environment with its requirements."""
    db = f"fresh_{uuid.uuid4().hex[:8]}"
    st.pg.create_database(db, OWNER)
    tree = archive_tag(git.Repo(st.repo), tag, tmp_path / f"fresh-{tag}")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "DB_ENGINE": "postgresql", "DB_NAME": db,
           "DB_USER": OWNER, "DB_PASSWORD": OWNER_PASSWORD, "DB_HOST": st.pg.host, "DB_PORT": str(st.pg.port),
           "MEDIA_ROOT": str(tmp_path / "fresh-media")}
    subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=tree, env=env, check=True, capture_output=True)
    return st.pg.schema(db)


BOOKS = "SELECT id, title, author_id, genre_id, isbn, cover, created FROM library_book ORDER BY id"
SHELVES = "SELECT id, name, position, label FROM dk_shelf_shelf ORDER BY id"


def test_rollback_across_squashes(stage_factory, tmp_path):
    st = stage_factory(1)
    cfg = st.config()
    for tag in ("v1.0", "v1.4-shelf"):
        assert api.release(cfg, st.name, tag).ok
        st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", f"after-{tag}")
    st.pg.psql(st.db, "INSERT INTO dk_shelf_shelf (name, position, label) VALUES ('left', 1, 'a'), ('right', 2, 'b');")
    result = api.release(cfg, st.name, "v1.5-squashed")
    assert result.ok, result.error
    st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "after-v1.5")
    assert st.get(st.primary, "/env/")[1]["packages"]["dk-shelf"] == "2.0"

    # recorded as Django's loader sees it: graph nodes, a squash is one node, the real leaves
    reg = registry(st.primary)
    v15, v14 = reg["v1.5-squashed"], reg["v1.4-shelf"]
    assert v15["leaves"]["library"] == ["0005_book_edition"] and v15["leaves"]["dk_shelf"] == ["0004_shelf_colour"]
    assert v15["migrations"]["library"] == ["0001_squashed_0004_book_isbn", "0005_book_edition"]
    assert v15["migrations"]["dk_shelf"] == ["0001_squashed_0003_shelf_label", "0004_shelf_colour"]
    assert v15["replaced"]["library"] == ["0001_initial", "0002_genre_book_genre", "0003_default_genres", "0004_book_isbn"]
    assert v15["replaced"]["dk_shelf"] == ["0001_initial", "0002_shelf_position", "0003_shelf_label"]
    assert v14["migrations"]["dk_shelf"] == ["0001_initial", "0002_shelf_position", "0003_shelf_label"]
    assert v14["leaves"]["library"] == ["0004_book_isbn"] and not v14.get("replaced")
    migrate = next(r for r in result.records if r.step == "migrate")
    assert migrate.message == "applied 2: dk_shelf.0004_shelf_colour, library.0005_book_edition", migrate.message

    # the "174 migrations" situation: v1.0 predates both squashes' end; the squashed code cannot reach it
    tree, data = st.tree(), st.snapshot()
    refused = st.cli("rollback", "--host", st.name, "--to-tag", "v1.0")
    assert_refused(refused, "would unapply migrations it had", "library.0001_squashed_0004_book_isbn (replaces "
                   "library.0001_initial)", "roll back to a release in between first")
    assert st.tree() == tree and st.snapshot() == data

    # the plan to v1.4-shelf: only what came since, both squashes mapped onto the recorded names
    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.4-shelf", "--dry-run")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    out = " ".join(cp.stdout.split())
    assert sorted(re.findall(r"\bunapply (\w+\.\w+)", out)) == ["dk_shelf.0004_shelf_colour", "library.0005_book_edition"], out
    assert "library: 0005_book_edition -> 0001_squashed_0004_book_isbn" in out
    assert "dk_shelf: 0004_shelf_colour -> 0001_squashed_0003_shelf_label" in out
    assert st.tree() == tree and st.snapshot() == data
    books, shelves = rows(st, BOOKS), rows(st, SHELVES)

    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.4-shelf")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert re.search(r"unapplied 2: (dk_shelf.0004_shelf_colour, library.0005_book_edition|"
                     r"library.0005_book_edition, dk_shelf.0004_shelf_colour)", cp.stdout), cp.stdout
    assert rows(st, BOOKS) == books and len(books) == 6
    assert rows(st, SHELVES) == shelves and len(shelves) == 2
    assert st.pg.schema(st.db) == fresh_schema(st, "v1.4-shelf", st.python(), tmp_path)
    assert st.get(st.primary, "/")[1]["version"] == "1.4"
    assert st.get(st.primary, "/env/")[1]["packages"]["dk-shelf"] == "1.0"

    # from v1.4-shelf, whose code has the original migrations, v1.0 is reachable
    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.0")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert [r[0] for r in rows(st, "SELECT name FROM django_migrations WHERE app = 'library' ORDER BY id")][:1] \
        == ["0001_initial"]
    assert "0002_genre_book_genre" not in {r[0] for r in rows(st, "SELECT name FROM django_migrations")}
    assert rows(st, "SELECT to_regclass('dk_shelf_shelf') IS NULL") == [(True,)]
    assert len(rows(st, "SELECT id FROM library_book")) == 6
    assert st.get(st.primary, "/")[1]["version"] == "1.0"
