"""The data path under faults: postgres killed mid-restore, a full disk, media mirror restores."""
from __future__ import annotations

import json
import subprocess
import time

from deploykit import api
from deploykit_testing.stage import OWNER
from tests.test_bad_input import assert_refused

BULK = ("INSERT INTO library_author (name) SELECT 'bulk author ' || g FROM generate_series(1, 20) g; "
        "INSERT INTO library_book (title, author_id, cover, created) "
        "SELECT md5(g::text) || md5((g * 3)::text), (SELECT min(id) FROM library_author), '', now() "
        "FROM generate_series(1, {n}) g;")


def backups(st) -> list[str]:
    return sorted(p.name for p in (st.primary.deploy_to / "backups").iterdir())


def take_backup(st) -> str:
    cp = st.cli("backup", "--host", st.name)
    assert cp.returncode == 0, cp.stderr
    return [b for b in backups(st) if b.endswith("-manual")][-1]


def test_postgres_killed_mid_restore_then_rerun_succeeds(stage_factory):
    st = stage_factory(1)
    assert api.release(st.config(), st.name, "v1.1").ok
    st.pg.psql(st.db, BULK.format(n=60000))
    st.manage("seed_library", "--books", "3", "--with-covers")
    backup = take_backup(st)
    at_backup = st.snapshot()
    st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "later")
    assert st.snapshot() != at_backup

    proc = subprocess.Popen(st.cli_argv("restore", "--host", st.name, "--backup", backup, "--yes"), env=st.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    while proc.poll() is None and not killed:
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        # Debian's /usr/bin/pg_restore execs /usr/lib/postgresql/N/bin/pg_restore; it restores into
        # a new database beside the live one (a derived dkr_ name), swapped in only once complete
        # (on this test's cluster: another worker may be restoring into its own)
        if any(line.split()[0].endswith("pg_restore") and " -d dkr_" in line and f"-p {st.pg.port} " in line
               for line in ps.splitlines() if line.strip()):
            st.pg.kill()
            killed = True
        time.sleep(0.005)
    out, err = proc.communicate(timeout=300)
    assert killed, out + err
    assert proc.returncode != 0 and "Traceback" not in out + err
    assert "run the same" in err or "restore" in err
    st.pg.restart()

    cp = st.cli("restore", "--host", st.name, "--backup", backup, "--yes")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert st.snapshot() == at_backup
    assert st.pg.database_owner(st.db) == OWNER
    assert st.get(st.primary, "/health/")[0] == 200


def test_dump_on_a_full_disk_fails_cleanly_and_leaves_the_database_alone(stage_factory):
    st = stage_factory(1)
    assert api.release(st.config(), st.name, "v1.1").ok
    st.pg.psql(st.db, BULK.format(n=30000))  # a table file far above the limit below
    before, listing = st.snapshot(), backups(st)
    host = st.primary
    host.stop()
    host.file_size_limit = 512 * 1024  # every file written in an ssh session: at most 512 KB
    host.start()
    host.wait_ready()

    cp = st.cli("backup", "--host", st.name)

    assert_refused(cp, "pg_dump")
    assert "File too large" in cp.stderr or "could not" in cp.stderr or "died" in cp.stderr, cp.stderr
    new = [b for b in backups(st) if b not in listing]
    assert all(not (host.deploy_to / "backups" / b / "manifest.json").exists() for b in new)
    assert st.snapshot() == before
    assert st.get(host, "/health/")[0] == 200
    assert not (host.deploy_to / ".deploykit" / "lock").exists()
    # the same goes for a release: it stops at its backup, the live release keeps serving
    rel = st.cli("release", "--host", st.name, "--tag", "v1.2")
    assert rel.returncode != 0 and "backup" in rel.stderr
    assert st.snapshot() == before and st.get(host, "/")[1]["version"] == "1.1"


def test_media_restore_mirrors_the_backup(stage_factory):
    st = stage_factory(1)
    assert api.release(st.config(), st.name, "v1.1").ok
    st.manage("seed_library", "--books", "3", "--with-covers")
    backup = take_backup(st)
    media = st.media_root()
    at_backup = st.media_checksums()
    files = sorted(at_backup)
    (media / "covers" / "added-later.png").write_bytes(b"written after the backup")
    (media / files[0]).write_bytes(b"changed after the backup")
    (media / files[1]).unlink()

    cp = st.cli("restore", "--host", st.name, "--backup", backup, "--yes")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert st.media_checksums() == at_backup
    kept = list((st.primary.deploy_to / "failed").rglob("added-later.png"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"written after the backup"
    replaced = [p for p in (st.primary.deploy_to / "failed").rglob(files[0].split("/")[-1])
                if p.read_bytes() == b"changed after the backup"]
    assert replaced, "the changed file's later version was not kept"
    manifest = json.loads((st.primary.deploy_to / "backups" / backup / "manifest.json").read_text())
    db_item = next(i for i in manifest["items"] if i["name"] == "db-default")
    assert db_item["meta"]["owner"] == OWNER and db_item["meta"]["server"].startswith("15")
    assert "pg_dump" in db_item["meta"]["pg_dump"] and db_item["meta"]["compression"]


def test_no_createdb_privilege_means_no_snapshot_and_says_so(stage_factory, tmp_path):
    """The admin role used here is the owner, without CREATEDB: the release says so and relies on its dump."""
    import os

    import yaml

    from deploykit.config import load_config
    from deploykit_testing.stage import OWNER_PASSWORD

    st = stage_factory(1)
    assert api.release(st.config(), st.name, "v1.0").ok
    cfg = yaml.safe_load(st.config_path.read_text())
    cfg["databases"]["default"].update(admin_user=OWNER, password_env="DK_TEST_OWNER_PASSWORD")
    path = tmp_path / "owner-admin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    os.environ["DK_TEST_OWNER_PASSWORD"] = OWNER_PASSWORD

    result = api.release(load_config(path), st.name, "v1.1")

    assert result.ok, result.error
    snap = next(r for r in result.records if r.step == "snapshot_databases")
    assert "lacks the CREATEDB privilege" in snap.message and "verified dump" in snap.message
    derived = json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text())["derived"]
    assert not [n for n, m in derived.items() if m["kind"] == "snapshot" and m["release"] == result.data["release_id"]]
    assert not set(derived) & set(st.pg.databases()) - {n for n, m in derived.items() if m["kind"] == "snapshot"}
    manifest = json.loads((st.primary.deploy_to / "backups" / result.data["backup_id"] / "manifest.json").read_text())
    assert [i["name"] for i in manifest["items"]] == ["code", "db-default", "media-media"]


def test_snapshot_budget_chooses_snapshot_or_dump_and_says_which(stage_factory, tmp_path):
    """Writers stop only for clones that fit snapshot_budget (estimated from the last clone's speed)."""
    import yaml

    from deploykit.config import load_config

    st = stage_factory(1)
    assert api.release(st.config(), st.name, "v1.0").ok
    result = api.release(st.config(), st.name, "v1.1")
    assert result.ok, result.error
    chose = next(r for r in result.records if r.step == "choose_snapshots")
    assert "snapshot of db-" not in chose.message or "within snapshot_budget 2 s" in chose.message
    assert "MB/s" in chose.message and "no snapshot" not in chose.message
    assert any(r.step == "stop_processes" and r.phase == "snapshot" for r in result.records)
    snap = next(r for r in result.records if r.step == "snapshot_databases")
    assert " -> dk" in snap.message and " s" in snap.message
    entries = json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text())["releases"]
    speed = next(e for e in entries if e["id"] == result.data["release_id"])["clone_speed"]
    assert speed["bytes"] > 0 and speed["seconds"] > 0

    cfg = yaml.safe_load(st.config_path.read_text())
    cfg["snapshot_budget"] = 0
    path = tmp_path / "no-budget.yaml"
    path.write_text(yaml.safe_dump(cfg))
    tight = api.release(load_config(path), st.name, "v1.2")

    assert tight.ok, tight.error
    chose = next(r for r in tight.records if r.step == "choose_snapshots")
    assert "over snapshot_budget 0 s (writers keep running)" in chose.message
    assert "recovery would restore the verified dump" in chose.message
    assert not any(r.step == "stop_processes" and r.phase == "snapshot" for r in tight.records)
    derived = json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text())["derived"]
    assert not [n for n, m in derived.items() if m["kind"] == "snapshot" and m["release"] == tight.data["release_id"]]
    entries = json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text())["releases"]
    assert next(e for e in entries if e["id"] == tight.data["release_id"])["clone_speed"] == speed  # carried over
    assert st.get(st.primary, "/")[1]["version"] == "1.2"
