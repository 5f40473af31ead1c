#!/usr/bin/env python3
"""deploykit remote helper: mask a table's COPY stream on the source host, and digest its original values.

Standalone (stdlib only; Faker imported only when a faker rule is used). Two ways in:

``python mask.py stream`` (a filter, not the JSON protocol): stdin is one JSON
header line ``{"command": [argv of psql ... COPY (...) TO STDOUT], "spec":
COLUMN SPEC, "mask_key": hex, "proof_key": hex, "avoid_count": N, "jobs"?: W,
"avoid_format"?: "dk64" | "ds32"}`` and then the originals to avoid: N*8 bytes,
the dk64 list (sorted big-endian uint64) of the normalised digests of every
original masked value of the run (dk64, the default), or N*4 bytes, their
screen values (ds32, any order: an output the screen flags is drawn again,
the few that are no original too, deterministically; no digest per output). The command is started with this
environment (the password travels there; PGCLIENTENCODING=UTF8 unless set)
and its rows leave on stdout masked, as COPY text in UTF-8. Exit 0 and one
JSON line of counts on stderr; or exit 1 and one line ``mask: ...`` on stderr
(the command failed, a value cannot be masked, a row is malformed); what was
written before a failure was masked, but the caller must drop the copy.
Stdin is read as bytes: a bootstrap must read the program with
sys.stdin.buffer (as the agent's BOOT does), or it swallows the header. All
of stdin is read before anything is written: write it all, then read. With
jobs W > 1, blocks of rows are masked by W forked workers; the main process
keeps their order and settles the unique columns, so the bytes are the same.

``python mask.py digests`` (READ_ONLY, JSON protocol) digests the original
values of a table's masked columns for the proof.

Masking is keyed BLAKE2b (hashlib.blake2b with ``key=``, RFC 7693's keyed
mode: a PRF like HMAC, one C call per draw; SHAKE-128 over key+input where a
draw needs more than 64 bytes). The 32-byte key is BLAKE2b of the mask key's
bytes; each kind draws under its own ``person`` tag, with the round number:
output = f(mask key, rule, value, round). Round 0 is the value's mask; a draw
that equals the input (exactly or normalised), whose normalised digest is
among the originals, or that a unique column already holds, is drawn again
with the next round, so every guarantee holds deterministically (for a unique
column, the later row in COPY order re-draws: same data and key, same output).
"""
import array
import base64
import collections
import hashlib
import ipaddress
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import zlib

from _common import BadArguments, HelperError, serve
from _copytext import (MIN_LENGTH, NULL, b64_digests, decode_field, digester, encode_field, iter_blocks,
                       lowered_blob, membership, normalise, pack_digests, pack_screen, plain_fields, Screen,
                       ToolStderr, unpack_digests, unpack_screen)
from _forks import Pool, receive, send

MAX_ROUNDS = 1000  # draws before a value is declared unmaskable (a tiny output space on a unique column)
FAKER_ROUNDS = 64  # faker draws before a format mask of the draw (every draw was an original: common names)
FAKER_UNIQUE_ROUNDS = 8  # the same in a unique column (where the pool runs out as the table grows)
FAKER_POOL = 1 << 14  # Faker outputs a rule draws from (built as drawn: Faker costs 30-70 us a value)
CACHE_CAP = 1 << 17  # masked values remembered per column (names repeat)
MEMO_CAP = 1 << 16  # faker outputs whose normalised digest is remembered
CACHE_PROBE = 1 << 13  # values masked before a column whose values hardly repeat stops caching
TLDS = ("com", "org", "net")
KINDS = ("keep", "null", "fixed", "hash", "email", "phone", "format", "ip", "faker", "json")


class MaskError(HelperError):
    """A value or a rule that cannot be masked (names the table and column, never the value)."""


def mask_key_bytes(mask_key):
    """The 32-byte BLAKE2b key of a hex mask key."""
    try:
        raw = bytes.fromhex(mask_key)
    except (TypeError, ValueError):
        raise BadArguments("the mask key must be hex text")
    if len(raw) < 16:
        raise BadArguments("the mask key must be at least 16 bytes (32 hex digits)")
    return hashlib.blake2b(raw, digest_size=32, person=b"deploykit-mask").digest()


def proof_key_bytes(proof_key):
    try:
        raw = bytes.fromhex(proof_key)
    except (TypeError, ValueError):
        raise BadArguments("the proof key must be hex text")
    if not 1 <= len(raw) <= 64:
        raise BadArguments("the proof key must be 1 to 64 bytes")
    return raw


# --------------------------------------------------------------------------
# draws: (text, round) -> text, one per kind


class _Tag(object):
    """The BLAKE2b person bytes of one kind: 8 bytes of tag, 8 of round."""

    def __init__(self, tag):
        self.base = tag.encode().ljust(8, b"\0")[:8]
        self.first = [self.base + r.to_bytes(8, "big") for r in range(4)]

    def __call__(self, rnd):
        return self.first[rnd] if rnd < 4 else self.base + rnd.to_bytes(8, "big")


def _encode(text):
    return text.encode("utf-8", "surrogateescape")


def _stream_bytes(key, person, data, n):
    """n keyed pseudo-random bytes of data."""
    if n <= 64:
        return hashlib.blake2b(data, key=key, digest_size=max(n, 1), person=person).digest()[:n]
    return hashlib.shake_128(key + person + data).digest(n)


def _hex(key, person, data, n):
    if n <= 128:
        return hashlib.blake2b(data, key=key, digest_size=max((n + 1) // 2, 1), person=person).hexdigest()[:n]
    return hashlib.shake_128(key + person + data).hexdigest((n + 1) // 2)[:n]


def _table(fn):
    return bytes(fn(i) for i in range(256))


_T_LOW = _table(lambda i: 97 + i % 26)
_T_DIG = _table(lambda i: 48 + i % 10)
_M_ALPHA = _table(lambda i: 0xFF if 97 <= i <= 122 or 65 <= i <= 90 else 0)
_M_CASE = _table(lambda i: 0x20 if 65 <= i <= 90 else 0)
_M_DIG = _table(lambda i: 0xFF if 48 <= i <= 57 else 0)


_NON_ASCII = re.compile("[^\x00-\x7f]")


def _proxy(text, letters, kept):
    """ASCII text of the same length standing for `text` in _shape: a non-ASCII letter becomes 'a' or 'A'
    (its case), a digit '0', and any other character \x01, its position noted in `kept` (put back after)."""
    def one(m):
        ch = m.group()
        if ch.isdigit():
            return "0"
        if letters and (ch.isalpha() or "\udc80" <= ch <= "\udcff"):  # a letter, or a byte of another encoding
            return "A" if ch.isupper() else "a"
        kept.append(m.start())
        return "\x01"
    return _NON_ASCII.sub(one, text).encode("ascii")


def _shape(key, person, text, letters):
    """Digits (and letters, when `letters`) replaced by keyed draws of their class, case kept, everything
    else kept; None when the text has nothing to replace.

    A few C calls whatever the length: class masks and candidate characters by bytes.translate, merged as
    big integers (an upper-case letter is its lower-case candidate with bit 0x20 cleared). Text that is
    not ASCII goes through an ASCII proxy of the same length (a non-ASCII letter -> an ASCII letter of its
    case); the draws are of the text itself."""
    data = _encode(text)
    kept = None
    if data.isascii():
        shape = data
    else:
        kept = []
        shape = _proxy(text, letters, kept)
    n = len(shape)
    ks = _stream_bytes(key, person, data, n)
    frm = int.from_bytes
    mdig = frm(shape.translate(_M_DIG), "big")
    malpha = frm(shape.translate(_M_ALPHA), "big") if letters else 0
    keep = mdig | malpha
    if not keep:
        return None
    out = frm(shape, "big") & ~keep
    if mdig:
        out |= frm(ks.translate(_T_DIG), "big") & mdig
    if malpha:
        low = frm(ks.translate(_T_LOW), "big") & malpha
        if not shape.islower():  # upper-case letters: their candidates lose bit 0x20
            low ^= frm(shape.translate(_M_CASE), "big")
        out |= low
    out = out.to_bytes(n, "big").decode("ascii")
    if kept:
        chars = list(out)
        for i in kept:
            chars[i] = text[i]
        out = "".join(chars)
    return out


def _fallback(key, tag, text, rnd):
    """Hex of the text's length: for a value its kind has nothing to replace in (no digit, no letter)."""
    return _hex(key, tag(rnd), b"fallback" + _encode(text), max(len(text), 1))


def draw_hash(key, rule, max_length):
    tag = _Tag("hash")
    length = rule.get("length")

    def draw(text, rnd):
        n = length or min(64, max(8, len(text)))
        if max_length:
            n = min(n, max_length)
        return _hex(key, tag(rnd), _encode(text), n)
    return draw


def draw_email(key, rule, max_length):
    tag = _Tag("email")
    blake2b = hashlib.blake2b

    def draw(text, rnd):
        d = blake2b(_encode(text), key=key, digest_size=7, person=tag(rnd)).digest()
        domain = "@example." + TLDS[d[6] % 3]
        local = "u" + d[:6].hex()
        if max_length and len(local) + len(domain) > max_length:
            room = max_length - len(domain)
            if room < 1:
                return d.hex()[:max_length]
            local = local[:room]
        return local + domain
    return draw


def draw_phone(key, rule, max_length):
    tag = _Tag("phone")

    def draw(text, rnd):
        out = _shape(key, tag(rnd), text, letters=False)
        return _fallback(key, tag, text, rnd) if out is None else out
    return draw


def draw_format(key, rule, max_length):
    tag = _Tag("format")

    def draw(text, rnd):
        out = _shape(key, tag(rnd), text, letters=True)
        return _fallback(key, tag, text, rnd) if out is None else out
    return draw


def draw_ip(key, rule, max_length):
    tag = _Tag("ip")
    blake2b = hashlib.blake2b

    def draw(text, rnd):
        d = blake2b(_encode(text), key=key, digest_size=16, person=tag(rnd)).digest()
        addr, slash, plen = text.strip().partition("/")
        v6 = ":" in addr
        bits = 128 if v6 else 32
        if v6:
            n = (0xFD << 120) | int.from_bytes(d[:15], "big")
        else:
            n = (10 << 24) | int.from_bytes(d[:3], "big")
        suffix = ""
        if slash and plen.isdigit():
            p = min(int(plen), bits)
            n &= ((1 << bits) - 1) ^ ((1 << (bits - p)) - 1)  # host bits zero: a valid cidr too
            suffix = "/%d" % p
        if v6:
            return ipaddress.IPv6Address(n).compressed + suffix
        return "%d.%d.%d.%d%s" % (n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255, suffix)
    return draw


_fakers = {}


def _faker_for(locale, label, provider):
    """A Faker of one locale, imported on first use; a one-line error when the app's Python lacks it."""
    if locale in _fakers:
        return _fakers[locale]
    try:
        from faker import Faker
    except ImportError:
        raise MaskError("%s: the faker rule (provider %s) needs the Python package Faker, which %s cannot "
                        "import: add Faker to the app's requirements, or use another rule (format, hash)"
                        % (label, provider, sys.executable))
    try:
        fake = Faker(locale)
    except (AttributeError, ValueError, ImportError) as e:
        raise MaskError("%s: Faker has no locale %r (%s): use one such as en_US, de_DE or fr_FR"
                        % (label, locale, e))
    _fakers[locale] = fake
    return fake


def draw_faker(key, rule, max_length, label, plain_rounds=FAKER_ROUNDS):
    """Faker outputs come from a pool: pool[i] is Faker (the rule's provider and locale) seeded with
    PRF(key, provider, locale, i), built as indexes are first drawn; a value takes pool[PRF(value, round)
    mod size]. One keyed hash per value instead of ~50 us of Faker, and order never matters. After
    plain_rounds draws (all originals, or all taken in a unique column), a draw is a format mask of a
    pool entry: the same shape, other letters."""
    provider, locale = rule.get("provider"), rule.get("locale") or "en_US"
    if not isinstance(provider, str) or not provider.isidentifier() or provider.startswith("_"):
        raise MaskError("%s: %r is not a Faker provider name" % (label, provider))
    fake = _faker_for(locale, label, provider)
    method = getattr(fake, provider, None)
    if not callable(method):
        raise MaskError("%s: Faker has no provider %r: name one such as first_name, last_name, name, "
                        "street_address, city" % (label, provider))
    tag = _Tag("faker")
    seed_person = b"faker-pool".ljust(16, b"\0")
    seed_data = ("%s\0%s" % (provider, locale)).encode()
    pool = {}
    blake2b = hashlib.blake2b
    fmt = draw_format(key, {}, max_length)

    def pooled(i):
        out = pool.get(i)
        if out is None:
            seed = blake2b(seed_data + i.to_bytes(4, "big"), key=key, digest_size=8, person=seed_person).digest()
            fake.seed_instance(int.from_bytes(seed, "big"))
            try:
                out = method()
            except TypeError:
                raise MaskError("%s: the Faker provider %r needs arguments: name one that takes none"
                                % (label, provider))
            out = out if isinstance(out, str) else str(out)
            pool[i] = out
        return out

    def draw(text, rnd):
        r = rnd if rnd < plain_rounds else rnd % plain_rounds
        i = int.from_bytes(blake2b(_encode(text), key=key, digest_size=4, person=tag(r)).digest(), "big")
        out = pooled(i % FAKER_POOL)
        if rnd >= plain_rounds:  # every plain draw was taken: the draw's shape, other letters
            out = fmt(out, rnd)
        return out
    return draw


DRAWS = {"hash": draw_hash, "email": draw_email, "phone": draw_phone, "format": draw_format, "ip": draw_ip}
NORMAL_OUT = {"hash", "email", "ip"}  # kinds whose outputs are already normalised (lower case, no spaces)
SAME_SPACES = {"format", "phone"}  # kinds that keep every whitespace character where it was
PLAIN_OUT = {"hash", "email", "ip"}  # kinds whose outputs are ASCII letters, digits and .@:/ (no COPY escape)


# --------------------------------------------------------------------------
# guards: the guarantees, around a draw


class Counts(object):
    __slots__ = ("masked", "redrawn")

    def __init__(self):
        self.masked = 0
        self.redrawn = 0


class Context(object):
    """What every column of a stream shares: the keys, the originals to avoid, the digest function.

    The originals are `avoid` (a test of a normalised value's digest: exact) or `screen` (a test of the
    normalised text itself, which may say yes for a few others: they are drawn again, as deterministically).
    `original(norm, d)` is the one the guards ask (d: norm's digest, made only when `needs_digest`)."""

    def __init__(self, mask_key, proof_key=None, avoid=None, screen=None):
        self.key = mask_key_bytes(mask_key) if isinstance(mask_key, str) else mask_key
        pk = proof_key_bytes(proof_key) if isinstance(proof_key, str) else (proof_key or b"deploykit-no-proof")
        self.digest = digester(pk)
        self.avoid = avoid if avoid is not None else (lambda d: False)
        self.screen = screen
        if screen is not None:
            self.original, self.needs_digest = (lambda norm, d: screen(norm)), False
        else:
            avoid_ = self.avoid
            self.original, self.needs_digest = (lambda norm, d: avoid_(d)), True


def _guarded(draw, ctx, label, counts, unique=None, max_length=None, normal_out=False, same_spaces=False,
             memo=None, keep_digest=False):
    """str -> str: the first draw (round 0, 1, ...) that differs from the input, exactly and normalised,
    fits max_length, is no original (its normalised digest is not in the avoid set) and, for a unique
    column, is not yet taken (by normalised digest: outputs differing only in case count as taken).

    normal_out: the kind's outputs are normalised already. same_spaces: the kind keeps every whitespace
    character in place (format, phone), so the normalised forms are equal exactly when the lower-cased
    texts are, and the input need not be normalised. memo: a dict keeping each output's normalised form
    and digest (faker: outputs come from a pool, and repeat).

    guarded(text, start, info) starts at round `start` and appends (round, digest) of what it returns to
    `info`: a unique column whose check is made elsewhere (keep_digest), by the stream's main process."""
    digest, original, needs_digest = ctx.digest, ctx.original, ctx.needs_digest
    keep_digest = keep_digest or unique is not None

    def guarded(text, start=0, info=None):
        norm_in = low_in = None
        for rnd in range(start, MAX_ROUNDS):
            out = draw(text, rnd)
            cut = max_length is not None and len(out) > max_length
            if cut:
                out = out[:max_length]
            if out == text:
                continue
            known = memo.get(out) if memo is not None else None
            if known is None:
                norm = out if normal_out else normalise(out)
                d = digest(norm) if keep_digest or (needs_digest and len(norm) >= MIN_LENGTH) else None
                if memo is not None and len(memo) < MEMO_CAP:
                    memo[out] = (norm, d)
            else:
                norm, d = known
            if same_spaces and not cut:
                if low_in is None:
                    low_in = text.lower()
                if out.lower() == low_in:
                    continue
            elif not (len(norm) > len(text) and text.isascii()):  # else they cannot be equal
                if norm_in is None:
                    norm_in = normalise(text)
                if norm == norm_in:
                    continue
            if unique is not None:
                if d in unique or (len(norm) >= MIN_LENGTH and original(norm, d)):
                    continue
                unique.add(d)
            elif len(norm) >= MIN_LENGTH and original(norm, d):  # (d is made when the test needs it)
                continue
            if rnd:
                counts.redrawn += 1
            if info is not None:
                info.append((rnd, d))
            return out
        raise MaskError("%s: no masked value found in %d draws (the rule has too few outputs for this column%s);"
                        " use hash or a longer format" % (label, MAX_ROUNDS, ", which is unique" if unique is not None
                                                            else ""))
    return guarded


def _leaf_masker(rule, ctx, label, counts):
    """str -> str for a rule inside a json rule (guarded; no unique, no max_length)."""
    kind = rule.get("kind")
    if kind == "null":
        return lambda text: None
    if kind == "fixed":
        value = _fixed_value(rule, ctx, label)
        return lambda text: value
    if kind == "keep":
        return lambda text: text
    if kind == "faker":
        draw = draw_faker(ctx.key, rule, None, label)
    elif kind in DRAWS:
        draw = DRAWS[kind](ctx.key, rule, None)
    else:
        raise MaskError("%s: %r cannot be used inside a json rule" % (label, kind))
    guarded = _guarded(draw, ctx, label, counts, normal_out=kind in NORMAL_OUT, same_spaces=kind in SAME_SPACES,
                       memo={} if kind == "faker" else None)
    cache = {}

    def leaf(text):
        if text == "":
            return text
        out = cache.get(text)
        if out is None:
            out = guarded(text)
            if len(cache) >= CACHE_CAP:
                cache.clear()
            cache[text] = out
        counts.masked += 1
        return out
    return leaf


def _fixed_value(rule, ctx, label):
    value = rule.get("value")
    if not isinstance(value, str):
        raise MaskError("%s: a fixed rule needs a text value" % label)
    norm = normalise(value)
    if len(norm) >= MIN_LENGTH and ctx.original(norm, ctx.digest(norm)):
        raise MaskError("%s: the fixed value is also an original value of a masked column, and the proof "
                        "would find it: choose another fixed value" % label)
    return value


def json_paths(rule, label):
    """[(parts, leaf rule)] of a json rule."""
    paths = rule.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise MaskError("%s: a json rule needs paths" % label)
    out = []
    for path, leaf in sorted(paths.items()):
        if not isinstance(path, str) or not path or not isinstance(leaf, dict):
            raise MaskError("%s: a json rule maps dotted paths to rules" % label)
        out.append((path.split("."), leaf))
    return out


def walk(node, parts, fn, i=0):
    """node with fn applied to what is at parts[i:] (`*`: every item of a list, every value of an object;
    a number: that item of a list); what is not at the path is kept."""
    if i == len(parts):
        return fn(node)
    part = parts[i]
    if isinstance(node, dict):
        if part == "*":
            for k in node:
                node[k] = walk(node[k], parts, fn, i + 1)
        elif part in node:
            node[part] = walk(node[part], parts, fn, i + 1)
    elif isinstance(node, list):
        if part == "*":
            for j in range(len(node)):
                node[j] = walk(node[j], parts, fn, i + 1)
        elif part.isdigit() and int(part) < len(node):
            node[int(part)] = walk(node[int(part)], parts, fn, i + 1)
    return node


def leaves(node, fn):
    """fn over every scalar inside node (a container at a masked path is masked whole): strings as they
    are, numbers and booleans as their JSON text; null stays null."""
    if isinstance(node, dict):
        return {k: leaves(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [leaves(v, fn) for v in node]
    if node is None:
        return None
    if isinstance(node, str):
        return fn(node)
    return fn(json.dumps(node))


def _strings(node, found):
    """Collect the string leaves inside node (what the proof digests of a json column)."""
    if isinstance(node, dict):
        for v in node.values():
            _strings(v, found)
    elif isinstance(node, list):
        for v in node:
            _strings(v, found)
    elif isinstance(node, str):
        found.append(node)
    return node


def _json_masker(rule, ctx, label, counts):
    plan = []
    for parts, leaf_rule in json_paths(rule, label):
        kind = leaf_rule.get("kind")
        if kind == "keep":
            continue
        leaf = _leaf_masker(leaf_rule, ctx, label, counts)
        if kind in ("null", "fixed"):  # the whole node at the path is replaced
            plan.append((parts, (lambda f: lambda node: f(None))(leaf)))
        else:
            plan.append((parts, (lambda f: lambda node: leaves(node, f))(leaf)))
    loads, dumps = json.loads, json.dumps

    def mask(text):
        try:
            doc = loads(text)
        except ValueError:
            raise MaskError("%s: a value is not valid JSON, and a json rule masks JSON documents only: fix the "
                            "data or give the column another rule" % label)
        for parts, fn in plan:
            doc = walk(doc, parts, fn)
        return dumps(doc, ensure_ascii=False)
    return mask


def value_masker(rule, ctx, label="table.column", unique=False, max_length=None, counts=None, seen=None,
                 defer=False):
    """fn(text, start=0, info=None) -> masked text: one column's rule, with every guarantee (NULL stays NULL
    and "" stays "" for every kind but null (always NULL) and fixed (always its value); outputs fit
    max_length). A unique column keeps the digests of its outputs in `seen` (a new set by default); with
    `defer` it does not look: it appends (round, digest) to `info` for whoever keeps `seen`."""
    counts = counts if counts is not None else Counts()
    if not isinstance(rule, dict) or rule.get("kind") not in KINDS:
        raise MaskError("%s: unknown rule %r (kinds: %s)" % (label, rule, ", ".join(KINDS)))
    kind = rule["kind"]
    if kind == "keep":
        return lambda text, start=0, info=None: text
    if kind == "null":
        return lambda text, start=0, info=None: None
    if unique and seen is None and not defer:
        seen = set()
    if kind == "fixed":
        value = _fixed_value(rule, ctx, label)
        if max_length is not None and len(value) > max_length:
            raise MaskError("%s: the fixed value is longer than the column's %d characters" % (label, max_length))
        taken = ctx.digest(normalise(value))

        def fixed(text, start=0, info=None):
            if unique:
                if info is not None:
                    info.append((0, taken))
                elif start or taken in seen:
                    raise MaskError("%s is unique, and a fixed rule gives every row the same value: use hash or "
                                    "format" % label)
                else:
                    seen.add(taken)
            counts.masked += 1
            return value
        return fixed
    if kind == "json":
        mask = _json_masker(rule, ctx, label, counts)
        return lambda text, start=0, info=None: text if not text else mask(text)
    if kind == "faker":
        draw = draw_faker(ctx.key, rule, max_length, label, FAKER_UNIQUE_ROUNDS if unique else FAKER_ROUNDS)
    else:
        draw = DRAWS[kind](ctx.key, rule, max_length)
    guarded = _guarded(draw, ctx, label, counts, unique=None if defer else seen, max_length=max_length,
                       normal_out=kind in NORMAL_OUT, same_spaces=kind in SAME_SPACES,
                       memo={} if kind == "faker" else None, keep_digest=unique)

    def one(text, start=0, info=None):
        if not text:
            if info is not None:
                info.append(None)
            return text
        counts.masked += 1
        return guarded(text, start, info)
    return one


def _plain(text):
    return text.encode("ascii")


def field_masker(rule, ctx, label="table.column", unique=False, max_length=None, counts=None, defer=False):
    """bytes -> bytes on COPY text fields: value_masker with the codec around it and, for a column that is
    not unique, a cache of the masks already made (exact: a mask depends on the value alone).

    A unique column's function carries `.seen` (the digests taken) and `.redraw(field, start)` (the
    field's mask from round `start` on, taken in `.seen`); with `defer` it carries `.infos` instead, a
    list to which each field appends (round, digest) or None (NULL, empty), for the main process."""
    counts = counts if counts is not None else Counts()
    kind = rule.get("kind") if isinstance(rule, dict) else None
    unique = unique and kind not in ("keep", "null", "json")  # NULLs never collide; a document is no key
    seen = set() if unique and not defer else None
    one = value_masker(rule, ctx, label, unique, max_length, counts, seen=seen, defer=defer)
    if kind == "keep":
        return lambda field: field
    if kind == "null":
        return lambda field: NULL
    encode = _plain if kind in PLAIN_OUT else encode_field
    if kind == "fixed":
        encode = encode_field
    if unique and defer:
        infos = []
        add = infos.append

        def deferred(field):
            if field == NULL or not field:
                add(None)
                return field
            return encode(one(decode_field(field), 0, infos))
        deferred.infos = infos
        return deferred
    if unique or kind in ("json", "fixed"):
        def direct(field):
            if kind != "fixed" and (field == NULL or not field):
                return field
            return encode(one(decode_field(field)))
        if unique:
            direct.seen = seen
            direct.redraw = lambda field, start: encode(one(decode_field(field), start))
        return direct
    cache = {}
    get = cache.get
    looked = hits = 0
    on = True

    def cached(field):
        nonlocal looked, hits, on
        if field == NULL or not field:
            return field
        if not on:
            return encode(one(decode_field(field)))
        out = get(field)
        if out is not None:
            hits += 1
            counts.masked += 1
            return out
        out = encode(one(decode_field(field)))
        if len(cache) >= CACHE_CAP:
            cache.clear()
        cache[field] = out
        looked += 1
        if looked == CACHE_PROBE and hits * 8 < looked:  # mostly distinct values: the cache does not pay
            on = False
            cache.clear()
        return out
    return cached


# --------------------------------------------------------------------------
# a table's stream


class TableMasker(object):
    """The masks of one table's COPY lines, from its column spec. With defer_unique, its unique columns
    only note what they drew (`self.deferred`: [(field index, column, infos list)]): a forked worker's."""

    def __init__(self, spec, ctx, defer_unique=False):
        self.table = str(spec.get("table") or "table")
        self.columns = list(spec.get("columns") or [])
        masks = spec.get("masks") or {}
        unique = set(spec.get("unique") or ())
        max_length = spec.get("max_length") or {}
        if not self.columns:
            raise BadArguments("the column spec of %s names no columns" % self.table)
        unknown = sorted(set(masks) - set(self.columns))
        if unknown:
            raise BadArguments("%s: masked column %s is not among the copied columns" % (self.table, unknown[0]))
        self.counts = {}
        self.masked = []
        self.deferred = []  # unique columns whose check the main process makes (defer_unique)
        self.unique = {}  # column -> its field masker (with .seen and .redraw)
        for i, column in enumerate(self.columns):
            rule = masks.get(column)
            if rule is None:
                continue
            if not isinstance(rule, dict):
                raise BadArguments("%s.%s: a rule is a JSON object with a kind" % (self.table, column))
            if rule.get("kind") == "keep":
                continue
            counts = self.counts[column] = Counts()
            fn = field_masker(rule, ctx, "%s.%s" % (self.table, column), unique=column in unique,
                              max_length=max_length.get(column), counts=counts, defer=defer_unique)
            self.masked.append((i, fn))
            if hasattr(fn, "infos"):
                self.deferred.append((i, column, fn.infos))
            if hasattr(fn, "seen"):
                self.unique[column] = fn
        self.rows = 0

    def transform(self, lines):
        """COPY text lines (bytes, no newline) -> the masked lines."""
        ncols, masked = len(self.columns), self.masked
        for _i, _column, infos in self.deferred:
            del infos[:]
        out = []
        append = out.append
        for line in lines:
            f = line.split(b"\t")
            if len(f) != ncols:
                raise MaskError("%s: a row has %d fields, the spec names %d columns" % (self.table, len(f), ncols))
            for i, fn in masked:
                f[i] = fn(f[i])
            append(b"\t".join(f))
        self.rows += len(lines)
        return out

    def settle(self, lines, out, infos):
        """The main process's part of a worker's block: every unique column's draws, in row order, taken in
        its `seen`; a draw already taken is drawn again here from the next round (what one process would
        have drawn). `out` (the worker's masked lines) is changed in place."""
        for i, column, drawn in infos:
            fn = self.unique[column]
            seen, add = fn.seen, fn.seen.add
            for row, info in enumerate(drawn):
                if info is None:
                    continue
                if info[1] not in seen:
                    add(info[1])
                    continue
                fields = out[row].split(b"\t")
                fields[i] = fn.redraw(lines[row].split(b"\t")[i], info[0] + 1)
                out[row] = b"\t".join(fields)
                counts = self.counts[column]  # the worker counted this value already
                counts.masked -= 1
                counts.redrawn -= 1 if info[0] else 0
        self.rows += len(lines)

    def report(self):
        return {"rows": self.rows,
                "columns": {c: {"masked": n.masked, "redrawn": n.redrawn} for c, n in self.counts.items()}}

    def add_counts(self, report):
        """A worker's counts, added to these."""
        for column, n in report["columns"].items():
            self.counts[column].masked += n["masked"]
            self.counts[column].redrawn += n["redrawn"]


# --------------------------------------------------------------------------
# forked workers: the blocks of one stream masked on several CPUs


def _mask_worker(worker):
    """What a forked worker runs: blocks in, masked blocks (and the unique columns' draws) out."""
    def work(inbox, outbox):
        while True:
            msg = receive(inbox)
            if msg is None:
                send(outbox, ("counts", worker.report()))
                return
            out = worker.transform(msg.split(b"\n"))
            send(outbox, ("rows", b"\n".join(out), [(i, c, list(d)) for i, c, d in worker.deferred]))
    return work


class Workers(object):
    """`jobs` forked workers masking the blocks of one stream in turn; the main process keeps the order,
    settles the unique columns and writes. Forked before the command (and its stderr thread) starts."""

    def __init__(self, spec, ctx, jobs):
        self.pool = Pool(jobs, _mask_worker(TableMasker(spec, ctx, defer_unique=True)))
        self.inflight = collections.deque()
        self.turn = 0

    def put(self, lines, main, write):
        """Give a block to the next worker; write what comes back, in order, once every worker has one
        (the worker given a block has always handed back its last one: no pipe waits on another)."""
        if len(self.inflight) == len(self.pool):
            self._take(main, write)
        k = self.turn % len(self.pool)
        self.turn += 1
        self.pool.put(k, b"\n".join(lines))
        self.inflight.append((k, lines))

    def _take(self, main, write):
        k, lines = self.inflight.popleft()
        _kind, data, infos = self.pool.answer(k)
        out = data.split(b"\n")
        main.settle(lines, out, infos)
        write(b"\n".join(out) + b"\n")

    def finish(self, main, write):
        while self.inflight:
            self._take(main, write)
        for k in range(len(self.pool)):
            self.pool.put(k, None)
            main.add_counts(self.pool.answer(k)[1])
        self.pool.close()

    def close(self):
        self.pool.close()


def _start(command):
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise BadArguments("command must be a list of strings (an argv)")
    env = dict(os.environ)
    env.setdefault("PGCLIENTENCODING", "UTF8")
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
    except OSError as e:
        raise MaskError("cannot start %s: %s" % (command[0], e.strerror or e))
    tail = ToolStderr(proc.stderr)
    tail.start()
    return proc, tail


def _finish(proc, tail, what):
    while proc.stdout.read(1 << 20):  # whatever follows an end-of-data line: the command must not wait on it
        pass
    rc = proc.wait()
    if rc != 0:
        raise MaskError("%s failed (exit %d): %s" % (what, rc, tail.error()))


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _read_exact(f, n):
    chunks, left = [], n
    while left:
        block = f.read(min(left, 1 << 20))
        if not block:
            raise BadArguments("the header promised %d digest bytes, stdin ended after %d" % (n, n - left))
        chunks.append(block)
        left -= len(block)
    return b"".join(chunks)


def stream(stdin=None, stdout=None, stderr=None):
    """The filter: header and digests in, the command's rows masked out. Returns the exit code."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr
    start = time.monotonic()
    proc = workers = None
    try:
        try:
            header = json.loads(stdin.readline().decode("utf-8"))
        except ValueError:
            raise BadArguments("the first line on stdin must be the JSON header")
        if not isinstance(header, dict):
            raise BadArguments("the header must be a JSON object")
        count = header.get("avoid_count") or 0
        if not isinstance(count, int) or count < 0:
            raise BadArguments("avoid_count must be a whole number")
        form = header.get("avoid_format") or "dk64"
        if form not in ("dk64", "ds32"):
            raise BadArguments("avoid_format must be dk64 or ds32")
        if form == "ds32":
            digests, screen = None, Screen(unpack_screen(_read_exact(stdin, 4 * count)), slots=16).text()
        else:
            digests, screen = unpack_digests(_read_exact(stdin, 8 * count)), None
        spec = header.get("spec")
        if not isinstance(spec, dict):
            raise BadArguments("the header has no column spec")
        jobs = header.get("jobs") or 1
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise BadArguments("jobs must be a whole number of at least 1")
        avoid = membership(digests, lazy=jobs == 1) if digests is not None else None  # built before the forks
        ctx = Context(header.get("mask_key"), header.get("proof_key"), avoid, screen)
        masker = TableMasker(spec, ctx)  # every rule checked (Faker imported) before the command starts
        if jobs > 1:
            workers = Workers(spec, ctx, jobs)
        proc, tail = _start(header.get("command"))
        size = 0
        write = stdout.write
        for lines in iter_blocks(proc.stdout.read):
            if not lines:  # (an end-of-data line first in a block)
                continue
            size += sum(map(len, lines)) + len(lines)
            if workers is not None:
                workers.put(lines, masker, write)
            else:
                write(b"\n".join(masker.transform(lines)) + b"\n")
        if workers is not None:
            workers.finish(masker, write)
            workers = None
        _finish(proc, tail, header["command"][0])
        stdout.flush()
        report = masker.report()
        report.update(bytes=size, seconds=round(time.monotonic() - start, 3))
        stderr.write(json.dumps(report) + "\n")
        stderr.flush()
        return 0
    except (Exception, KeyboardInterrupt) as e:
        if proc is not None:
            _stop(proc)
        if workers is not None:
            workers.close()
        if isinstance(e, BrokenPipeError):
            message = "the reader of the masked rows went away (broken pipe)"
        else:
            message = str(e) if isinstance(e, HelperError) else "%s: %s" % (type(e).__name__, e)
        try:
            stderr.write("mask: %s\n" % " ".join(message.split())[:2000])
            stderr.flush()
        except (OSError, ValueError):
            pass
        return 1


# --------------------------------------------------------------------------
# digests of the originals (for the proof)


class _Reservoir(object):
    """A uniform sample of k of a stream of values (Algorithm L: a few random draws per replacement)."""

    def __init__(self, k, rng):
        self.k, self.rng, self.items, self.seen = k, rng, [], 0
        self.next = None
        self.w = 1.0

    def _skip(self):
        self.w *= math.exp(math.log(1.0 - self.rng.random()) / self.k)
        gap = math.log(1.0 - self.rng.random()) / math.log(1.0 - self.w) if self.w < 1.0 else 0.0
        self.next += int(math.floor(gap)) + 1

    def offer(self, value):
        idx = self.seen
        self.seen += 1
        if idx < self.k:
            self.items.append(value)
            if idx == self.k - 1:
                self.next = idx
                self._skip()
        elif idx == self.next:
            self.items[self.rng.randrange(self.k)] = value
            self._skip()


class _Digests(object):
    """One column's originals: counts, and the digests of their exact and normalised forms."""

    def __init__(self, name, rule, digest, sample, rng, label, screen_only=False):
        self.name, self.digest, self.sample, self.screen_only = name, digest, sample, screen_only
        self.rows = self.digested = self.short = 0
        self.exact, self.normal = array.array("Q"), array.array("Q")
        self.same = True  # every value digested was normalised already: exact is normal (packed once)
        self.screen = array.array("I") if array.array("I").itemsize == 4 else array.array("L")
        self.reservoir = _Reservoir(sample, rng) if sample else None
        self.paths = json_paths(rule, label) if rule and rule.get("kind") == "json" else None
        self.label = label
        self.plain = self.paths is None  # digested (or sampled) inline by digest_rows

    def add(self, field):
        """One field (not NULL) of the column."""
        text = decode_field(field)
        if self.paths is None:
            self._one(text)
            return
        if not text:
            return
        try:
            doc = json.loads(text)
        except ValueError:
            raise MaskError("%s: a value is not valid JSON, and a json rule masks JSON documents only: fix the "
                            "data or give the column another rule" % self.label)
        found = []
        for parts, leaf_rule in self.paths:
            if leaf_rule.get("kind") != "keep":
                walk(doc, parts, lambda node: _strings(node, found))
        for value in found:
            self._one(value)

    def _one(self, text):
        norm = normalise(text)
        if len(norm) < MIN_LENGTH:
            self.short += 1
            return
        self.digested += 1
        self.screen.append(zlib.crc32(norm.encode("utf-8", "surrogateescape")))
        if self.screen_only:
            return
        if self.reservoir is not None:
            self.reservoir.offer((text, norm))
        else:
            self.exact.append(self.digest(text))
            self.normal.append(self.digest(norm))
            self.same = False

    def result(self):
        sampled = self.reservoir is not None and self.reservoir.seen > self.sample
        if self.reservoir is not None:
            for text, norm in self.reservoir.items:
                self.exact.append(self.digest(text))
                self.normal.append(self.digest(norm))
        counts = {"rows": self.rows, "digested": self.digested, "skipped_short": self.short, "sampled": sampled}
        if self.screen_only:
            return counts, {"screen": base64.b64encode(pack_screen(self.screen)).decode("ascii")}
        normal = b64_digests(self.normal)
        exact = normal if self.same and self.reservoir is None else b64_digests(self.exact)
        return counts, {"exact": exact, "normalised": normal,
                        "screen": base64.b64encode(pack_screen(self.screen)).decode("ascii")}


def _keyed_digests(items, keyed):
    """array('Q') of the keyed digests of items (bytes), in their order."""
    out = array.array("Q")
    add, copy, from_bytes = out.append, keyed.copy, int.from_bytes
    for item in items:
        h = copy()
        h.update(item)
        add(from_bytes(h.digest(), "big"))
    return out


def _digest_column(acc, values, keyed):
    """A plain column's fields of a block (none NULL), digested in bulk: normalised by lowered_blob (a few
    C calls), then one keyed digest per value (and one more only where normalising changed it), the screen
    by C loops. Returns the fields that need a look of their own (escapes, odd whitespace, beyond ASCII)."""
    odd = []
    blob = lowered_blob(values)
    if blob is None:
        values, odd = plain_fields(values)
        blob = b"\n".join(values).lower()
    if not values:
        return odd
    lows = blob.split(b"\n")
    short = sum(map(MIN_LENGTH.__gt__, map(len, lows)))
    if short:
        keep = list(map(MIN_LENGTH.__le__, map(len, lows)))
        values, lows = list(itertools.compress(values, keep)), list(itertools.compress(lows, keep))
        acc.short += short
    acc.digested += len(lows)
    acc.screen.extend(map(zlib.crc32, lows))
    if acc.screen_only:
        return odd
    normal = _keyed_digests(lows, keyed)
    acc.normal.extend(normal)
    if lows == values:
        acc.exact.extend(normal)
    else:
        acc.exact.extend(_keyed_digests(values, keyed))
        acc.same = False
    return odd


def digest_rows(accs, lines, ncols, table, keyed):
    """Digest a block of COPY lines into the columns' accumulators: plain columns of a whole sample in bulk
    (_digest_column), sampled ones inline (normalise, the normalised digest, and the exact one only when
    the value is not normalised already), json ones by their leaves."""
    bulk = [(i, acc) for i, acc in accs if acc.plain and acc.reservoir is None]
    if bulk and lines:
        if set(map(bytes.count, lines, itertools.repeat(b"\t"))) == {ncols - 1}:
            fields = b"\t".join(lines).split(b"\t")
            for i, acc in bulk:
                values = fields[i::ncols]
                if NULL in values:
                    values = list(filter(NULL.__ne__, values))
                for field in _digest_column(acc, values, keyed):
                    acc._one(decode_field(field))
            accs_left = [(i, acc) for i, acc in accs if (i, acc) not in bulk]
            for _i, acc in bulk:
                acc.rows += len(lines)
            if not accs_left:
                return
            return _digest_inline(accs_left, lines, ncols, table, keyed)
    return _digest_inline(accs, lines, ncols, table, keyed)


def _digest_inline(accs, lines, ncols, table, keyed):
    """digest_rows row by row (a sample's columns; any block whose rows are not all ncols fields)."""
    copy, from_bytes, crc32 = keyed.copy, int.from_bytes, zlib.crc32
    plain = [(i, acc, acc.exact.append, acc.normal.append, acc.screen.append, acc.screen_only) for i, acc in accs
             if acc.plain]
    other = [(i, acc) for i, acc in accs if not acc.plain]
    for line in lines:
        fields = line.split(b"\t")
        if len(fields) != ncols:
            raise MaskError("%s: a row has %d fields, %d columns were named" % (table, len(fields), ncols))
        for i, acc, add_exact, add_normal, add_screen, screen_only in plain:
            field = fields[i]
            if field == NULL:
                continue
            text = field.decode("utf-8", "surrogateescape") if b"\\" not in field else decode_field(field)
            low = text.lower()  # normalise(text), inline
            if not (low.isprintable() and "  " not in low and low[:1] != " " and low[-1:] != " "):
                low = " ".join(low.split())
            if len(low) < MIN_LENGTH:
                acc.short += 1
                continue
            acc.digested += 1
            low_bytes = low.encode("utf-8", "surrogateescape")
            add_screen(crc32(low_bytes))  # of every value, sampled or not: the masks' avoid list
            if screen_only:
                continue
            sample = acc.reservoir
            if sample is not None:  # most values are skipped: only the drawn ones are kept, to digest at the end
                if sample.seen < sample.k or sample.seen == sample.next:
                    sample.offer((text, low))
                else:
                    sample.seen += 1
                continue
            h = copy()
            h.update(low_bytes)
            d = from_bytes(h.digest(), "big")
            add_normal(d)
            if low != text:
                h = copy()
                h.update(text.encode("utf-8", "surrogateescape"))
                d = from_bytes(h.digest(), "big")
                acc.same = False
            add_exact(d)
        for i, acc in other:
            if fields[i] != NULL:
                acc.add(fields[i])
    for _i, acc in accs:
        acc.rows += len(lines)


def _digest_worker(accs, ncols, table, keyed):
    """What a forked worker runs: blocks of rows in; at the end, each column's counts and digests out."""
    def work(inbox, outbox):
        while True:
            msg = receive(inbox)
            if msg is None:
                send(outbox, [(a.rows, a.digested, a.short, pack_digests(a.exact), pack_digests(a.normal),
                               pack_screen(a.screen), a.same) for _i, a in accs])  # sorted here: the parent merges runs
                return
            digest_rows(accs, msg.split(b"\n"), ncols, table, keyed)
    return work


def digests(args):
    """The digests of one table's original values of its masked columns.

    {"command": [argv printing COPY text of `columns`], "columns": [...], "proof_key": hex,
     "sample": "all" | N, "masks"?: {column: RULE} (json rules: their string leaves at the paths are
     digested), "table"?: name for messages, "jobs"?: forked workers digesting blocks (not for a sample),
     "only"?: "screen" (the screen values alone: no keyed digest is made, "digests" holds only "screen")}
    -> {"columns": {col: {"rows", "digested", "skipped_short", "sampled"}},
        "digests": {col: {"exact": b64 dk64, "normalised": b64 dk64, "screen": b64 ds32}}}
    (screen: _copytext.screen of every normalised value digested, sampled or not: the masks' avoid list and
    the scan's prefilter)
    A sample of N keeps N values per column, drawn uniformly (seeded by the proof key: one run, one sample).
    """
    command = args.get("command")
    columns = args.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise BadArguments("columns must be a list of column names")
    pk = proof_key_bytes(args.get("proof_key"))
    only = args.get("only")
    if only not in (None, "screen"):
        raise BadArguments("only must be 'screen' (or not given)")
    sample = args.get("sample", "all")
    if sample == "all" or sample is None or only == "screen":
        sample = None
    elif isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise BadArguments("sample must be 'all' or a whole number")
    masks = args.get("masks") or {}
    table = str(args.get("table") or "table")
    digest = digester(pk)
    accs = []
    for i, column in enumerate(columns):
        rng = random.Random(hashlib.blake2b(column.encode(), key=pk, digest_size=16).digest())
        accs.append((i, _Digests(column, masks.get(column), digest, sample, rng, "%s.%s" % (table, column),
                                 screen_only=only == "screen")))
    ncols = len(columns)
    jobs = args.get("jobs") or 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise BadArguments("jobs must be a whole number of at least 1")
    pool = Pool(jobs, _digest_worker(accs, ncols, table, digest.keyed)) if jobs > 1 and sample is None else None
    proc = None
    try:
        proc, tail = _start(command)
        turn = 0
        for lines in iter_blocks(proc.stdout.read):
            if pool is None:
                digest_rows(accs, lines, ncols, table, digest.keyed)
            else:
                pool.put(turn % len(pool), b"\n".join(lines))
                turn += 1
        _finish(proc, tail, command[0])
        if pool is not None:
            for k in range(len(pool)):
                pool.put(k, None)
            for k in range(len(pool)):
                for (_i, acc), (rows, digested, short, exact, normal, screen, same) in zip(accs, pool.answer(k)):
                    acc.same = acc.same and same
                    acc.rows += rows
                    acc.digested += digested
                    acc.short += short
                    acc.exact.extend(unpack_digests(exact))
                    acc.normal.extend(unpack_digests(normal))
                    acc.screen.extend(unpack_screen(screen))
    except BaseException:
        if proc is not None:
            _stop(proc)
        raise
    finally:
        if pool is not None:
            pool.close()
    out_counts, out_digests = {}, {}
    for _i, acc in accs:
        out_counts[acc.name], out_digests[acc.name] = acc.result()
    return {"columns": out_counts, "digests": out_digests}


READ_ONLY = {"digests"}  # what a dry-run may call (the stream only reads too: it is no action)
ACTIONS = {"digests": digests}


def main():
    if sys.argv[1:] == ["stream"]:
        code = stream()
        sys.stderr.flush()
        os._exit(code)  # not sys.exit: flushing a stdout the reader closed would print a second line
    sys.exit(serve(ACTIONS, name="mask.py", read_only=READ_ONLY))


if __name__ == "__main__":
    main()
