"""The `.ndb` bulk pass (`antivirus.ndb_bulk`) against the line loop it stands in for.

The bulk pass must give the database the line loop gives, line for line: the same body
signatures in the same order with the same fields (summary included), the same errors
(file:line and message) and the same `unsupported` counts. The texts are built from the
pieces of the format that the pass looks at (fields, runs, gaps, groups, line breaks), so
that near-misses of its shapes — odd runs, short runs, bad jumps, nested or negated
groups, extra fields, blanks, other line breaks, non-ASCII — come up often."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.antivirus import database, hexsig, ndb_bulk
from mailyard.antivirus.database import SignatureDatabase

_GOOD_RUNS = st.sampled_from(["61626364", "6162636465", "AbCdEf0123", "0011223344556677",
                              "61626364656667", "61", "6162", "616263"])
_RUNS = st.one_of(_GOOD_RUNS, st.sampled_from(["", "6", "616", "61626", "6x", "61 62"]))
_SHAPE_GAPS = ["??", "*", "{2-8}", "{3}", "{-4}", "{5-}", "{0}", "{0-0}", "(aa|bbcc)",
               "(aabb)", "(aa|bb|ccdd|eeff00)", "(0011|22)"]
_GOOD_GAPS = st.sampled_from(_SHAPE_GAPS)
_NEAR_GAPS = [
    "{9-2}", "{a}", "{}", "{-}", "{1-2-3}", "{1073741825}", "{99999999999999999999}",
    "(a|bb)", "(aaa|bb)", "(aa|bbb)", "!(aa|bb)", "(|aa)", "(aa|)", "(aa||bb)", "(aa|b?)", "((aa|bb)|cc)",
    "(aa*bb)", "(aa-bb|cc)", "(aa)bb(cc)", "(aa|bb", "aa|bb)", "?*", "*?", "?-", "???",
    "**", "?a", "a?", "{", "}", "(", ")", "|", "-", "#", " ", "x"]
_GAPS = st.one_of(_GOOD_GAPS, _GOOD_GAPS, st.sampled_from(_NEAR_GAPS))
_BODIES = st.one_of(
    _GOOD_RUNS, st.builds(lambda a, g, b: a + g + b, _GOOD_RUNS, _GOOD_GAPS, _GOOD_RUNS),
    st.builds(lambda a, g, b: a + g + b, _GOOD_RUNS, _GAPS, _GOOD_RUNS),
    _RUNS, st.builds(lambda a, g, b: a + g + b, _RUNS, _GAPS, _RUNS),
    st.builds(lambda a, g, b, h, c: a + g + b + h + c, _RUNS, _GAPS, _RUNS, _GAPS, _RUNS))
_GOOD_LINES = st.builds(
    lambda name, offset, body: f"{name}:0:{offset}:{body}",
    st.sampled_from(["Sig.A", "Sig.B", "Ignored.Sig", "Odd Name", "Sig#1", " Lead", "#Note",
                     "\tTab", "\x00"]),
    st.sampled_from(["*", "*", "0", "12,4", "EOF-8", "EOF-8,2"]), _BODIES)
_ANY_LINES = st.builds(
    lambda name, target, offset, body, extra: f"{name}:{target}:{offset}:{body}{extra}",
    st.sampled_from(["Sig.A", "", " Lead", "#Comment", "\tTab", "Sig.A\x00"]),
    st.sampled_from(["0", "1", "*", "00", " 0", ""]),
    st.sampled_from(["*", "0", "EP+0", "VI", "x", "0,x", "", "*,1", " *", "EOF-"]),
    _BODIES, st.sampled_from(["", ":1", ":1:255", " ", "\t", "\r"]))
# Mostly lines of the pass's shapes or one step from them, with a few of anything else.
_LINES = st.one_of(_GOOD_LINES, _GOOD_LINES, _GOOD_LINES, _ANY_LINES,
                   st.sampled_from(["", "# comment", "  ", "Short:0", "A:0:*:6162636465:1"]))
_BREAKS = st.sampled_from(["\n"] * 8 + ["\r\n", "\n\n"])
# Rarely, something that makes the pass decline the whole text.
_SPOILERS = st.sampled_from([""] * 10 + ["\r", "\x0c", "\x1e", "Ä", "\u2028"])


def _both(text: str, first: int = 1):
    """(bulk pass, line loop) databases of one text, with a suffix and an ignore list."""
    loaded = []
    for load in (database._load_ndb_text,
                 lambda db, t, *rest: database._load_ndb(db, t.splitlines(), *rest)):
        db = SignatureDatabase(ignored={"Ignored.Sig"})
        errors: list[str] = []
        load(db, text, first, "/db/x.ndb", ".UNOFFICIAL", errors)
        loaded.append((db.body, errors, db.unsupported))
    return loaded


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_LINES, _BREAKS), max_size=30), st.integers(1, 5000),
       st.booleans(), _SPOILERS, st.integers(0, 10**6))
@example([("Sig.A:0:*:61626364??6566", "\r\n"), ("Sig.B:0:12,4:(aa|bbcc)6162636465", "\n")],
         1, True, "", 0)
def test_bulk_pass_loads_as_the_line_loop(lines, first, last_break, spoiler, where):
    text = "".join(line + brk for line, brk in lines)
    if not last_break:
        text = text.rstrip("\r\n")
    where %= len(text) + 1
    text = text[:where] + spoiler + text[where:]
    bulk, reference = _both(text, first)
    assert bulk == reference


def test_bulk_pass_takes_the_common_shapes():
    """The shapes of a generated database all go through the bulk pass (none is left to
    the line loop), with the summaries `hexsig.summarize` gives."""
    bodies = ["4a58b791df6af1d8303e61cd", "c4bb86c32710??3c344c412f1e",
              "7bd5d47ecec2{2-8}a3d81173e578", "1bcccea62e61(e9c9|bf35)8c2e07187c",
              "a8c74107e66cb0e4*b2b3f4d58d82ca63", "6162{-3}636465666768",
              "61(62|6364)6364656667", "616263646566(61|6263)616263646566",
              "6162636465{5-}61626364656667"]
    offsets = ["*", "0,64", "EOF-10", "7"]
    text = "".join(f"S.{i}:0:{offsets[i % 4]}:{body}\n" for i, body in enumerate(bodies))
    bulk = ndb_bulk.scan(text, database._PLAIN_OFFSET.fullmatch)
    assert bulk.rest == [] and bulk.lines == list(range(len(bodies)))
    assert bulk.bodies == bodies
    assert list(bulk.summaries) == [hexsig.summarize(body) for body in bodies]
    loaded, reference = _both(text)
    assert loaded == reference and len(loaded[0]) == len(bodies)


def test_bulk_pass_on_every_gap_between_every_pair_of_runs():
    """Each gap of the strategies above (the pass's shapes and their near misses) between
    runs of every length class, at the start, middle and end of a body: one text, loaded
    both ways."""
    runs = ["", "61", "616263", "61626364", "6162636465", "616", "0011223344556677"]
    lines = [f"S.{i}:0:{'*' if i % 3 else '0,8'}:{a}{gap}{b}"
             for i, (a, gap, b) in enumerate((a, gap, b) for gap in _SHAPE_GAPS + _NEAR_GAPS
                                             for a in runs for b in runs)]
    for name in (" Lead", "#Note", "\tTab", "", "Ignored.Sig", "A\x00"):
        lines.append(f"{name}:0:*:6162636465")
    text = "\n".join(lines) + "\n"
    loaded, reference = _both(text)
    assert loaded == reference
    taken = ndb_bulk.scan(text, database._PLAIN_OFFSET.fullmatch).lines
    assert len(taken) > len(lines) // 10  # the pass did take part of it


def test_bulk_pass_declines_other_line_breaks_and_non_ascii():
    """Where str.splitlines() would number lines differently from '\\n' (a lone '\\r',
    a form feed...) or string and byte positions differ, the line loop takes the file."""
    for text in ("A:0:*:61626364\rB:0:*:61626364\n", "A:0:*:61626364\x0cB:0:*:61626364\n",
                 "Ä:0:*:61626364\n"):
        assert ndb_bulk.scan(text, database._PLAIN_OFFSET.fullmatch) is None
        loaded, reference = _both(text)
        assert loaded == reference and len(loaded[0]) == 2 - text.startswith("Ä")
    assert ndb_bulk.scan("A:0:*:61626364\r\n", database._PLAIN_OFFSET.fullmatch).rest == []
