"""The anchored body-signature matcher (`anchors`): every shape around the 4-byte anchor,
checked against expectations and against the YARA-X matcher on the same signatures."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.antivirus import hashes, hexsig
from mailyard.antivirus.anchors import ANCHOR, AnchorIndex, _window, plan, windows
from mailyard.antivirus.database import BodySignature, SignatureDatabase, _parse_ndb
from mailyard.antivirus.hashes import HashStore
from mailyard.antivirus.matcher import Matcher

FILL = b"." * 40


def _db(lines: list[str]) -> SignatureDatabase:
    db = SignatureDatabase()
    for i, line in enumerate(lines):
        _parse_ndb(db, line, f"t:{i}", "")
    return db


def _both(lines: list[str]) -> tuple[Matcher, Matcher]:
    db = _db(lines)
    return Matcher(db), Matcher(db, anchored=False)


# (signature line, matching data, near-miss data)
CASES = [
    ("Anchor.AtFileStart:0:*:6162636465", b"abcde" + FILL, b"abcdX" + FILL),
    ("Anchor.AtFileEnd:0:*:6162636465", FILL + b"abcde", FILL + b"abcd"),
    ("Anchor.WholeFile:0:*:6162636465", b"abcde", b"bcde"),
    ("Anchor.JumpAfter:0:*:61626364{2-4}7a7a", FILL + b"abcd12zz" + FILL,
     FILL + b"abcd12345zz" + FILL),
    ("Anchor.JumpBefore:0:*:7a7a{2-4}61626364", FILL + b"zz123abcd" + FILL,
     FILL + b"zz1abcd" + FILL),
    ("Anchor.JumpBeforeAtStart:0:*:7a7a{1-3}61626364", b"zz1abcd" + FILL, b"z1abcd" + FILL),
    ("Anchor.NibblesAround:0:*:4?61626364?5", FILL + b"Kabcd%" + FILL,
     FILL + b"Kabcd&" + FILL),
    ("Anchor.AnyBytesAround:0:*:????61626364??", b"12abcd3", b"1abcd3" + b""),
    ("Anchor.StarBefore:0:*:7374617274*61626364656667", b"start" + FILL * 3 + b"abcdefg",
     b"abcdefg" + FILL + b"start"),
    ("Anchor.StarAfter:0:*:61626364656667*656e64", b"abcdefg" + FILL * 3 + b"end",
     b"end" + FILL + b"abcdefg"),
    ("Anchor.OpenJump:0:*:61626364{3-}7a", FILL + b"abcd123z", FILL + b"abcd12z"),
    ("Anchor.AltBefore:0:*:(7878|797979)61626364", FILL + b"yyyabcd" + FILL,
     FILL + b"xyabcd" + FILL),
    ("Anchor.AltAfter:0:*:61626364(7878|797979)", FILL + b"abcdxx", FILL + b"abcdyy"),
    ("Anchor.NegatedNext:0:*:61626364!(30|31)7a", FILL + b"abcd2z", FILL + b"abcd1z"),
    ("Anchor.OffsetZero:0:0:61626364", b"abcd" + FILL, b" abcd" + FILL),
    ("Anchor.OffsetWithPrefix:0:3:7a??7a61626364", b"...z.zabcd" + FILL,
     b"....z.zabcd" + FILL),
    ("Anchor.OffsetShift:0:10,5:61626364", b"x" * 14 + b"abcd" + FILL,
     b"x" * 16 + b"abcd" + FILL),
    ("Anchor.OffsetShiftJump:0:2,2:7a{0-3}61626364", b"..z123abcd" + FILL,
     b".....z123abcd"),
    ("Anchor.OffsetEOF:0:EOF-6:616263646566", FILL + b"abcdef", FILL + b"abcdef."),
    ("Anchor.OffsetEOFShift:0:EOF-10,4:61626364", FILL + b"..abcd....", FILL + b"abcd"),
    ("Anchor.Repeated:0:*:61626364{1}7a", b"abcd.abcd.abcdxz", b"abcd.abcd.abcd.y"),
    ("Anchor.Overlapping:0:*:61616161{1}62", b"aaaaaaab" + FILL, b"aaaaaaa" + FILL),
    ("Anchor.LongestRunWins:0:*:6162??636465666768", FILL + b"ab.cdefgh", FILL + b"ab.cdefgX"),
    ("Anchor.TargetText:7:*:61626364", b"abcd", b""),
    # No fixed run of 4 bytes at the top level: the YARA-X side takes these.
    ("NoAnchor.Short:0:*:616263??646566", FILL + b"abc.def", FILL + b"abc.deX"),
    ("NoAnchor.InAlternative:0:*:(6162636465|7a7a7a7a7a)3132", FILL + b"zzzzz12",
     FILL + b"zzzz12"),
    ("NoAnchor.PE:1:EP+0:6162636465", b"", b""),
]


@pytest.mark.parametrize("line,hit,miss", CASES, ids=[c[0].split(":")[0] for c in CASES])
def test_anchored_signature_matches_and_near_miss(line, hit, miss):
    anchored, yara_only = _both([line])
    name = line.split(":")[0]
    expect_anchor = name.startswith("Anchor.")
    assert (len(anchored.anchors) == 1) == expect_anchor
    ftype = 7 if ":7:" in line else 0
    if hit:
        assert anchored.scan(hit, ftype) == [name]
        assert yara_only.scan(hit, ftype) == [name]
    if miss or ftype:
        assert anchored.scan(miss, ftype) == []
        assert yara_only.scan(miss, ftype) == []
    if ftype:
        assert anchored.scan(hit, 0) == []  # a text signature does not match a binary


def test_all_cases_in_one_table_agree_with_yara():
    lines = [c[0] for c in CASES]
    anchored, yara_only = _both(lines)
    for _, hit, miss in CASES:
        for data in (hit, miss, hit + miss, miss + hit):
            assert anchored.scan(data, 0) == yara_only.scan(data, 0) or \
                sorted(anchored.scan(data, 0)) == sorted(yara_only.scan(data, 0))


def test_many_anchored_signatures_share_and_collide():
    """Thousands of anchors (so the hashed table has collisions), some sharing an anchor."""
    rng = random.Random(5)
    runs = [rng.randbytes(6) for _ in range(3000)]
    lines = [f"Many.{i}:0:*:{run.hex()}{{1-2}}{run[:2].hex()}" for i, run in enumerate(runs)]
    lines += [f"Shared.{i}:0:*:{runs[0].hex()}??{i:02x}" for i in range(5)]
    anchored, yara_only = _both(lines)
    assert len(anchored.anchors) == len(lines)
    data = bytearray(rng.randbytes(200_000))
    for at, i in ((100, 7), (50_000, 2999), (199_000, 0)):
        sample = runs[i] + b"." + runs[i][:2]
        data[at:at + len(sample)] = sample
    data[150_000:150_008] = runs[0] + b"." + b"\x03"
    data = bytes(data)
    found = anchored.scan(data, 0)
    assert sorted(found) == sorted(yara_only.scan(data, 0))
    assert {"Many.7", "Many.2999", "Many.0", "Shared.3"} <= set(found)


def test_hit_inside_a_huge_object_is_found_across_chunk_edges():
    anchored, _ = _both(["Edge:0:*:6162636465666768"])
    for at in (16384 - 5, 16384 - 4, 16384 - 1, 16384, 3 * 16384 - 2):
        data = bytearray(b"\0" * 70_000)
        data[at:at + 8] = b"abcdefgh"
        assert anchored.scan(bytes(data), 0) == ["Edge"], at


# -- differential fuzz: anchored vs YARA-X on random signatures and data -----------------
_PIECES = ["6161", "6262", "61", "62", "6162", "??", "6?", "?1", "{1}", "{0-2}", "{-2}",
           "{2-}", "*", "(61|6262)", "!(61|63)", "(6162|62??62)"]


@st.composite
def _signature(draw):
    run = draw(st.sampled_from(["61626162", "6161616262", "62616262", "6162616261626162"]))
    before = draw(st.lists(st.sampled_from(_PIECES), max_size=3))
    after = draw(st.lists(st.sampled_from(_PIECES), max_size=3))
    edge = ["6261"]
    return "".join(edge + before + [run] + after + edge)


@example(body="6261!(61|63)61626162{1}{0-2}{2-}6261", offset="*", pieces=[])  # three gaps in a row
@settings(max_examples=150, deadline=None)
@given(_signature(), st.sampled_from(["*", "0", "2,3", "EOF-9", "EOF-12,4", "5"]),
       st.lists(st.sampled_from([b"a", b"b", b"ab", b"ba", b"c", b"abab", b"bbab"]),
                max_size=40))
def test_anchored_agrees_with_yara(body, offset, pieces):
    line = f"Fuzz:0:{offset}:{body}"
    anchored, yara_only = _both([line])
    assert len(anchored.anchors) == 1
    tokens = hexsig.parse(body)
    sample = bytes(random.Random(body + offset).choice(b"ab") for _ in range(6))
    data = b"".join(pieces)
    for candidate in (data, sample + data, sample + data[:9] + sample,
                      _instance(tokens, random.Random(len(data))) + data,
                      data + _instance(tokens, random.Random(len(pieces)))):
        assert anchored.scan(candidate, 0) == yara_only.scan(candidate, 0), candidate


def test_gaps_in_a_row_match_like_one_gap():
    """`{1}{0-2}{2-}` is `{3-}`; clamscan finds `babababxxxxba` with the `{3-}` form.

    (clamscan refuses gaps in a row as malformed; we accept them with the one meaning they
    can have, and YARA-X must not miss it: it did before adjacent gaps were merged.)
    """
    anchored, yara_only = _both(["Gaps:0:*:6261!(61|63)61626162{1}{0-2}{2-}6261"])
    for matcher in (anchored, yara_only):
        assert matcher.scan(b"babababxxxxba", 0) == ["Gaps"]
        assert matcher.scan(b"babababxba", 0) == []  # one byte between: too close


def _instance(tokens, rng) -> bytes:
    """Some bytes that match the signature (a random choice at each wildcard)."""
    out = b""
    for t in tokens:
        if isinstance(t, hexsig.Literal):
            out += t.data
        elif isinstance(t, hexsig.AnyByte):
            out += rng.choice([b"a", b"b", b"1"])
        elif isinstance(t, hexsig.Nibble):
            out += bytes([t.value | (0x01 if t.mask == 0xF0 else 0x60)])
        elif isinstance(t, hexsig.Jump):
            out += b"x" * (t.low + rng.randint(0, 2 if t.high is None else t.high - t.low))
        elif isinstance(t, hexsig.Alternatives):
            out += b"b" if t.negated else _instance(rng.choice(t.options), rng)
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789abcdef?*{}-()|!", min_size=2, max_size=40))
def test_summarize_agrees_with_parse(text):
    """The load-time fast path accepts nothing `parse` refuses, and plans the same."""
    summary = hexsig.summarize(text)
    if summary is None:
        return
    tokens = hexsig.parse(text)  # must not raise
    planned = plan(tokens, text)
    assert planned is not None
    assert (planned[0], planned[2], planned[3], planned[4], planned[5] is None) == summary


_HEX_DIGITS = "0123456789abcdefABCDEF"
_hex_pairs = st.integers(1, 6).flatmap(
    lambda n: st.text(alphabet=_HEX_DIGITS, min_size=2 * n, max_size=2 * n))
_token = st.one_of(
    _hex_pairs, _hex_pairs, st.just("??"), st.sampled_from(_HEX_DIGITS).map(lambda c: c + "?"),
    st.sampled_from(_HEX_DIGITS).map(lambda c: "?" + c), st.just("*"),
    st.sampled_from(["{2}", "{-3}", "{4-}", "{2-8}", "{9-2}", "{x}", "{}", "{3-3}"]),
    st.sampled_from(["g", "{", "}", "-", "(", ")", "|", "!", "a"]))
_group = st.tuples(st.booleans(), st.lists(st.lists(_token, max_size=2).map("".join),
                                           min_size=1, max_size=3)).map(
    lambda g: ("!(" if g[0] else "(") + "|".join(g[1]) + ")")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_token, _token, _group), min_size=1, max_size=6).map("".join))
def test_summarize_agrees_with_parse_on_signature_shapes(text):
    """As above, on texts built from the grammar's pieces (most are valid signatures), so
    the comparison covers runs, wildcards, jumps and groups, not only refusals."""
    test_summarize_agrees_with_parse.hypothesis.inner_test(text)


def test_summarize_takes_the_longest_run():
    # A regression: a later run replaced the first only when more than twice as long (bytes
    # were compared with hex digits), unlike plan(), which takes the first longest.
    assert hexsig.summarize("61626364??6162636465")[:3] == (b"abcde", 5, 5)
    assert hexsig.summarize("6162636465??61626364")[:3] == (b"abcde", 0, 0)


def test_summarize_takes_the_common_shapes():
    for body in ("6162636465", "61??62636465{2-8}66", "616263646566*6768",
                 "(6162|63)64656667", "!(61|62)6364656667", "6?616263643?"):
        assert hexsig.summarize(body) is not None, body
    for body in ("616263", "((61|62)|63)64656667", "{2}6162636465", "61626364{9-2}65",
                 "6162636"):
        assert hexsig.summarize(body) is None, body


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=ANCHOR, max_size=24).map(
    lambda run: run.translate(bytes.maketrans(b"\x01\x02\x03", b"\x00\xff\x90"))),
    max_size=40))
def test_windows_and_anchor_words_are_those_of_each_run(runs):
    """The vector passes at load: `windows` picks `_window`'s place in every run (runs
    rich in the common bytes), and `finish` reads the anchor at that place."""
    assert windows(runs) == [_window(run) for run in runs]
    index = AnchorIndex()
    index.extend([(f"S{i}", 0, None, run, at, 0, 0, len(run), None)
                  for i, (run, at) in enumerate(zip(runs, windows(runs)))])
    index.finish()
    expected = [int.from_bytes(run[at:at + ANCHOR], "little")
                for run, at in zip(runs, windows(runs))]
    assert index.keys.tolist() == sorted(expected)
    assert [expected[i] for i in index.ids.tolist()] == index.keys.tolist()


def test_uncompilable_pattern_is_no_match_not_a_crash():
    db = SignatureDatabase()
    db.body.append(BodySignature("Odd", 0, "*", hexsig.parse("61626364??65"), "t:1",
                                 "6162636??465"))  # a text parse() refuses
    anchored = Matcher(db)
    assert anchored.scan(b"abcd.e", 0) == []


# -- hash tables: the bulk loader takes what the line loader takes -----------------------
def test_bulk_hash_loader_equals_line_loader():
    rng = random.Random(3)
    lines, probes = [], []
    for i in range(4000):
        digest = rng.randbytes(rng.choice([16, 16, 20, 32])).hex()
        size = rng.choice([str(rng.randint(0, 10**9)), "*", "12", "007"])
        name = f"H.{i}"
        kind = i % 11
        if kind == 1:
            digest = digest.upper()
        elif kind == 2:
            name += ":73:255"
        elif kind == 3:
            lines.append(f"# comment {i}")
        elif kind == 4:
            lines.append("")
        elif kind == 5:
            name += "\r"
        elif kind == 6:
            digest = digest[:-1] + "g"  # not hex
        elif kind == 7:
            size = "1x"
        elif kind == 8:
            name = rng.choice(["Ignored.Name", "Ign", "Ign\r", "Ign ", "Ignored.Name:1",
                               "xIgnored.Name", "Ignored.Nam"])
        elif kind == 9:
            # What the in-word arithmetic must not take for hex digits or a size: control
            # bytes that OR 0x20 turns into digits, bytes >= 0x80, odd sizes.
            at = rng.randrange(len(digest))
            digest = digest[:at] + rng.choice("\x10\x19\x1a\xe9@G`g/_") + digest[at + 1:]
        elif kind == 10:
            size = rng.choice(["12345678", "123456789012", "+12", " 12", "1_0", "", "9" * 7,
                               "0", "\xb9", "1\x10"])
            name = rng.choice([name, " " + name, ":" + name, "", "\u00e9" + name])
        lines.append(f"{digest}:{size}:{name}")
        probes.append((digest.lower(), size))
    data = "\n".join(lines).encode() + b"\n"
    assert len(data) > 65536  # big enough for the bulk loader
    stores, errors = [], []
    for bulk in (True, False):
        store, errs = HashStore(), []
        store.load(data, ".X", {"Ignored.Name", "Ign"}, "f.hdb", errs, bulk=bulk)
        store.finish()
        stores.append(store)
        errors.append(errs)
    assert errors[0] == errors[1] and errors[0]
    assert len(stores[0]) == len(stores[1])
    for algorithm in ("md5", "sha1", "sha256"):
        tables = [st.tables[algorithm] for st in stores]
        assert list(tables[0].keys) == list(tables[1].keys)
        assert list(tables[0].refs) == list(tables[1].refs)
        assert tables[0].sizes == tables[1].sizes
    algorithm = {32: "md5", 40: "sha1", 64: "sha256"}
    for digest, size in probes:
        if len(digest) not in algorithm or not all(c in string.hexdigits for c in digest):
            continue
        n = int(size) if size.isascii() and size.isdigit() else -1
        for s in ({n, 12, 0} if n >= 0 else {12}):
            results = [st.lookup(algorithm[len(digest)], digest, s) for st in stores]
            assert results[0] == results[1]


def test_hash_size_bitmap_comes_with_the_first_sized_signature():
    """A table's 2 MiB size bitmap is allocated by the first signature with a size (most
    of a database's nine tables stay empty); `wanted` is the same either way."""
    digest = "d41d8cd98f00b204e9800998ecf8427e"
    store = HashStore()
    assert not store.tables["md5"].sizes and not store.wanted("md5", 0)
    store.load(f"{digest}:*:Any\n".encode(), "", set(), "a.hdb", [])
    store.finish()
    assert not store.tables["md5"].sizes and store.wanted("md5", 123)
    for bulk in (True, False):
        sized = HashStore()
        sized.load(f"{digest}:{(1 << 24) + 5}:Five\n".encode() * (1 if not bulk else 5000),
                   "", set(), "b.hdb", [], bulk=bulk)
        sized.finish()
        assert len(sized.tables["md5"].sizes) == 1 << 21
        assert sized.wanted("md5", 5) and sized.wanted("md5", (1 << 24) + 5)
        assert not sized.wanted("md5", 6) and not sized.tables["sha1"].sizes


@pytest.mark.parametrize("line", ["Zeros.Bounded:0:*:00000000{2}01",
                                  "Zeros.Plain:0:EOF-10:0000000000",
                                  "Zeros.Star:0:*:0000000000*01"])
def test_anchor_hitting_everywhere_is_verified_once_per_object(line):
    """A file of zeros hits an all-zero anchor at every position: after a few hits the
    signature is verified against the whole object and the anchor dropped (regression
    guard: one regex search per position was quadratic-ish)."""
    anchored, yara_only = _both([line])
    zeros = b"\0" * (512 << 10)  # below YARA-X's cap on recorded matches per string
    for data in (zeros, zeros + b"\0\0\1", zeros[:100] + b"\1", zeros + b"\0" * 20):
        assert anchored.scan(data, 0) == yara_only.scan(data, 0)


def test_hash_order_sorts_by_key_then_line_also_when_top_bits_collide():
    # keys sharing their top 40 bits (the fast sort's blind spot), duplicates, and a key
    # repeated far apart; the reference is the plain lexsort by (key, ref).
    rng = np.random.default_rng(9)
    base = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    top = np.uint64(0xABCDEF0123) << np.uint64(24)
    keys = np.concatenate([base, top | np.arange(50, 0, -1, dtype=np.uint64),
                           base[:40], [top | np.uint64(7)] * 3]).astype(np.uint64)
    refs = rng.permutation(len(keys)).astype(np.uint64)
    order = hashes._order_by_key_then_ref(keys, refs)
    assert (order == np.lexsort((refs, keys))).all()
