"""The write freeze end to end: real sshd host, PostgreSQL, the sample under gunicorn, the steps run by playbooks.

Maintenance mode: the sample adds deploykit's WriteFreezeMiddleware when its
.env says EXTRA_MIDDLEWARE (inert for every other test). A slow write (the
sample's `sleep` field) is held in flight when the freeze starts: it must be
committed before the freeze is on; later writes get 503 with Retry-After,
reads 200. stop_writers mode: the web process is stopped and started again.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from deploykit import api
from deploykit.config import load_config
from deploykit.engine import run_playbook
from deploykit.engine.run import Run
from deploykit_testing.supervisor import supervisor_command

MIDDLEWARE = "deploykit.django.middleware.WriteFreezeMiddleware"
BOOKS = {
    "freeze_test.yml": {"name": "freeze_test", "phases": [
        {"name": "check", "before_changes": True, "steps": ["connect", "acquire_lock"]},
        {"name": "freeze", "on_failure": "unfreeze", "steps": ["freeze_writes", "release_lock"]}]},
    # frozen, then a long step: the controller is killed there
    "freeze_hold.yml": {"name": "freeze_hold", "phases": [
        {"name": "check", "before_changes": True, "steps": ["connect", "acquire_lock"]},
        {"name": "freeze", "on_failure": "unfreeze", "steps": [
            "freeze_writes", {"step": "hook", "with": {"run": "sleep 20", "label": "hold"}}, "release_lock"]}]},
}
PLAY = """
import sys
from deploykit.config import load_config
from deploykit.engine import run_playbook
from deploykit.engine.run import Run
cfg = load_config(sys.argv[1])
with Run(cfg, sys.argv[2], command="freeze-test") as run:
    run.play(lambda: run_playbook(run.ctx, sys.argv[3]))
"""


def configure(st, tmp_path, freeze: dict | None, name: str = "freeze"):
    """The stage's config with playbooks_dir (the test playbooks) and `freeze:` (None: the default)."""
    books = tmp_path / "books"
    books.mkdir(exist_ok=True)
    for file, doc in BOOKS.items():
        (books / file).write_text(yaml.safe_dump(doc, sort_keys=False))
    doc = yaml.safe_load(st.config_path.read_text())
    doc["playbooks_dir"] = str(books)
    if freeze is not None:
        doc["freeze"] = freeze
    path = st.config_path.with_name(f"{st.config_path.stem}-{name}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


_runs = itertools.count()


def play(cfg, stage: str, book: str, dry_run: bool = False):
    # a run id is the second and the pid: each run of this process gets its own command name, so its own journal
    command = "freeze_test_" + "".join(chr(ord("a") + int(d)) for d in str(next(_runs)))
    with Run(cfg, stage, command=command, dry_run=dry_run) as run:
        return run.play(lambda: run_playbook(run.ctx, book))


def events(result, name: str) -> list[dict]:
    lines = open(result.data["journal"]).read().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def post(st, host, title: str, **fields):
    """(status, headers, body) of a POST to /api/books/."""
    data = urllib.parse.urlencode({"title": title, "author": "Freeze Tester", **fields}).encode()
    try:
        with urllib.request.urlopen(st.url(host, "/api/books/"), data=data, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")


def titles(st) -> list[str]:
    with st.pg.connect(st.db) as conn:
        return [r[0] for r in conn.execute("SELECT title FROM library_book ORDER BY id")]


def write_in_flight(lock_path) -> bool:
    """Whether a write request holds the freeze lock now (shared): an exclusive try fails."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def wait_for(check, what: str, limit: float = 60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def reached(journal_dir, step: str) -> bool:
    """Whether a run journaled in journal_dir has started `step`."""
    for path in journal_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:  # a line being written
                continue
            if e["event"] == "step_start" and e.get("step") == step:
                return True
    return False


def serving(st, host) -> bool:
    try:
        return st.get(host, "/health/")[0] == 200
    except OSError:
        return False


def test_maintenance_freeze_refuses_writes_serves_reads_and_drains_a_write_in_flight(stage_factory, tmp_path):
    st = stage_factory(1)
    host = st.primary
    with open(host.deploy_to / "shared" / ".env", "a") as env:
        env.write(f"EXTRA_MIDDLEWARE={MIDDLEWARE}\n")
    cfg = configure(st, tmp_path, {"mode": "maintenance", "retry_after": 7, "drain_timeout": 30})
    assert api.release(cfg, st.name, "v1.2").ok
    flag, lock = host.deploy_to / ".deploykit" / "freeze", host.deploy_to / ".deploykit" / "freeze.lock"
    assert post(st, host, "before")[0] == 201  # the middleware is inert without the flag

    # a dry-run says what it would do and changes nothing
    before = st.tree(ignore_journal=True)
    dry = play(cfg, st.name, "freeze_test", dry_run=True)
    assert dry.ok, dry.error
    planned = next(r for r in dry.records if r.step == "freeze_writes")
    assert planned.status == "planned" and planned.message.startswith(f"would create {flag}")
    assert st.tree(ignore_journal=True) == before and not flag.exists()

    # a slow write is in flight (it holds the lock shared) when the freeze starts
    slow: dict = {}
    writer = threading.Thread(target=lambda: slow.update(answer=post(st, host, "slow", sleep="3")))
    writer.start()
    wait_for(lambda: write_in_flight(lock), "the slow write holds the freeze lock")
    frozen = play(cfg, st.name, "freeze_test")
    assert frozen.ok, frozen.error
    # the freeze is on: the slow write was committed before, and the freeze had waited for it
    assert "slow" in titles(st)
    [started] = events(frozen, "freeze")
    assert started["host"] == host.name and started["mode"] == "maintenance" and started["waited"] is True
    writer.join(60)
    assert slow["answer"][0] == 201, slow
    assert json.loads(flag.read_text())["retry_after"] == 7

    # writes get 503 with Retry-After; reads are served
    status, headers, body = post(st, host, "during")
    assert status == 503 and headers["Retry-After"] == "7" and "retry" in body
    assert st.get(host, "/")[0] == 200
    status, doc = st.get(host, "/api/books/")
    assert status == 200 and [b["title"] for b in doc["books"]][-2:] == ["before", "slow"]
    assert "during" not in titles(st)

    # a dry-run of the unfreeze leaves the freeze on
    dry = play(cfg, st.name, "unfreeze", dry_run=True)
    assert next(r for r in dry.records if r.step == "unfreeze_writes").message.startswith("would end the freeze")
    assert flag.exists() and post(st, host, "during")[0] == 503

    # unfreeze (the built-in procedure): writes are accepted again, the freeze measured
    thawed = play(cfg, st.name, "unfreeze")
    assert thawed.ok, thawed.error
    [ended] = events(thawed, "unfreeze")
    assert ended["host"] == host.name and ended["seconds"] > 0
    assert thawed.data["outcome"]["freeze_seconds"] == ended["seconds"]
    assert not flag.exists()
    assert post(st, host, "after")[0] == 201
    assert titles(st)[-3:] == ["before", "slow", "after"]
    # a second unfreeze is fine: nothing to do
    again = play(cfg, st.name, "unfreeze")
    assert again.ok and events(again, "unfreeze") == []
    assert next(r for r in again.records if r.step == "unfreeze_writes").message == "no freeze on"

    # a run that dies while frozen is unfrozen by the next command that takes its lock over
    proc = subprocess.Popen([sys.executable, "-c", PLAY, str(cfg.path), st.name, "freeze_hold"], env=st.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: flag.exists() and reached(cfg.journal_dir, "hook"),
                 "the dying run froze writes and reached its long step")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert post(st, host, "still frozen")[0] == 503
    taken = api.backup(cfg, st.name)
    assert taken.data["finished_run"]["procedure"] == "unfreeze"
    assert not flag.exists() and not (host.deploy_to / ".deploykit" / "lock").exists()
    assert post(st, host, "after takeover")[0] == 201


def test_stop_writers_freeze_stops_and_starts_the_writers(stage_factory, tmp_path):
    st = stage_factory(1)
    host = st.primary
    flag = host.deploy_to / ".deploykit" / "freeze"
    # maintenance mode without the middleware in the app is refused before anything changes
    refused_cfg = configure(st, tmp_path, {"mode": "maintenance"}, name="maintenance")
    assert api.release(refused_cfg, st.name, "v1.2").ok
    dry = play(refused_cfg, st.name, "freeze_test", dry_run=True)
    assert next(r for r in dry.records if r.step == "freeze_writes").message.startswith("would refuse: ")
    refused = play(refused_cfg, st.name, "freeze_test")
    assert not refused.ok and "lacks " + MIDDLEWARE in refused.error.one_line()
    assert not flag.exists() and post(st, host, "not frozen")[0] == 201

    cfg = configure(st, tmp_path, None)  # the default mode: stop_writers
    assert cfg.freeze.mode == "stop_writers"
    status = supervisor_command("supervisorctl") + ["-c", str(st.supervisors[0].conf), "status", "web"]

    def web_state() -> str:
        return subprocess.run(status, capture_output=True, text=True).stdout

    frozen = play(cfg, st.name, "freeze_test")
    assert frozen.ok, frozen.error
    [started] = events(frozen, "freeze")
    assert started["mode"] == "stop_writers" and started["stopped"] == ["web"]
    assert "STOPPED" in web_state() and not serving(st, host) and flag.exists()

    thawed = play(cfg, st.name, "unfreeze")
    assert thawed.ok, thawed.error
    [ended] = events(thawed, "unfreeze")
    assert ended["started"] == ["web"] and ended["seconds"] > 0
    assert "RUNNING" in web_state() and not flag.exists()
    wait_for(lambda: serving(st, host), "the app serves again after the unfreeze")
    assert post(st, host, "after")[0] == 201 and titles(st)[-1] == "after"
    again = play(cfg, st.name, "unfreeze")
    assert again.ok and events(again, "unfreeze") == [] and "RUNNING" in web_state()
