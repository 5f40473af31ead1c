"""PostgreSQL COPY text format, the proof's digests and their wire encoding, shared by mask.py and proof.py.

Standard library only, Python 3.9+. A helper imports it with
``from _copytext import (...)``; deploykit.transport.bundle puts this text in
place of that line (as it does for _common), so the host gets one program.

COPY text: one row a line, fields split by a tab; ``\\N`` is NULL; a field's
backslash escapes (``\\\\ \\b \\f \\n \\r \\t \\v``, octal ``\\NNN``, hex ``\\xHH``,
any other ``\\c`` = c) give its bytes, read as UTF-8 (surrogateescape: bytes of
another encoding survive a round trip). COPY TO writes only the escapes
`encode_field` writes, so ``encode_field(decode_field(f)) == f`` for what it wrote.

Digests (the shapes of issue 11): ``normalise(t) = " ".join(t.lower().split())``
and ``digest(key, t)`` = keyed BLAKE2b-64 of t's UTF-8, as an int. A set of
digests travels as "dk64": the digests sorted ascending, without duplicates,
each 8 bytes big-endian, concatenated (raw in the mask stream's header,
base64 in JSON answers and arguments).

The screen (a conservative prefilter, never the proof itself): ``screen(t)``
= zlib.crc32 of t's UTF-8 (t normalised). A "ds32" list is such values, 4
bytes big-endian each, in any order. It costs one C call per value, and whole
columns of a block are screened by C loops (`Screen`): the scan digests only
the few values it flags; the mask stream redraws an output it flags (an
original is always flagged, a few others too). It is unkeyed, so the same
data flags the same outputs in every run (the masks stay deterministic for
one key): on the target it says no more than the keyed digests beside it.
"""
import array
import base64
import bisect
import collections
import hashlib
import itertools
import operator
import re
import sys
import threading
import zlib

NULL = b"\\N"
MIN_LENGTH = 4  # a normalised value shorter than this is not digested: too common to prove anything

_SIMPLE = {ord("b"): b"\x08", ord("f"): b"\x0c", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t",
           ord("v"): b"\x0b"}
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.)|$)", re.S)
# the bytes COPY TO escapes, and what it writes for them
_SPECIAL = b"\\\t\n\r\x08\x0c\x0b"
_OUT = ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\x08", b"\\b"),
        (b"\x0c", b"\\f"), (b"\x0b", b"\\v"))


def _unescape(m):
    octal, hexa, other = m.group(1), m.group(2), m.group(3)
    if octal is not None:
        return bytes((int(octal, 8) & 0xFF,))
    if hexa is not None:
        return bytes((int(hexa, 16),))
    if other is None:  # a lone backslash ending the field: taken as itself
        return b"\\"
    return _SIMPLE.get(other[0], other)


def unescape_bytes(field):
    """A field's bytes after its escapes (the field is not NULL)."""
    if b"\\" not in field:
        return field
    return _ESCAPE.sub(_unescape, field)


def decode_field(field):
    """One field of a COPY text line (bytes) -> str, or None for NULL."""
    if field == NULL:
        return None
    if b"\\" not in field:
        return field.decode("utf-8", "surrogateescape")
    return _ESCAPE.sub(_unescape, field).decode("utf-8", "surrogateescape")


def escape_bytes(data):
    """Raw bytes -> the field COPY TO would write for them."""
    if len(data.translate(None, _SPECIAL)) == len(data):
        return data
    for raw, out in _OUT:
        data = data.replace(raw, out)
    return data


def encode_field(value):
    """str (or None for NULL) -> one field of a COPY text line (bytes), as COPY TO writes it."""
    if value is None:
        return NULL
    return escape_bytes(value.encode("utf-8", "surrogateescape"))


def split_line(line):
    """A COPY text line (bytes, without its newline) -> its decoded fields (None for NULL)."""
    return [decode_field(f) for f in line.split(b"\t")]


def join_line(values):
    """Decoded fields -> a COPY text line (bytes, without its newline)."""
    return b"\t".join(encode_field(v) for v in values)


def iter_lines(read, chunk=1 << 20):
    """The lines (bytes, no newline) of a COPY text stream read with read(n), up to its end or a `\\.` line."""
    rest = b""
    while True:
        block = read(chunk)
        if not block:
            break
        lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line == b"\\.":
                return
            yield line
    if rest and rest != b"\\.":
        yield rest


def iter_blocks(read, chunk=1 << 20, stop=True):
    """Lists of whole lines (bytes, no newline) of a stream read with read(n): a list per chunk read (the
    hot paths loop over a list, not a generator). With stop, the lines of one COPY text stream: they end at
    a `\\.` line; without, every line (a plain pg_dump, whose COPY blocks each end with one)."""
    rest = b""
    while True:
        block = read(chunk)
        if not block:
            break
        lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
        rest = lines.pop()
        if stop and b"\\." in lines:
            yield lines[:lines.index(b"\\.")]
            return
        if lines:
            yield lines
    if rest and not (stop and rest == b"\\."):
        yield [rest]


class ToolStderr(threading.Thread):
    """Reads a PostgreSQL tool's stderr to its end in a thread, keeping its first lines (a full pipe would
    stall the tool while its stdout is read). Start it after any fork."""

    def __init__(self, pipe):
        threading.Thread.__init__(self, daemon=True)
        self.pipe, self.lines = pipe, []

    def run(self):
        for raw in iter(self.pipe.readline, b""):
            if len(self.lines) < 20:
                self.lines.append(raw.decode("utf-8", "replace"))

    def error(self):
        self.join(5)
        return tool_error(self.lines)


def tool_error(lines):
    """The line of a PostgreSQL tool's stderr that says what went wrong (its first ERROR/FATAL/error line;
    psql ends with the statement and a caret, which say nothing)."""
    lines = [line.strip() for line in lines if line and line.strip()]
    for line in lines:
        if line.startswith(("ERROR:", "FATAL:")) or ": error:" in line or "ERROR:  " in line:
            return line
    return lines[0] if lines else "no message"


# --------------------------------------------------------------------------
# the proof's digests


def normalise(text):
    """Case and whitespace folded: how a value is compared when not compared exactly.

    Exactly ``" ".join(text.lower().split())``; faster for text already spaced by single spaces (every
    whitespace character but the ASCII space is unprintable, so isprintable() rules them out)."""
    low = text.lower()
    if low.isprintable() and "  " not in low and low[:1] != " " and low[-1:] != " ":
        return low
    return " ".join(low.split())


def digest(proof_key, text):
    """The keyed 64-bit digest of a text, as an int."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), key=proof_key,
                                          digest_size=8).digest(), "big")


def digester(proof_key):
    """digest(proof_key, .) as a fast closure: a copy of the keyed state, the key block hashed once
    (`.keyed` is that state, for a hot loop to copy inline)."""
    keyed = hashlib.blake2b(key=proof_key, digest_size=8)
    copy, from_bytes = keyed.copy, int.from_bytes

    def one(text):
        h = copy()
        h.update(text.encode("utf-8", "surrogateescape"))
        return from_bytes(h.digest(), "big")
    one.keyed = keyed
    return one


def screen(low):
    """The screen value of one normalised value's UTF-8."""
    return zlib.crc32(low)


_ODD_TEXT = re.compile(r"[^\S\n ]|  | \n|\n |\A | \Z")


def lowered_blob(values):
    """The UTF-8 of normalise() of many COPY fields at once (bytes, none NULL), joined by newlines, in a
    few C calls; None when one of them needs a look of its own (a backslash escape, whitespace other than
    single spaces between words). Such text is normalised by lower() alone (str.split() splits only at
    its single spaces)."""
    blob = b"\n".join(values)
    if b"\\" in blob:
        return None
    if blob.isascii():  # raw tabs, newlines, \r, \v, \f are escaped in COPY text: only \x1c-\x1f and spaces remain
        if (b"  " in blob or b" \n" in blob or b"\n " in blob or blob[:1] == b" " or blob[-1:] == b" "
                or b"\x1c" in blob or b"\x1d" in blob or b"\x1e" in blob or b"\x1f" in blob):
            return None
        return blob.lower()
    text = blob.decode("utf-8", "surrogateescape")
    if _ODD_TEXT.search(text):
        return None
    return text.lower().encode("utf-8", "surrogateescape")


_ODD_FIELD = re.compile(rb"[\\\t\x0b\x0c\r\x1c-\x1f\x80-\xff]|  |\A | \Z")


def plain_fields(values):
    """(plain, odd): the fields whose normalise() is their ASCII lower case, and the others (an escape,
    odd whitespace, bytes beyond ASCII), for a block lowered_blob refused (one look per field)."""
    plain, odd = [], []
    search = _ODD_FIELD.search
    for v in values:
        (odd if search(v) else plain).append(v)
    return plain, odd


def lowered(values):
    """lowered_blob's values as a list (None as there)."""
    if not values:
        return []
    blob = lowered_blob(values)
    return None if blob is None else blob.split(b"\n")


def pack_screen(values):
    """Screen values (ints) -> ds32 bytes (4 bytes big-endian each, as given)."""
    arr = array.array("I", values) if array.array("I").itemsize == 4 else array.array("L", values)
    if sys.byteorder == "little":
        arr.byteswap()
    return arr.tobytes()


def unpack_screen(data):
    """ds32 bytes -> array of the screen values."""
    if len(data) % 4:
        raise ValueError("a ds32 screen list is a multiple of 4 bytes long, got %d" % len(data))
    arr = array.array("I") if array.array("I").itemsize == 4 else array.array("L")
    arr.frombytes(data)
    if sys.byteorder == "little":
        arr.byteswap()
    return arr


class Screen(object):
    """Which normalised values may be originals: a byte map indexed by the top bits of each original's
    screen value (`slots` an original, up to 128 MB), built and read by C loops. It never misses an
    original; it flags a few others (about 1 in `slots`; more past 2 million originals at 64)."""

    MAX_BITS = 27

    def __init__(self, values, slots=64):
        n = len(values)
        bits = 16
        while (1 << bits) < slots * n and bits < self.MAX_BITS:
            bits += 1
        self.shift = 32 - bits
        self.map = bytearray(1 << bits)
        rshift, repeat = operator.rshift, itertools.repeat
        collections.deque(map(self.map.__setitem__, map(rshift, values, repeat(self.shift)), repeat(1)), 0)

    def flags(self, lows):
        """bytes: 1 where lows[i] (normalised UTF-8) may be an original, else 0."""
        return bytes(map(self.map.__getitem__, map(operator.rshift, map(zlib.crc32, lows),
                                                    itertools.repeat(self.shift))))

    def text(self):
        """fn(normalised text) -> whether it may be an original (one value at a time, for the masks)."""
        table, shift, crc32 = self.map, self.shift, zlib.crc32

        def maybe(norm):
            return table[crc32(norm.encode("utf-8", "surrogateescape")) >> shift] == 1
        return maybe


def pack_digests(values):
    """Digests (ints, any order, duplicates allowed) -> dk64 bytes: sorted, unique, 8 bytes big-endian each.
    (Sorted lists concatenated sort fast: timsort merges their runs.)"""
    ordered = sorted(values)
    if len(set(ordered)) != len(ordered):
        ordered = list(dict.fromkeys(ordered))  # sorted: the first of each run of equal digests, in order
    arr = array.array("Q", ordered)
    if sys.byteorder == "little":
        arr.byteswap()
    return arr.tobytes()


def unpack_digests(data):
    """dk64 bytes -> array('Q') of the digests, ascending."""
    if len(data) % 8:
        raise ValueError("a dk64 digest list is a multiple of 8 bytes long, got %d" % len(data))
    arr = array.array("Q")
    arr.frombytes(data)
    if sys.byteorder == "little":
        arr.byteswap()
    return arr


def b64_digests(values):
    """Digests -> base64 text of their dk64 bytes (how they travel in JSON)."""
    return base64.b64encode(pack_digests(values)).decode("ascii")


def digests_b64(text):
    """base64 text of dk64 bytes -> array('Q') of the digests, ascending."""
    return unpack_digests(base64.b64decode(text or "", validate=True))


def merge_b64(*texts):
    """Several base64 dk64 lists -> one (their union)."""
    out = set()
    for text in texts:
        out.update(digests_b64(text))
    return b64_digests(out)


def membership(sorted_digests, lazy=False):
    """A fast `d in digests` for a sorted array('Q'): a bitmap of the high bits first (one index, most
    misses end there), then a bisect on the array itself. No set of millions of ints is built.

    Building the bitmap costs a Python step per digest (~0.6 s for 3 million): lazy waits until a quarter
    as many lookups have been made by bisect alone (a small table's stream never pays for it). Eager
    answers also carry `.bitmap` and `.shift`, for a hot loop to test the bitmap inline."""
    arr = sorted_digests
    n = len(arr)
    if not n:
        empty = lambda d: False  # noqa: E731
        empty.bitmap, empty.shift = b"\0", 64
        return empty
    bits = 1 << 16
    while bits < 16 * n and bits < (1 << 28):
        bits <<= 1
    shift = 64 - bits.bit_length() + 1
    bisect_left = bisect.bisect_left

    def build():
        bitmap = bytearray(bits >> 3)
        for d in arr:
            i = d >> shift
            bitmap[i >> 3] |= 1 << (i & 7)
        return bitmap

    if not lazy:
        bitmap = build()

        def contains(d):
            i = d >> shift
            if not bitmap[i >> 3] & (1 << (i & 7)):
                return False
            j = bisect_left(arr, d)
            return j < n and arr[j] == d
        contains.bitmap, contains.shift = bitmap, shift
        return contains

    later = None
    left = n // 4

    def contains_lazily(d):
        nonlocal later, left
        if later is not None:
            i = d >> shift
            if not later[i >> 3] & (1 << (i & 7)):
                return False
        else:
            left -= 1
            if left <= 0:
                later = build()
        j = bisect_left(arr, d)
        return j < n and arr[j] == d
    return contains_lazily
