"""Self-test of the test rig (deploykit_testing): real sshd, PostgreSQL, supervisord."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import paramiko
import psycopg
import pytest
from fabric import Config, Connection

from deploykit_testing import RigError
from deploykit_testing.ports import free_port
from deploykit_testing.postgres import PgCluster
from deploykit_testing.sshd import check_login_allowed, unused_address

pytest_plugins = ["deploykit_testing.plugin"]



def strict(host, known_hosts, key) -> Connection:
    """A Fabric connection built by hand: RejectPolicy, ONLY the given known_hosts."""
    conn = Connection(
        host.address,
        port=host.port,
        user=host.user,
        config=Config(overrides={"load_ssh_configs": False}),
        connect_timeout=5,
        connect_kwargs={"key_filename": str(key), "look_for_keys": False, "allow_agent": False},
    )
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(known_hosts))
    return conn


def run(conn: Connection, cmd: str) -> str:
    return conn.run(cmd, hide=True, in_stream=False).stdout.strip()


# ------------------------------------------------------------------ sshd ---


def test_ssh_hosts_run_commands_with_strict_host_keys(ssh_rig_factory):
    rig = ssh_rig_factory(2)
    assert [h.address for h in rig.hosts] == ["127.0.0.2", "127.0.0.3"]
    lines = rig.known_hosts.read_text().splitlines()
    assert len(lines) == 2
    for host, line in zip(rig.hosts, lines):
        assert re.fullmatch(rf"\[{re.escape(host.address)}\]:{host.port} ssh-ed25519 \S+", line)
        assert line == host.known_hosts_line
    assert rig.hosts[0].host_key_pub != rig.hosts[1].host_key_pub
    for host in rig.hosts:
        with strict(host, rig.known_hosts, rig.client_key) as c:
            assert run(c, "echo hi") == "hi"
            assert run(c, "id -un") == rig.user
            # the deploy directory is the log-in user's to write
            assert run(c, f"touch {host.deploy_to}/probe && echo ok") == "ok"
        assert (host.deploy_to / "probe").exists()
    # the rig's own helper is just as strict
    with rig.connection(rig.hosts[1]) as c:
        assert run(c, "echo hi") == "hi"
        assert isinstance(c.client._policy, paramiko.RejectPolicy)


def test_ssh_unknown_or_wrong_host_key_is_refused(ssh_rig_factory):
    rig = ssh_rig_factory(2)
    h1, h2 = rig.hosts
    partial = rig.known_hosts_without(h2)
    assert h2.known_hosts_line not in partial.read_text()

    with strict(h1, partial, rig.client_key) as c:
        assert run(c, "echo hi") == "hi"
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        strict(h2, partial, rig.client_key).open()

    # a known_hosts that lists host1's key for host2's address: a changed key
    wrong = rig.base / "known_hosts_wrong"
    wrong.write_text(f"[{h2.address}]:{h2.port} {h1.host_key_pub}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        strict(h2, wrong, rig.client_key).open()


def test_ssh_host_kill_and_restart(ssh_rig_factory):
    rig = ssh_rig_factory(2)
    h1, h2 = rig.hosts
    live = strict(h1, rig.known_hosts, rig.client_key)
    assert run(live, "echo before") == "before"

    h1.kill()
    assert not h1.running
    with pytest.raises(Exception):  # the open session died with the host
        run(live, "echo after")
    live.close()
    with pytest.raises((paramiko.ssh_exception.NoValidConnectionsError, OSError)):
        strict(h1, rig.known_hosts, rig.client_key).open()
    with strict(h2, rig.known_hosts, rig.client_key) as c:  # the other host is unaffected
        assert run(c, "echo hi") == "hi"

    h1.restart()  # same address, port and host key: known_hosts still valid
    with strict(h1, rig.known_hosts, rig.client_key) as c:
        assert run(c, "echo back") == "back"


def test_unused_address_is_unreachable():
    address, port = unused_address()
    t0 = time.monotonic()
    c = Connection(address, port=port, connect_timeout=5)
    with pytest.raises((paramiko.ssh_exception.NoValidConnectionsError, OSError)):
        c.open()
    assert time.monotonic() - t0 < 5  # refused at once, not a timeout


def test_locked_or_shell_less_account_is_reported():
    with pytest.raises(RigError, match="shell"):
        check_login_allowed("nobody")  # /usr/sbin/nologin


# -------------------------------------------------------------- postgres ---


DDL = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(8,2), seen timestamptz);
CREATE INDEX items_name ON items (name);
CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10;
"""


def test_pg_roles_databases_checksums_schema_owners(pg_cluster, unique_name, tmp_path):
    pg = pg_cluster
    owner, password = unique_name("owner"), "pa:ss'w\\rd"
    db1, db2 = unique_name("db"), unique_name("db")
    pg.create_role(owner, password)
    for db in (db1, db2):
        pg.create_database(db, owner=owner)
    try:
        assert pg.database_owner(db1) == owner
        for db in (db1, db2):
            with pg.connect(db, owner, password) as conn:
                assert conn.execute("SELECT current_user").fetchone()[0] == owner
                conn.execute(DDL)
                conn.execute(
                    "INSERT INTO items (name, price, seen) VALUES"
                    " ('a', 1.5, '2024-01-01T10:00:00+02'), ('b', 20, NULL), ('c', 3, now())"
                    if db == db1
                    else "SELECT 1"
                )
        with pytest.raises(psycopg.OperationalError):
            pg.connect(db1, owner, "wrong password")

        # owners: the app role, not the admin
        owners = pg.owners(db1)
        assert owners["database"] == owner
        assert owners["table:items"] == owner
        assert owners["sequence:items_id_seq"] == owner
        assert owners["view:cheap"] == owner
        assert pg.admin_user not in owners.values()

        # schema: equal for identical schemas, owners included, noise stripped
        s1, s2 = pg.schema(db1), pg.schema(db2)
        assert s1 == s2
        assert f"Owner: {owner}" in s1 and "\\restrict" not in s1
        with pg.connect(db2) as conn:
            conn.execute("ALTER TABLE items ADD COLUMN extra int")
        assert pg.schema(db2) != s1

        # checksums: stable, order-independent, sensitive to any change
        c1 = pg.row_checksums(db1)
        assert set(c1) == {"items"} and c1["items"].startswith("3:")
        assert pg.row_checksums(db1) == c1
        with pg.connect(db1) as conn:
            conn.execute("UPDATE items SET name = name")  # new tuple versions, same rows
            conn.execute("VACUUM FULL items")
        assert pg.row_checksums(db1) == c1
        with pg.connect(db1) as conn:
            conn.execute("UPDATE items SET price = 21 WHERE name = 'b'")
        c2 = pg.row_checksums(db1)
        assert c2 != c1 and c2["items"].startswith("3:")

        # psql (SQL via stdin) and a passfile for the owner
        assert pg.psql(db1, "SELECT count(*) FROM items").strip() == "3"
        passfile = pg.passfile(tmp_path / "pgpass", owner, password)
        assert oct(passfile.stat().st_mode & 0o777) == "0o600"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(passfile)
        out = subprocess.run(
            ["psql", "-X", "-w", "-At", "-h", pg.host, "-p", str(pg.port), "-U", owner, "-d", db1,
             "-c", "SELECT current_user"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == owner
    finally:
        pg.drop_database(db1)
        pg.drop_database(db2)
        pg.drop_role(owner)
    assert not pg.database_exists(db1)


def test_pg_database_factory_and_drop_with_open_sessions(pg_cluster, pg_database_factory):
    db = pg_database_factory("app")
    assert pg_cluster.database_owner(db.name) == db.owner != pg_cluster.admin_user
    session = pg_cluster.connect(db.name, db.owner, db.password)
    pg_cluster.drop_database(db.name)  # terminates the open session
    assert not pg_cluster.database_exists(db.name)
    session.close()


def test_pg_kill_and_restart(tmp_path):
    # its own cluster, created from a base under tmp_path (0700 when root: the
    # rig then picks a directory the unprivileged server user can reach)
    pg = PgCluster.start(tmp_path / "pg")
    try:
        pg.create_role("app_owner", "secret")
        pg.create_database("app", owner="app_owner")
        with pg.connect("app", "app_owner", "secret") as conn:
            conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
        before = pg.row_checksums("app")
        session = pg.connect("app")

        pg.kill()
        assert not pg.running
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            pg.connect("app")

        pg.restart()  # crash recovery; committed rows survive
        assert pg.running
        assert pg.row_checksums("app") == before
        pg.restart()  # a restart of a running server works too
        assert pg.row_checksums("app") == before
    finally:
        pg.stop()
    assert not pg.running


# ------------------------------------------------------------ supervisor ---


def test_supervisor_runs_a_program(supervisor_factory, tmp_path):
    port = free_port()
    sv = supervisor_factory(
        tmp_path / "sv",
        {
            "web": {
                "command": f"{sys.executable} -m http.server {port} --bind 127.0.0.1",
                "directory": str(tmp_path),
                "environment": {"DEPLOYKIT_PROBE": "100% yes"},
            }
        },
    )
    assert sv.conf.exists() and "autostart=false" in sv.conf.read_text()
    assert sv.status("web") == "STOPPED"

    assert sv.ctl("start", "web").returncode == 0
    assert sv.status("web") == "RUNNING"
    pid = sv.program_pid("web")
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"DEPLOYKIT_PROBE=100% yes" in environ
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert resp.status == 200

    assert sv.ctl("stop", "web").returncode == 0
    assert sv.status("web") == "STOPPED"
    with pytest.raises(KeyError):
        sv.status("nope")
    sv.shutdown()
    assert not sv.running


# ----------------------------------------------------------------- fleet ---


def test_fleet_is_one_stage_of_app_hosts_released_all_at_once(fleet_factory):
    from deploykit import api

    fleet = fleet_factory(3)
    hosts = fleet.hosts
    assert [h.address for h in hosts] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert len({h.host_key_pub for h in hosts}) == 3 and len({h.deploy_to for h in hosts}) == 3
    assert len(fleet.rig.known_hosts.read_text().splitlines()) == 3
    specs = fleet.config.stage(fleet.name)
    assert [s.name for s in specs] == [h.name for h in hosts]
    assert [sorted(s.roles) for s in specs] == [["app", "primary"], ["app"], ["app"]]
    result = api.release(fleet.config, fleet.name, "v1.0")
    assert result.ok, result.error
    for h in hosts:
        assert fleet.stage.revision(h)[1:] == ["v1.0"]
        status, body = fleet.stage.get(h, "/health/")
        assert status == 200 and body["status"] == "ok"
    fleet.stop()
    assert not any(h.running for h in hosts)
    assert not any(sup.running for sup in fleet.stage.supervisors)
