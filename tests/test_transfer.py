"""Blue/green transfer, mode copy, end to end: real sshd hosts, gunicorn under supervisord, nginx in front.

Blue (v1.0) serves books written through the app, with covers (media); green (v1.1) has an older state of its
own. `deploykit transfer --from blue --to green` must leave green with blue's rows and files, migrated with
green's own code and serving, and blue exactly as it was (rows, schema, files); the freeze is reported. Every
refusal changes nothing; a copy corrupted on arrival leaves green as it was and blue unfrozen.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import urllib.request

import requests

from deploykit import api

# the tables green's own migrate adds rows to (its new migrations, their content types and permissions)
MIGRATE_ADDS = ("django_migrations", "django_content_type", "auth_permission")
MIDDLEWARE = "deploykit.django.middleware.WriteFreezeMiddleware"


def run(colours, *args, config=None):
    return subprocess.run(colours.cli_argv(*args, config=config), capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def result_of(cp) -> dict:
    """Every stdout line is one JSON object (--json); the result is the last."""
    docs = [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]
    assert docs, cp.stderr
    return docs[-1]


def journal(colours, doc) -> list[dict]:
    path = colours.config().journal_dir / f"{doc['run']}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def setup(c, tmp_path):
    """Media configured, the freeze middleware on, blue at v1.0 and green at v1.1, each with its own books."""
    for colour in ("blue", "green"):
        with open(c.host(colour).deploy_to / "shared" / ".env", "a") as env:
            env.write(f"EXTRA_MIDDLEWARE={MIDDLEWARE}\n")
    # maintenance: the app answers writes 503 while frozen and keeps serving reads
    path = c.edit(lambda d: d.update(media=["shared/media"], freeze={"mode": "maintenance"}), tmp_path / "transfer.yaml")
    c.config_path = path
    cfg = c.config()
    for colour, tag in (("blue", "v1.0"), ("green", "v1.1")):
        result = api.release(cfg, colour, tag)
        assert result.ok, result.error
    for i in range(3):
        status = post(c, "blue", f"Blue book {i}", cover=(f"cover-{i}.png", bytes([i]) * (1000 + i)))
        assert status == 201
    assert post(c, "blue", "Blue book without a cover") == 201
    assert post(c, "green", "Green's old book", cover=("old.png", b"green's own cover")) == 201
    return cfg


def post(c, colour: str, title: str, cover=None) -> int:
    files = {"cover": cover} if cover else None
    resp = requests.post(f"http://{c.http[colour]}/api/books/", data={"title": title, "author": "Transfer Tester"},
                         files=files, timeout=60)
    return resp.status_code


def get(c, colour: str, path: str):
    with urllib.request.urlopen(f"http://{c.http[colour]}{path}", timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def db(c, colour: str):
    return c.host(colour).deploy_to / "shared" / "db.sqlite3"


def dump(c, colour: str) -> list[str]:
    """Schema and rows of a colour's database, as SQL text."""
    with sqlite3.connect(db(c, colour)) as conn:
        return list(conn.iterdump())


def tables(c, colour: str, like: str | None = None) -> dict[str, list]:
    """Each table's rows, on the columns `like`'s tables have (the target's newer schema adds some)."""
    with sqlite3.connect(db(c, like or colour)) as ref, sqlite3.connect(db(c, colour)) as conn:
        names = [r[0] for r in ref.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        out = {}
        for name in names:
            cols = ", ".join(f'"{r[1]}"' for r in ref.execute(f'PRAGMA table_info("{name}")'))
            out[name] = sorted(conn.execute(f'SELECT {cols} FROM "{name}"').fetchall(), key=repr)
        return out


def media(c, colour: str) -> dict[str, str]:
    root = c.host(colour).deploy_to / "shared" / "media"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def applied(c, colour: str) -> set[tuple]:
    with sqlite3.connect(db(c, colour)) as conn:
        return set(conn.execute("SELECT app, name FROM django_migrations"))


def locks(c) -> list:
    """The locks held on blue's, green's and the router's hosts."""
    roots = [c.host("blue").deploy_to, c.host("green").deploy_to, c.router_host.deploy_to]
    return [p for root in roots if (p := root / ".deploykit" / "lock").exists()]


def frozen(c) -> bool:
    return (c.host("blue").deploy_to / ".deploykit" / "freeze").exists()


def test_transfer_copies_blue_to_green_migrated_and_serving_and_leaves_blue_as_it_was(colours_factory, tmp_path):
    c = colours_factory()
    setup(c, tmp_path)
    blue_dump, blue_media, green_before = dump(c, "blue"), media(c, "blue"), dump(c, "green")
    assert len(blue_media) == 3 and media(c, "green") != blue_media

    dry = run(c, "transfer", "--from", "blue", "--to", "green", "--dry-run")
    assert dry.returncode == 0 and "nothing was changed" in dry.stdout, dry.stdout[-3000:] + dry.stderr
    assert dump(c, "green") == green_before and not locks(c) and not frozen(c)
    assert not (c.host("green").deploy_to / "backups").exists() or \
        not any(p.name.endswith("transfer-green") for p in (c.host("green").deploy_to / "backups").iterdir())

    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--json")
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    doc = result_of(cp)
    assert doc["command"] == "transfer" and doc["ok"] and doc["data"]["source"] == "blue"
    assert doc["data"]["target"] == "green" and doc["data"]["mode"] == "copy"
    assert doc["data"]["freeze_seconds"] is not None and doc["data"]["freeze_seconds"] >= 0
    assert doc["data"]["copied"]["files"] >= 1 and doc["data"]["copied"]["bytes"] > 0
    [synced] = doc["data"]["media"]
    assert synced["files"] == 3 and synced["sent_files"] == 3 and synced["swapped"]
    events = journal(c, doc)
    # the media sent while blue serves, then again frozen (only what changed); frozen from the dump to the switch
    # (the copy and the frozen media pass run at the same time: either may end first)
    watched = ("transfer_sync", "freeze", "transfer_copy", "transfer_resync", "router_switch", "unfreeze")
    seen = [e["event"] for e in events if e["event"] in watched]
    assert seen[:2] == list(watched[:2]) and sorted(seen[2:4]) == sorted(watched[2:4]) and seen[4:] == list(watched[4:])
    stopped = [e for e in events if e["event"] == "step" and e.get("step") == "stop_processes"]
    assert stopped and all(e["t"] < next(f["t"] for f in events if f["event"] == "freeze") for e in stopped)
    done = [e for e in events if e["event"] == "transfer"]
    assert len(done) == 1 and done[0]["freeze_seconds"] == doc["data"]["freeze_seconds"]
    plain = run(c, "transfer", "--from", "blue", "--to", "green", "--dry-run")
    assert "frozen" not in plain.stdout  # a dry-run froze nothing

    # green: blue's rows (on blue's columns) and files, migrated with green's own v1.1, serving
    theirs, ours = tables(c, "blue"), tables(c, "green", like="blue")
    assert theirs.keys() == ours.keys() and theirs["library_book"] and theirs["library_author"]
    for name, rows in theirs.items():
        if name in MIGRATE_ADDS:  # green's migrate added its new migrations, content types, permissions
            assert set(rows) <= set(ours[name]), name
        else:
            assert rows == ours[name], name
    assert applied(c, "blue") < applied(c, "green")
    assert ("library", "0002_genre_book_genre") in applied(c, "green")
    assert media(c, "green") == blue_media
    status, body = get(c, "green", "/")
    assert status == 200 and body["version"] == "1.1" and body["books"] == 4
    titles = [b["title"] for b in get(c, "green", "/api/books/")[1]["books"]]
    assert "Green's old book" not in titles and "Blue book 0" in titles
    assert post(c, "green", "written on green after the transfer") == 201

    # blue: only read
    assert dump(c, "blue") == blue_dump and media(c, "blue") == blue_media
    assert not frozen(c) and not locks(c)
    assert post(c, "blue", "blue still takes writes") == 201

    # the router serves green now: a transfer to it is refused, green is live
    assert c.version() == "1.1" and c.router_state()["colour"] == "green"
    green_now = dump(c, "green")
    cp = run(c, "transfer", "--from", "blue", "--to", "green")
    assert cp.returncode == 2 and "live colour" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    assert dump(c, "green") == green_now and not locks(c) and not frozen(c)

    # switch back at once: blue serves again, no data moves; green keeps what it took, and says so
    back = run(c, "switch", "--to", "blue")
    assert back.returncode == 0 and c.version() == "1.0", back.stdout[-3000:] + back.stderr
    assert "green took 1 row(s) more or fewer since it went live" in back.stdout, back.stdout
    assert "default.library_book +1" in back.stdout and "they stay in green" in back.stdout, back.stdout
    assert dump(c, "green") == green_now

    # a second transfer: the media did not change, so none of it is sent again
    again = api.transfer(c.config(), "blue", "green")
    assert again.ok, again.error
    [synced] = again.data["media"]
    assert synced["files"] == 3 and synced["sent_files"] == 0 and synced["kept_files"] == 3
    assert media(c, "green") == blue_media and tables(c, "green", like="blue")["library_book"] == \
        tables(c, "blue")["library_book"]

    assert c.version() == "1.1" and not locks(c) and not frozen(c)

    blue_dump_now = dump(c, "blue")
    # --tag: refused while green is live; after a switch back, v1.2 is released on green first (a release of
    # its own) and its code migrates the moved data
    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--tag", "v1.2")
    assert cp.returncode == 2 and "live colour" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    assert run(c, "switch", "--to", "blue").returncode == 0 and c.version() == "1.0"
    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--tag", "v1.2", "--json")
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    doc = result_of(cp)
    assert doc["command"] == "transfer" and doc["data"]["released"]["tag"] == "v1.2"
    assert c.version() == "1.2" and ("library", "0004_book_isbn") in applied(c, "green")
    assert tables(c, "green", like="blue")["library_book"] == tables(c, "blue")["library_book"]
    assert dump(c, "blue") == blue_dump_now and not locks(c) and not frozen(c)


def test_transfer_refusals_and_a_corrupt_copy_change_nothing(colours_factory, tmp_path, monkeypatch):
    import deploykit.transport.streamcopy as sc
    from deploykit.errors import DeployError
    from deploykit.transport.host import make_host

    c = colours_factory()
    cfg = setup(c, tmp_path)
    blue_dump, green_dump, green_media = dump(c, "blue"), dump(c, "green"), media(c, "green")

    def unchanged():
        assert dump(c, "blue") == blue_dump and dump(c, "green") == green_dump
        assert media(c, "green") == green_media and not locks(c) and not frozen(c)

    # replicate on SQLite, an unknown tag, bad colours: nothing changes
    for args, said in ((("--mode", "replicate"), "no logical replication"), (("--to", "blue"), "both blue"),
                       (("--tag", "v9.9"), "v9.9")):
        argv = ["transfer", "--from", "blue", "--to", "green", *args]
        if args[0] == "--to":
            argv = ["transfer", "--from", "blue", *args]
        cp = run(c, *argv)
        assert cp.returncode != 0 and said in cp.stderr, cp.stdout[-3000:] + cp.stderr
    unchanged()

    # the source is not healthy
    quick = c.edit(lambda d: d["health"][0].update(timeout=2), tmp_path / "quick.yaml")
    c.supervisors[0].stop_program("web")
    cp = run(c, "transfer", "--from", "blue", "--to", "green", config=quick)
    assert cp.returncode == 2 and "not healthy" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    c.supervisors[0].start_program("web")
    unchanged()

    # both colours' config names one SQLite file (an absolute path on the same machine)
    same = c.edit(lambda d: d["databases"]["default"].update(path=str(db(c, "blue"))), tmp_path / "same.yaml")
    cp = run(c, "transfer", "--from", "blue", "--to", "green", config=same)
    assert cp.returncode == 2 and "same database" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    unchanged()

    # the target's lock is held by another run (on another controller: it cannot be proven gone)
    lock = c.host("green").deploy_to / ".deploykit" / "lock"
    host = make_host(cfg.stage("green")[0], cfg)
    host.helper("locks", "lock_acquire", {"path": str(lock), "info": {"run_id": "other-run", "command": "release",
                                                                      "user": "ops", "controller": "laptop"}})
    host.close()
    cp = run(c, "transfer", "--from", "blue", "--to", "green")
    assert cp.returncode == 2 and "other-run" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    assert lock.exists() and not (c.host("blue").deploy_to / ".deploykit" / "lock").exists()
    lock.unlink()
    unchanged()

    # a copy corrupted on arrival: nothing restored on green, blue unfrozen, the locks freed
    real = sc._relay

    def corrupt(src, src_path, dst, dst_part, progress=None):
        size, digest = real(src, src_path, dst, dst_part, progress)
        if "/backups/" not in dst_part:  # the media sent before the freeze arrive whole; the backup set does not
            return size, digest
        return size, "0" * 64  # what the controller relayed is not what left
    monkeypatch.setattr(sc, "_relay", corrupt)
    result = api.transfer(cfg, "blue", "green")
    monkeypatch.undo()
    assert not result.ok and result.failed_phase == "copy" and "sha256" in result.error.one_line()
    assert isinstance(result.error, DeployError) and result.recovery is not None and result.recovery.ok
    assert result.recovery.playbook == "transfer_unfreeze"
    unchanged()
    backups = c.host("green").deploy_to / "backups"
    assert not [p for p in backups.iterdir() if "transfer" in p.name]  # no copy, whole or partial, left
    assert post(c, "blue", "blue takes writes again") == 201

    # and then a transfer goes through (every lock and the freeze were undone)
    result = api.transfer(cfg, "blue", "green")
    assert result.ok, result.error
    assert media(c, "green") == media(c, "blue")


def test_a_transfer_interrupted_or_killed_while_frozen_unfreezes_the_source(colours_factory, tmp_path):
    import signal
    import time

    c = colours_factory()
    setup(c, tmp_path)
    blue_dump, green_dump, green_media = dump(c, "blue"), dump(c, "green"), media(c, "green")
    # the run waits, frozen, before its copy (a hook on the source's primary)
    slow = c.edit(lambda d: d.update(hooks={"before": {"copy": [{"run": "sleep 60", "on": "primary"}]}}),
                  tmp_path / "slow.yaml")

    def frozen_run():
        proc = subprocess.Popen(c.cli_argv("transfer", "--from", "blue", "--to", "green", config=slow),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not (frozen(c) and len(locks(c)) == 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        status, _ = get(c, "blue", "/api/books/")
        assert status == 200  # reads are served while frozen
        assert post(c, "blue", "refused while frozen") == 503
        return proc

    proc = frozen_run()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "writes are accepted again" in err, out[-3000:] + err
    assert not frozen(c) and not locks(c)
    assert dump(c, "green") == green_dump and media(c, "green") == green_media and dump(c, "blue") == blue_dump

    # killed outright while frozen: the freeze and both locks stay, until the next transfer finishes the dead run
    proc = frozen_run()
    proc.kill()
    proc.communicate(timeout=60)
    assert frozen(c) and len(locks(c)) == 3
    cp = run(c, "transfer", "--from", "blue", "--to", "green")
    assert cp.returncode == 1 and "first finished" in cp.stderr and "transfer_unfreeze" in cp.stderr, \
        cp.stdout[-3000:] + cp.stderr
    assert not frozen(c) and not locks(c)
    assert dump(c, "green") == green_dump and media(c, "green") == green_media and dump(c, "blue") == blue_dump
    cp = run(c, "transfer", "--from", "blue", "--to", "green")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    assert "writes on blue were frozen" in cp.stdout and "transfer blue -> green: done" in cp.stdout, cp.stdout
    assert media(c, "green") == media(c, "blue")


COPY_PHASES = ("stop_target", "presync", "freeze", "copy", "resync", "restore", "swap", "migrate", "start", "verify",
               "switch", "unfreeze")


def test_a_transfer_interrupted_at_each_phase_leaves_blue_unfrozen_and_green_as_before_or_complete(
        colours_factory, tmp_path):
    import signal
    import time

    c = colours_factory()
    setup(c, tmp_path)
    assert run(c, "switch", "--to", "blue").returncode == 0
    outcomes = {}
    for phase in COPY_PHASES:
        if c.router_state()["colour"] != "blue":
            assert run(c, "switch", "--to", "blue").returncode == 0
        assert post(c, "blue", f"written before the {phase} interrupt") == 201
        blue_dump, green_dump = dump(c, "blue"), dump(c, "green")
        # the run waits in a hook before the phase; the hook runs where the phase does
        slow = c.edit(lambda d: d.update(hooks={"before": {phase: [{"run": "sleep 60", "on": "primary"}]}}),
                      tmp_path / f"slow-{phase}.yaml")
        proc = subprocess.Popen(c.cli_argv("transfer", "--from", "blue", "--to", "green", config=slow),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not c.hook_started(phase, "transfer"):
            assert proc.poll() is None and time.monotonic() < deadline, (phase, proc.communicate())
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, (phase, out[-3000:] + err)
        # blue unfrozen and only read; no lock left; green serving, as before or complete
        assert not frozen(c) and not locks(c), phase
        assert dump(c, "blue") == blue_dump, phase
        status, body = get(c, "green", "/")
        assert status == 200 and body["version"] == "1.1", phase
        titles = {b["title"] for b in get(c, "green", "/api/books/")[1]["books"]}
        complete = f"written before the {phase} interrupt" in titles
        assert complete or dump(c, "green") == green_dump, phase
        live = c.router_state()["colour"] if c.router_state() else None
        assert live == "blue" or (live == "green" and complete), (phase, live)
        assert post(c, live, f"written after the {phase} interrupt") == 201, phase
        outcomes[phase] = ("complete" if complete else "as before", live)
    # before the swap green is as before; from the swap on it is complete; only the last phase leaves it live
    assert [outcomes[p][0] for p in COPY_PHASES] == ["as before"] * 6 + ["complete"] * 6, outcomes
    assert [outcomes[p][1] for p in COPY_PHASES] == ["blue"] * 11 + ["green"], outcomes
