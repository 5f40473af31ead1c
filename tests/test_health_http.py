"""HTTP health checks against a real app on a real host of the rig: the Host header, JSON fields, redirects,
fail-fast on a definite wrong answer, and waiting while the app starts.

The app is a stdlib http.server script run as its own process; the checks are asked from an sshd host of the
rig (the same machine, so 127.0.0.1 is the app) through the run's Context, so each attempt is a real
httpcheck http_probe over the agent and a real progress event in the journal.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from deploykit.config import load_config
from deploykit.engine.context import Context
from deploykit.errors import DeployError
from deploykit.state.journal import watching
from deploykit.work.health import check_health
from deploykit_testing.ports import free_port, port_open

APP = textwrap.dedent('''
    """A tiny app: answers like Django with ALLOWED_HOSTS, a JSON health view, a redirect, a broken view."""
    import http.server, json, os, sys, time
    port, hits, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    while go != "-" and not os.path.exists(go):  # not listening yet: connection refused
        time.sleep(0.05)

    class App(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with open(hits, "a") as f:
                f.write("%s %s\\n" % (self.path, self.headers.get("Host")))
            if self.headers.get("Host") != "shop.example.com":
                code, body, extra = 400, b"Bad Request (400)", {}
            elif self.path == "/health/":
                code, extra = 200, {"Content-Type": "application/json"}
                body = json.dumps({"status": "ok", "db": {"ok": True}, "checks": ["db", "cache"]}).encode()
            elif self.path == "/moved/":
                code, body, extra = 302, b"", {"Location": "http://127.0.0.1:%d/health/" % port}
            else:
                code, body, extra = 500, b"<h1>Server Error (500)</h1>", {}
            self.send_response(code)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), App).serve_forever()
''')


class RealApp:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "app"
        self.dir.mkdir()
        (self.dir / "app.py").write_text(APP)
        self.hits_file, self.go = self.dir / "hits", self.dir / "go"
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(self.dir / "app.py"), str(self.port), str(self.hits_file),
                                      str(self.go)])

    def open(self) -> None:
        """Let the app bind its port, and wait until it listens."""
        self.go.touch()
        for _ in range(200):
            if port_open("127.0.0.1", self.port):
                return
            assert self.proc.poll() is None, "the test app died"
            time.sleep(0.05)
        raise AssertionError("the test app does not listen")

    def hits(self) -> list[str]:
        return self.hits_file.read_text().splitlines() if self.hits_file.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def app(tmp_path):
    a = RealApp(tmp_path)
    yield a
    a.stop()


@pytest.fixture
def rig(ssh_rig_factory):
    return ssh_rig_factory(1)


def run_checks(tmp_path: Path, rig, app: RealApp, health: list, dry_run: bool = False):
    """check_health on the rig's sshd host with this health config: (notes or the DeployError, attempt events)."""
    h = rig.hosts[0]
    path = tmp_path / f"deploykit-{len(list(tmp_path.glob('deploykit-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({
        "deploy_to": str(h.deploy_to), "python": sys.executable, "health": health,
        "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key), "connect_timeout": 5},
        "stages": {"s": {"vars": {"port": app.port, "domain": "example.com"},
                         "hosts": [f"{rig.user}@{h.address}:{h.port}"]}}}))
    ctx = Context(load_config(path), "s", command="check", dry_run=dry_run)
    try:
        try:
            out = check_health(ctx, ctx.hosts[0], read_only=dry_run)
        except DeployError as exc:
            out = exc
    finally:
        for host in ctx.hosts:
            host.close()
    events = [e for e in ctx.journal.events if e.get("event") == "progress" and e.get("kind") == "health"]
    return out, events


def http(path: str, **kw) -> dict:
    return {"http": "http://127.0.0.1:{port}" + path, "timeout": 120, **kw}


HOST = {"Host": "shop.{domain}"}


def test_the_host_header_reaches_the_app(tmp_path, rig, app):
    app.open()
    out, events = run_checks(tmp_path, rig, app, [http("/health/")])
    assert isinstance(out, DeployError), out
    text = out.one_line()
    assert f"http://127.0.0.1:{app.port}/health/ failed after 3 attempts" in text, text
    assert "status 400, expected 200" in text and "ALLOWED_HOSTS" in text and "Bad Request (400)" in text, text
    assert [e["attempt"] for e in events] == [1, 2, 3] and {e["status"] for e in events} == {400}
    assert app.hits() == [f"/health/ 127.0.0.1:{app.port}"] * 3

    out, events = run_checks(tmp_path, rig, app, [http("/health/", headers=HOST)])
    assert out == [f"http://127.0.0.1:{app.port}/health/ 200"], out
    assert app.hits()[-1] == "/health/ shop.example.com"
    assert [(e["attempt"], e["status"], e["url"]) for e in events] == [(1, 200, f"http://127.0.0.1:{app.port}/health/")]
    assert events[0]["text"].startswith("attempt 1: 200 '{\"status\": \"ok\"")


def test_a_json_field_check_passes_and_fails(tmp_path, rig, app):
    app.open()
    out, _ = run_checks(tmp_path, rig, app, [http("/health/", headers=HOST,
                                                  json={"status": "ok", "db.ok": True, "checks.1": "cache"})])
    assert out == [f"http://127.0.0.1:{app.port}/health/ 200"], out

    out, events = run_checks(tmp_path, rig, app, [http("/health/", headers=HOST, json={"status": "ok", "db.ok": 1},
                                                       fail_after=2)])
    assert isinstance(out, DeployError) and "failed after 2 attempts" in out.one_line(), out
    assert "the JSON's 'db.ok' is true, expected 1" in out.one_line()
    assert [e["status"] for e in events] == [200, 200]

    out, _ = run_checks(tmp_path, rig, app, [http("/boom/", headers=HOST, expect_status=500, json={"ok": True},
                                                  fail_after=1)])
    assert isinstance(out, DeployError) and "the body is not JSON" in out.one_line(), out


def test_a_redirect_fails_unless_followed(tmp_path, rig, app):
    app.open()
    out, events = run_checks(tmp_path, rig, app, [http("/moved/", headers=HOST)])
    assert isinstance(out, DeployError), out
    assert (f"answered 302 to http://127.0.0.1:{app.port}/health/, set follow_redirects: true if that is "
            "expected") in out.one_line()
    assert [e["status"] for e in events] == [302, 302, 302]
    assert "/health/ shop.example.com" not in app.hits()

    out, events = run_checks(tmp_path, rig, app, [http("/moved/", headers=HOST, follow_redirects=True,
                                                       json={"status": "ok"})])
    assert out == [f"http://127.0.0.1:{app.port}/moved/ 200"], out
    assert app.hits()[-2:] == ["/moved/ shop.example.com", "/health/ shop.example.com"]


@pytest.mark.parametrize("fail_after", [1, 4])
def test_a_definite_500_fails_after_fail_after_attempts_whatever_the_timeout(tmp_path, rig, app, fail_after):
    app.open()
    out, events = run_checks(tmp_path, rig, app, [http("/boom/", headers=HOST, fail_after=fail_after, timeout=600)])
    assert isinstance(out, DeployError), out
    text = out.one_line()
    s = "s" if fail_after > 1 else ""
    assert f"failed after {fail_after} attempt{s}: status 500, expected 200" in text, text
    assert f"last answer: 500 '<h1>Server Error (500)</h1>' ({fail_after} definite wrong answer" in text, text
    assert [e["attempt"] for e in events] == list(range(1, fail_after + 1))
    assert len(app.hits()) == fail_after


def test_connection_refused_is_retried_until_the_app_comes_up(tmp_path, rig, app):
    """The app binds its port only after two refused attempts: the check waits for it, then passes."""
    def open_after_two_refusals(event):
        if event.get("kind") == "health" and event.get("attempt") == 2:
            assert event["status"] is None
            app.go.touch()

    with watching(open_after_two_refusals):
        out, events = run_checks(tmp_path, rig, app, [http("/health/", headers=HOST, fail_after=1, timeout=300)])
    assert isinstance(out, list) and out[0].startswith(f"http://127.0.0.1:{app.port}/health/ 200 after "), out
    assert [e["text"] for e in events[:2]] == ["attempt 1: connection refused", "attempt 2: connection refused"]
    assert events[-1]["status"] == 200 and all(e["status"] is None for e in events[:-1])
    assert [e["attempt"] for e in events] == list(range(1, len(events) + 1)) and len(events) >= 3
    assert app.hits() == ["/health/ shop.example.com"]


def test_a_dry_run_asks_the_same_way(tmp_path, rig, app):
    """Preflight and --dry-run check the live app with the same probe: a read-only helper action."""
    app.open()
    out, events = run_checks(tmp_path, rig, app, [http("/health/", headers=HOST, json={"db.ok": True})],
                             dry_run=True)
    assert out == [f"http://127.0.0.1:{app.port}/health/ 200"], out
    assert [e["status"] for e in events] == [200]


def test_the_timeout_ends_a_check_that_only_ever_starts(tmp_path, rig, app):
    """Nothing listens: refused answers are not definite, so the check fails at its timeout, naming it."""
    out, events = run_checks(tmp_path, rig, app, [http("/health/", timeout=1, fail_after=1)])
    assert isinstance(out, DeployError), out
    text = out.one_line()
    assert f"http://127.0.0.1:{app.port}/health/ failed after {len(events)} attempts in 1 s (timeout)" in text, text
    assert "(timeout): last answer: connection refused" in text and len(events) >= 2
