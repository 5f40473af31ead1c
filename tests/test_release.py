"""Release and recovery end to end: real sshd hosts, PostgreSQL, gunicorn under supervisord."""
from __future__ import annotations

import json

import pytest

from deploykit import api
from deploykit_testing.stage import OWNER


def registry(host) -> dict:
    return json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())


def applied(stage, app="library") -> list[str]:
    with stage.pg.connect(stage.db) as conn:
        rows = conn.execute("SELECT name FROM django_migrations WHERE app = %s ORDER BY id", (app,)).fetchall()
    return [r[0] for r in rows]


def test_release_two_hosts_migrates_once_and_switches_both(stage_factory):
    st = stage_factory(2)
    cfg = st.config()
    for tag in ("v1.0", "v1.1"):
        result = api.release(cfg, st.name, tag)
        assert result.ok, result.error
    release_id = result.data["release_id"]
    for h in st.hosts:
        status, body = st.get(h, "/")
        assert status == 200 and body["version"] == "1.1", (h.name, body)
        assert st.revision(h)[1] == "v1.1"
        assert st.current_target(h).endswith(f"releases/{release_id}")
    # install commands ran in each release directory, on each host
    for h in st.hosts:
        assert (h.deploy_to / "releases" / release_id / "INSTALLED").read_text().split() == ["installed", h.name]
    # every step is journaled, locally and on each host; no password anywhere in them or left on a host
    run_id = result.run_id
    local = (cfg.journal_dir / f"{run_id}.jsonl").read_text()
    for h in st.hosts:
        remote = (h.deploy_to / ".deploykit" / "journal" / f"{run_id}.jsonl").read_text()
        steps = {json.loads(line)["step"] for line in remote.splitlines() if '"event": "step"' in line}
        assert {"acquire_lock", "upload_code", "switch_current", "health_check"} <= steps
        assert st.pg.admin_password not in remote
        assert not list((h.deploy_to / ".deploykit").glob("pgpass-*"))
    assert '"step": "migrate"' in local and st.pg.admin_password not in local
    # hooks ran at their stages: before migrate once on the primary, after switch on each host
    assert (st.primary.deploy_to / "hooks.log").read_text().splitlines() == [
        "before-migrate host1", "after-switch host1"] * 2
    assert (st.hosts[1].deploy_to / "hooks.log").read_text().splitlines() == ["after-switch host2"] * 2
    # migrations ran once, on the primary, and each exactly once
    assert [r.host for r in result.records if r.step == "migrate"] == [st.primary.name]
    assert applied(st) == ["0001_initial", "0002_genre_book_genre", "0003_default_genres"]
    # the data migration of v1.1 really ran
    with st.pg.connect(st.db) as conn:
        assert {r[0] for r in conn.execute("SELECT name FROM library_genre")} == {"fiction", "non-fiction"}
    # every app host keeps the same registry: v1.0 superseded, v1.1 live with its migrations
    docs = [registry(h) for h in st.hosts]
    assert docs[0] == docs[1]
    rel = docs[0]["releases"]
    assert [(r["tag"], r["status"]) for r in rel] == [("v1.0", "superseded"), ("v1.1", "live")]
    assert rel[1]["leaves"]["library"] == ["0003_default_genres"]
    assert rel[1]["backup_id"] and rel[1]["previous"] == rel[0]["id"]
    # the pre-release backup is there, 0700, and verified
    backup_dir = st.primary.deploy_to / "backups" / rel[1]["backup_id"]
    assert oct(backup_dir.stat().st_mode & 0o777) == "0o700"
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert [i["name"] for i in manifest["items"]] == ["code", "db-default", "media-media"]
    assert oct((backup_dir / "manifest.json").stat().st_mode & 0o777) == "0o600"


def db_level(st) -> dict:
    """Database-level state a plain CREATE DATABASE would lose."""
    with st.pg.connect(st.db) as conn:
        ext = [r[0] for r in conn.execute("SELECT extname FROM pg_extension ORDER BY 1")]
    with st.pg.connect("postgres") as conn:
        settings = conn.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                                "WHERE d.datname = %s AND s.setrole = 0", (st.db,)).fetchall()
        acl = conn.execute("SELECT datacl::text FROM pg_database WHERE datname = %s", (st.db,)).fetchone()
    return {"extensions": ext, "settings": settings, "acl": acl}


# the health case recovers through the snapshot (rename swap), the migration case through the verified dump
@pytest.mark.parametrize("broken, snapshots", [("v1.3-broken-health", True), ("v1.3-broken-migration", False)])
def test_failed_release_is_recovered_exactly(stage_factory, broken, snapshots):
    st = stage_factory(2, snapshots=snapshots)
    cfg = st.config()
    for tag in ("v1.0", "v1.2"):
        assert api.release(cfg, st.name, tag).ok
    st.manage("seed_library", "--books", "4", "--with-covers")
    st.pg.psql("postgres", f'ALTER DATABASE "{st.db}" SET work_mem = \'7MB\'; '
                           f'REVOKE ALL ON DATABASE "{st.db}" FROM PUBLIC; GRANT CONNECT ON DATABASE "{st.db}" TO {OWNER};')
    st.pg.psql(st.db, "CREATE EXTENSION IF NOT EXISTS pg_trgm;")
    before, level = st.snapshot(), db_level(st)
    assert level["extensions"] == ["pg_trgm", "plpgsql"] and level["settings"]
    assert before["rows"]["library_book"].startswith("4:") and len(before["media"]) == 4

    result = api.release(cfg, st.name, broken)

    assert not result.ok and result.recovered, (result.error, result.recovery and result.recovery.error)
    assert result.failed_phase == ("verify" if "health" in broken else "migrate")
    after = st.snapshot()
    assert after["schema"] == before["schema"]
    assert after["rows"] == before["rows"]
    assert after["media"] == before["media"]
    assert after["owners"] == before["owners"]
    assert set(after["owners"].values()) == {OWNER}
    assert db_level(st) == level
    build = next(r for r in result.recovery.records if r.step == "build_restore")
    assert ("snapshot" in build.message) == snapshots, build.message  # else restored from the dump, beside
    swap = next(r for r in result.recovery.records if r.step == "swap_restore")
    assert "swapped in by rename" in swap.message, swap.message
    assert st.pg.database_owner(st.db) == OWNER
    failed_id = result.data["release_id"]
    for h in st.hosts:
        assert (h.deploy_to / "failed" / failed_id / "code" / "manage.py").is_file()
        status, body = st.get(h, "/")
        assert status == 200 and body["version"] == "1.2"
        assert st.revision(h)[1] == "v1.2"
    # the failed-state database was kept whole, set aside by the swap under a name the registry records
    asides = [n for n, m in registry(st.primary)["derived"].items() if m["kind"] == "aside" and m["release"] == failed_id]
    assert len(asides) == 1 and asides[0] in st.pg.databases(), asides
    with st.pg.connect("postgres") as conn:
        conn.execute(f'ALTER DATABASE "{asides[0]}" WITH ALLOW_CONNECTIONS true')
    with st.pg.connect(asides[0]) as conn:
        kept = {r[0] for r in conn.execute("SELECT name FROM django_migrations WHERE app = 'library'")}
    assert "0005_book_pages" in kept  # the failed release's own migration: the failed state, not a copy of before
    statuses = {r["tag"]: r["status"] for r in registry(st.primary)["releases"]}
    assert statuses == {"v1.0": "superseded", "v1.2": "live", broken: "failed"}
    assert not (st.primary.deploy_to / ".deploykit" / "lock").exists()


def test_rollback_with_data_restores_previous_code_and_data(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.0").ok
    st.manage("seed_library", "--books", "3", "--with-covers")
    before_v11 = st.snapshot()
    assert api.release(cfg, st.name, "v1.1").ok
    st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "late")

    cp = st.cli("rollback", "--host", st.name, "--with-data", "--yes")

    assert cp.returncode == 0, cp.stderr
    assert st.snapshot() == before_v11
    status, body = st.get(st.primary, "/")
    assert body["version"] == "1.0"
    statuses = [(r["tag"], r["status"]) for r in registry(st.primary)["releases"]]
    assert statuses == [("v1.0", "live"), ("v1.1", "rolled-back")]


def test_recovery_through_a_snapshot_needs_no_dump(stage_factory, monkeypatch):
    """A recovery that swaps a snapshot in does not read (nor verify) the database's dump: a damaged dump
    does not stop it, and it does not spend the time hashing it (the media are still verified)."""
    from deploykit.steps.django import Migrate

    st = stage_factory(1, snapshots=True)
    cfg = st.config()
    for tag in ("v1.0", "v1.2"):
        assert api.release(cfg, st.name, tag).ok
    st.manage("seed_library", "--books", "4", "--with-covers")
    before = st.snapshot()
    damaged = []
    migrate = Migrate.run

    def damage_the_dump_then_migrate(self, ctx, host):
        dump = st.primary.deploy_to / "backups" / ctx.backup_id / "db-default"
        data = max((p for p in dump.iterdir() if p.name != "toc.dat"), key=lambda p: p.stat().st_size)
        data.write_bytes(b"\0" * data.stat().st_size)
        damaged.append(data)
        return migrate(self, ctx, host)

    monkeypatch.setattr(Migrate, "run", damage_the_dump_then_migrate)
    result = api.release(cfg, st.name, "v1.3-broken-health")

    assert damaged and not result.ok and result.recovered, (result.error, result.recovery and result.recovery.error)
    verify = next(r for r in result.recovery.records if r.step == "verify_backup")
    assert "db-default: a snapshot is swapped in, the dump is not read" in verify.message
    assert "snapshot" in next(r for r in result.recovery.records if r.step == "build_restore").message
    after = st.snapshot()
    assert after["rows"] == before["rows"] and after["schema"] == before["schema"]
    assert after["media"] == before["media"]
    assert st.get(st.primary, "/")[1]["version"] == "1.2"
