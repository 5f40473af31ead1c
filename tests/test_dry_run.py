"""A dry-run cannot write: every command and every playbook, on a database whose name is exactly 63 bytes."""
from __future__ import annotations

import subprocess
import sys

from deploykit import api
from deploykit.errors import DryRunWrite
from deploykit.engine.model import BUILTIN_DIR

from .edge_rig import cluster_state, edit_config, one_line, registry, retarget, run

NAME63 = ("library_dry_run_" + "n" * 63)[:63]  # PostgreSQL's longest name: any suffix would be cut off
assert len(NAME63.encode()) == 63


def test_every_dry_run_changes_nothing(stage_factory, tmp_path):
    st = stage_factory(1)
    retarget(st, NAME63)
    cfg = st.config()
    for tag in ("v1.0", "v1.1"):
        assert api.release(cfg, st.name, tag).ok
    st.manage("seed_library", "--books", "2", "--with-covers")
    live = next(r for r in registry(st.primary)["releases"] if r["status"] == "live")
    backup_id = live["backup_id"]  # taken while v1.0 was live: what rollback --with-data and restore would use
    mine = {st.db, *registry(st.primary)["derived"]}
    assert len(mine) == 3  # the live database and the snapshots of both releases

    def listing() -> dict:
        """Every database of the cluster (oid, owner, connections, settings, grants); rows of this stage's."""
        state = cluster_state_light(st.pg)
        for name in mine & set(state):
            if state[name]["allow"]:
                state[name]["rows"] = st.pg.row_checksums(name)
        return {"databases": state, "tree": st.tree()}

    everything, before = cluster_state(st.pg), listing()

    def unchanged(what):
        assert listing() == before, what

    # a name one byte longer is refused when deploykit.yaml is read
    long = edit_config(st, lambda c: c["databases"]["default"].update(name=NAME63 + "x"), tmp_path / "64.yaml")
    cp = run(st, "check", "--host", st.name, config=long)
    assert cp.returncode == 2 and "64 bytes" in one_line(cp), cp.stderr
    unchanged("64-byte name")

    commands = [
        ["release", "--host", st.name, "--tag", "v1.2"],
        ["rollback", "--host", st.name],
        ["rollback", "--host", st.name, "--with-data"],
        ["rollback", "--host", st.name, "--to-tag", "v1.0", "--with-data", "--yes"],
        ["backup", "--host", st.name],
        ["restore", "--host", st.name, "--backup", backup_id],
        ["unlock", "--host", st.name, "--force"],
    ]
    for argv in commands:
        cp = run(st, *argv, "--dry-run")
        out = cp.stdout + cp.stderr
        assert cp.returncode == 0, (argv, out[-3000:])
        assert "nothing was changed" in cp.stdout and "during a dry-run" not in out, (argv, out[-3000:])
        unchanged(argv)

    cp = run(st, "status", "--host", st.name)  # read-only by nature: its run is a dry-run
    assert cp.returncode == 0 and "every host is well" in cp.stdout, cp.stdout[-3000:] + cp.stderr
    unchanged("status")

    playbooks = sorted(p.stem for p in BUILTIN_DIR.glob("*.yml"))
    assert {"release", "rollback", "rollback_data", "restore", "backup", "recover", "abort", "abandon", "check",
            "release_finish", "restore_abort", "restore_finish", "rollback_abort", "rollback_finish",
            "rollback_data_finish", "backup_abort", "rollback_plan"} <= set(playbooks)
    for name in playbooks:
        result = api.run_procedure(cfg, st.name, name, dry_run=True)
        assert not isinstance(result.error, DryRunWrite), (name, result.error)
        assert not [r for r in result.records if "during a dry-run" in r.message], name
        assert result.ok, (name, result.error and result.error.one_line())
        assert result.records and {r.status for r in result.records} <= {"planned", "ok"}, name
        unchanged(name)

    # invoke's own --dry, through a project's tasks.py, means a dry run too
    (tmp_path / "tasks.py").write_text("from deploykit.tasks import ns\n")
    cp = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(tmp_path), "--dry", "release",
                         "--host", st.name, "--tag", "v1.2", "--config", str(st.config_path)],
                        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=st.env(), timeout=600)
    assert cp.returncode == 0 and "dry run of release" in cp.stdout, cp.stdout[-3000:] + cp.stderr
    unchanged("invoke --dry release")

    assert cluster_state(st.pg) == everything  # and the rows of every database of the cluster, once more
    assert st.get(st.primary, "/")[1]["version"] == "1.1"


def cluster_state_light(pg) -> dict:
    """cluster_state without the rows (those are compared for this stage's databases, and for all at the end)."""
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT d.datname, d.oid::int, pg_get_userbyid(d.datdba), d.datallowconn, d.datacl::text, "
            "(SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) "
            "FROM pg_database d WHERE NOT d.datistemplate ORDER BY 1").fetchall()
    return {n: {"oid": o, "owner": w, "allow": a, "acl": acl, "settings": s} for n, o, w, a, acl, s in rows}
