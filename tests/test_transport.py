"""The way to the hosts: the agent protocol (remote/agent.py + transport/agent.py) and helper bundling.

The agent runs for real: over a local pipe (LocalHost) and over a real sshd on
loopback (SSHHost). Only the framing test talks to a stand-in stream.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploykit.config import parse_config
from deploykit.errors import DryRunWrite, HostUnreachable
from deploykit.transport.host import make_host
from deploykit.transport.agent import AgentClient, AgentLost
from deploykit.transport.bundle import REMOTE_DIR, helper_source


def local_host(tmp_path: Path, **kw):
    raw = {"deploy_to": str(tmp_path / "deploy"), "python": sys.executable, "stages": {"s": {"hosts": ["local"]}}}
    cfg = parse_config(raw, tmp_path / "deploykit.yaml")
    (tmp_path / "deploy").mkdir(exist_ok=True)
    return make_host(cfg.stages["s"][0], cfg, run_id="run-t", **kw)


def ssh_host(rig, tmp_path: Path, python: str = sys.executable, **kw):
    h = rig.hosts[0]
    raw = {"deploy_to": str(h.deploy_to), "python": python,
           "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key), "connect_timeout": 5},
           "stages": {"s": {"hosts": [f"{rig.user}@{h.address}:{h.port}"]}}}
    cfg = parse_config(raw, tmp_path / "deploykit.yaml")
    return make_host(cfg.stages["s"][0], cfg, run_id="run-t", **kw)


@pytest.fixture
def host(tmp_path):
    h = local_host(tmp_path)
    yield h
    h.close()


# -- framing (a stand-in stream) ---------------------------------------------------------------

class FakeStream:
    """What the controller writes is recorded; what it reads comes from a queue."""

    def __init__(self):
        self.sent: list[dict] = []
        self.lines: queue.Queue = queue.Queue()

    def write(self, data: bytes):
        for line in data.decode().splitlines():
            self.sent.append(json.loads(line))

    def readline(self):
        return self.lines.get()

    def answer(self, doc):
        self.lines.put((json.dumps(doc) + "\n").encode())


def test_answers_reach_their_request_by_id_and_a_closed_channel_fails_every_waiter():
    s = FakeStream()
    agent = AgentClient(s.write, s.readline, lambda: None)
    s.answer({"id": 0, "agent": 1})
    agent.wait_ready(5)
    got = {}

    def ask(name, script):
        try:
            got[name] = agent.run(script, [], 10, "tok", {})
        except AgentLost as exc:
            got[name] = exc

    t1 = threading.Thread(target=ask, args=("first", "a"))
    t2 = threading.Thread(target=ask, args=("second", "b"))
    t1.start(), t2.start()
    while len(s.sent) < 2:
        time.sleep(0.01)
    ids = {r["script"]: r["id"] for r in s.sent}
    assert ids["a"] != ids["b"]
    s.lines.put(b"a banner line that is not JSON\n")  # ignored
    s.answer({"id": ids["b"], "exited": 0, "stdout": "B", "stderr": ""})  # answers out of order
    t2.join(5)
    assert got["second"]["stdout"] == "B" and "first" not in got
    s.lines.put(b"")  # EOF: the channel closed while "first" waits
    t1.join(5)
    assert isinstance(got["first"], AgentLost)
    with pytest.raises(AgentLost):
        agent.run("c", [], 10, "tok", {})


# -- the real agent, over a local pipe -----------------------------------------------------------

def test_commands_run_concurrently_on_one_agent(host):
    results = {}

    def slow():
        results["slow"] = (host.run("sleep 1.5; echo slow").stdout, time.monotonic())

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    fast = host.run("echo fast")
    done_fast = time.monotonic()
    t.join()
    assert fast.stdout == "fast\n" and results["slow"][0] == "slow\n"
    assert done_fast < results["slow"][1]  # the fast one did not wait behind the slow one
    assert host._agent is not None and not host._agent.lost


def test_exit_status_output_and_marks(host):
    res = host.run("echo out; echo err >&2; exit 3", check=False)
    assert (res.exited, res.stdout, res.stderr) == (3, "out\n", "err\n")
    env = host.run("sh -c 'env' | grep ^DEPLOYKIT_ | sort").stdout.split()
    assert env[0].startswith("DEPLOYKIT_CMD=") and env[1] == "DEPLOYKIT_RUN=run-t"


def test_cancel_kills_a_running_command_while_it_runs(host, tmp_path):
    out = {}

    def run():
        out["res"] = host.run(f"sleep 30 & echo $! > {tmp_path}/child; wait", check=False, always=True)

    t = threading.Thread(target=run)
    start = time.monotonic()
    t.start()
    while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text().strip():
        time.sleep(0.05)
    child = int((tmp_path / "child").read_text())
    killed = host.cancel()
    t.join(30)
    assert not t.is_alive() and time.monotonic() - start < 20
    assert child in killed and not out["res"].ok
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    host.resume()
    assert host.run("echo again").stdout == "again\n"


def test_timeout_kills_the_command_and_all_it_started(host, tmp_path):
    start = time.monotonic()
    res = host.run(f"sleep 60 & echo $! > {tmp_path}/bg; sleep 60", check=False, timeout=1)
    assert res.exited == 124 and "timed out after 1" in res.stderr
    assert time.monotonic() - start < 15
    bg = int((tmp_path / "bg").read_text())
    time.sleep(0.3)
    assert not Path(f"/proc/{bg}").exists() or "Z" in Path(f"/proc/{bg}/stat").read_text().split()[2]


def test_secrets_reach_the_command_on_stdin_only(host):
    secret = "s3cret-" + os.urandom(4).hex()
    # while the command runs, look at its own argv and environment and at the agent's
    res = host.run('echo "$PW"; tr "\\0" " " < /proc/$$/cmdline; echo; tr "\\0" " " < /proc/$$/environ; echo; '
                   'tr "\\0" " " < /proc/$PPID/cmdline; echo; tr "\\0" " " < /proc/$PPID/environ',
                   secrets={"PW": secret})
    first, rest = res.stdout.split("\n", 1)
    assert first == secret
    assert secret not in rest


def test_helper_source_crosses_the_channel_once(host):
    host.run("true")
    sent = []
    agent = host._agent
    write = agent._write
    agent._write = lambda data: (sent.append(data), write(data))[1]
    for _ in range(3):
        assert host.helper("files", "read_json", {"path": "/nonexistent/x.json"})["exists"] is False
    ops = [json.loads(line)["op"] for d in sent for line in d.decode().splitlines()]
    assert ops == ["source", "helper", "helper", "helper"]  # forked on the host: no interpreter, no resend
    assert sum(len(d) for d in sent) < len(json.dumps(helper_source("files"))) + 3000  # once, not three times


def test_a_helper_with_arguments_larger_than_a_datagram_answers_and_the_next_one_too(host, tmp_path):
    """The arguments go on the helper's stdin, never to the zygote (whose one-datagram read once cut a request
    of more than 1 MB, killing it: every later helper of the run went unanswered)."""
    big = "x" * (6 << 20)  # a refresh's proof digests are tens of MB
    path = str(tmp_path / "big.json")
    assert host.helper("files", "write_json", {"path": path, "data": big})["changed"] is True
    assert host.helper("files", "read_json", {"path": path})["data"] == big
    assert host.helper("files", "read_json", {"path": "/nonexistent"})["exists"] is False


def test_journal_lines_are_appended_in_order_and_flushed_by_close(tmp_path):
    host = local_host(tmp_path)
    path = str(tmp_path / "deploy" / ".deploykit" / "journal" / "r.jsonl")
    for i in range(50):
        host.journal_append(path, json.dumps({"n": i}))
    host.close()
    lines = Path(path).read_text().splitlines()
    assert [json.loads(x)["n"] for x in lines] == list(range(50))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_a_dry_run_host_refuses_before_anything_is_sent(tmp_path):
    host = local_host(tmp_path, read_only=True)
    with pytest.raises(DryRunWrite):
        host.run("touch x")
    with pytest.raises(DryRunWrite):
        host.helper("files", "write_json", {"path": str(tmp_path / "x"), "data": 1})
    with pytest.raises(DryRunWrite):
        host.journal_append(str(tmp_path / "j"), "{}")
    assert host._agent is None  # nothing was started, so nothing could be sent
    assert host.run("echo read", read_only=True).stdout == "read\n"
    host.close()


def test_the_agent_does_not_kill_its_commands_when_the_channel_closes(host, tmp_path):
    host.run("true")
    agent_pid = int(host.run("echo $PPID").stdout)
    marker = tmp_path / "after"
    out = {}

    def long():
        try:
            out["res"] = host.run(f"sleep 1.5; echo done > {marker}")
        except HostUnreachable as exc:
            out["err"] = exc

    t2 = threading.Thread(target=long)
    t2.start()
    time.sleep(0.5)
    os.kill(agent_pid, 9)  # the channel goes away (with its agent) while the command runs
    t2.join(10)
    assert "connection lost" in str(out.get("err"))
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "done\n"  # it ran to its end
    deadline = time.monotonic() + 10
    while Path(f"/proc/{agent_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{agent_pid}").exists() or "Z" in Path(f"/proc/{agent_pid}/stat").read_text().split()[2]


def test_bundled_helpers_are_self_contained(tmp_path):
    for path in REMOTE_DIR.glob("*.py"):
        if path.name.startswith("_") or path.name == "agent.py":
            continue
        module = path.stem
        source = helper_source(module)
        assert "from _common import" not in source
        assert "from _tree import" not in source  # every shared module of remote/ is inlined, _tree.py too
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", source, "no_such_action"], input="{}",
                              capture_output=True, text=True, cwd=tmp_path, timeout=60)
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == 1 and doc["ok"] is False and doc["kind"] == "UnknownAction", (module, proc.stderr)


def test_every_read_only_action_is_an_action_of_its_helper():
    from deploykit.transport.bundle import load_helper
    from deploykit.transport.host import READ_ONLY_ACTIONS

    for module, actions in READ_ONLY_ACTIONS.items():
        assert set(actions) <= set(load_helper(module).ACTIONS), module


def test_a_read_only_helper_refuses_every_changing_action_on_the_host(tmp_path):
    """The second wall of a dry-run: on the host, DEPLOYKIT_READ_ONLY=1 refuses every action not in the
    helper's READ_ONLY before its arguments are read, whatever the controller asks."""
    from deploykit.transport.bundle import helper_modules, helper_source, load_helper, read_only_actions

    env = dict(os.environ, DEPLOYKIT_READ_ONLY="1")
    refused = 0
    for module in helper_modules():
        changing = set(load_helper(module).ACTIONS) - read_only_actions(module)
        for action in sorted(changing):
            proc = subprocess.run([sys.executable, "-I", "-S", "-c", helper_source(module), action],
                                  input='{"path": "%s"}' % (tmp_path / "x"), capture_output=True, text=True,
                                  cwd=tmp_path, timeout=60, env=env)
            doc = json.loads(proc.stdout.strip().splitlines()[-1])
            assert proc.returncode == 1 and doc["kind"] == "ReadOnlyRefused", (module, action, doc)
            refused += 1
    assert refused >= 25 and list(tmp_path.iterdir()) == []


# -- over real SSH ---------------------------------------------------------------------------------

def test_ssh_host_uses_one_channel_and_no_delay(ssh_rig_factory, tmp_path):
    rig = ssh_rig_factory(1)
    host = ssh_host(rig, tmp_path)
    try:
        host.connect()
        transport = host.conn.client.get_transport()
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for _ in range(5):
            host.run("true")
        host.helper("files", "read_json", {"path": "/nonexistent"})
        assert len(transport._channels.values()) == 1  # the agent's, and nothing else
        res = host.run("echo $DEPLOYKIT_RUN; exit 4", check=False)
        assert (res.exited, res.stdout) == (4, "run-t\n")
    finally:
        host.close()


def test_closing_an_ssh_host_returns_once_its_agent_and_zygote_are_gone(ssh_rig_factory, tmp_path):
    """Nothing of the run is left on the host when close returns: the agent reaps its zygote and sshd reaps
    the agent (so what they and their helpers ran is counted under the host's sshd, never orphaned to init)."""
    rig = ssh_rig_factory(1)
    host = ssh_host(rig, tmp_path)
    try:
        host.helper("files", "read_json", {"path": "/nonexistent"})  # the zygote forks a helper
        agent_pid = int(host.run("echo $PPID").stdout)
        children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
        zygotes = [int(p) for p in children if "bash" not in Path(f"/proc/{p}/cmdline").read_text()]
        assert zygotes, children
    finally:
        host.close()
    for pid in [agent_pid, *zygotes]:  # not even a zombie: already reaped
        assert not Path(f"/proc/{pid}").exists(), pid


def test_ssh_connection_dropped_between_commands_is_reopened_once(ssh_rig_factory, tmp_path):
    rig = ssh_rig_factory(1)
    host = ssh_host(rig, tmp_path)
    try:
        host.run("true")
        host.conn.client.get_transport().close()  # dropped while idle
        time.sleep(0.2)
        assert host.run("echo back").stdout == "back\n"
        rig.hosts[0].kill()
        # sshd gone: the session's channel closed under the agent
        time.sleep(0.5)
        with pytest.raises(HostUnreachable):
            host.run("echo never")
    finally:
        host.close()


def test_a_host_whose_python_does_not_start_still_runs_commands(ssh_rig_factory, tmp_path):
    """No agent there: a channel per command, with the same marks, timeouts and messages."""
    rig = ssh_rig_factory(1)
    host = ssh_host(rig, tmp_path, python="/nonexistent/python3")
    try:
        res = host.run("echo $DEPLOYKIT_RUN; echo e >&2; exit 5", check=False)
        assert (res.exited, res.stdout, res.stderr) == (5, "run-t\n", "e\n") and host._agent is None
        start = time.monotonic()
        res = host.run("sleep 30", check=False, timeout=1)
        assert res.exited == 124 and time.monotonic() - start < 15
        with pytest.raises(Exception, match="gave no answer"):
            host.helper("files", "read_json", {"path": "/nonexistent"})
    finally:
        host.close()


def _silent_server():
    """A TCP port that accepts and never answers: an http_check against it waits."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    return srv


def test_a_forked_helper_is_killed_at_its_timeout_and_by_cancel(host):
    srv = _silent_server()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/"
    try:
        start = time.monotonic()
        with pytest.raises(Exception, match="gave no answer"):
            host.helper("httpcheck", "http_check", {"url": url, "timeout": 60, "request_timeout": 60}, timeout=1)
        assert time.monotonic() - start < 15
        out = {}

        def slow():
            try:
                out["doc"] = host.helper("httpcheck", "http_check", {"url": url, "timeout": 60, "request_timeout": 60})
            except Exception as exc:
                out["err"] = exc

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(1)
        host.cancel()
        t.join(20)
        assert not t.is_alive() and "interrupted" in str(out.get("err"))
        host.resume()
        assert host.helper("files", "read_json", {"path": "/nonexistent"})["exists"] is False
    finally:
        srv.close()


@pytest.mark.rig
def test_a_helper_takes_arguments_of_megabytes_through_the_agent(ssh_rig, tmp_path):
    """A refresh hands its proof scan megabytes of digests: the agent's zygote must still start the helper
    (its own messages carry no arguments; they go to the worker's stdin)."""
    import base64 as b64
    import os as _os

    data = _os.urandom(3 << 20)
    host = ssh_host(ssh_rig, tmp_path)
    try:
        target = str(ssh_rig.hosts[0].deploy_to / "big.bin")
        got = host.helper("files", "write_file", {"path": target, "content_b64": b64.b64encode(data).decode()})
        assert got["size"] == len(data) and Path(target).read_bytes() == data
        assert host.helper("files", "sha256", {"path": target})["size"] == len(data)  # the zygote lives on
    finally:
        host.close()


def test_agent_lines_are_split_exactly_whatever_the_chunks():
    """The SSH agent's answers are read by _Lines (paramiko's readline is quadratic in a line's length)."""
    import io

    from deploykit.transport.host import _Lines

    lines = [b'{"id": 1}\n', b'{"id": 2, "big": "' + b"x" * 300_000 + b'"}\n', b"\n", b'{"id": 3}\n', b"partial"]
    for chunk in (1, 7, 4096, 1 << 20):
        reader = _Lines(io.BytesIO(b"".join(lines)).read, chunk=chunk)
        assert [reader.readline() for _ in lines] == lines and reader.readline() == b""


def test_a_big_write_reaches_the_channel_in_pieces_in_order():
    """paramiko's sendall copies what is left after every packet: deploykit hands it pieces of 256 KB, so a
    write of tens of megabytes (a refresh's digests) costs its length, not its square."""
    from deploykit.transport.host import SEND_CHUNK, sendall

    class Channel:
        def __init__(self):
            self.got = []

        def sendall(self, data):
            self.got.append(bytes(data))

    data = bytes(range(256)) * (SEND_CHUNK // 64 + 3)
    chan = Channel()
    sendall(chan, data)
    assert b"".join(chan.got) == data and max(map(len, chan.got)) == SEND_CHUNK and len(chan.got) == 5
    chan = Channel()
    sendall(chan, b"")
    assert chan.got == []
