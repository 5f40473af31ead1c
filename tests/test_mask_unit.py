"""The masking transforms and the COPY text codec of remote/mask.py (as shipped: _copytext inlined).

Pure logic, except the codec's round trips, which are checked against what the rig's real PostgreSQL
writes with COPY TO and reads with COPY FROM.
"""
from __future__ import annotations

import array
import json
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploykit.transport.bundle import load_helper

from .mask_rig import copy_bytes, copy_in, mask

KEY = "a1" * 32
OTHER_KEY = "b2" * 32
PROOF = bytes(range(16))
KINDS = [{"kind": "hash", "length": None}, {"kind": "hash", "length": 12}, {"kind": "email"}, {"kind": "phone"},
         {"kind": "format"}, {"kind": "ip"}, {"kind": "faker", "provider": "first_name", "locale": "en_US"},
         {"kind": "faker", "provider": "name", "locale": "en_US"}]
VALUES = ["ann.lee@corp.example", "+1 (555) 123-4567", "Ann Lee", "  Ann   LEE ", "192.168.1.20", "10.1.0.0/16",
          "2001:db8::1", "Müller-Lüdenscheidt", "x", "7", "ab", "A1", "---", "   ", "tab\there", "line\nbreak",
          "O'Brien \\ back", "中文 名字", "a" * 300 + " 42"]


def ctx(key=KEY, avoid=None):
    return mask.Context(key, PROOF.hex(), avoid)


def masker(rule, key=KEY, avoid=None, **kw):
    return mask.value_masker(rule, ctx(key, avoid), "users.col", **kw)


def avoid_of(*values):
    """The membership test of a run whose originals are `values` (normalised digests)."""
    return mask.membership(array.array("Q", sorted({mask.digest(PROOF, mask.normalise(v)) for v in values})))


# -- the COPY text codec, against PostgreSQL itself ------------------------------------------------------

CODEC_VALUES = ["plain", "tab\there", "new\nline", "cr\rlf\r\n", "back\\slash", "\\N", "", None,
                "unicode: é ü 中文 🎉", "\b\f\v controls \x01\x7f", "trailing backslash\\", "\\\\double",
                "ends with tab\t", "\\.", "a\\tb (not a tab)", " spaced  out "]


def test_copy_text_round_trips_what_psql_writes_and_reads(pg_cluster, pg_database_factory):
    db = pg_database_factory("codec").name
    pg_cluster.execute(db, "CREATE TABLE t (id int PRIMARY KEY, v text, w varchar(40))")
    with pg_cluster.connect(db) as conn:
        for i, v in enumerate(CODEC_VALUES):
            conn.execute("INSERT INTO t VALUES (%s, %s, %s)", (i, v, None if v is None else v[:40]))
    data = copy_bytes(pg_cluster, db, "(SELECT id, v, w FROM t ORDER BY id)")
    lines = data.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == len(CODEC_VALUES)
    for i, line in enumerate(lines):
        fields = mask.split_line(line)
        assert fields == [str(i), CODEC_VALUES[i], None if CODEC_VALUES[i] is None else CODEC_VALUES[i][:40]]
        assert mask.join_line(fields) == line  # encoded back exactly as COPY TO wrote it
    assert list(mask.iter_lines(__import__("io").BytesIO(data).read, chunk=7)) == lines

    # what we encode, COPY FROM reads back as the same values
    pg_cluster.execute(db, "CREATE TABLE back (id int PRIMARY KEY, v text, w varchar(40))")
    ours = b"".join(mask.join_line([str(i), v, v]) + b"\n" for i, v in enumerate(CODEC_VALUES) if v is None or
                    len(v) <= 40)
    copy_in(pg_cluster, db, "back", ours)
    got = dict(pg_cluster.execute(db, "SELECT id, v FROM back"))
    assert got == {i: v for i, v in enumerate(CODEC_VALUES) if v is None or len(v) <= 40}


def test_copy_text_reads_every_escape_copy_from_accepts(pg_cluster, pg_database_factory):
    """Octal and hex escapes (bytes of the client encoding), the named ones, and \\c for any other c."""
    db = pg_database_factory("esc").name
    pg_cluster.execute(db, "CREATE TABLE t (id int, v text)")
    fields = [rb"\101\102\103", rb"\x41\x4a\x7", rb"\7\07\007", rb"\xc3\xa9t\xC3\xA9", rb"\b\f\n\r\t\v",
              rb"\q\z\%\\", rb"\303\251", rb"abc\\def", rb"\x4", rb"\1012"]
    copy_in(pg_cluster, db, "t", b"".join(b"%d\t%s\n" % (i, f) for i, f in enumerate(fields)))
    stored = dict(pg_cluster.execute(db, "SELECT id, v FROM t"))
    for i, field in enumerate(fields):
        assert mask.decode_field(field) == stored[i], field
    # and what COPY TO writes for those values is what we write for them
    data = copy_bytes(pg_cluster, db, "(SELECT v FROM t ORDER BY id)").split(b"\n")[:-1]
    assert data == [mask.encode_field(stored[i]) for i in range(len(fields))]


def test_bytes_of_another_encoding_survive_a_round_trip():
    field = b"caf\xe9 \\t \xff"  # Latin-1, as an SQL_ASCII database would send it
    text = mask.decode_field(field)
    assert mask.encode_field(text) == field


# -- digests and their wire form -------------------------------------------------------------------------

def test_digest_and_normalise_are_the_shared_definitions():
    import hashlib

    assert mask.digest(PROOF, "Ann Lee") == int.from_bytes(
        hashlib.blake2b("Ann Lee".encode(), key=PROOF, digest_size=8).digest(), "big")
    assert mask.digester(PROOF)("Ann Lee") == mask.digest(PROOF, "Ann Lee")
    assert mask.normalise("  Ann \t\n LEE\u3000x ") == "ann lee x"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000\u200bİß1é")))
def test_the_fast_normalise_is_exactly_the_definition(text):
    assert mask.normalise(text) == " ".join(text.lower().split())


FIELD_TEXT = st.text(alphabet=st.sampled_from("aZ \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000\u200bİßΣσ1é{\\\udcff"),
                     max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD_TEXT, max_size=6))
def test_a_block_is_normalised_at_once_exactly_as_one_value_at_a_time(values):
    """lowered_blob (a column of a block in a few C calls) gives normalise() of every field, or None when one
    needs its own look; plain_fields sorts such a block's fields into the ones lower() normalises and the rest."""
    fields = [mask.encode_field(v) for v in values]
    want = [mask.normalise(mask.decode_field(f)).encode("utf-8", "surrogateescape") for f in fields]
    got = mask.lowered(fields)
    assert got is None or got == want
    plain, odd = mask.plain_fields(fields)
    assert sorted(plain + odd) == sorted(fields)
    assert [f.lower() for f in plain] == [mask.normalise(mask.decode_field(f)).encode() for f in plain]
    if not odd and all(f.isascii() for f in fields):
        assert got == want


def test_the_screen_flags_every_original_and_few_others():
    import zlib

    rng = random.Random(3)
    originals = [b"user%d@example.org" % i for i in range(20000)]
    screen = mask.Screen([mask.screen(o) for o in originals])
    assert screen.flags(originals) == b"\x01" * len(originals)
    others = [b"other%d@example.net" % rng.getrandbits(40) for _ in range(50000)]
    assert sum(screen.flags(others)) < len(others) / 32  # 64 slots an original: about 1 in 64 flagged
    assert mask.screen(originals[0]) == zlib.crc32(originals[0])
    maybe = mask.Screen([mask.screen(o) for o in originals], slots=16).text()
    assert all(maybe(o.decode()) for o in originals)
    assert sum(map(maybe, (o.decode() for o in others))) < len(others) / 8
    data = mask.pack_screen([0, 2 ** 32 - 1, 7])
    assert data[:4] == b"\0\0\0\0" and list(mask.unpack_screen(data)) == [0, 2 ** 32 - 1, 7]


def test_digest_lists_travel_sorted_unique_big_endian():
    rng = random.Random(5)
    values = [rng.getrandbits(64) for _ in range(50000)] + [0, 2 ** 64 - 1, 7, 7]
    packed = mask.pack_digests(values)
    assert len(packed) == 8 * len(set(values))
    assert packed[:8] == (0).to_bytes(8, "big") and packed[8:16] == (7).to_bytes(8, "big")
    assert list(mask.unpack_digests(packed)) == sorted(set(values))
    assert list(mask.digests_b64(mask.b64_digests(values))) == sorted(set(values))
    assert list(mask.digests_b64(mask.merge_b64(mask.b64_digests(values[:10]), mask.b64_digests(values[5:])))) \
        == sorted(set(values))
    assert list(mask.digests_b64("")) == []
    member = mask.membership(mask.unpack_digests(packed))
    kept = set(values)
    probes = values[:2000] + [rng.getrandbits(64) for _ in range(20000)]
    assert all(member(p) == (p in kept) for p in probes)
    lazy = mask.membership(mask.unpack_digests(packed), lazy=True)  # bisect first, the bitmap once it pays
    assert all(lazy(p) == (p in kept) for p in probes + probes)
    assert not mask.membership(array.array("Q"))(5)
    with pytest.raises(ValueError):
        mask.unpack_digests(b"123")


# -- the rules -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", KINDS, ids=lambda r: r["kind"] + str(r.get("length") or r.get("provider") or ""))
def test_same_key_same_output_other_key_other_output(rule):
    one, again, other = masker(rule), masker(rule), masker(rule, key=OTHER_KEY)
    outs = [one(v) for v in VALUES]
    assert outs == [again(v) for v in VALUES]
    others = [other(v) for v in VALUES]
    assert sum(a != b for a, b in zip(outs, others)) >= len(VALUES) * 0.6, (outs, others)


@pytest.mark.parametrize("rule", KINDS, ids=lambda r: r["kind"] + str(r.get("length") or r.get("provider") or ""))
def test_a_mask_never_equals_its_input_exactly_or_normalised(rule):
    fn = masker(rule)
    for v in VALUES + ["0", "1", "9", "a", "Z", "00", "aB", " 5 ", "10.0.0.1", "::1", "John", "JOHN"]:
        out = fn(v)
        assert out != v and mask.normalise(out) != mask.normalise(v), (rule, v, out)


@pytest.mark.parametrize("rule", KINDS, ids=lambda r: r["kind"] + str(r.get("length") or r.get("provider") or ""))
def test_a_mask_among_the_originals_is_drawn_again(rule):
    """An output whose normalised digest is an original's is drawn again (round 1, 2, ...): deterministic."""
    first = {v: masker(rule)(v) for v in VALUES}
    taken = [o for o in first.values() if len(mask.normalise(o)) >= 4]
    avoid = avoid_of(*VALUES, *taken)
    counts = mask.Counts()
    fn = mask.value_masker(rule, ctx(avoid=avoid), "users.col", counts=counts)
    again = mask.value_masker(rule, ctx(avoid=avoid), "users.col")
    for v in VALUES:
        out = fn(v)
        assert out == again(v)
        assert len(mask.normalise(out)) < 4 or not avoid(mask.digest(PROOF, mask.normalise(out))), (v, out)
        assert out != v
    assert counts.redrawn == sum(1 for v in VALUES if len(mask.normalise(first[v])) >= 4)


@pytest.mark.parametrize("rule", KINDS, ids=lambda r: r["kind"] + str(r.get("length") or r.get("provider") or ""))
def test_with_the_screen_a_mask_among_the_originals_is_drawn_again_too(rule):
    """The originals as a screen (what a refresh sends the masks: CRC-32 of each normalised original, which
    may flag others as well): no output is an original, and the outputs are the same every time."""
    first = {v: masker(rule)(v) for v in VALUES}
    taken = [o for o in first.values() if len(mask.normalise(o)) >= 4]
    originals = {mask.normalise(v) for v in VALUES + taken if len(mask.normalise(v)) >= 4}
    screen = [mask.screen(o.encode("utf-8", "surrogateescape")) for o in originals]

    def with_screen(**kw):
        return mask.value_masker(rule, mask.Context(KEY, PROOF.hex(), screen=mask.Screen(screen, 16).text()),
                                 "users.col", **kw)
    counts = mask.Counts()
    fn, again = with_screen(counts=counts), with_screen()
    for v in VALUES:
        out = fn(v)
        assert out == again(v) and out != v
        assert len(mask.normalise(out)) < 4 or mask.normalise(out) not in originals, (v, out)
    assert counts.redrawn >= sum(1 for v in VALUES if len(mask.normalise(first[v])) >= 4)
    assert mask.Context(KEY, PROOF.hex(), screen=lambda norm: False).needs_digest is False


def test_kinds_keep_their_shape():
    email = masker({"kind": "email"})("Ann.Lee+tag@Corp.Example")
    local, _, domain = email.partition("@")
    assert domain in ("example.com", "example.org", "example.net") and local and local == local.lower()
    assert masker({"kind": "email"})("not an email at all").count("@") == 1

    phone = masker({"kind": "phone"})("+1 (555) 123-4567 ext. 89")
    assert len(phone) == 25 and [c for c in phone if not c.isdigit()] == list("+ () - ext. ")
    assert [i for i, c in enumerate(phone) if c.isdigit()] == [i for i, c in enumerate("+1 (555) 123-4567 ext. 89")
                                                               if c.isdigit()]

    fmt = masker({"kind": "format"})("Ab-12 cd/Éz 9")
    assert len(fmt) == 13
    for a, b in zip("Ab-12 cd/Éz 9", fmt):
        if a.isalpha():
            assert b.isalpha() and b.isascii() and a.isupper() == b.isupper()
        elif a.isdigit():
            assert b.isdigit()
        else:
            assert a == b

    import ipaddress

    v4 = masker({"kind": "ip"})("192.168.1.20")
    assert ipaddress.ip_address(v4) in ipaddress.ip_network("10.0.0.0/8")
    v6 = masker({"kind": "ip"})("2001:db8::1")
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00::/8")
    net = masker({"kind": "ip"})("192.168.0.0/16")
    assert net.endswith("/16") and ipaddress.ip_network(net).prefixlen == 16  # host bits zero: a valid cidr

    hashed = masker({"kind": "hash", "length": None})
    assert len(hashed("short")) == 8 and len(hashed("x" * 20)) == 20 and len(hashed("y" * 100)) == 64
    assert set(hashed("ann")) <= set("0123456789abcdef")
    assert len(masker({"kind": "hash", "length": 12})("ann")) == 12

    first = masker({"kind": "faker", "provider": "first_name", "locale": "en_US"})("Ann")
    assert first.isalpha() and first[0].isupper()
    assert masker({"kind": "faker", "provider": "city", "locale": "de_DE"})("Köln")


def test_null_stays_null_and_empty_stays_empty_but_for_null_and_fixed():
    for rule in KINDS + [{"kind": "json", "paths": {"a": {"kind": "email"}}}]:
        fn = masker(rule)
        assert fn(None) is None and fn("") == "", rule
    assert masker({"kind": "null"})("x") is None and masker({"kind": "null"})("") is None
    fixed = masker({"kind": "fixed", "value": "!"})
    assert fixed(None) == fixed("") == fixed("secret") == "!"
    assert masker({"kind": "keep"})("same") == "same"


def test_outputs_fit_max_length():
    cases = [({"kind": "email"}, 16), ({"kind": "email"}, 5), ({"kind": "hash", "length": 40}, 10),
             ({"kind": "hash", "length": None}, 9), ({"kind": "faker", "provider": "name", "locale": "en_US"}, 4),
             ({"kind": "ip"}, 6), ({"kind": "format"}, 300), ({"kind": "phone"}, 30)]
    for rule, limit in cases:
        fn = masker(rule, max_length=limit)
        for v in ["ann@corp.example", "Ann Lee", "192.168.1.1", "+49 30 1234567", "ab"]:
            out = fn(v)
            assert len(out) <= limit and out != v, (rule, limit, v, out)
    with pytest.raises(mask.MaskError, match="longer than the column"):
        masker({"kind": "fixed", "value": "too long"}, max_length=3)


def test_unique_columns_stay_unique_by_drawing_again():
    """260 two-character codes have 260 masks of their shape: every one is taken, by re-drawing, never
    by an error; the same data in the same order gives the same masks."""
    codes = ["%s%d" % (chr(97 + i), d) for i in range(26) for d in range(10)]
    counts = mask.Counts()
    fn = masker({"kind": "format"}, unique=True, counts=counts)
    outs = [fn(c) for c in codes]
    assert len(set(outs)) == len(codes) and all(o != c for o, c in zip(outs, codes))
    assert all(len(o) == 2 and o[0].islower() and o[1].isdigit() for o in outs)
    assert counts.redrawn > 0
    again = masker({"kind": "format"}, unique=True)
    assert [again(c) for c in codes] == outs

    digits = [str(d) for d in range(10)]  # ten one-digit values: a derangement of themselves
    fn = masker({"kind": "phone"}, unique=True)
    outs = [fn(d) for d in digits]
    assert sorted(outs) == digits and all(o != d for o, d in zip(outs, digits))

    hashed = masker({"kind": "hash", "length": 8}, unique=True)
    many = [hashed("user%d" % i) for i in range(20000)]
    assert len(set(many)) == len(many)

    # taken is judged normalised: two outputs differing in case only would break a case-blind index
    fn = masker({"kind": "format"}, unique=True)
    seen = {mask.normalise(fn(v)) for v in ("Ab", "aB", "AB", "ab", "xY")}
    assert len(seen) == 5


def test_a_fixed_rule_on_a_unique_column_or_among_the_originals_is_refused():
    fn = masker({"kind": "fixed", "value": "!"}, unique=True)
    assert fn("a") == "!"
    with pytest.raises(mask.MaskError, match="users.col is unique"):
        fn("b")
    with pytest.raises(mask.MaskError, match="fixed value is also an original"):
        masker({"kind": "fixed", "value": "Nobody"}, avoid=avoid_of("NOBODY "))


def test_json_is_masked_by_path_and_the_rest_is_kept():
    rule = {"kind": "json", "paths": {"user.email": {"kind": "email"}, "phones.*": {"kind": "phone"},
                                      "contacts.*.name": {"kind": "faker", "provider": "name", "locale": "en_US"},
                                      "address": {"kind": "format"}, "secret": {"kind": "null"},
                                      "kept.x": {"kind": "keep"}, "list.1": {"kind": "fixed", "value": "gone"}}}
    doc = {"user": {"email": "ann@corp.example", "id": 7}, "phones": ["+44 20 7946 0958", None, ""],
           "contacts": [{"name": "Bob Stone", "age": 40}, {"email": "not@masked.example"}],
           "address": {"street": "Main St 5", "zip": 12345, "lines": ["Flat 2"]}, "secret": {"a": 1},
           "kept": {"x": "as is"}, "list": ["a", "b", "c"], "other": "kept too"}
    fn = masker(rule)
    out = json.loads(fn(json.dumps(doc)))
    assert out["user"]["id"] == 7 and out["user"]["email"].endswith(("example.com", "example.org", "example.net"))
    assert out["phones"][1] is None and out["phones"][2] == "" and out["phones"][0] != doc["phones"][0]
    assert out["contacts"][0]["age"] == 40 and out["contacts"][0]["name"] != "Bob Stone"
    assert out["contacts"][1] == {"email": "not@masked.example"}  # not at a path
    assert out["address"]["street"] != "Main St 5" and len(out["address"]["street"]) == 9
    assert out["address"]["zip"] != 12345 and out["address"]["lines"][0] != "Flat 2"  # inside a masked path
    assert out["secret"] is None and out["kept"] == {"x": "as is"} and out["list"] == ["a", "gone", "c"]
    assert out["other"] == "kept too"
    assert fn(json.dumps(doc)) == masker(rule)(json.dumps(doc))
    with pytest.raises(mask.MaskError) as err:
        fn('{"user": {"email": "ann@corp.example"')
    assert "users.col" in str(err.value) and "ann@corp" not in str(err.value) and "not valid JSON" in str(err.value)


def test_faker_missing_is_one_line_naming_the_rule_and_the_fix(monkeypatch):
    fresh = load_helper("mask")  # no Faker imported yet in this copy
    monkeypatch.setitem(sys.modules, "faker", None)  # `import faker` fails, as in an app without it
    with pytest.raises(fresh.MaskError) as err:
        fresh.value_masker({"kind": "faker", "provider": "first_name", "locale": "en_US"},
                           fresh.Context(KEY, PROOF.hex()), "accounts_user.first_name")
    text = str(err.value)
    assert "\n" not in text and "accounts_user.first_name" in text and "first_name" in text
    assert "add Faker to the app's requirements" in text
    with pytest.raises(mask.MaskError, match="no provider 'no_such_thing'"):
        masker({"kind": "faker", "provider": "no_such_thing", "locale": "en_US"})


def test_a_table_masker_masks_only_its_masked_columns_and_refuses_a_torn_row():
    spec = {"table": "users", "columns": ["id", "email", "note", "bio"],
            "masks": {"email": {"kind": "email"}, "note": {"kind": "null"}, "bio": {"kind": "keep"}},
            "unique": ["email"], "max_length": {"email": 254}}
    tm = mask.TableMasker(spec, ctx())
    lines = [b"1\tann@corp.example\tsecret\tbio \\t one", b"2\t\\N\t\\N\t", b"3\t\tx\ty"]
    out = tm.transform(lines)
    f = [line.split(b"\t") for line in out]
    assert f[0][0] == b"1" and f[0][1].endswith((b"@example.com", b"@example.net", b"@example.org"))
    assert f[0][2] == b"\\N" and f[0][3] == b"bio \\t one"
    assert f[1] == [b"2", b"\\N", b"\\N", b""] and f[2][1] == b"" and f[2][2] == b"\\N"
    assert tm.report() == {"rows": 3, "columns": {"email": {"masked": 1, "redrawn": 0},
                                                  "note": {"masked": 0, "redrawn": 0}}}
    with pytest.raises(mask.MaskError, match="users: a row has 3 fields"):
        tm.transform([b"4\tx\ty"])
    with pytest.raises(mask.BadArguments, match="not among the copied columns"):
        mask.TableMasker(dict(spec, masks={"nope": {"kind": "email"}}), ctx())
    with pytest.raises(mask.MaskError, match="unknown rule"):
        mask.TableMasker(dict(spec, masks={"email": {"kind": "rot13"}}), ctx())


def test_a_cached_column_masks_exactly_as_an_uncached_one():
    """Names repeat: a column that is not unique remembers its masks; what it answers must not change."""
    c = ctx()
    cached = mask.field_masker({"kind": "format"}, c, "t.c")
    direct = mask.value_masker({"kind": "format"}, c, "t.c")
    rng = random.Random(3)
    names = ["Name%d" % rng.randrange(50) for _ in range(20000)] + ["Uniq%d" % i for i in range(20000)]
    for n in names:
        assert cached(n.encode()) == mask.encode_field(direct(n))


def test_a_sample_is_uniform_and_the_same_for_one_proof_key():
    def sample(seed):
        r = mask._Reservoir(1000, random.Random(seed))
        for i in range(100000):
            r.offer(i)
        return r

    one = sample(b"k1")
    assert len(one.items) == 1000 == len(set(one.items)) and one.seen == 100000
    assert 45000 < sum(one.items) / 1000 < 55000  # the mean index of a uniform sample: 50000 +- ~900
    assert sum(1 for i in one.items if i >= 90000) > 60  # the stream's end is sampled too (~100)
    assert sample(b"k1").items == one.items and sample(b"k2").items != one.items
    few = mask._Reservoir(10, random.Random(1))
    for i in range(7):
        few.offer(i)
    assert sorted(few.items) == list(range(7))


def test_format_keeps_what_is_no_letter_or_digit_in_any_script():
    fn = masker({"kind": "format"})
    text = "Zürich — 5 € / 中文 ok\u00a0end"
    out = fn(text)
    assert len(out) == len(text)
    for a, b in zip(text, out):
        if a.isalpha():
            assert b.isascii() and b.isalpha() and a.isupper() == b.isupper()
        elif a.isdigit():
            assert b.isdigit()
        else:
            assert a == b
    phone = masker({"kind": "phone"})("Tél. ١٢٣ 45")  # Arabic-Indic digits are digits too
    assert phone[:5] == "Tél. " and phone[5:8].isdigit() and phone[8] == " " and phone[9:].isdigit()


def test_a_unique_faker_column_outgrows_its_pool_without_an_error():
    """first_name has a few thousand outputs: a unique column of more values than that still fills, with
    masks of the names' shape once the plain draws are taken."""
    fn = masker({"kind": "faker", "provider": "first_name", "locale": "en_US"}, unique=True)
    outs = [fn("person %d" % i) for i in range(12000)]
    assert len({mask.normalise(o) for o in outs}) == len(outs)
    assert all(o[:1].isupper() and o.replace(" ", "").replace("-", "").isalpha() for o in outs)


def test_the_stream_stops_at_an_end_of_data_line_and_adds_no_row(tmp_path):
    """COPY text may end with a `\\.` line: nothing after it is data, and it adds no empty row."""
    from .mask_rig import run_stream

    data = tmp_path / "rows.copy"
    data.write_bytes(b"1\tann@corp.example\n\\.\n" + b"2\tnot data\n" * 100000)  # more than a pipe holds
    spec = {"table": "t", "columns": ["id", "email"], "masks": {"email": {"kind": "email"}}}
    done = run_stream({"command": ["cat", str(data)], "spec": spec, "mask_key": KEY, "proof_key": PROOF.hex()})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"\n") == 1 and done.stdout.startswith(b"1\tu")
    data.write_bytes(b"\\.\n")
    done = run_stream({"command": ["cat", str(data)], "spec": spec, "mask_key": KEY, "proof_key": PROOF.hex()})
    assert done.returncode == 0 and done.stdout == b""
