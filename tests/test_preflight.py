"""Preflight: `deploykit check` and `release` refuse every mistake a read-only look can find, and change nothing."""
from __future__ import annotations

import sqlite3

from deploykit import api
from deploykit_testing.ports import free_port
from deploykit_testing.stage import OWNER

from .edge_rig import edit_config, one_line, run


def test_preflight_refuses_each_mistake_and_changes_nothing(stage_factory, tmp_path):
    st = stage_factory(1)
    assert api.release(st.config(), st.name, "v1.0").ok
    st.manage("seed_library", "--books", "2", "--with-covers")
    # a SQLite file where an operator would put it (shared/), for the case that names it relative to deploy_to
    with sqlite3.connect(st.primary.deploy_to / "shared" / "db.sqlite3") as conn:
        conn.execute("CREATE TABLE t (x int)")
    other = f"{st.db}_other"  # a real database of the same owner, that the live release does not use
    st.pg.create_database(other, OWNER)
    lock = st.primary.deploy_to / ".deploykit" / "lock"
    tree, data = st.tree(), st.snapshot()

    ok = run(st, "check", "--host", st.name)
    assert ok.returncode == 0 and "every check passed" in ok.stdout, ok.stdout + ok.stderr

    # deploykit --dry release: invoke's --dry is not deploykit's --dry-run, and is refused as such
    cp = run(st, "release", "--host", st.name, "--tag", "v1.1", core=("--dry",))
    assert cp.returncode == 2 and "--dry-run" in one_line(cp), cp.stderr

    def sup(**kw):
        return lambda c: c["processes"][0]["supervisor"].update(kw)

    def set_db(**kw):
        return lambda c: c["databases"]["default"].update(kw)

    dead_port = free_port(st.primary.address)
    cases = {
        "misspelt program": (sup(program="wbe"), ["wbe", "no program"]),
        "missing supervisor conf": (sup(conf="/nonexistent/supervisord.conf"), ["/nonexistent/supervisord.conf"]),
        "systemd without a bus": (lambda c: c.update(processes=[{"name": "web", "systemd": "library-web.service"}]),
                                  ["systemd"]),
        "health URL nothing answers": (lambda c: c["health"].__setitem__(0, {
            "http": f"http://{st.primary.address}:{dead_port}/health/", "expect_status": 200, "timeout": 2}),
            [f":{dead_port}/health/", "health check"]),
        "SQLite path relative to the wrong directory": (
            lambda c: c.update(databases={"default": {"engine": "sqlite", "path": "db.sqlite3"}}),
            [f"{st.primary.deploy_to}/db.sqlite3", "does not exist"]),
        "missing identity file": (lambda c: c["ssh"].update(identity=str(tmp_path / "no-such-key")), ["no-such-key"]),
        "owner role that does not exist": (set_db(owner="library_ownr"), ["library_ownr", "does not exist"]),
        "a database Django does not use": (set_db(name=other), [other, st.db]),
        "a shared file the host lacks": (lambda c: c.update(shared=[*c.get("shared", []), "settings/local.env"]),
                                         [f"{st.primary.deploy_to}/shared/settings/local.env", "does not exist"]),
    }
    for i, (case, (edit, words)) in enumerate(cases.items()):
        path = edit_config(st, edit, tmp_path / f"case{i}.yaml")
        for command in (["check", "--host", st.name], ["release", "--host", st.name, "--tag", "v1.1"]):
            cp = run(st, *command, config=path)
            assert cp.returncode == 2, (case, command[0], cp.stdout[-3000:] + cp.stderr)
            line = one_line(cp)
            for word in words:
                assert word in line, (case, command[0], word, line)
            assert not lock.exists(), (case, command[0])
        assert st.tree() == tree, case
        assert st.snapshot() == data, case
    assert st.get(st.primary, "/")[1]["version"] == "1.0"
