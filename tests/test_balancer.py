"""The balancer of a rolling release: n app hosts behind a real nginx, drained and put back under load.

The rig (deploykit_testing.fleet) is four sshd app hosts of the sample project, one PostgreSQL database,
and an unprivileged nginx on a fifth host balancing over them from the upstream file deploykit owns. The
pure parts (the upstream text, the config, the command driver, the log count) are tested apart at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from deploykit import api
from deploykit.config import load_config
from deploykit.errors import ConfigError
from deploykit.routers import BALANCERS, BalancerError, NotInUseYet, balancer_for
from deploykit.routers.command_balancer import CommandBalancer
from deploykit.routers.nginx_balancer import LOG_FORMAT, NginxBalancer, upstream_text
from deploykit.transport.host import CommandResult
from deploykit_testing.load import LoadLoop, accepted_writes, summary

REMOTE = Path(__file__).resolve().parent.parent / "deploykit" / "remote"


def released(fleet, tag: str = "v1.0") -> None:
    result = api.release(fleet.config(), "prod", tag)
    assert result.ok, result.error


def healthy(fleet, host) -> bool:
    try:
        status, body = fleet.stage.get(host, "/health/")
    except OSError:
        return False
    return status == 200 and isinstance(body, dict) and body.get("status") == "ok"


def wait_healthy(fleet, host, timeout: float = 60.0) -> None:
    """As a rolling release does before it puts a host back: its own health check answers."""
    deadline = time.monotonic() + timeout
    while not healthy(fleet, host):
        assert time.monotonic() < deadline, f"{host.name} did not become healthy"
        time.sleep(0.1)


def more(loop, n: int) -> None:
    loop.wait_for(len(loop.records) + n, timeout=120)


# -- against the rig ---------------------------------------------------------------------------------------
def test_a_drained_host_restarts_under_load_and_no_request_fails(balanced_fleet_factory):
    fleet = balanced_fleet_factory(4)
    released(fleet)
    host = fleet.app_hosts[1]
    server = fleet.server(host)
    with fleet.balancer() as (bal, ctx, edge):
        assert isinstance(bal, NginxBalancer) and bal.servers == [fleet.server(h) for h in fleet.app_hosts]
        assert bal.server_of(host.name) == server
        assert bal.check(ctx, edge) == [] and bal.drained(ctx, edge) == []
        loop = LoadLoop(fleet.nginx.url(), limit=100_000, timeout=10).start()
        try:
            more(loop, 20)
            start = bal.mark(ctx, edge)
            message = bal.drain(ctx, edge, server)
            assert server in message
            drained_at = bal.mark(ctx, edge)
            assert bal.drained(ctx, edge) == [server]
            text = fleet.nginx.upstream_file.read_text()
            assert f"    server {server} max_fails=1 fail_timeout=2s down;\n" in text
            assert f"# drained: {server}\n" in text
            state = fleet.balancer_state()
            assert state["servers"] == bal.servers and list(state["drained"]) == [server]
            assert state["drained"][server]["run_id"] == ctx.run_id

            cp = fleet.supervisor(host).restart_program("web")
            assert cp.returncode == 0, cp.stdout + cp.stderr
            more(loop, 30)
            wait_healthy(fleet, host)
            while_drained = bal.errors(ctx, edge, drained_at)
            assert while_drained["requests"] >= 30
            assert server not in while_drained["servers"], while_drained  # nginx sent it nothing once drained

            bal.restore(ctx, edge, server)
            restored_at = bal.mark(ctx, edge)
            assert bal.drained(ctx, edge) == [] and fleet.balancer_state()["drained"] == {}
            assert " down;" not in fleet.nginx.upstream_file.read_text()
            more(loop, 40)
        finally:
            records = loop.stop()
        back = bal.errors(ctx, edge, restored_at)
        assert back["servers"].get(server, {}).get("requests", 0) > 0, back  # it takes requests again
        seen = bal.errors(ctx, edge, start)
    failed = [r for r in records if not r.ok]
    assert not failed, (summary(records), failed[:5])
    accepted = accepted_writes(records)
    assert accepted and set(accepted) <= fleet.titles()
    assert seen["errors"] == 0 and seen["upstream_errors"] == 0, seen
    assert seen["requests"] >= len([r for r in records if r.sent >= start["time"]])


def test_a_drain_waits_for_the_requests_in_flight_and_says_when_they_outlast_its_timeout(balanced_fleet_factory):
    fleet = balanced_fleet_factory(2)
    released(fleet)
    answers = []

    def slow_write(title: str, seconds: float):
        resp = requests.post(fleet.nginx.url("/api/books/"), data={"title": title, "author": "Slow",
                                                                   "sleep": str(seconds)}, timeout=60)
        answers.append((title, resp.status_code))

    def in_flight(thread) -> None:
        """Start a slow write and wait until the app holds it (its transaction open, sleeping)."""
        thread.start()
        deadline = time.monotonic() + 30
        while not fleet.stage.pg.execute(fleet.stage.db, "SELECT 1 FROM pg_stat_activity WHERE datname = "
                                         "current_database() AND state = 'idle in transaction'"):
            assert time.monotonic() < deadline, "the slow write never reached the app"
            time.sleep(0.05)

    cfg = fleet.config()
    with fleet.balancer() as (bal, ctx, edge):
        server = fleet.server(fleet.app_hosts[0])
        first = threading.Thread(target=slow_write, args=("slow-1", 3))
        before = bal.mark(ctx, edge)
        in_flight(first)
        bal.drain(ctx, edge, server)
        # the old worker wrote the write's log line before it exited, and the drain waited for that exit
        assert bal.errors(ctx, edge, before)["statuses"] == {"201": 1}
        first.join(60)
        bal.restore(ctx, edge, server)

        cfg.balancer.drain_timeout = 0.5
        short = balancer_for(cfg)
        second = threading.Thread(target=slow_write, args=("slow-2", 5))
        in_flight(second)
        with pytest.raises(NotInUseYet) as err:
            short.drain(ctx, edge, server)
        assert "old workers" in str(err.value) and "drain_timeout" in err.value.hint
        assert short.drained(ctx, edge) == [server]  # nginx uses the file: the server stays listed as drained
        second.join(60)
        short.restore(ctx, edge, server)
        assert short.drained(ctx, edge) == []
    assert answers == [("slow-1", 201), ("slow-2", 201)]  # neither write was cut
    assert {"slow-1", "slow-2"} <= fleet.titles()


def test_a_configuration_nginx_refuses_leaves_the_previous_upstream_and_nothing_drained(balanced_fleet_factory):
    fleet = balanced_fleet_factory(2)
    released(fleet)
    broken = fleet.nginx.prefix / "conf.d" / "operator-typo.conf"
    with fleet.balancer() as (bal, ctx, edge):
        server = fleet.server(fleet.app_hosts[0])
        bal.drain(ctx, edge, server)
        bal.restore(ctx, edge, server)
        before, state = fleet.nginx.upstream_file.read_bytes(), fleet.balancer_state()
        broken.write_text("upstream {\n")  # another file of the configuration, broken by hand
        assert any("nginx -t fails" in p for p in bal.check(ctx, edge))
        with pytest.raises(BalancerError) as err:
            bal.drain(ctx, edge, server)
        assert "previous upstream file was put back" in str(err.value) and "-t' there" in err.value.hint
        assert fleet.nginx.upstream_file.read_bytes() == before
        assert fleet.balancer_state()["drained"] == {} and bal.drained(ctx, edge) == []
        assert fleet.nginx.get("/health/")[0] == 200  # nginx serves as before
        broken.unlink()

        bal.drain(ctx, edge, server)
        broken.write_text("upstream {\n")
        with pytest.raises(BalancerError):
            bal.restore(ctx, edge, server)
        assert bal.drained(ctx, edge) == [server] and " down;" in fleet.nginx.upstream_file.read_text()
        broken.unlink()
        bal.restore(ctx, edge, server)
        assert bal.drained(ctx, edge) == [] and state["servers"] == fleet.balancer_state()["servers"]

        last = fleet.server(fleet.app_hosts[1])
        bal.drain(ctx, edge, last)
        with pytest.raises(BalancerError) as err:
            bal.drain(ctx, edge, server)
        assert "no server" in str(err.value)
        assert bal.drained(ctx, edge) == [last]
        bal.restore(ctx, edge, last)


def test_errors_counts_what_nginx_answered_since_a_mark(balanced_fleet_factory):
    fleet = balanced_fleet_factory(2)
    released(fleet)
    a, b = fleet.app_hosts
    with fleet.balancer() as (bal, ctx, edge):
        start = bal.mark(ctx, edge)
        for _ in range(6):
            assert fleet.nginx.get("/api/books/")[0] == 200
        assert fleet.nginx.get("/no-such-page/")[0] == 404  # the app's answer: not an error
        got = bal.errors(ctx, edge, start)
        assert (got["requests"], got["errors"], got["upstream_errors"]) == (7, 0, 0), got
        assert {s: v["requests"] for s, v in got["servers"].items()} == {fleet.server(a): 4, fleet.server(b): 3} \
            or {s: v["requests"] for s, v in got["servers"].items()} == {fleet.server(a): 3, fleet.server(b): 4}

        fleet.supervisor(b).stop_program("web")  # not drained: nginx finds it refusing and tries the other
        one_down = bal.mark(ctx, edge)
        for _ in range(6):
            assert fleet.nginx.get("/api/books/")[0] == 200
        got = bal.errors(ctx, edge, one_down)
        assert got["requests"] == 6 and got["errors"] == 0 and got["upstream_errors"] >= 1, got
        assert got["servers"][fleet.server(b)]["errors"] == got["upstream_errors"]

        fleet.supervisor(a).stop_program("web")
        none_up = bal.mark(ctx, edge)
        statuses = [fleet.nginx.get("/api/books/")[0] for _ in range(4)]
        assert all(s >= 500 for s in statuses), statuses
        got = bal.errors(ctx, edge, none_up)
        assert (got["requests"], got["errors"]) == (4, 4) and got["statuses"] == {"502": 4}, got
        whole = bal.errors(ctx, edge, start)
        assert (whole["requests"], whole["errors"]) == (17, 4), whole
        assert bal.errors(ctx, edge, start["time"])["requests"] >= 17  # a time on the host's clock works too


# -- pure parts ---------------------------------------------------------------------------------------------
def test_the_upstream_text_lists_every_server_and_marks_the_drained_down():
    text = upstream_text("library", ["10.0.0.5:8000", "10.0.0.6:8000", "10.0.0.7:8000"], {"10.0.0.6:8000": {}},
                         "RUN", "max_fails=1 fail_timeout=5s", ["keepalive 16"])
    lines = text.splitlines()
    assert lines[0] == "# deploykit balancer: library" and lines[1] == "# drained: 10.0.0.6:8000"
    assert "deploykit run RUN" in lines[2]
    assert lines[3:] == ["upstream library {", "    keepalive 16;",
                         "    server 10.0.0.5:8000 max_fails=1 fail_timeout=5s;",
                         "    server 10.0.0.6:8000 max_fails=1 fail_timeout=5s down;",
                         "    server 10.0.0.7:8000 max_fails=1 fail_timeout=5s;", "}"]
    plain = upstream_text("app", ["unix:/run/a.sock"], [], "RUN")
    for name in ("msec", "status", "upstream_addr", "upstream_status"):  # what the log count reads
        assert f'"{name}":"${name}"' in LOG_FORMAT and "escape=json" in LOG_FORMAT
    assert "# drained: none" in plain and "    server unix:/run/a.sock;" in plain and text.endswith("}\n")


BASE = {
    "deploy_to": "/srv/app",
    "stages": {"prod": {"hosts": [{"address": "deploy@10.0.0.5", "roles": ["app", "primary"]},
                                  "deploy@10.0.0.6", {"address": "deploy@10.0.0.7", "roles": ["worker"]}],
                        "vars": {"port": 8000}},
               "edge": {"hosts": ["deploy@10.0.0.2"]}},
    "rollout": {"balancer": {"stage": "edge", "serves": "prod", "nginx": {
        "upstream_file": "/etc/nginx/deploykit/app.conf", "upstream": "app",
        "access_log": "/var/log/nginx/app-balancer.log"}}},
}


def load(tmp_path, edit=None):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    if edit:
        edit(data)
    path = tmp_path / "deploykit.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_the_balancer_loads_with_each_app_hosts_address(tmp_path):
    cfg = load(tmp_path)
    b = cfg.balancer
    assert (b.stage, b.serves, b.driver, b.upstream, b.pid_file, b.drain_timeout) == (
        "edge", "prod", "nginx", "app", "/run/nginx.pid", 60.0)
    assert b.servers == {"10.0.0.5": "10.0.0.5:8000", "10.0.0.6": "10.0.0.6:8000"}  # app hosts only
    assert isinstance(balancer_for(cfg), NginxBalancer) and set(BALANCERS) == {"nginx", "command"}
    assert load(tmp_path, lambda d: d.pop("rollout")).balancer is None
    assert load(tmp_path, lambda d: d.update(rollout={})).balancer is None
    given = load(tmp_path, lambda d: d["rollout"]["balancer"].update(server="{hostname}:{ssh_port}"))
    assert given.balancer.servers["10.0.0.5"] == "10.0.0.5:22"
    assert load(tmp_path, _bal(server="{hostname}")).balancer.servers["10.0.0.6"] == "10.0.0.6"  # nginx: port 80
    cmd = load(tmp_path, lambda d: d["rollout"]["balancer"].update(nginx=None, command={
        "drain": "./bin/drain {server}", "restore": "./bin/restore {server}", "errors": "./bin/errors {since}"}))
    assert isinstance(balancer_for(cmd), CommandBalancer) and cmd.balancer.drain == "./bin/drain {server}"


def _bal(**kw):
    return lambda d: d["rollout"]["balancer"].update(kw)


@pytest.mark.parametrize("edit, words", [
    (_bal(stage="lb"), ["rollout.balancer.stage", "'lb' is not a stage"]),
    (_bal(serves="preprod"), ["rollout.balancer.serves", "'preprod' is not a stage"]),
    (_bal(stage="prod"), ["rollout.balancer.stage", "is the stage it serves"]),
    (_bal(command={"drain": "d", "restore": "r", "errors": "e"}), ["rollout.balancer", "exactly one of"]),
    (_bal(nginx=None), ["rollout.balancer", "exactly one of"]),
    (_bal(server="{nope}"), ["rollout.balancer.server", "{nope}"]),
    (_bal(server="a b"), ["rollout.balancer.server", "not an address nginx takes"]),
    (_bal(server="10.0.0.9:80"), ["rollout.balancer.server", "for both"]),
    (lambda d: d["rollout"]["balancer"]["nginx"].update(server_options="max_fails=1; include /x"),
     ["rollout.balancer.nginx.server_options", "not a list of nginx server parameters"]),
    (lambda d: d["rollout"]["balancer"]["nginx"].update(upstream="a b"), ["rollout.balancer.nginx.upstream"]),
    (lambda d: d["rollout"]["balancer"]["nginx"].pop("access_log"), ["rollout.balancer.nginx.access_log"]),
    (lambda d: d["rollout"]["balancer"].update(surprise=1), ["rollout.balancer", "surprise"]),
])
def test_a_bad_balancer_is_refused_at_load_with_its_key(tmp_path, edit, words):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, edit)
    for word in words:
        assert word in str(err.value), str(err.value)


class FakeHost:
    """A balancer host for the command driver: records commands; state kept in memory."""

    name = "edge1"
    deploy_to = "/srv/app"

    def __init__(self, fail=(), errors_out='{"requests": 10, "errors": 1}'):
        self.fail, self.errors_out = fail, errors_out
        self.log: list = []
        self.files: dict = {}

    def render(self, text):
        return text

    def path(self, *parts):
        return "/".join((self.deploy_to, *parts))

    def run(self, command, *, check=True, read_only=False, cwd=None, **kw):
        self.log.append((command, read_only))
        failed = any(word in command for word in self.fail)
        out = self.errors_out if command.startswith("./bin/errors") else ""
        return CommandResult(command, 1 if failed else 0, out, "boom" if failed else "", 0.0)

    def helper(self, module, action, args=None, **kw):
        assert (module, action) == ("balancer", "mark")
        return {"time": 1700000000.25}

    def read_json(self, path):
        return json.loads(self.files[path]) if path in self.files else None

    def write_json(self, path, data):
        self.files[path] = json.dumps(data)


class Ctx:
    run_id = "20260101T000000Z-release-1-abcd"


def test_the_command_driver_runs_the_operators_commands_and_records_the_drained(tmp_path):
    cfg = load(tmp_path, lambda d: d["rollout"]["balancer"].update(nginx=None, command={
        "drain": "./bin/drain {server}", "restore": "./bin/restore {server}", "errors": "./bin/errors {since}"}))
    bal, host = balancer_for(cfg), FakeHost()
    assert bal.check(Ctx, host) == []
    assert host.log[-1] == ("./bin/errors 1700000000.250", True)  # read-only
    bal.drain(Ctx, host, "10.0.0.6:8000")
    assert host.log[-1] == ("./bin/drain 10.0.0.6:8000", False)
    assert bal.drained(Ctx, host) == ["10.0.0.6:8000"]
    with pytest.raises(BalancerError) as err:
        bal.drain(Ctx, host, "10.0.0.5:8000")
    assert "no server" in str(err.value)
    with pytest.raises(BalancerError):
        bal.drain(Ctx, host, "10.0.0.9:8000")
    assert bal.errors(Ctx, host, {"time": 5.5}) == {"requests": 10, "errors": 1}
    assert host.log[-1] == ("./bin/errors 5.500", True)
    bal.restore(Ctx, host, "10.0.0.6:8000")
    assert bal.drained(Ctx, host) == []
    failing = FakeHost(fail=("./bin/drain",))
    with pytest.raises(BalancerError) as err:
        bal.drain(Ctx, failing, "10.0.0.6:8000")
    assert "stays listed as drained" in str(err.value) and bal.drained(Ctx, failing) == ["10.0.0.6:8000"]
    for out in ("not json", '{"requests": 1}', '{"requests": -1, "errors": 0}', '[1, 2]'):
        problems = bal.check(Ctx, FakeHost(errors_out=out))
        assert problems and "errors command" in problems[0], problems
        with pytest.raises(BalancerError) as err:
            bal.errors(Ctx, FakeHost(errors_out=out), 1.0)
        assert "rollout.balancer.command.errors" in err.value.hint


def _count(path, since):
    cp = subprocess.run([sys.executable, str(REMOTE / "balancer.py"), "count"], capture_output=True, text=True,
                        input=json.dumps({"path": str(path), "since": since}), timeout=60,
                        env={k: v for k, v in os.environ.items() if k != "DEPLOYKIT_READ_ONLY"})
    doc = json.loads(cp.stdout)
    assert doc["ok"], doc
    return doc


def _mark(path):
    cp = subprocess.run([sys.executable, str(REMOTE / "balancer.py"), "mark"], capture_output=True, text=True,
                        input=json.dumps({"path": str(path)}), timeout=60,
                        env={**os.environ, "DEPLOYKIT_READ_ONLY": "1"})  # read-only: a dry-run may mark
    return json.loads(cp.stdout)


def _line(msec, status, addr="10.0.0.5:8000", upstream=None):
    return json.dumps({"msec": f"{msec:.3f}", "status": str(status), "method": "GET", "upstream_addr": addr,
                       "upstream_status": upstream or str(status), "request_time": "0.001"}) + "\n"


def test_the_log_count_reads_from_a_mark_through_a_rotation(tmp_path):
    log = tmp_path / "balancer.log"
    log.write_text(_line(1.0, 500))
    first = _mark(log)
    assert first["ok"] and first["offset"] == log.stat().st_size
    with open(log, "a") as f:
        f.write(_line(2.0, 200) + _line(2.1, 502, "10.0.0.5:8000, 10.0.0.6:8000", "502, 502")
                + _line(2.2, 200, "10.0.0.6:8000, 10.0.0.5:8000", "502, 200") + _line(2.3, 404) + "garbage\n"
                + _line(2.4, 200, "-", "-") + '{"msec": "2.5", "sta')  # the last line is still being written
    got = _count(log, first)
    assert (got["requests"], got["errors"], got["upstream_errors"], got["unparsed"]) == (5, 1, 3, 1), got
    assert got["statuses"] == {"200": 3, "502": 1, "404": 1}
    assert got["servers"] == {"10.0.0.5:8000": {"requests": 4, "errors": 1},
                              "10.0.0.6:8000": {"requests": 2, "errors": 2}}
    assert got["mark"]["offset"] == log.stat().st_size - len('{"msec": "2.5", "sta')
    with open(log, "a") as f:
        f.write('tus": "200"}\n')
    mark = _mark(log)
    os.rename(log, str(log) + ".1")  # logrotate: the file moves, nginx reopens a new one
    with open(str(log) + ".1", "a") as f:
        f.write(_line(mark["time"] + 0.5, 503))
    log.write_text(_line(mark["time"] - 100, 500) + _line(mark["time"] + 1, 200))  # before the mark: not counted
    got = _count(log, mark)
    assert (got["requests"], got["errors"]) == (2, 1), got


FAKE_MASTER = """
import os, signal, subprocess, sys, time
workers = [subprocess.Popen(["sleep", "300"])]
def reload(signum, frame):  # as nginx does: new workers first, then the old ones told to go
    workers.append(subprocess.Popen(["sleep", "300"]))
    old = workers.pop(0)
    old.terminate()
    old.wait()
signal.signal(signal.SIGHUP, reload)
signal.signal(signal.SIGTERM, lambda *a: [w.kill() for w in workers] and sys.exit(0))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1)
"""


def _apply(args):
    cp = subprocess.run([sys.executable, str(REMOTE / "balancer.py"), "apply"], capture_output=True, text=True,
                        input=json.dumps(args), timeout=60,
                        env={k: v for k, v in os.environ.items() if k != "DEPLOYKIT_READ_ONLY"})
    return json.loads(cp.stdout)


def test_a_balancer_change_is_one_call_that_records_checks_reloads_and_waits(tmp_path):
    """apply: the state recorded before (a drain) or after (a restore), the file installed, the check command,
    SIGHUP to the master (this user may signal it), and the old workers waited for; a check that fails puts
    the previous file back and sends no signal. A stand-in master reloads as nginx does."""
    pid_file = tmp_path / "nginx.pid"
    master = subprocess.Popen([sys.executable, "-c", FAKE_MASTER, str(pid_file)])
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        upstream, state = tmp_path / "up.conf", tmp_path / "state" / "balancer.json"
        upstream.write_text("old\n")
        base = {"pid_file": str(pid_file), "path": str(upstream), "previous": str(upstream) + ".previous",
                "check": "true", "reload": "false", "timeout": 10}
        record = {"path": str(state), "when": "before", "data": {"drained": {"a:1": {}}}}
        got = _apply({**base, "text": "drained\n", "old_gone": True, "record": record})
        assert got["ok"] and got["done"] and got["changed"], got  # the reload command ('false') was not needed
        assert upstream.read_text() == "drained\n" and json.loads(state.read_text()) == {"drained": {"a:1": {}}}
        failed = _apply({**base, "text": "refused\n", "check": "echo 'bad line 3' && false", "old_gone": True,
                         "record": {**record, "when": "after", "data": {"drained": {}}}})
        assert failed["ok"] and failed["failed"] == ["echo 'bad line 3' && false refused the new upstream file",
                                                     "bad line 3"], failed
        assert upstream.read_text() == "drained\n"  # put back, and nothing recorded after a refusal
        assert json.loads(state.read_text()) == {"drained": {"a:1": {}}}
        got = _apply({**base, "text": "restored\n", "old_gone": False,
                      "record": {**record, "when": "after", "data": {"drained": {}}}})
        assert got["done"] and json.loads(state.read_text()) == {"drained": {}}
    finally:
        master.terminate()
        master.wait(timeout=10)


def test_a_reload_this_user_may_not_signal_runs_the_operators_command(monkeypatch, tmp_path):
    from deploykit.transport.bundle import load_helper

    helper = load_helper("balancer")
    pid_file = tmp_path / "nginx.pid"
    pid_file.write_text(str(os.getpid()))

    def refused(pid, sig):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(helper.os, "kill", refused)
    assert helper._reload(str(pid_file), "echo reloaded")() == (True, "reloaded", "echo reloaded")
    assert helper._reload(str(pid_file), "echo no >&2; exit 3")()[:2] == (False, "no")
