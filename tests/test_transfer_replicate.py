"""Blue/green transfer, mode replicate, end to end: each colour its own real PostgreSQL server, logical
replication between them, real sshd hosts, gunicorn under supervisord, nginx in front.

Green must end with blue's rows (at the freeze) and sequences, migrated with green's code, serving through
nginx; blue only read; and no publication, slot or subscription left, whatever way the run ends: done, over
its --max-freeze, or interrupted while copying or while frozen.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.test_transfer_pg import checksums, columns, frozen, media, post, result_of, rows, run, setup, state, titles

MIGRATE_ADDS = ("django_migrations", "django_content_type", "auth_permission")


def db(c) -> str:
    return c.config().databases[0].name


def leftovers(c) -> dict:
    """What replication objects exist: slots and publications on blue's server, subscriptions on green's."""
    blue, green = c.pg("blue"), c.pg("green")
    return {"slots": blue.execute("postgres", "SELECT slot_name FROM pg_replication_slots"),
            "publications": blue.execute(db(c), "SELECT pubname FROM pg_publication"),
            "subscriptions": green.execute("postgres", "SELECT subname FROM pg_subscription"),
            "green_databases": sorted(r[0] for r in green.execute(
                "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'dkr%'"))}


NOTHING_LEFT = {"slots": [], "publications": [], "subscriptions": [], "green_databases": []}
REPLICATE_PHASES = ("stop_target", "seed", "catch_up", "freeze", "cut_over", "resync", "budget", "swap", "migrate",
                    "start", "verify", "switch", "unfreeze")


def all_locks(c) -> list:
    roots = [c.host("blue").deploy_to, c.host("green").deploy_to, c.router_host.deploy_to]
    return [p for root in roots if (p := root / ".deploykit" / "lock").exists()]


def journal(c, run_id: str) -> list[dict]:
    path = c.config().journal_dir / f"{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_replicate_moves_blue_to_green_with_a_short_freeze_and_leaves_nothing_behind(colours_factory, tmp_path):
    c = colours_factory(database="postgresql")
    setup(c, tmp_path)
    blue_before = state(c, "blue")

    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--mode", "replicate", "--json")
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    doc = result_of(cp)
    assert doc["ok"] and doc["data"]["mode"] == "replicate" and doc["data"]["freeze_seconds"] is not None
    events = journal(c, doc["run"])
    order = [e["event"] for e in events if e["event"] in ("replication_seed", "freeze", "replication_cutover",
                                                           "router_switch", "unfreeze")]
    assert order == ["replication_seed", "freeze", "replication_cutover", "router_switch", "unfreeze"]
    [cut] = [e for e in events if e["event"] == "replication_cutover"]
    assert set(cut["dropped"]) == {"subscription", "slot", "publication"} and cut["sequences"] >= 1
    assert leftovers(c) == NOTHING_LEFT

    # green: blue's rows on every table blue has (its own migrate adds rows to a few), serving as v1.1
    shape = columns(c, "blue")
    theirs, ours = checksums(c, "blue", shape), checksums(c, "green", shape)
    for table, cols in shape.items():
        if table in MIGRATE_ADDS:
            assert rows(c, "blue", table, cols) <= rows(c, "green", table, cols), table
        else:
            assert ours[table] == theirs[table], table
    assert titles(c, "green") == titles(c, "blue") and "Green's old book" not in titles(c, "green")
    assert media(c, "green") == media(c, "blue")
    assert c.version() == "1.1"  # through nginx
    # the sequences came too: a new book on green gets an id past blue's
    top = c.pg("blue").execute(db(c), "SELECT max(id) FROM library_book")[0][0]
    assert post(c, "green", "first book written on green") == 201
    assert c.pg("green").execute(db(c), "SELECT id FROM library_book WHERE title = 'first book written on green'")[0][0] > top

    # blue: only read
    assert state(c, "blue") == blue_before and not frozen(c) and not all_locks(c)

    # back at once, no data moved
    assert run(c, "switch", "--to", "blue").returncode == 0 and c.version() == "1.0"
    assert "first book written on green" in titles(c, "green")


def test_replicate_over_its_freeze_budget_or_interrupted_unfreezes_blue_and_leaves_no_slot(colours_factory, tmp_path):
    c = colours_factory(database="postgresql")
    setup(c, tmp_path)
    before = {colour: state(c, colour) for colour in ("blue", "green")}

    def unchanged():
        assert {colour: state(c, colour) for colour in ("blue", "green")} == before
        assert leftovers(c) == NOTHING_LEFT and not frozen(c) and not all_locks(c)
        assert c.version() == "1.0"  # nginx serves blue: nothing was switched
        assert post(c, "blue", "blue takes writes") == 201
        before["blue"] = state(c, "blue")

    # --max-freeze: the budget is spent at once, before anything is switched
    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--mode", "replicate", "--max-freeze", "0.001")
    assert cp.returncode == 1 and "max-freeze" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    unchanged()

    # interrupted (SIGINT) before each phase that changes anything: the hook before it waits, the signal comes
    for phase in REPLICATE_PHASES[:REPLICATE_PHASES.index("swap")]:
        slow = c.edit(lambda d: d.update(hooks={"before": {phase: [{"run": "sleep 60", "on": "primary"}]}}),
                      tmp_path / f"slow-{phase}.yaml")
        wait_for = lambda: c.hook_started(phase, "transfer_replicate")  # noqa: E731
        proc = subprocess.Popen(c.cli_argv("transfer", "--from", "blue", "--to", "green", "--mode", "replicate",
                                           config=slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=c.env())
        deadline = time.monotonic() + 300
        while not wait_for():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, (phase, out[-3000:] + err)
        unchanged()

    # from the swap on, green is complete: the interrupt finishes it, or switches back; no slot either way
    for phase in REPLICATE_PHASES[REPLICATE_PHASES.index("swap"):]:
        if c.version() != "1.0":
            assert run(c, "switch", "--to", "blue").returncode == 0
        assert post(c, "blue", f"written before the {phase} interrupt") == 201
        slow = c.edit(lambda d: d.update(hooks={"before": {phase: [{"run": "sleep 60", "on": "primary"}]}}),
                      tmp_path / f"slow-{phase}.yaml")
        proc = subprocess.Popen(c.cli_argv("transfer", "--from", "blue", "--to", "green", "--mode", "replicate",
                                           config=slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=c.env())
        deadline = time.monotonic() + 300
        while not c.hook_started(phase, "transfer_replicate"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, (phase, out[-3000:] + err)
        assert leftovers(c) == NOTHING_LEFT, phase  # no slot, no publication, no copy left unswapped
        assert not frozen(c) and not all_locks(c), phase
        assert f"written before the {phase} interrupt" in titles(c, "green"), phase  # complete
        assert c.version() == ("1.1" if phase == "unfreeze" else "1.0"), phase

    # and then it goes through
    assert run(c, "switch", "--to", "blue").returncode == 0
    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--mode", "replicate")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    assert leftovers(c) == NOTHING_LEFT and c.version() == "1.1"
