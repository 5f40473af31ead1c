"""Blue/green traffic end to end: real sshd hosts, gunicorn under supervisord, a real nginx in front.

Each colour is a stage with its own SQLite database, released with a different tag so their answers
differ (the sample's / view returns its version); `deploykit switch` points nginx at one of them.
"""
from __future__ import annotations

import hashlib
import json
import subprocess

from deploykit import api


def run(colours, *args, config=None):
    return subprocess.run(colours.cli_argv(*args, config=config), capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def result_of(cp) -> dict:
    """Every stdout line is one JSON object (--json); the result is the last."""
    docs = [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]
    assert docs, cp.stderr
    return docs[-1]


def databases(colours) -> dict:
    """Each colour's SQLite file, hashed: a switch moves no data."""
    return {colour: hashlib.sha256((colours.host(colour).deploy_to / "shared" / "db.sqlite3").read_bytes()).hexdigest()
            for colour in ("blue", "green")}


def journal(colours, doc) -> list[dict]:
    path = colours.config().journal_dir / f"{doc['run']}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def released(colours) -> None:
    cfg = colours.config()
    for colour, tag in (("blue", "v1.0"), ("green", "v1.1")):
        result = api.release(cfg, colour, tag)
        assert result.ok, result.error


def test_switch_sends_traffic_to_a_colour_and_back_at_once(colours_factory):
    c = colours_factory()
    released(c)
    upstream = c.nginx.upstream_file
    assert c.version() == "1.0"  # the rig's own upstream file: blue, but no colour is live yet
    first, data = upstream.read_bytes(), databases(c)

    dry = run(c, "switch", "--to", "green", "--dry-run")
    assert dry.returncode == 0 and "nothing was changed" in dry.stdout, dry.stdout + dry.stderr
    assert upstream.read_bytes() == first and c.router_state() is None and c.version() == "1.0"
    assert not (c.router_host.deploy_to / ".deploykit" / "lock").exists()

    cp = run(c, "switch", "--to", "green", "--json")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    doc = result_of(cp)
    assert doc["command"] == "switch" and doc["ok"] and doc["data"]["colour"] == "green"
    assert c.version() == "1.1"
    assert upstream.read_text().startswith("# deploykit colour: green\n")
    assert c.http["green"] in upstream.read_text() and c.http["blue"] not in upstream.read_text()
    assert c.router_state()["colour"] == "green"
    switched = [e for e in journal(c, doc) if e["event"] == "router_switch"]
    assert [(e["host"], e["colour"]) for e in switched] == [(c.router_host.name, "green")]

    again = run(c, "switch", "--to", "green")
    assert again.returncode == 2 and "already live" in again.stderr, again.stdout + again.stderr
    assert c.version() == "1.1"

    back = run(c, "switch", "--to", "blue")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr
    assert c.version() == "1.0"  # at once: the first request after the command
    assert c.router_state()["colour"] == "blue"

    cp = run(c, "colours", "--json")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    doc = result_of(cp)
    assert doc["command"] == "colours" and doc["live"] == "blue"
    assert doc["colours"]["blue"]["release"]["tag"] == "v1.0"
    assert doc["colours"]["green"]["release"]["tag"] == "v1.1"
    for colour in ("blue", "green"):  # data age: the pre-release backup of each colour verifies
        assert doc["colours"][colour]["backup"]["age_seconds"] >= 0
    table = run(c, "colours")
    assert table.returncode == 0 and "the router serves blue" in table.stdout, table.stdout + table.stderr
    assert databases(c) == data  # no switch moved any data


def test_switch_refuses_or_switches_back_and_traffic_stays_on_the_live_colour(colours_factory, tmp_path):
    c = colours_factory()
    released(c)
    assert run(c, "switch", "--to", "blue").returncode == 0
    upstream = c.nginx.upstream_file

    def unchanged(before: bytes) -> None:
        assert upstream.read_bytes() == before
        assert c.router_state()["colour"] == "blue" and c.version() == "1.0"
        assert sorted(p.name for p in upstream.parent.iterdir() if p.name != upstream.name
                      and not p.name.endswith(".deploykit-previous")) == []  # no half-written file beside
        assert not (c.router_host.deploy_to / ".deploykit" / "lock").exists()

    before = upstream.read_bytes()
    # an unhealthy target: refused before anything changes
    quick = c.edit(lambda d: d["health"][0].update(timeout=2), tmp_path / "quick.yaml")
    c.supervisors[1].stop_program("web")
    cp = run(c, "switch", "--to", "green", config=quick)
    assert cp.returncode == 2 and "not healthy" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    unchanged(before)
    c.supervisors[1].start_program("web")

    # nginx -t already fails (a bad file beside the upstream file): the router's preflight refuses
    broken = upstream.parent / "broken.conf"
    broken.write_text("this is not nginx;\n")
    cp = run(c, "switch", "--to", "green")
    assert cp.returncode == 2 and "-t" in cp.stderr and "broken.conf" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    broken.unlink()
    unchanged(before)

    # nginx -t refuses the new upstream file: the previous one is put back and nothing is reloaded
    bad_port = c.edit(lambda d: d["colours"].update(servers={"green": ["127.0.0.1:70000"]}), tmp_path / "bad.yaml")
    cp = run(c, "switch", "--to", "green", "--json", config=bad_port)
    assert cp.returncode == 1, cp.stdout[-3000:] + cp.stderr
    doc = result_of(cp)
    assert doc["failed_phase"] == "route" and "put back" in doc["error"] and "not reloaded" in doc["error"]
    assert "serves blue" in doc["line"]
    unchanged(before)

    # the router does not answer as green does: the switch is undone, blue serves again
    dead = c.edit(lambda d: d["colours"]["router"].update(check="http://127.0.0.1:1/", check_timeout=1),
                  tmp_path / "dead.yaml")
    cp = run(c, "switch", "--to", "green", config=dead)
    assert cp.returncode == 1 and "does not serve green" in cp.stderr and "serves blue again" in cp.stderr, \
        cp.stdout[-3000:] + cp.stderr
    assert upstream.read_text().startswith("# deploykit colour: blue\n")
    assert c.router_state()["colour"] == "blue" and c.version() == "1.0"

    # and after all that, a switch still works (every lock was freed)
    cp = run(c, "switch", "--to", "green")
    assert cp.returncode == 0 and c.version() == "1.1", cp.stdout[-3000:] + cp.stderr


def test_a_switch_interrupted_or_killed_after_the_router_changed_is_switched_back(colours_factory, tmp_path):
    import signal
    import time

    c = colours_factory()
    released(c)
    assert run(c, "switch", "--to", "blue").returncode == 0
    # the check through the router never passes: the run waits in verify_route until it is interrupted
    slow = c.edit(lambda d: d["colours"]["router"].update(check="http://127.0.0.1:1/", check_timeout=300),
                  tmp_path / "slow.yaml")
    proc = subprocess.Popen(c.cli_argv("switch", "--to", "green", config=slow), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # switched, not yet verified (nginx's new workers take over the requests a moment after the reload)
    while (c.router_state() or {}).get("colour") != "green" or c.version() != "1.1":
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "serves blue again" in err, out[-3000:] + err
    assert c.version() == "1.0" and c.router_state()["colour"] == "blue"
    assert c.nginx.upstream_file.read_text().startswith("# deploykit colour: blue\n")
    lock = c.router_host.deploy_to / ".deploykit" / "lock"
    assert not lock.exists()

    # killed outright there: the lock stays, and the next switch first switches back what the dead run changed
    proc = subprocess.Popen(c.cli_argv("switch", "--to", "green", config=slow), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    while (c.router_state() or {}).get("colour") != "green":
        assert proc.poll() is None and time.monotonic() < deadline + 120
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=60)
    assert lock.exists()
    cp = run(c, "switch", "--to", "green")
    assert cp.returncode == 1 and "first finished" in cp.stderr and "switch_back" in cp.stderr, \
        cp.stdout[-3000:] + cp.stderr
    assert c.router_state()["colour"] == "blue" and not lock.exists()
    cp = run(c, "switch", "--to", "green")
    assert cp.returncode == 0 and c.version() == "1.1", cp.stdout[-3000:] + cp.stderr
