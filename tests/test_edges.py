"""Nothing lost at the edges: long and non-ASCII database names, restores that fail half-way, locks, hooks, secrets.

Each test shares one stage between several cases, checked in sequence, so the suite stays fast.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from deploykit import api
from deploykit.state import lock as stage_lock
from deploykit.config import load_config
from deploykit.transport.host import make_host
from deploykit.names import derived_name
from deploykit_testing.stage import OWNER

from .edge_rig import (SecretWatch, cluster_state, controller_temp_dirs, db_settings, edit_config, marked_processes,
                       one_line, popen, registry, rename_database, retarget, run, run_ids, says_where,
                       wait_for_event)

LONG = "acme_ecommerce_platform_production"
LONGER = "acme_ecommerce_platform_production_analytics"  # the same first 34 bytes, and more


def step(result, name):
    return next(r for r in result.records if r.step == name)


def quick_health(cfg) -> None:
    """A broken release's health check fails after 5 s instead of 10 (the suite's time is counted)."""
    cfg["health"][0]["timeout"] = 5


def oids(pg, names) -> dict:
    state = cluster_state(pg)
    return {n: state[n]["oid"] if n in state else None for n in names}


def test_two_apps_with_long_names_keep_to_their_own_data(stage_factory):
    """Two apps on one cluster, one database name a prefix of the other: recovery and pruning of one
    never touch the other's database or the copies its registry lists."""
    a = stage_factory(1, keep_releases=2)
    b = stage_factory(1)
    retarget(a, LONG, app="acme")
    retarget(b, LONGER, app="acme_analytics")
    edit_config(a, quick_health)
    acfg, bcfg = a.config(), b.config()
    assert api.release(acfg, a.name, "v1.0").ok
    assert api.release(bcfg, b.name, "v1.0").ok
    a.manage("seed_library", "--books", "3", "--with-covers")
    b.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "analytics")
    before_a, before_b = a.snapshot(), b.snapshot()
    b_names = sorted(registry(b.primary)["derived"])
    assert b_names, "B's first release took a snapshot and recorded it"
    b_copies = oids(b.pg, b_names + [LONGER])
    assert None not in b_copies.values(), b_copies

    # a failed release of A is recovered with A's own data, through A's snapshot
    result = api.release(acfg, a.name, "v1.3-broken-health")

    assert not result.ok and result.recovered, (result.error, result.recovery and result.recovery.error)
    assert "snapshot" in step(result.recovery, "build_restore").message
    assert a.snapshot() == before_a
    assert a.get(a.primary, "/")[1]["version"] == "1.0"
    assert b.snapshot() == before_b
    assert oids(b.pg, b_names + [LONGER]) == b_copies  # the same databases, not copies made again
    a_derived = registry(a.primary)["derived"]
    assert not set(a_derived) & set(b_names)
    assert {m["database"] for m in a_derived.values()} == {LONG}
    assert set(a_derived) <= set(a.pg.databases())

    # A releases again: pruning (keep_releases 2) drops A's copies of older releases, only those
    first_snapshot = next(n for n, m in a_derived.items() if m["kind"] == "snapshot")
    result = api.release(acfg, a.name, "v1.1")

    assert result.ok, result.error
    assert first_snapshot in step(result, "prune_snapshots").message
    assert first_snapshot not in a.pg.databases()
    assert first_snapshot not in registry(a.primary)["derived"]
    assert set(registry(a.primary)["derived"]) <= set(a.pg.databases())
    assert oids(b.pg, b_names + [LONGER]) == b_copies
    assert sorted(registry(b.primary)["derived"]) == b_names
    assert b.snapshot() == before_b
    assert b.get(b.primary, "/health/")[0] == 200


# 62 bytes in UTF-8: two-byte letters, so any truncation to 63 bytes would cut a letter or merge two names
CYRILLIC = "библиотека_продакшн_" + "д" * 12
assert len(CYRILLIC.encode()) == 62


def world(st) -> dict:
    """What a restore must put back or leave alone: rows of both schemas, schema, media, owners, settings."""
    state = st.snapshot()
    state["app_rows"] = st.pg.row_checksums(st.db, schema="app")
    state["settings"] = db_settings(st.pg, st.db)
    return state


def leftovers(st) -> dict:
    """Restore copies that a failed restore must not leave: databases, sibling media trees, registry entries."""
    derived = registry(st.primary)["derived"]
    return {"restore_names": sorted(n for n, m in derived.items() if m["kind"] in ("restore", "scratch")),
            "restore_dbs": sorted(n for n in st.pg.databases() if n.startswith(("dkr_", "dkc_"))),
            "media_siblings": sorted(p.name for p in st.media_root().parent.iterdir() if ".dk-" in p.name)}


def settled(st) -> dict:
    """The deploy root without the records of runs (journals, pid files of long commands)."""
    return {k: v for k, v in st.tree(ignore_journal=True).items() if ".deploykit/run" not in k}


def test_restores_at_the_edges_leave_the_live_data_alone(stage_factory, tmp_path):
    """A non-ASCII name at 62 bytes, two schemas in search_path, then restores that cannot finish: no tty, an
    owner typo, a backup emptied under the restore (a release meanwhile refused), a full disk; then one that can."""
    st = stage_factory(1)
    retarget(st, CYRILLIC)
    edit_config(st, quick_health)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.1").ok
    st.manage("seed_library", "--books", "3", "--with-covers")
    big = st.media_root() / "big.bin"
    big.write_bytes(os.urandom(2 << 20))
    st.pg.psql(st.db, f"CREATE SCHEMA app AUTHORIZATION {OWNER}; "
                      "CREATE TABLE app.shelf (id int PRIMARY KEY, label text); "
                      f"ALTER TABLE app.shelf OWNER TO {OWNER}; INSERT INTO app.shelf VALUES (1, 'top'), (2, 'низ');")
    st.pg.execute("postgres", f'ALTER DATABASE "{st.db}" SET search_path = app, public')
    before = world(st)
    assert before["settings"] == ["search_path=app, public"]
    assert before["app_rows"]["shelf"].startswith("2:") and before["rows"]["library_book"].startswith("3:")

    # a failed release is recovered through the snapshot: same rows in both schemas, the same list setting
    result = api.release(cfg, st.name, "v1.3-broken-health")

    assert not result.ok and result.recovered, (result.error, result.recovery and result.recovery.error)
    assert "snapshot" in step(result.recovery, "build_restore").message
    assert world(st) == before
    assert st.get(st.primary, "/")[1]["version"] == "1.1"
    failed_id, b1 = result.data["release_id"], result.data["backup_id"]
    derived = registry(st.primary)["derived"]
    asides = [n for n, m in derived.items() if m["kind"] == "aside" and m["release"] == failed_id]
    assert len(asides) == 1, derived
    snap = derived_name("snapshot", cfg.app, st.db, failed_id)  # swapped in: it is the live database now
    assert asides[0] != snap and snap not in st.pg.databases()
    live_snaps = [n for n, m in derived.items() if m["kind"] == "snapshot"]  # v1.1's own, still its way back
    assert len(live_snaps) == 1 and live_snaps[0] != asides[0]
    assert {st.db, asides[0], live_snaps[0]} <= set(st.pg.databases())
    st.pg.execute("postgres", f'ALTER DATABASE "{asides[0]}" WITH ALLOW_CONNECTIONS true')
    kept = {r[0] for r in st.pg.execute(asides[0], "SELECT name FROM django_migrations WHERE app = 'library'")}
    st.pg.execute("postgres", f'ALTER DATABASE "{asides[0]}" WITH ALLOW_CONNECTIONS false')
    assert "0005_book_pages" in kept  # the failed state, kept whole under its own name

    # written after backup b1: every restore below that does not finish must keep this
    st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "later")
    big.unlink()
    live, tree, none_left = world(st), settled(st), leftovers(st)
    lock = st.primary.deploy_to / ".deploykit" / "lock"

    def unchanged(cp, *codes):
        assert cp.returncode in codes, cp.stdout + cp.stderr
        assert world(st) == live
        assert leftovers(st) == none_left
        assert not lock.exists()
        assert st.get(st.primary, "/health/")[0] == 200
        line = one_line(cp)
        if cp.returncode == 1:
            says_where(line)
            assert "backup: " + str(st.primary.deploy_to / "backups" / b1) in line, line
        return line

    # no tty and no --yes: refused after the backup verified, nothing changed
    line = unchanged(run(st, "restore", "--host", st.name, "--backup", b1), 2)
    assert "not confirmed" in line and "--yes" in line
    assert settled(st) == tree

    # an owner role that does not exist: stopped before any copy is made; the app serves again. Today that is
    # exit 1 (the role is checked by build_restore, after the processes stopped; restore_abort starts them);
    # a check before the lock would make it a refusal, exit 2
    typo = edit_config(st, lambda c: c["databases"]["default"].update(owner="library_ownr"), tmp_path / "typo.yaml")
    cp = run(st, "restore", "--host", st.name, "--backup", b1, "--yes", config=typo)
    line = unchanged(cp, 1, 2)
    assert "library_ownr" in line
    assert ("nothing was restored" if cp.returncode == 1 else "nothing was changed") in line, line
    assert st.pg.database_owner(st.db) == OWNER

    # the live database renamed away: a backup refuses to save nothing, and writes no manifest
    listing = sorted(p.name for p in (st.primary.deploy_to / "backups").iterdir())
    rename_database(st.pg, st.db, "dk_test_away")
    try:
        cp = run(st, "backup", "--host", st.name)
    finally:
        rename_database(st.pg, "dk_test_away", st.db)
    assert cp.returncode != 0
    line = one_line(cp)
    assert st.db in line and "does not exist" in line
    says_where(line, backup=False)  # the incomplete backup was removed: there is none to name
    new = [p for p in (st.primary.deploy_to / "backups").iterdir() if p.name not in listing]
    assert not [p for p in new if (p / "manifest.json").exists()], new
    assert world(st) == live and not lock.exists()

    # a restore holds the lock from its check on: a release (which would prune backups) is refused meanwhile;
    # the dump emptied between the restore's check and its build: it stops before the swap
    slow = edit_config(st, lambda c: c["hooks"]["before"].update(restore=[{"run": "sleep 6", "on": "primary"}]),
                       tmp_path / "slow.yaml")
    dump = st.primary.deploy_to / "backups" / b1 / "db-default"
    victim = max((p for p in dump.iterdir() if p.name != "toc.dat"), key=lambda p: p.stat().st_size)
    proc = popen(st, "restore", "--host", st.name, "--backup", b1, "--yes", config=slow)
    try:
        journal = cfg.journal_dir / next(iter(_new_run(cfg.journal_dir, proc, "restore")))
        wait_for_event(journal, proc, event="phase", phase="stop")  # verified under the lock, not yet built
        shutil.move(victim, tmp_path / victim.name)
        refused = run(st, "release", "--host", st.name, "--tag", "v1.2")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    shutil.move(tmp_path / victim.name, victim)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "locked by run" in one_line(refused) and journal.stem in refused.stderr
    line = unchanged(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 1)
    assert "nothing was restored" in line and "pg_restore" in line
    assert "swap_restore" not in journal.read_text()

    # a full disk while the media are built beside: the live media and database stay, the app serves
    host = st.primary
    host.stop()
    host.file_size_limit = 512 * 1024  # the 2 MB file of the backup cannot be written back
    host.start()
    host.wait_ready()
    try:
        line = unchanged(run(st, "restore", "--host", st.name, "--backup", b1, "--yes"), 1)
        assert "media-media" in line or "File too large" in line, line
    finally:
        host.stop()
        host.file_size_limit = None
        host.start()
        host.wait_ready()

    # and the same restore, with room, puts b1 back: data, both schemas, the list setting, owners, media
    cp = run(st, "restore", "--host", st.name, "--backup", b1, "--yes")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert world(st) == before
    assert db_settings(st.pg, st.db) == ["search_path=app, public"]
    assert st.get(st.primary, "/health/")[0] == 200
    assert leftovers(st) == none_left


def _new_run(journal_dir: Path, proc, command: str, timeout: float = 60) -> list[str]:
    """The journal file of the run `proc` started (run ids end with the controller's pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.name for p in Path(journal_dir).glob(f"*-{command}-{proc.pid}.jsonl")]
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"{command} ended before its journal appeared: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no journal of {command} pid {proc.pid}")


def write_lock(st, cfg, run_id: str, **holder) -> None:
    """A lock as a run writes it (through the host helper), with the holder fields given."""
    host = make_host(cfg.stage(st.name)[0], cfg)
    try:
        info = {**stage_lock.holder_info(run_id, "release", st.name), **holder}
        doc = host.helper("locks", "lock_acquire", {"path": str(st.primary.deploy_to / ".deploykit" / "lock"),
                                                    "info": info})
        assert doc["acquired"], doc
    finally:
        host.close()


def test_lock_holders_hooks_and_secrets(stage_factory, tmp_path):
    """Who may free or take over a lock; hook output that looks like markup; a hook that times out is killed
    with all it started; the admin password never lands in a file."""
    st = stage_factory(1)
    base = st.config()
    assert api.release(base, st.name, "v1.0").ok
    lock = st.primary.deploy_to / ".deploykit" / "lock"

    def with_lock(c):
        c["lock"] = {"heartbeat": 1, "stale_after": 5}
    cfg_path = edit_config(st, with_lock, tmp_path / "lock.yaml")
    cfg = load_config(cfg_path)

    # a holder on this controller whose pid runs (this test): unlock refuses it, naming the pid
    write_lock(st, cfg, "live-run")
    cp = run(st, "unlock", "--host", st.name, config=cfg_path)
    assert cp.returncode == 2
    line = one_line(cp)
    assert "live-run" in line and f"pid {os.getpid()}" in line and "--force" in line
    assert lock.exists()
    assert run(st, "unlock", "--host", st.name, "--force", config=cfg_path).returncode == 0
    assert not lock.exists()

    # another controller's run that still beats: refused by release and by unlock (with the default
    # stale_after of 120 s, so that a slow machine cannot make it stale meanwhile)
    write_lock(st, cfg, "other-run", controller_id="other", controller="laptop", pid=1, pid_start=None)
    written = time.time()
    cp = run(st, "release", "--host", st.name, "--tag", "v1.1")
    assert cp.returncode == 2 and "other-run" in one_line(cp) and "heartbeat" in cp.stderr, cp.stderr
    cp = run(st, "unlock", "--host", st.name)
    assert cp.returncode == 2 and "other-run" in one_line(cp), cp.stderr
    assert lock.exists()

    # once its heartbeat is older than stale_after it is gone, but a long command of that run that still runs
    # (its token in its environment) keeps the lock: unlock names its pid; a process of the same name without
    # the token does not
    time.sleep(max(0.0, written + 6 - time.time()))
    pid_file = st.primary.deploy_to / ".deploykit" / "run" / "other-run.pids"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    marked = subprocess.Popen(["sleep", "300"], env={**os.environ, "DEPLOYKIT_CMD": token})
    plain = None
    try:
        pid_file.write_text(f"{marked.pid} {token} pg_restore library\n")
        cp = run(st, "unlock", "--host", st.name, config=cfg_path)
        assert cp.returncode == 2 and f"pid {marked.pid}" in one_line(cp), cp.stderr
        assert lock.exists()
        marked.kill()
        marked.wait()
        plain = subprocess.Popen(["sleep", "300"])
        pid_file.write_text(f"{plain.pid} {token} pg_restore library\n")
        cp = run(st, "unlock", "--host", st.name, config=cfg_path)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "other-run" in cp.stdout and "FORCED" not in cp.stdout
        assert not lock.exists()
    finally:
        for p in (marked, plain):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    pid_file.unlink()

    # a stale lock of another controller: the next release takes it over and says so. Its hook prints text
    # that looks like rich markup; meanwhile no file anywhere holds the admin password
    write_lock(st, cfg, "dead-run", controller_id="other", controller="laptop", pid=1, pid_start=None,
               heartbeat=time.time() - 60)

    def markup(c):
        c["hooks"]["after"]["upload"] = ["echo 'done [/]'; echo '[bold]x[/bold]'"]
    loud = edit_config(st, lambda c: (with_lock(c), markup(c)), tmp_path / "markup.yaml")
    password = st.pg.admin_password
    journal_dir = cfg.journal_dir
    runs_before = run_ids(journal_dir)
    tmp = Path(tempfile.gettempdir())  # the rest of it: test directories (ours are roots here) and clusters
    watch_args = dict(roots=[h.root for h in st.hosts] + [journal_dir], fresh_only=[tmp],
                      skip=[*tmp.glob("pytest-of-*"), *tmp.glob("dkpg-*"), st.pg.base])
    decoys = [st.primary.deploy_to / ".deploykit" / "decoy", tmp / f"dk-decoy-{secrets.token_hex(4)}"]
    probe = SecretWatch(password, **watch_args)
    for decoy in decoys:
        decoy.write_text(f"*:*:*:*:{password}\n")
    probe.scan()
    for decoy in decoys:
        decoy.unlink()
    assert probe.found == {str(d) for d in decoys}  # the watch below would see such a file
    with SecretWatch(password, **watch_args) as watch:
        cp = run(st, "release", "--host", st.name, "--tag", "v1.1", config=loud)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    out = cp.stdout + cp.stderr
    assert "dead-run" in out and "took over" in out, out[-2000:]
    assert "done [/]" in cp.stdout and "[bold]x[/bold]" in cp.stdout
    assert st.get(st.primary, "/")[1]["version"] == "1.1"
    assert watch.scans >= 3 and not watch.found and not watch.in_argv, (watch.scans, watch.found, watch.in_argv)
    (release_run,) = run_ids(journal_dir) - runs_before
    assert not controller_temp_dirs(release_run)
    assert not marked_processes(f"DEPLOYKIT_RUN={release_run}")  # nothing of it (nor its PGPASSWORD) lives on

    # a hook that times out: killed with everything it started, the release aborted before anything live
    def hung(c):
        c["hooks"]["before"]["snapshot"] = [{"run": "sleep 60; echo late > {deploy_to}/marker", "timeout": 2}]
    slow = edit_config(st, lambda c: (with_lock(c), hung(c)), tmp_path / "hung.yaml")
    runs_before = run_ids(journal_dir)
    cp = run(st, "release", "--host", st.name, "--tag", "v1.2", config=slow)
    (hung_run,) = run_ids(journal_dir) - runs_before
    assert cp.returncode == 1, cp.stdout + cp.stderr
    line = one_line(cp)
    assert "at snapshot" in line and "nothing live was changed" in line, line
    says_where(line)
    assert not marked_processes(f"DEPLOYKIT_RUN={hung_run}")  # neither the shell nor its sleep 60
    assert not (st.primary.deploy_to / "marker").exists()
    assert not controller_temp_dirs(hung_run)
    assert st.get(st.primary, "/")[1]["version"] == "1.1"
    statuses = {r["tag"]: r["status"] for r in registry(st.primary)["releases"]}
    assert statuses == {"v1.0": "superseded", "v1.1": "live", "v1.2": "failed"}
    time.sleep(1)
    assert not (st.primary.deploy_to / "marker").exists()

    # no journal, here or on the host, holds the password
    for run_id in (release_run, hung_run):
        assert password not in (journal_dir / f"{run_id}.jsonl").read_text()
        assert password not in (st.primary.deploy_to / ".deploykit" / "journal" / f"{run_id}.jsonl").read_text()
    with SecretWatch(password, roots=[h.root for h in st.hosts]) as after:
        pass
    assert not after.found, after.found
    for run_id in run_ids(journal_dir):  # every command of this test, the refused ones too
        assert not controller_temp_dirs(run_id), run_id

