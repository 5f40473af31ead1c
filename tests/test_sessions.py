"""Sessions: one long-lived command per host and run, spoken to in lines (transport/session.py).

What replaces a Django start-up (or a psql) per question. Run for real over
a local pipe and over a real sshd on loopback; the helper side's protocol
(remote/_common.serve_session) is run in-process.
"""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time

import pytest

from deploykit.errors import DryRunWrite, HostCommandFailed, Interrupted
from deploykit.transport.bundle import REMOTE_DIR
from deploykit.transport.host import q
from deploykit.transport.session import SessionEnded
from deploykit_testing._proc import command_lines
from tests.test_transport import local_host, ssh_host

# Answers each line with its own pid and the line; "sleep" sleeps; "quit" ends with 3.
ECHO = ("import os,sys,time\n"
        "for line in sys.stdin:\n"
        "    w = line.strip()\n"
        "    if w == 'sleep': time.sleep(60)\n"
        "    if w == 'quit': sys.exit(3)\n"
        "    print('noise'); print('ANSWER', os.getpid(), w, flush=True)\n")


def echo_command() -> str:
    return f"{q(sys.executable)} -u -c {q(ECHO)}"


@pytest.fixture(params=["local", "ssh"])
def host(request, tmp_path):
    if request.param == "local":
        h = local_host(tmp_path)
    else:
        h = ssh_host(request.getfixturevalue("ssh_rig_factory")(1), tmp_path)
    yield h
    h.close()


def answer(session, timeout=20.0) -> list[str]:
    while True:
        line = session.read_line(timeout)
        if line.startswith("ANSWER"):
            return line.split()[1:]


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]


def test_one_process_answers_many_requests_and_ends_with_the_host(host):
    session = host.session("echo", lambda: host.open_session(echo_command(), track="echo"))
    pids = set()
    for word in ("a", "b", "c"):
        session.send(word + "\n")
        pid, got = answer(session)
        assert got == word
        pids.add(int(pid))
    assert len(pids) == 1
    assert host.session("echo", lambda: pytest.fail("a live session is started again")) is session
    pid = pids.pop()
    assert any(int(p) == pid for p in command_lines())
    host.close()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    assert not host._active  # nothing of the run is left listed as running


def test_an_ended_session_says_so_and_is_started_again(host):
    session = host.session("echo", lambda: host.open_session(echo_command()))
    session.send("quit\n")
    with pytest.raises(SessionEnded, match="it ended"):
        answer(session)
    assert session.close().exited == 3
    again = host.session("echo", lambda: host.open_session(echo_command()))
    assert again is not session
    again.send("x\n")
    assert answer(again)[1] == "x"


def test_no_answer_in_time_stops_the_command(host):
    session = host.open_session(echo_command())
    session.send("ping\n")
    pid = int(answer(session)[0])
    session.send("sleep\n")
    with pytest.raises(HostCommandFailed, match="did not answer within 1s"):
        answer(session, timeout=1)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid) and not session.alive


def test_an_interrupt_kills_a_busy_session(host):
    session = host.open_session(echo_command())
    session.send("ping\n")
    pid = int(answer(session)[0])
    session.send("sleep\n")
    threading.Timer(0.5, host.cancel).start()
    with pytest.raises(Interrupted):
        answer(session, timeout=30)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_a_dry_run_host_refuses_a_session_that_is_not_read_only(tmp_path):
    host = local_host(tmp_path, read_only=True)
    try:
        with pytest.raises(DryRunWrite):
            host.open_session(echo_command())
        assert not host._active
    finally:
        host.close()


# -- the helper's side: remote/_common.serve_session -------------------------------------------------
def common():
    sys.path.insert(0, str(REMOTE_DIR))
    try:
        import _common
    finally:
        sys.path.remove(str(REMOTE_DIR))
    return _common


def test_serve_session_answers_each_line_and_refuses_writes_when_read_only(monkeypatch):
    c = common()
    closed = []

    def put(args):
        print("a library talking")  # must not reach the answers
        return {"changed": True, "put": args["v"]}

    actions = {"get": lambda args: {"got": args.get("v")}, "put": put,
               "boom": lambda args: 1 / 0}
    requests = "".join(json.dumps(r) + "\n" for r in (
        {"action": "get", "args": {"v": 1}}, {"action": "put", "args": {"v": 2}},
        {"action": "boom"}, {"action": "nope"}))

    out = io.StringIO()
    c.serve_session(actions, {"get"}, after=lambda: closed.append(1), stdin=io.StringIO(requests), stdout=out,
                    typed_errors=True)
    lines = out.getvalue().split("\n")[:-1]  # (str.splitlines would also split at the mark's \x1e)
    # each request that will be acted on is acknowledged first (a request is never sent twice)
    assert [line if line == c.STARTED else line[:len(c.ANSWER)] for line in lines] == \
        [c.STARTED, c.ANSWER] * 3 + [c.ANSWER]
    answers = [json.loads(line[len(c.ANSWER):]) for line in lines if line.startswith(c.ANSWER)]
    assert answers[0] == {"ok": True, "changed": False, "got": 1}
    assert answers[1] == {"ok": True, "changed": True, "put": 2}
    assert answers[2]["ok"] is False and answers[2]["error"].startswith("ZeroDivisionError")
    assert answers[3]["kind"] == "UnknownAction"
    assert len(closed) == 4  # database connections closed after every request

    monkeypatch.setenv("DEPLOYKIT_READ_ONLY", "1")
    out = io.StringIO()
    c.serve_session(actions, {"get"}, stdin=io.StringIO(requests), stdout=out)
    lines = out.getvalue().split("\n")[:-1]
    answers = [json.loads(line[len(c.ANSWER):]) for line in lines if line.startswith(c.ANSWER)]
    assert answers[0]["ok"] is True
    assert answers[1]["ok"] is False and "read-only" in answers[1]["error"]
    assert lines[:3] == [c.STARTED, lines[1], lines[2]] and lines[2].startswith(c.ANSWER)  # put: refused unread


# -- PostgreSQL through one psql per host and run (drivers/psql.py) ------------------------------------
class _Journal:
    def record(self, *a, **k):
        pass


class _Ctx:
    run_id = "20260101T000000Z-release-1-sess"
    journal = _Journal()


@pytest.fixture
def pg_on_host(tmp_path, pg_cluster, pg_database_factory, monkeypatch):
    from deploykit.drivers.postgres import PostgresDriver
    from tests.test_drivers_unit import DatabaseSpec

    db = pg_database_factory("sess")
    monkeypatch.setenv("DK_SESSION_PW", pg_cluster.admin_password)
    driver = PostgresDriver(DatabaseSpec(alias="default", engine="postgresql", name=db.name, owner=db.owner,
                                         host=pg_cluster.host, port=pg_cluster.port,
                                         admin_user=pg_cluster.admin_user, password_env="DK_SESSION_PW"))
    host = local_host(tmp_path)
    yield driver, host, db, pg_cluster
    host.close()


def test_statements_share_one_psql_and_one_connection(pg_on_host):
    d, host, db, cluster = pg_on_host
    ctx = _Ctx()
    first = d.value(ctx, host, "SELECT pg_backend_pid();")
    assert d.exists(ctx, host) and d.role_exists(ctx, host, db.owner)
    assert d.value(ctx, host, "SELECT pg_backend_pid();") == first
    assert len([k for k in host._sessions if k[0] == "psql"]) == 1
    # a question about another database: answered there, then the session is back on the maintenance db,
    # so it holds no connection to a database the run may clone or rename
    assert d.value(ctx, host, "SELECT current_database();", db=db.name) == db.name
    held = cluster.execute("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                       "AND application_name = %s", (db.name, f"deploykit {ctx.run_id}"))
    assert held == [(0,)]
    d.psql(ctx, host, f'CREATE DATABASE "{db.name}_copy" TEMPLATE "{db.name}";')
    d.psql(ctx, host, f'DROP DATABASE "{db.name}_copy";')


def test_a_failing_statement_stops_the_script_like_a_psql_of_its_own(pg_on_host):
    d, host, db, cluster = pg_on_host
    ctx = _Ctx()
    def writer_pid():  # the writing session's backend (questions go through a read-only one of their own)
        return d.psql(ctx, host, "SELECT pg_backend_pid();").stdout.strip()

    before = writer_pid()
    assert writer_pid() == before
    res = d.psql(ctx, host, f'SELECT 1; SELECT 1/0; CREATE DATABASE "{db.name}_never";', check=False)
    assert res.exited == 3 and "division by zero" in res.stderr
    assert not d.database_exists(ctx, host, f"{db.name}_never")  # stopped at the first error
    assert writer_pid() != before  # psql ended with the error; a new session took over
    with pytest.raises(HostCommandFailed, match="does not exist"):
        d.psql(ctx, host, "SELECT 1;", db=f"{db.name}_nowhere")
    assert d.value(ctx, host, "SELECT 2;") == "2"


def test_read_only_sql_is_refused_by_the_server_and_a_dry_run_sends_no_write(pg_on_host, tmp_path):
    d, host, db, cluster = pg_on_host
    ctx = _Ctx()
    res = d.psql(ctx, host, "CREATE TABLE t (x int);", db=db.name, read_only=True, check=False)
    assert not res.ok and "read-only transaction" in res.stderr
    (tmp_path / "dry").mkdir()
    dry = local_host(tmp_path / "dry", read_only=True)
    try:
        with pytest.raises(DryRunWrite):
            d.psql(ctx, dry, "CREATE TABLE t (x int);", db=db.name)
        assert d.exists(ctx, dry)  # reading is allowed
    finally:
        dry.close()
    assert cluster.execute(db.name, "SELECT count(*) FROM pg_tables WHERE tablename = 't'") == [(0,)]


def test_a_dropped_connection_is_noticed_before_the_script_runs_and_the_script_runs_once(pg_on_host):
    """Backends terminated while the session waited (the faults' "drop"): the next statement goes to a new
    session, exactly once."""
    d, host, db, cluster = pg_on_host
    ctx = _Ctx()
    d.psql(ctx, host, "CREATE TABLE hits (n int);", db=db.name)
    before = d.psql(ctx, host, "SELECT pg_backend_pid();").stdout.strip()
    cluster.execute("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = %s", (f"deploykit {ctx.run_id}",))
    d.psql(ctx, host, "INSERT INTO hits VALUES (1);", db=db.name)
    assert d.psql(ctx, host, "SELECT pg_backend_pid();").stdout.strip() != before
    assert d.value(ctx, host, "SELECT count(*) FROM hits;", db=db.name) == "1"
    assert cluster.execute(db.name, "SELECT count(*) FROM hits") == [(1,)]


def test_a_killed_idle_session_is_replaced_without_sending_anything_twice(host):
    """The leftovers of an interrupt are killed; the procedure that follows asks a new session."""
    session = host.session("echo", lambda: host.open_session(echo_command()))
    session.send("a\n")
    pid = int(answer(session)[0])
    host.kill_marked(f"DEPLOYKIT_CMD={session.token}", grace=2)
    deadline = time.monotonic() + 10
    while session.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not session.alive and not alive(pid)
    again = host.session("echo", lambda: host.open_session(echo_command()))
    again.send("b\n")
    assert answer(again)[1] == "b"
