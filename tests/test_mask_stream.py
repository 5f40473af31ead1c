"""`mask.py stream` between two real databases: psql COPY TO on the source, masked by the helper, COPY FROM
into a second database with the same schema (its constraints check uniqueness, foreign keys and lengths).
The test plays the controller: it digests the originals with the `digests` action, keeps them in memory,
feeds them to the stream, and scans the result with proof.py."""
from __future__ import annotations

import base64
import json
import random
import subprocess

import pytest
from faker import Faker

from deploykit.transport.bundle import helper_source

from .mask_rig import PY, Originals, copy_in, copy_out, env, helper, mask, run_stream, tool, without_faker

KEY = "5e" * 32
PROOF = bytes(range(100, 116))

SCHEMA = """
CREATE TABLE accounts (
    id int PRIMARY KEY,
    email varchar(254) NOT NULL UNIQUE,
    username varchar(12) NOT NULL UNIQUE,
    first_name varchar(30) NOT NULL,
    name text,
    phone varchar(25),
    bio text,
    ip inet,
    code varchar(4) UNIQUE,
    payload jsonb,
    note text,
    password varchar(128) NOT NULL,
    created timestamptz NOT NULL
);
CREATE TABLE orders (
    id int PRIMARY KEY,
    account_email varchar(254) NOT NULL REFERENCES accounts (email),
    total numeric(10, 2) NOT NULL
);
"""
COLUMNS = ["id", "email", "username", "first_name", "name", "phone", "bio", "ip", "code", "payload", "note",
           "password", "created"]
RULES = without_faker({
    "email": {"kind": "email"},
    "username": {"kind": "hash", "length": 12},
    "first_name": {"kind": "faker", "provider": "first_name", "locale": "en_US"},
    "name": {"kind": "faker", "provider": "name", "locale": "en_US"},
    "phone": {"kind": "phone"},
    "bio": {"kind": "format"},
    "ip": {"kind": "ip"},
    "code": {"kind": "format"},
    "payload": {"kind": "json", "paths": {"contact.email": {"kind": "email"}, "contact.phones.*": {"kind": "phone"},
                                          "contact.name": {"kind": "faker", "provider": "name", "locale": "en_US"}}},
    "note": {"kind": "null"},
    "password": {"kind": "fixed", "value": "!"},
})
SPEC = {"table": "accounts", "columns": COLUMNS, "masks": RULES, "unique": ["email", "username", "code"],
        "max_length": {"email": 254, "username": 12, "first_name": 30, "phone": 25, "code": 4, "password": 128}}
ORDER_SPEC = {"table": "orders", "columns": ["id", "account_email", "total"],
              "masks": {"account_email": {"kind": "email"}}, "unique": [], "max_length": {"account_email": 254}}
ROWS = 3000


def _fill(pg_cluster, db):
    fake = Faker("en_US")
    fake.seed_instance(11)
    rng = random.Random(11)
    rows = []
    for i in range(ROWS):
        bio = fake.text(max_nb_chars=300)
        if i % 7 == 0:
            bio = bio.replace(" ", "\t", 1).replace(" ", "\n", 1) + " \\ backslash, ünïcödé 中文"
        payload = {"contact": {"email": fake.email(), "phones": [fake.phone_number(), fake.phone_number()],
                               "name": fake.name()}, "plan": rng.choice(["free", "pro"]), "n": i}
        rows.append((
            i, f"{i}.{fake.email()}", fake.user_name()[:6] + str(i), fake.first_name(),
            None if i % 11 == 0 else ("" if i % 13 == 0 else fake.name()),
            None if i % 5 == 0 else fake.phone_number()[:25],
            None if i % 9 == 0 else bio,
            None if i % 4 == 0 else (fake.ipv4() if i % 3 else fake.ipv6()),
            "%s%d%s%d" % (chr(65 + i % 26), i // 26 % 10, chr(97 + i // 260 % 26), i // 6760 % 10),
            None if i % 10 == 0 else json.dumps(payload),
            fake.sentence(), "pbkdf2_sha256$%d$%s" % (i, fake.sha256()), "2024-05-01 10:00:00+00",
        ))
    with pg_cluster.connect(db) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO accounts VALUES (%s)" % ", ".join(["%s"] * len(COLUMNS)), rows)
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s)",
                            [(j, rows[rng.randrange(ROWS)][1], rng.randrange(100, 99999) / 100) for j in range(2000)])
    return rows


@pytest.fixture(scope="module")
def source(pg_cluster):
    db = "masksrc_%d" % random.randrange(10 ** 8)
    pg_cluster.create_database(db)
    pg_cluster.execute(db, SCHEMA)
    rows = _fill(pg_cluster, db)
    yield db, rows
    pg_cluster.drop_database(db)


def _target(pg_cluster, pg_database_factory):
    db = pg_database_factory("masktgt").name
    pg_cluster.execute(db, SCHEMA)
    return db


def _select(cols, table):
    return "(SELECT %s FROM %s)" % (", ".join(cols), table)


def _originals(pg_cluster, src):
    """The controller's first step: digests of every original masked value, from the `digests` action."""
    orig = Originals(PROOF)
    for table, spec in (("accounts", SPEC), ("orders", ORDER_SPEC)):
        cols = [c for c in spec["columns"] if c in spec["masks"]]
        doc = helper("mask", "digests", {"command": copy_out(pg_cluster, src, _select(cols, table)), "columns": cols,
                                         "proof_key": PROOF.hex(), "sample": "all", "masks": spec["masks"],
                                         "table": table}, environ=env(pg_cluster))
        assert set(doc["columns"]) == set(cols)
        for col in cols:
            orig.add_b64(doc["digests"][col]["exact"], doc["digests"][col]["normalised"])
    return orig, doc


def _stream(pg_cluster, src, spec, table, avoid, key=KEY, avoid_format=None, jobs=None, **kw):
    header = {"command": copy_out(pg_cluster, src, _select(spec["columns"], table)), "spec": spec, "mask_key": key,
              "proof_key": PROOF.hex()}
    if avoid_format:
        header["avoid_format"] = avoid_format
    if jobs:
        header["jobs"] = jobs
    return run_stream(header, avoid, environ=env(pg_cluster), **kw)


def test_a_masked_copy_keeps_every_constraint_and_no_original(pg_cluster, pg_database_factory, source):
    src, rows = source
    orig, _doc = _originals(pg_cluster, src)
    avoid = orig.avoid()
    tgt = _target(pg_cluster, pg_database_factory)

    done = _stream(pg_cluster, src, SPEC, "accounts", avoid)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert report["rows"] == ROWS and report["columns"]["email"]["masked"] == ROWS
    assert report["columns"]["code"]["redrawn"] >= 0 and report["bytes"] > 0
    copy_in(pg_cluster, tgt, "accounts (%s)" % ", ".join(COLUMNS), done.stdout)  # unique, lengths: enforced here
    orders = _stream(pg_cluster, src, ORDER_SPEC, "orders", avoid)
    assert orders.returncode == 0, orders.stderr
    copy_in(pg_cluster, tgt, "orders (id, account_email, total)", orders.stdout)  # the foreign key holds

    got = {r[0]: r for r in pg_cluster.execute(tgt, "SELECT %s FROM accounts" % ", ".join(
        c if c not in ("ip", "payload") else f"{c}::text" for c in COLUMNS))}
    assert len(got) == ROWS
    for row in rows:
        new = got[row[0]]
        for i, col in enumerate(COLUMNS):
            old, now = row[i], new[i]
            if col in ("id", "created"):
                continue
            if col == "note":
                assert now is None
            elif col == "password":
                assert now == "!"
            elif old is None or old == "":
                assert now == old, (col, row[0])
            elif col != "payload":
                assert now != old and mask.normalise(str(now)) != mask.normalise(old), (col, row[0])
        assert new[COLUMNS.index("created")] is not None
        if row[COLUMNS.index("payload")] is not None:
            before = json.loads(row[COLUMNS.index("payload")])
            after = json.loads(new[COLUMNS.index("payload")])
            assert after["plan"] == before["plan"] and after["n"] == before["n"]  # not at a masked path
            assert after["contact"]["email"] != before["contact"]["email"]
            assert after["contact"]["phones"][0] != before["contact"]["phones"][0]
    # equal values in two tables got equal masks: every order still points at its account's (masked) email
    joined = pg_cluster.execute(src, "SELECT o.id, a.id FROM orders o JOIN accounts a ON a.email = o.account_email")
    now = dict(pg_cluster.execute(tgt, "SELECT o.id, a.id FROM orders o JOIN accounts a ON a.email = o.account_email"))
    assert now == dict(joined)
    assert pg_cluster.execute(tgt, "SELECT count(*) FROM orders") == [(2000,)]

    # the proof: no original anywhere in the target (its tables and a pg_dump of it), all of them in the source
    for db, clean in ((tgt, True), (src, False)):
        args = dict(orig.scan_args(), psql=[tool(pg_cluster, "psql"), "--no-password", "-d", db],
                    pg_dump=[tool(pg_cluster, "pg_dump"), "--no-password", "-d", db], min_length=4)
        scan = helper("proof", "scan", args, environ=env(pg_cluster))
        assert scan["tables"]["accounts"]["rows"] == ROWS
        if clean:
            assert scan["found"] == [], scan["found"]
        else:
            where = {f["where"] for f in scan["found"]}
            assert {"accounts.email", "accounts.first_name", "accounts.bio", "accounts.payload",
                    "orders.account_email"} <= where


def test_the_originals_screen_as_the_avoid_list(pg_cluster, pg_database_factory, source):
    """avoid_format ds32 (what a refresh sends: the screen values of every original, from the digests action,
    in any order): the copy keeps every constraint, holds no original, and is the same bytes every time and
    with forked workers."""
    src, _rows = source
    orig, _doc = _originals(pg_cluster, src)
    screen = b""
    for table, spec in (("accounts", SPEC), ("orders", ORDER_SPEC)):
        cols = [c for c in spec["columns"] if c in spec["masks"]]
        doc = helper("mask", "digests", {"command": copy_out(pg_cluster, src, _select(cols, table)), "columns": cols,
                                         "proof_key": PROOF.hex(), "sample": "all", "masks": spec["masks"]},
                     environ=env(pg_cluster))
        screen += b"".join(base64.b64decode(doc["digests"][c]["screen"]) for c in cols)
    runs = [_stream(pg_cluster, src, SPEC, "accounts", screen, avoid_format="ds32", jobs=jobs) for jobs in (1, 1, 3)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    tgt = _target(pg_cluster, pg_database_factory)
    copy_in(pg_cluster, tgt, "accounts (%s)" % ", ".join(COLUMNS), runs[0].stdout)
    orders = _stream(pg_cluster, src, ORDER_SPEC, "orders", screen, avoid_format="ds32")
    assert orders.returncode == 0, orders.stderr
    copy_in(pg_cluster, tgt, "orders (id, account_email, total)", orders.stdout)
    args = dict(orig.scan_args(), psql=[tool(pg_cluster, "psql"), "--no-password", "-d", tgt],
                pg_dump=[tool(pg_cluster, "pg_dump"), "--no-password", "-d", tgt], min_length=4,
                screen=base64.b64encode(screen).decode())
    scan = helper("proof", "scan", args, environ=env(pg_cluster))
    assert scan["found"] == [] and scan["tables"]["accounts"]["rows"] == ROWS


def test_same_key_same_bytes_other_key_other_bytes(pg_cluster, source):
    src, _rows = source
    orig, _doc = _originals(pg_cluster, src)
    one = _stream(pg_cluster, src, SPEC, "accounts", orig.avoid())
    two = _stream(pg_cluster, src, SPEC, "accounts", orig.avoid())
    other = _stream(pg_cluster, src, SPEC, "accounts", orig.avoid(), key="77" * 32)
    assert one.returncode == two.returncode == other.returncode == 0
    assert one.stdout == two.stdout
    a, b = one.stdout.split(b"\n"), other.stdout.split(b"\n")
    assert len(a) == len(b)
    differ = sum(x.split(b"\t")[1] != y.split(b"\t")[1] for x, y in zip(a[:-1], b[:-1]))
    assert differ == ROWS

    # the program as a host gets it (shared modules inlined, no site-packages: -I -S) masks the same way
    spec = dict(SPEC, masks={k: v for k, v in RULES.items() if k not in ("first_name", "name", "payload")})
    by_file = _stream(pg_cluster, src, spec, "accounts", orig.avoid())
    bundled = _stream(pg_cluster, src, spec, "accounts", orig.avoid(),
                      argv=[PY, "-I", "-S", "-c", helper_source("mask"), "stream"])
    assert bundled.returncode == 0, bundled.stderr
    assert bundled.stdout == by_file.stdout


def test_a_failing_command_or_an_unmaskable_value_fails_in_one_line(pg_cluster, pg_database_factory, source):
    src, _rows = source
    gone = _stream(pg_cluster, src, dict(SPEC, table="nope"), "no_such_table", b"")
    lines = gone.stderr.decode().strip().splitlines()
    assert gone.returncode == 1 and len(lines) == 1 and lines[0].startswith("mask: ")
    assert "failed" in lines[0] and "no_such_table" in lines[0] and gone.stdout == b""

    db = pg_database_factory("maskbad").name
    pg_cluster.execute(db, "CREATE TABLE legacy (id int, payload text)")
    pg_cluster.execute(db, """INSERT INTO legacy VALUES (1, '{"user": {"email": "a@b.example"}}'),
                              (2, 'ann.secret@corp.example is no JSON')""")
    spec = {"table": "legacy", "columns": ["id", "payload"],
            "masks": {"payload": {"kind": "json", "paths": {"user.email": {"kind": "email"}}}}}
    bad = run_stream({"command": copy_out(pg_cluster, db, "legacy"), "spec": spec, "mask_key": KEY,
                      "proof_key": PROOF.hex()}, environ=env(pg_cluster))
    err = bad.stderr.decode()
    assert bad.returncode == 1 and len(err.strip().splitlines()) == 1
    assert "legacy.payload" in err and "not valid JSON" in err and "ann.secret" not in err
    assert b"ann.secret" not in bad.stdout and b"a@b.example" not in bad.stdout  # never passed through

    # Faker missing from the app's Python: refused before the command starts, naming the rule and the fix
    spec = dict(SPEC, masks=dict(RULES, first_name={"kind": "faker", "provider": "first_name", "locale": "en_US"}))
    nofaker = _stream(pg_cluster, src, spec, "accounts", b"",
                      argv=[PY, "-I", "-S", "-c", helper_source("mask"), "stream"])
    err = nofaker.stderr.decode()
    assert nofaker.returncode == 1 and len(err.strip().splitlines()) == 1 and nofaker.stdout == b""
    assert "accounts.first_name" in err and "Faker" in err and "add Faker to the app's requirements" in err

    spec = {"table": "legacy", "columns": ["payload"],
            "masks": {"payload": {"kind": "json", "paths": {"user.email": {"kind": "email"}}}}}
    torn = run_stream({"command": copy_out(pg_cluster, db, "legacy"), "spec": spec,
                       "mask_key": KEY}, environ=env(pg_cluster))
    assert torn.returncode == 1 and "a row has 2 fields" in torn.stderr.decode()
    short = subprocess.run([PY, str(mask.__file__), "stream"], input=b'{"avoid_count": 3, "spec": {}}\n' + b"x" * 5,
                           capture_output=True)
    assert short.returncode == 1 and "digest bytes" in short.stderr.decode()


def test_digests_of_a_sample_say_so(pg_cluster, source):
    src, rows = source
    cols = ["email", "first_name", "payload"]
    doc = helper("mask", "digests", {"command": copy_out(pg_cluster, src, _select(cols, "accounts")), "columns": cols,
                                     "proof_key": PROOF.hex(), "sample": 500, "masks": RULES, "table": "accounts"},
                 environ=env(pg_cluster))
    email = doc["columns"]["email"]
    assert email == {"rows": ROWS, "digested": ROWS, "skipped_short": 0, "sampled": True}
    assert len(mask.digests_b64(doc["digests"]["email"]["exact"])) == 500
    first = doc["columns"]["first_name"]
    assert first["skipped_short"] == sum(1 for r in rows if len(r[3]) < 4) and first["sampled"] is True
    payload = doc["columns"]["payload"]  # three string leaves at masked paths, four with the name
    assert payload["rows"] == ROWS and payload["digested"] > 500 and payload["sampled"] is True
    full = helper("mask", "digests", {"command": copy_out(pg_cluster, src, _select(cols, "accounts")), "columns": cols,
                                      "proof_key": PROOF.hex(), "sample": 10 ** 6, "masks": RULES},
                  environ=env(pg_cluster))
    assert full["columns"]["email"]["sampled"] is False
    assert len(mask.digests_b64(full["digests"]["email"]["normalised"])) == ROWS
    expected = {mask.digest(PROOF, r[1]) for r in rows}
    assert set(mask.digests_b64(full["digests"]["email"]["exact"])) == expected
    contacts = [json.loads(r[9])["contact"] for r in rows if r[9]]
    leaves = {mask.digest(PROOF, mask.normalise(v)) for c in contacts for v in [c["email"], c["name"], *c["phones"]]
              if len(mask.normalise(v)) >= 4}
    assert set(mask.digests_b64(full["digests"]["payload"]["normalised"])) == leaves  # not "plan": not masked
    cols = cols + ["bio", "name", "phone"]  # over 1 MB of rows: more than one block
    args = {"command": copy_out(pg_cluster, src, _select(cols, "accounts")), "columns": cols,
            "proof_key": PROOF.hex(), "sample": "all", "masks": RULES}
    assert len(subprocess.run(args["command"], env=env(pg_cluster), capture_output=True).stdout) > 1 << 20
    alone = helper("mask", "digests", args, environ=env(pg_cluster))
    forked = helper("mask", "digests", dict(args, jobs=3), environ=env(pg_cluster))  # blocks in workers
    assert forked == alone


def test_a_reader_that_goes_away_stops_the_stream_and_its_command(pg_cluster, source):
    src, _rows = source
    header = {"command": copy_out(pg_cluster, src, _select(SPEC["columns"], "accounts")), "spec": SPEC,
              "mask_key": KEY, "proof_key": PROOF.hex(), "avoid_count": 0}
    proc = subprocess.Popen([PY, str(mask.__file__), "stream"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env(pg_cluster))
    proc.stdin.write((json.dumps(header) + "\n").encode())
    proc.stdin.close()
    assert proc.stdout.read(100)
    proc.stdout.close()
    assert proc.wait(60) == 1
    err = proc.stderr.read().decode().strip().splitlines()
    assert err == ["mask: the reader of the masked rows went away (broken pipe)"]


def test_workers_mask_exactly_as_one_process_does(pg_cluster, pg_database_factory):
    """jobs > 1: blocks masked in forked workers, the unique columns settled in the main process in row
    order. 30000 codes in a space of 67600 shapes collide often, within blocks and across them."""
    db = pg_database_factory("maskjobs").name
    schema = "CREATE TABLE codes (id int PRIMARY KEY, code varchar(4) NOT NULL UNIQUE, who text, filler text)"
    pg_cluster.execute(db, schema)
    pg_cluster.execute(db, """INSERT INTO codes SELECT g, chr(65 + g % 26) || chr(97 + g / 26 % 26)
                              || lpad((g / 676)::text, 2, '0'), 'Person ' || (g % 500), repeat('x', 100)
                              FROM generate_series(0, 29999) g""")
    spec = {"table": "codes", "columns": ["id", "code", "who", "filler"],
            "masks": {"code": {"kind": "format"}, "who": {"kind": "format"}}, "unique": ["code"],
            "max_length": {"code": 4}}
    header = {"command": copy_out(pg_cluster, db, "codes"), "spec": spec, "mask_key": KEY, "proof_key": PROOF.hex()}
    one = run_stream(header, environ=env(pg_cluster))
    assert one.returncode == 0, one.stderr
    report = json.loads(one.stderr.decode().splitlines()[-1])
    assert report["columns"]["code"]["redrawn"] > 1000
    for jobs in (2, 3):
        many = run_stream(dict(header, jobs=jobs), environ=env(pg_cluster))
        assert many.returncode == 0, many.stderr
        assert many.stdout == one.stdout
        assert json.loads(many.stderr.decode().splitlines()[-1])["columns"] == report["columns"]
    tgt = pg_database_factory("maskjobs2").name
    pg_cluster.execute(tgt, schema)
    copy_in(pg_cluster, tgt, "codes", one.stdout)  # the unique constraint holds
    assert pg_cluster.execute(tgt, "SELECT count(*) FROM codes c JOIN generate_series(0, 29999) g ON "
                                   "c.code = chr(65 + g % 26) || chr(97 + g / 26 % 26) || lpad((g / 676)::text, 2, "
                                   "'0') AND c.id = g") == [(0,)]

    # a worker's error is the stream's: one line, the command stopped
    pg_cluster.execute(db, "UPDATE codes SET who = 'not json' WHERE id = 29000")
    bad = run_stream(dict(header, jobs=2, spec=dict(spec, masks={"who": {"kind": "json", "paths": {
        "a": {"kind": "email"}}}})), environ=env(pg_cluster))
    err = bad.stderr.decode().strip().splitlines()
    assert bad.returncode == 1 and len(err) == 1 and "codes.who" in err[0] and "not valid JSON" in err[0]
