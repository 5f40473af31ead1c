"""An app whose manage.py and wsgi.py load .env and whose settings read DATABASE_URL only.

deploykit's Django work runs inside that manage.py: the migration states it
records are the real database's, a rollback really unapplies, and a release
whose app would use another database than deploykit.yaml's stops before
anything live changes.
"""
from __future__ import annotations

import json
import re
import uuid

from deploykit import api
from deploykit_testing.stage import OWNER, OWNER_PASSWORD


def registry(host) -> dict[str, dict]:
    doc = json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())
    return {r["tag"]: r for r in doc["releases"]}


def rows(st, sql: str, db: str | None = None) -> list[tuple]:
    with st.pg.connect(db or st.db) as conn:
        return conn.execute(sql).fetchall()


LIBRARY = "SELECT name FROM django_migrations WHERE app = 'library' ORDER BY id"
BOOKS = "SELECT id, title, author_id, genre_id, cover, created FROM library_book ORDER BY id"


def test_dotenv_app_records_and_unapplies_its_real_migrations(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    for tag in ("v1.1-dotenv", "v1.2-dotenv"):
        result = api.release(cfg, st.name, tag)
        assert result.ok, result.error
        check = next(r for r in result.records if r.step == "check_database")
        assert check.status == "ok" and check.message == "default ok"
        st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", f"after-{tag}")
    reg = registry(st.primary)
    assert reg["v1.1-dotenv"]["migrations"]["library"] == ["0001_initial", "0002_genre_book_genre", "0003_default_genres"]
    assert reg["v1.2-dotenv"]["migrations"]["library"][-1] == "0004_book_isbn"
    assert reg["v1.2-dotenv"]["leaves"]["library"] == ["0004_book_isbn"]
    assert "auth" in reg["v1.2-dotenv"]["migrations"]
    # no helper ever fell back to the SQLite file next to the code
    assert not list((st.primary.deploy_to / "releases").glob("*/db.sqlite3"))
    books = rows(st, BOOKS)

    plan = st.cli("rollback", "--host", st.name, "--to-tag", "v1.1-dotenv", "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    out = " ".join(plan.stdout.split())
    assert "library: 0004_book_isbn -> 0003_default_genres" in out and "schema already matches" not in out
    assert re.findall(r"\bunapply (\w+\.\w+)", out) == ["library.0004_book_isbn"] and "DROP COLUMN" in out

    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.1-dotenv")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "unapplied 1: library.0004_book_isbn" in cp.stdout
    assert [r[0] for r in rows(st, LIBRARY)] == ["0001_initial", "0002_genre_book_genre", "0003_default_genres"]
    assert rows(st, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'library_book' "
                    "AND column_name = 'isbn'") == [(0,)]
    assert rows(st, BOOKS) == books and len(books) == 4
    assert st.get(st.primary, "/")[1]["version"] == "1.1"
    assert st.revision(st.primary)[1] == "v1.1-dotenv"


def test_release_stops_when_the_app_would_use_another_database(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.1-dotenv").ok
    other = f"other_{uuid.uuid4().hex[:8]}"
    st.pg.create_database(other, OWNER)
    env_file = st.primary.deploy_to / "shared" / ".env"
    text = env_file.read_text()
    env_file.write_text(re.sub(r"DATABASE_URL=\S+", f"DATABASE_URL=postgresql://{OWNER}:{OWNER_PASSWORD}@"
                                                    f"{st.pg.host}:{st.pg.port}/{other}", text))
    before, current = st.snapshot(), st.current_target(st.primary)

    result = api.release(cfg, st.name, "v1.2-dotenv")

    # the shared .env is the live release's too: the preflight sees it before anything is locked or uploaded
    assert not result.ok and result.failed_phase == "check"
    line = result.error.one_line()
    assert f"the app uses postgresql '{other}' on {st.pg.host}:{st.pg.port}" in line, line
    assert f"deploykit.yaml says postgresql '{st.db}' on {st.pg.host}:{st.pg.port}" in line, line
    assert "hint:" in line and "\n" not in line
    assert st.current_target(st.primary) == current and st.snapshot() == before
    assert rows(st, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db=other) == [(0,)]
    assert [r.step for r in result.records if r.status == "failed"] == ["preflight"]
    assert not [r for r in result.records if r.step in ("acquire_lock", "upload_code", "migrate", "switch_current",
                                                         "stop_processes")]
    assert "v1.2-dotenv" not in registry(st.primary)
