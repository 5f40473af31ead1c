"""Blue/green transfer between colours on PostgreSQL, each colour its own server: real sshd hosts, two real
PostgreSQL clusters, gunicorn under supervisord, nginx in front.

The one deploykit.yaml names the database without a host or port; each colour's host reaches its own server
(PGHOST/PGPORT of its sessions), so whether the colours use one database is asked of the servers. Blue (v1.0)
serves books written through the app, with covers; green (v1.1) has an older state of its own.
"""
from __future__ import annotations

import hashlib
import json
import subprocess

import requests

from deploykit import api

MIDDLEWARE = "deploykit.django.middleware.WriteFreezeMiddleware"


def run(c, *args, config=None):
    return subprocess.run(c.cli_argv(*args, config=config), capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, env=c.env())


def result_of(cp) -> dict:
    """Every stdout line is one JSON object (--json); the result is the last."""
    docs = [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]
    assert docs, cp.stderr
    return docs[-1]


def post(c, colour: str, title: str, cover=None) -> int:
    files = {"cover": cover} if cover else None
    resp = requests.post(f"http://{c.http[colour]}/api/books/", data={"title": title, "author": "Transfer Tester"},
                         files=files, timeout=60)
    return resp.status_code


def setup(c, tmp_path):
    """Media configured, writes frozen by the middleware (reads go on), blue at v1.0 and green at v1.1, each with
    its own books."""
    for colour in ("blue", "green"):
        with open(c.host(colour).deploy_to / "shared" / ".env", "a") as env:
            env.write(f"EXTRA_MIDDLEWARE={MIDDLEWARE}\n")
    c.config_path = c.edit(lambda d: d.update(media=["shared/media"], freeze={"mode": "maintenance"}),
                           tmp_path / "transfer.yaml")
    cfg = c.config()
    for colour, tag in (("blue", "v1.0"), ("green", "v1.1")):
        result = api.release(cfg, colour, tag)
        assert result.ok, result.error
    for i in range(3):
        assert post(c, "blue", f"Blue book {i}", cover=(f"cover-{i}.png", bytes([i]) * (1000 + i))) == 201
    assert post(c, "blue", "Blue book without a cover") == 201
    assert post(c, "green", "Green's old book", cover=("old.png", b"green's own cover")) == 201
    return cfg


def titles(c, colour: str) -> set[str]:
    """The book titles in the colour's own database (asked of its cluster, not of the app)."""
    return {r[0] for r in c.pg(colour).execute(c.config().databases[0].name, "SELECT title FROM library_book")}


def state(c, colour: str) -> dict:
    """Rows, schema and media of a colour: what 'changed nothing' compares."""
    pg, name = c.pg(colour), c.config().databases[0].name
    return {"rows": pg.row_checksums(name), "schema": pg.schema(name), "media": media(c, colour)}


def media(c, colour: str) -> dict[str, str]:
    root = c.host(colour).deploy_to / "shared" / "media"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def locks(c) -> list:
    return [p for colour in ("blue", "green") if (p := c.host(colour).deploy_to / ".deploykit" / "lock").exists()]


def frozen(c) -> bool:
    return (c.host("blue").deploy_to / ".deploykit" / "freeze").exists()


def test_colours_on_one_postgresql_server_are_refused_as_the_same_database_and_nothing_changes(
        colours_factory, tmp_path):
    c = colours_factory(database="postgresql")
    setup(c, tmp_path)
    assert titles(c, "blue") >= {"Blue book 0"} and titles(c, "green") == {"Green's old book"}
    blue_port = c.pg("blue").port
    before = {colour: state(c, colour) for colour in ("blue", "green")}

    # the two colours' hosts reach two servers: not the same database, whatever the config spells (it spells
    # no host and no port for either)
    dry = run(c, "transfer", "--from", "blue", "--to", "green", "--dry-run")
    assert dry.returncode == 0 and "databases distinct" in dry.stdout, dry.stdout[-3000:] + dry.stderr

    # green's host now reaches blue's server (under another name of it): one database, refused
    c.host("green").set_env({"PGHOST": "localhost", "PGPORT": str(blue_port)})
    cp = run(c, "transfer", "--from", "blue", "--to", "green")
    assert cp.returncode == 2 and "same database" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    assert {colour: state(c, colour) for colour in ("blue", "green")} == before
    assert not locks(c) and not frozen(c)
    assert post(c, "blue", "blue still takes writes") == 201 and "blue still takes writes" in titles(c, "blue")
