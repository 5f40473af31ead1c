"""Blue/green transfer between colours on PostgreSQL, each colour its own server: real sshd hosts, two real
PostgreSQL clusters, gunicorn under supervisord, nginx in front.

The one deploykit.yaml names the database without a host or port; each colour's host reaches its own server
(PGHOST/PGPORT of its sessions), so whether the colours use one database is asked of the servers. Blue (v1.0)
serves books written through the app, with covers; green (v1.1) has an older state of its own.

Under a load loop through nginx (deploykit_testing/load.py) the transfer, which switches the router to green
under the freeze and unfreezes blue after, must fail no read, refuse the writes of the freeze with 503 and
Retry-After, and lose no write it answered 2xx: each is in green's database after. Green ends with blue's rows at
the freeze (per-table checksums on blue's columns) and blue's media; blue is only read.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest
import requests
from psycopg import sql

from deploykit import api
from deploykit_testing import load
from deploykit_testing.colours import DATABASE, start_colour_clusters, stop_clusters
from deploykit_testing.stage import OWNER

MIDDLEWARE = "deploykit.django.middleware.WriteFreezeMiddleware"
# the tables green's own migrate adds rows to (its new migrations, their content types and permissions)
MIGRATE_ADDS = ("django_migrations", "django_content_type", "auth_permission")


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


def journal(c, doc) -> list[dict]:
    path = c.config().journal_dir / f"{doc['run']}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dbname(c) -> str:
    return c.config().databases[0].name


def columns(c, colour: str) -> dict[str, list[str]]:
    """Each table of the colour's database with its columns, in order."""
    out: dict[str, list[str]] = {}
    for table, column in c.pg(colour).execute(
            dbname(c), "SELECT c.table_name, c.column_name FROM information_schema.columns c "
                       "JOIN information_schema.tables t USING (table_schema, table_name) "
                       "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
                       "ORDER BY c.table_name, c.ordinal_position"):
        out.setdefault(table, []).append(column)
    return out


def _rows_query(table: str, cols: list[str], skip_titles: list[str] | None, select) -> sql.Composed:
    where = sql.SQL(" WHERE NOT (title = ANY(%(skip)s))") if skip_titles else sql.SQL("")
    return sql.SQL("SELECT {select} FROM {table} AS t{where}").format(
        select=select(sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(col) for col in cols))),
        table=sql.Identifier(table), where=where)


def primary_key(c, colour: str, table: str) -> list[str]:
    return [r[0] for r in c.pg(colour).execute(
        dbname(c), "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                   "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
                   "ORDER BY array_position(i.indkey::int2[], a.attnum)", (f'public."{table}"',))]


def checksum(c, colour: str, table: str, cols: list[str], skip_titles: list[str] | None = None) -> tuple:
    """(rows, md5 of the rows' text on `cols`, in primary-key order), asked of the colour's own server."""
    pk = primary_key(c, colour, table)
    order = sql.SQL(", ").join(sql.Identifier(k) for k in pk) if pk else sql.SQL("1")
    query = _rows_query(table, cols, skip_titles, lambda row: sql.SQL(
        "count(*), md5(coalesce(string_agg({row}::text, E'\\n' ORDER BY {order}, {row}::text), ''))").format(
        row=row, order=order))
    with c.pg(colour).connect(dbname(c)) as conn:
        return conn.execute(query, {"skip": skip_titles or []}).fetchone()


def rows(c, colour: str, table: str, cols: list[str]) -> set[str]:
    query = _rows_query(table, cols, None, lambda row: sql.SQL("{row}::text").format(row=row))
    with c.pg(colour).connect(dbname(c)) as conn:
        return {r[0] for r in conn.execute(query)}


def checksums(c, colour: str, like: dict[str, list[str]], skip_titles=None) -> dict[str, tuple]:
    """Every table of `like` (table -> columns) on those columns; library_book without `skip_titles`."""
    return {t: checksum(c, colour, t, cols, skip_titles if t == "library_book" else None) for t, cols in like.items()}


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


def freeze_window(c, events: list[dict], source: str = "blue") -> tuple[float, float]:
    """(the freeze on, the first of: the router's switch starting, the unfreeze starting) from the journal: a
    write sent and answered inside it reached the frozen source and nothing else."""
    host = c.host(source).name
    [on] = [e["t"] for e in events if e["event"] == "freeze" and e.get("host") == host]
    ends = [e["t"] for e in events if e["event"] == "step_start" and e["t"] >= on
            and e.get("step") in ("switch_router", "unfreeze_writes")]
    assert ends, [e for e in events if e["event"] == "step_start"]
    return on, min(ends)


@pytest.mark.parametrize("mode", ["copy", "replicate"])
def test_transfer_under_load_through_nginx_loses_no_write_and_switches_to_green_and_back(colours_factory,
                                                                                         tmp_path, mode):
    c = colours_factory(database="postgresql")
    setup(c, tmp_path)
    assert run(c, "switch", "--to", "blue").returncode == 0 and c.version() == "1.0"
    shape = columns(c, "blue")
    blue_before, blue_schema, blue_media = checksums(c, "blue", shape), c.pg("blue").schema(dbname(c)), media(c, "blue")
    assert len(blue_media) == 3 and media(c, "green") != blue_media

    loop = load.LoadLoop(c.nginx.url(), limit=3000, timeout=10, pause=0.02, author="Transfer Tester").start()
    loop.wait_for(40)  # traffic flows before the transfer
    cp = run(c, "transfer", "--from", "blue", "--to", "green", "--mode", mode, "--json")
    loop.wait_for(len(loop.snapshot()) + 40)  # and after it
    records = loop.stop()
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    doc = result_of(cp)
    assert doc["ok"] and doc["data"]["mode"] == mode, doc
    events = journal(c, doc)
    facts = load.summary(records)
    assert len(records) < 3000 and facts["requests"] >= 160, facts  # the loop ran through the transfer and ended

    # the router serves green, switched by the transfer itself
    assert c.router_state()["colour"] == "green" and c.version() == "1.1", (c.router_state(), c.version())

    # what the traffic saw: every read served; every write taken or refused 503 with Retry-After
    assert not load.failed_reads(records), (load.failed_reads(records)[:5], facts)
    assert all(r.ok or r.status == 503 for r in load.writes(records)), facts
    assert load.unavailable(records) and all(has for _, has in load.unavailable(records)), facts
    on, off = freeze_window(c, events)
    in_freeze = load.writes(load.within(records, on, off))
    assert in_freeze and all(r.status == 503 and r.retry_after for r in in_freeze), (in_freeze[:5], facts)

    # no write that got a 2xx is lost: each is in green's database
    accepted = load.accepted_writes(records)
    green_titles, blue_titles = titles(c, "green"), titles(c, "blue")
    assert accepted and set(accepted) <= green_titles, (sorted(set(accepted) - green_titles)[:5], facts)

    # blue: nothing written since the freeze; before it, only the writes taken through the app
    assert {r.title for r in load.writes(records) if r.answered < on and r.ok} <= blue_titles
    assert not {r.title for r in load.writes(records) if r.sent >= on} & blue_titles
    ours = [t for t in blue_titles if t.startswith(loop.prefix)]
    assert checksums(c, "blue", shape, skip_titles=ours) == blue_before
    assert c.pg("blue").schema(dbname(c)) == blue_schema and media(c, "blue") == blue_media
    blue_at_freeze = checksums(c, "blue", shape)

    # green: blue's rows at the freeze (on blue's columns), apart from the writes green took after the switch,
    # and the rows its own migrate adds; blue's media; migrated to green's code
    green_took = sorted(set(accepted) - blue_titles)
    got = checksums(c, "green", shape, skip_titles=green_took)
    for table, cols in shape.items():
        if table in MIGRATE_ADDS:
            assert rows(c, "blue", table, cols) <= rows(c, "green", table, cols), table
        else:
            assert got[table] == blue_at_freeze[table], table
    assert ("library", "0002_genre_book_genre") in {tuple(r) for r in c.pg("green").execute(
        dbname(c), "SELECT app, name FROM django_migrations")}
    assert media(c, "green") == blue_media

    # switch back: blue serves again at once, as it was (a switch moves no data)
    back = run(c, "switch", "--to", "blue")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr
    assert c.version() == "1.0" and c.router_state()["colour"] == "blue"
    # what green took while live is said (rows inserted, updated, deleted per table): it stays in green
    assert f"default.public.library_book +{len(green_took)}" in back.stdout and "stay in green" in back.stdout, \
        (len(green_took), back.stdout[-2000:])
    assert checksums(c, "blue", shape) == blue_at_freeze and c.pg("blue").schema(dbname(c)) == blue_schema
    assert set(green_took) <= titles(c, "green")  # green's writes stay in green
    assert not locks(c) and not frozen(c)


def test_the_colours_clusters_are_two_servers_ready_for_logical_replication_between_them(tmp_path):
    clusters = start_colour_clusters(tmp_path)
    try:
        blue, green = clusters["blue"], clusters["green"]
        assert blue.admin_password == green.admin_password and blue.port != green.port
        ids = {pg.execute("postgres", "SELECT system_identifier FROM pg_control_system()")[0][0]
               for pg in (blue, green)}
        assert len(ids) == 2
        for pg in (blue, green):
            assert pg.database_owner(DATABASE) == OWNER
            assert pg.execute("postgres", "SHOW wal_level") == [("logical",)]
            pg.execute(DATABASE, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        blue.execute(DATABASE, "INSERT INTO t VALUES (1, 'before')")
        blue.execute(DATABASE, "CREATE PUBLICATION p FOR TABLE t")
        green.execute(DATABASE, f"CREATE SUBSCRIPTION s CONNECTION 'host={blue.host} port={blue.port} "
                                f"dbname={DATABASE} user={blue.admin_user} password={blue.admin_password}' "
                                "PUBLICATION p")
        blue.execute(DATABASE, "INSERT INTO t VALUES (2, 'streamed')")
        deadline = time.monotonic() + 60
        while green.execute(DATABASE, "SELECT count(*) FROM t")[0][0] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert green.execute(DATABASE, "SELECT id, v FROM t ORDER BY id") == [(1, "before"), (2, "streamed")]
        green.execute(DATABASE, "DROP SUBSCRIPTION s")  # and its slot on blue
        assert blue.execute(DATABASE, "SELECT count(*) FROM pg_replication_slots")[0][0] == 0
    finally:
        stop_clusters(clusters)
