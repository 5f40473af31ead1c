"""proof.py scan on a real database: an original value planted anywhere a refresh could leave one is found
(exact, or with other case and spacing: normalised), and named by place only; a clean database finds none."""
from __future__ import annotations

import json

import pytest

from .mask_rig import Originals, env, helper, mask, tool

PROOF = bytes(range(7, 39))
ORIGINALS = ["Ann Original", "ann.original@corp.example", "+1 555 0100 77", "Secret Street 5", "Zed"]

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA other;
CREATE TABLE people (
    id int PRIMARY KEY,
    name text,
    email varchar(100),
    nick citext,
    code char(16),
    tags text[],
    profile jsonb,
    doc json,
    born date,
    score numeric,
    notes text DEFAULT 'nothing to see'
);
CREATE TABLE other.log (id int, line text, at timestamptz);
INSERT INTO people VALUES
    (1, 'Bob Masked', 'u1f3a9@example.org', 'Bob', 'AB12', '{one,two,"three four"}',
     '{"contact": {"email": "u77@example.net", "phones": ["+9 999 0000 11"]}, "n": 1}', '[1, "x", {"k": "v"}]',
     '2000-01-01', 4.5, 'plain text'),
    (2, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 'Zed', 'zed@example.com', 'zed', 'ZED', '{}', '{}', 'null', NULL, NULL, '{"looks": "like json"}');
INSERT INTO other.log VALUES (1, 'started', now()), (2, 'stopped', now());
CREATE MATERIALIZED VIEW people_names AS SELECT id, upper(name) AS shout FROM people;
CREATE MATERIALIZED VIEW people_ids AS SELECT id, born FROM people;
COMMENT ON TABLE people IS 'who is who';
"""


@pytest.fixture
def target(pg_cluster, pg_database_factory):
    db = pg_database_factory("proof").name
    pg_cluster.execute(db, SCHEMA)
    return db


def _originals():
    orig = Originals(PROOF)
    orig.add(*ORIGINALS)
    return orig


def scan(pg_cluster, db, dump=True, **extra):
    args = dict(_originals().scan_args(), psql=[tool(pg_cluster, "psql"), "--no-password", "-d", db],
                min_length=4, **extra)
    if dump:
        args["pg_dump"] = [tool(pg_cluster, "pg_dump"), "--no-password", "-d", db]
    doc = helper("proof", "scan", args, environ=env(pg_cluster))
    assert doc["ok"], doc
    text = json.dumps(doc)
    for value in ORIGINALS:  # where and how, never what
        assert value not in text and value.lower() not in text
    return doc


def test_a_clean_target_finds_nothing_and_says_what_it_read(pg_cluster, target):
    doc = scan(pg_cluster, target)
    assert doc["found"] == []
    assert doc["tables"]["people"]["rows"] == 3 and doc["tables"]["other.log"]["rows"] == 2
    assert doc["tables"]["people_names"]["rows"] == 3  # a materialized view: not in the dump's data, read apart
    assert doc["tables"]["people_ids"] == {"rows": 3, "values_checked": 0}  # nothing that can hold text: counted
    assert doc["tables"]["people"]["values_checked"] == 17  # not NULL, not a number or a date
    assert doc["checked"] >= doc["tables"]["people"]["values_checked"] + doc["literals"] and doc["literals"] > 3
    assert doc["seconds"] >= 0
    assert scan(pg_cluster, target, dump=False)["found"] == []  # 'Zed' is an original, but too short to prove


@pytest.mark.parametrize("sql, where, how", [
    ("UPDATE people SET name = 'Ann Original' WHERE id = 1", "people.name", "exact"),
    ("UPDATE people SET name = '  ann   ORIGINAL ' WHERE id = 2", "people.name", "normalised"),
    ("UPDATE people SET nick = 'ANN.ORIGINAL@CORP.EXAMPLE' WHERE id = 1", "people.nick", "normalised"),
    ("UPDATE people SET code = 'Secret Street 5' WHERE id = 1", "people.code", "normalised"),  # char(16) pads
    ("UPDATE people SET tags = ARRAY['x', 'Secret Street 5'] WHERE id = 1", "people.tags", "exact"),
    ("""UPDATE people SET profile = jsonb_set(profile, '{contact,phones,0}', '"+1 555 0100 77"') WHERE id = 1""",
     "people.profile", "exact"),
    ("""UPDATE people SET doc = '[1, {"deep": ["x", "ann original"]}]' WHERE id = 1""", "people.doc", "normalised"),
    ("""UPDATE people SET notes = '{"who": "Ann Original"}' WHERE id = 1""", "people.notes", "exact"),
    ("INSERT INTO other.log VALUES (3, 'ann.original@corp.example', now())", "other.log.line", "exact"),
])
def test_a_planted_original_is_found_where_it_is(pg_cluster, target, sql, where, how):
    pg_cluster.execute(target, sql)
    # through the dump's COPY data (checked here, or by forked workers), and by psql alone
    for dump, jobs in ((True, 1), (True, 3), (False, 2)):
        doc = scan(pg_cluster, target, dump=dump, jobs=jobs)
        assert doc["found"] == [{"where": where, "how": how, "count": 1}], (dump, jobs, doc["found"])
        assert doc["jobs"] == jobs


SCREEN_CASES = [
    ("UPDATE people SET name = 'Ann Original' WHERE id = 1", "people.name", "exact"),
    ("UPDATE people SET name = '  ann   ORIGINAL ' WHERE id = 2", "people.name", "normalised"),
    ("UPDATE people SET name = 'ANN ORIGINAL' WHERE id = 3", "people.name", "normalised"),
    ("UPDATE people SET nick = 'ANN.ORIGINAL@CORP.EXAMPLE' WHERE id = 1", "people.nick", "normalised"),
    ("UPDATE people SET email = 'ann.original@corp.example' WHERE id = 2", "people.email", "exact"),
    ("UPDATE people SET tags = ARRAY['x', 'Secret Street 5'] WHERE id = 1", "people.tags", "exact"),
    ("""UPDATE people SET notes = '{"who": "Ann Original"}' WHERE id = 1""", "people.notes", "exact"),
    ("INSERT INTO other.log VALUES (3, 'ann.original@corp.example', now())", "other.log.line", "exact"),
    ("INSERT INTO other.log SELECT g, 'line ' || g, now() FROM generate_series(10, 5000) g;"
     "INSERT INTO other.log VALUES (6000, 'Ann Original', now()), (6001, E'x\\tAnn Original', now())",
     "other.log.line", "exact"),
    ("INSERT INTO other.log SELECT g, 'línea ' || g, now() FROM generate_series(10, 5000) g;"
     "INSERT INTO other.log VALUES (6000, 'ann\toriginal', now())", "other.log.line", "normalised"),
]


@pytest.mark.parametrize("sql, where, how", SCREEN_CASES)
def test_the_screen_finds_what_the_digests_find(pg_cluster, target, sql, where, how):
    """With the originals' screen (the prefilter the digests action sends), whole columns of a block are
    screened at once: every planted original is still found, where and how, and the counts are the same."""
    pg_cluster.execute(target, sql)
    plain = scan(pg_cluster, target, jobs=1)
    assert plain["found"] == [{"where": where, "how": how, "count": 1}], plain["found"]
    for jobs in (1, 3):
        doc = scan(pg_cluster, target, jobs=jobs, screen=_originals().screen(*ORIGINALS))
        assert doc["found"] == plain["found"] and doc["tables"] == plain["tables"], (jobs, doc)


@pytest.mark.parametrize("sql, where, how", SCREEN_CASES)
def test_with_the_screen_alone_the_controller_decides_the_same_finds(pg_cluster, target, sql, where, how):
    """How a refresh proves: the target gets the screen and the proof key only, never the originals'
    digests; it answers the digests of the values the screen flags, and the controller decides (decide)."""
    from deploykit.work.refresh import decide

    pg_cluster.execute(target, sql)
    orig = _originals()
    for jobs in (1, 3):
        doc = scan(pg_cluster, target, jobs=jobs, screen=orig.screen(*ORIGINALS), exact=None, normalised=None)
        assert doc["found"] == [] and doc["flagged"] >= 1, doc  # the target decides nothing
        found = decide(doc["candidates"], [mask.pack_digests(orig.exact)], [mask.pack_digests(orig.normal)])
        assert found == [{"where": where, "how": how, "count": 1}], (jobs, found)


def test_a_planted_original_in_a_materialized_view_is_found(pg_cluster, target):
    pg_cluster.execute(target, "UPDATE people SET name = 'ann original' WHERE id = 1")
    pg_cluster.execute(target, "REFRESH MATERIALIZED VIEW people_names")
    found = scan(pg_cluster, target)["found"]
    assert {"where": "people_names.shout", "how": "normalised", "count": 1} in found
    assert {"where": "people.name", "how": "normalised", "count": 1} in found


@pytest.mark.parametrize("sql, how", [
    ("ALTER TABLE people ALTER COLUMN notes SET DEFAULT 'Ann Original'", "exact"),
    ("COMMENT ON COLUMN people.email IS 'e.g.   ANN.original@corp.example'", None),  # inside a longer text: no
    ("COMMENT ON COLUMN people.email IS 'ANN.original@corp.example'", "normalised"),
    ("CREATE VIEW v AS SELECT id FROM people WHERE name <> 'Secret Street 5'", "exact"),
    ("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'Secret Street 5'::text $body$", "exact"),
    ("CREATE FUNCTION g() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN E'Ann\\tOriginal'; END $$", "normalised"),
    ("""ALTER TABLE people ALTER COLUMN profile SET DEFAULT '{"a": ["+1 555 0100 77"]}'""", "exact"),
    ("ALTER TABLE people ALTER COLUMN tags SET DEFAULT '{\"Secret Street 5\", b}'", "exact"),
])
def test_an_original_only_in_the_dump_is_found_there(pg_cluster, target, sql, how):
    pg_cluster.execute(target, sql)
    found = scan(pg_cluster, target)["found"]
    if how is None:
        assert found == []
    else:
        assert [(f["where"], f["how"]) for f in found] == [("pg_dump", how)] and found[0]["count"] >= 1, found
    assert scan(pg_cluster, target, dump=False)["found"] == []  # the tables alone hold none


def test_bad_arguments_and_a_failing_tool_are_one_line_errors(pg_cluster, target):
    base = dict(_originals().scan_args(), psql=[tool(pg_cluster, "psql"), "--no-password", "-d", target])
    doc = helper("proof", "scan", dict(base, exact="***"), environ=env(pg_cluster))
    assert doc["ok"] is False and doc["kind"] == "BadArguments"
    doc = helper("proof", "scan", dict(base, psql="psql"), environ=env(pg_cluster))
    assert doc["ok"] is False and doc["kind"] == "BadArguments"
    doc = helper("proof", "scan", dict(base, psql=base["psql"][:-1] + ["no_such_db"]), environ=env(pg_cluster))
    assert doc["ok"] is False and doc["kind"] == "ScanFailed" and "no_such_db" in doc["error"]
    doc = helper("proof", "scan", dict(base, pg_dump=[tool(pg_cluster, "pg_dump"), "--no-such-flag"]),
                 environ=env(pg_cluster))
    assert doc["ok"] is False and doc["kind"] == "ScanFailed" and "pg_dump" in doc["error"]


def test_the_helpers_answer_through_a_host_as_the_controller_calls_them(pg_cluster, target, tmp_path):
    """Forked by the host's agent (the scan forks its own workers there), the password a secret."""
    from .test_transport import local_host

    pg_cluster.execute(target, "UPDATE people SET email = 'ann.original@corp.example' WHERE id = 1")
    libpq = pg_cluster.env()
    password = libpq.pop("PGPASSWORD")
    host = local_host(tmp_path)
    try:
        psql = [tool(pg_cluster, "psql"), "--no-password", "-d", target]
        doc = host.helper("proof", "scan", dict(_originals().scan_args(), psql=psql, jobs=2,
                                                pg_dump=[tool(pg_cluster, "pg_dump"), "--no-password", "-d", target]),
                          env=libpq, secrets={"PGPASSWORD": password})
        assert doc["found"] == [{"where": "people.email", "how": "exact", "count": 1}]
        digests = host.helper("mask", "digests", {
            "command": psql + ["-X", "-c", "COPY (SELECT email, name FROM people) TO STDOUT"],
            "columns": ["email", "name"], "proof_key": PROOF.hex(), "sample": "all"},
            env=libpq, secrets={"PGPASSWORD": password})
        assert digests["columns"]["email"] == {"rows": 3, "digested": 2, "skipped_short": 1, "sampled": False}
        assert len(digests["digests"]["name"]["exact"]) == 12  # one digest (Zed is short): 8 bytes, base64
    finally:
        host.close()


def test_the_controller_decides_exact_and_normalised_across_its_lists():
    """decide: a flagged value is found when its normalised digest is in any of the normalised lists, exact
    when its own digest is in any of the exact lists (one list per masked column, never merged); others
    (99 is an exact original, but 5 no normalised one) are not found."""
    import base64

    from deploykit.work.refresh import decide

    def pairs(*ds):
        return base64.b64encode(b"".join(n.to_bytes(8, "big") + e.to_bytes(8, "big") for n, e in ds)).decode()
    normal = [mask.pack_digests([10, 30]), mask.pack_digests([20])]
    exact_parts = [mask.pack_digests([11]), mask.pack_digests([31, 99])]
    found = decide({"t.a": pairs((10, 11), (20, 21), (40, 41)), "t.b": pairs((30, 31), (30, 31), (5, 99))},
                   exact_parts, normal)
    assert found == [{"where": "t.a", "how": "exact", "count": 1}, {"where": "t.a", "how": "normalised", "count": 1},
                     {"where": "t.b", "how": "exact", "count": 2}]
    assert decide({}, exact_parts, normal) == [] and decide({"t.a": pairs((7, 11))}, [], normal) == []


def test_a_scan_whose_screen_flags_too_many_values_fails_and_never_passes(monkeypatch):
    """Past MAX_CANDIDATES flagged values (a copy full of originals) the scan fails; below, every flagged value
    is kept packed, 16 bytes each, for the controller."""
    import base64 as b64

    from deploykit.transport.bundle import load_helper

    proof = load_helper("proof")
    monkeypatch.setattr(proof, "MAX_CANDIDATES", 3)
    screen = proof.unpack_screen(b64.b64decode(_originals().screen(*ORIGINALS)))
    checker = proof.Checker(PROOF, None, None, 4, screen)
    for value in ("Ann Original", "ANN  original", "Secret Street 5"):
        assert checker.text(value, "t.c") is True
    assert checker.text("not an original at all", "t.c") in (False, True)  # the screen may flag it too
    assert len(checker.candidates["t.c"]) == 16 * checker.flagged
    with pytest.raises(proof.ScanFailed, match="passed the screen"):
        for _ in range(4):
            checker.text("ann.original@corp.example", "t.d")
