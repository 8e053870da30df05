"""The common lines of a whole `.ndb` file, found in a few numpy passes (the bulk pass).

Theory of operation: a large `.ndb` file is mostly lines of a few shapes,
`Name:0:Offset:Body` with a plain offset (`*`, `n`, `n,m`, `EOF-n`) and a body that is one
run of hex bytes, or two runs around one `??`, `*`, `{n-m}` or `(aa|bbcc)` group. Loaded
one line at a time, such a line costs several Python calls (split, a regex for the offset,
`hexsig.summarize`, its regex and tuples). Here the whole text is classified at once: the
positions of its non-hex bytes (numpy), then for every line where its colons are, how many
non-hex bytes its body has and which; for the lines of those shapes, the summary that
`hexsig.summarize` would return is worked out in vector passes, and per line only the
strings are cut out (`database._load_ndb_text`). Every other line — comments, blank lines,
other targets, offsets, shapes or field counts, runs shorter than `MIN_RUN`, anything odd —
goes to the line loop with its line number, so the database is the line loop's, line for
line (tests/antivirus/test_ndb_bulk.py compares the two, with hypothesis and a grid of
every shape's near misses).

Line numbers are those of `str.splitlines()`; the pass declines (returns None) a text with
other line breaks than `\\n` and `\\r\\n`, or with non-ASCII characters (whose string and
byte positions differ), and the line loop takes the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import getitem
from typing import NamedTuple

import numpy as np

from mailyard.antivirus.hexsig import MAX_JUMP, jump_span

MIN_RUN = 4  # bytes of the longest fixed run (hexsig.summarize's min_run)
# What str.splitlines() also breaks at, besides \n and \r\n (in ASCII).
_OTHER_BREAKS = "\x0b\x0c\x1c\x1d\x1e"
_COLON, _QUESTION, _STAR, _DASH, _BAR = (ord(c) for c in ":?*-|")
_OPEN_JUMP, _CLOSE_JUMP, _OPEN_GROUP, _CLOSE_GROUP = (ord(c) for c in "{}()")
_UNBOUNDED = -1


class Bulk(NamedTuple):
    """What `scan` found: the lines it took, as columns in line order, and the rest.

    Per taken line: its line index (0-based) in `lines`, and the name, offset and body fields
    as strings; `summaries` holds `hexsig.summarize(body)` of each (an iterator: it is
    consumed once). `rest`: (line index, line) of every other line, in order."""

    lines: list
    names: list
    offsets: list
    bodies: list
    summaries: Iterator
    rest: list


def plain_breaks(text: str) -> bool:
    """True when `text` is ASCII and breaks lines only at `\\n` and `\\r\\n`."""
    return (text.isascii() and not any(c in text for c in _OTHER_BREAKS)
            and ("\r" not in text or text.count("\r") == text.count("\r\n")))


def scan(text: str, plain_offset) -> Bulk | None:
    """Split an `.ndb` text into the lines of the common shapes and the rest; None when the
    text is not for the bulk pass (see the module's docstring). `plain_offset(offset)`
    says whether a non-`*` offset is a plain one (the line loop's own test)."""
    if not text or not plain_breaks(text):
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # the same lines (plain_breaks)
    raw = np.frombuffer(text.encode("ascii"), np.uint8)
    size = len(raw)
    # Every non-hex byte ("spot"): colons, line breaks, names, offsets, the bodies' specials.
    digit = (raw - np.uint8(48)) < 10
    letter = ((raw | np.uint8(32)) - np.uint8(97)) < 6
    spots = np.flatnonzero(~(digit | letter))
    chars = raw[spots]
    breaks = np.flatnonzero(chars == 10)  # each line's end, as an index into spots
    if text[-1] != "\n":
        breaks = np.concatenate((breaks, [len(spots)]))
    lines = len(breaks)
    line_start = np.concatenate(([0], breaks[:-1] + 1))  # first spot of each line
    starts = np.concatenate(([0], spots[breaks[:-1]] + 1))
    ends = (spots[breaks] if text[-1] == "\n"
            else np.concatenate((spots[breaks[:-1]], [size])))
    colon_count = np.concatenate(([0], np.cumsum(chars == _COLON)))
    colons = np.flatnonzero(chars == _COLON)
    if not len(colons):
        return Bulk([], [], [], [], iter(()), [(i, text[s:e]) for i, (s, e) in
                                               enumerate(zip(starts.tolist(), ends.tolist()))])
    before = colon_count[line_start]  # colons before the line
    candidate = colon_count[breaks] - before == 3
    last_colon = len(colons) - 1
    c1 = spots[colons[np.minimum(before, last_colon)]]
    c2 = spots[colons[np.minimum(before + 1, last_colon)]]
    third = colons[np.minimum(before + 2, last_colon)]  # an index into spots
    c3 = spots[third]
    # Name: not empty, and the line does not start with a blank or '#' (the line loop
    # strips lines and skips comments). Target: "0".
    first_byte = raw[np.minimum(starts, size - 1)]
    candidate &= (c1 > starts) & (first_byte > 32) & (first_byte != 35)
    candidate &= (c2 == c1 + 2) & (raw[np.minimum(c1 + 1, size - 1)] == 48)
    # The body's non-hex bytes: how many, the first and the last.
    specials = breaks - third - 1
    gap = specials > 0
    first = np.where(gap, spots[np.minimum(third + 1, len(spots) - 1)], ends)
    last = np.where(gap, spots[np.maximum(breaks - 1, 0)], ends - 1)
    first_char, last_char = raw[np.minimum(first, size - 1)], raw[np.minimum(last, size - 1)]
    run1, run2 = first - c3 - 1, ends - last - 1  # hex digits before and after the gap
    even = ((run1 & 1) == 0) & ((run2 & 1) == 0) & (run1 >= 2) & (run2 >= 2)
    pure = candidate & ~gap & ((run1 & 1) == 0) & (run1 >= 2 * MIN_RUN)
    anybyte = (candidate & even & (specials == 2) & (first_char == _QUESTION)
               & (last_char == _QUESTION) & (last == first + 1))
    star = candidate & even & (specials == 1) & (first_char == _STAR)
    # {n}, {n-m}, {-m}, {n-}: at most one '-' between the braces (digits are hex bytes).
    middle = chars[np.minimum(third + 2, len(spots) - 1)]
    jump = (candidate & even & ((specials == 2) | ((specials == 3) & (middle == _DASH)))
            & (first_char == _OPEN_JUMP) & (last_char == _CLOSE_JUMP))
    group = (candidate & even & (specials >= 2) & (first_char == _OPEN_GROUP)
             & (last_char == _CLOSE_GROUP))
    lows = np.zeros(lines, np.int64)
    highs = np.zeros(lines, np.int64)
    rows = np.flatnonzero(group)
    if len(rows):
        # (aa|bbcc): the spots after '(' up to ')' are '|'s then ')', and the options
        # between them whole bytes (>= 1); their shortest and longest, per line.
        count = specials[rows] - 1
        ends_at = np.cumsum(count)
        index = np.arange(ends_at[-1]) + np.repeat(third[rows] + 2 - (ends_at - count), count)
        option = spots[index] - spots[index - 1] - 1
        not_bar = chars[index] != _BAR
        not_bar[ends_at - 1] = False  # each line's ')' (checked above)
        wrong = (option & 1) | (option < 2) | not_bar
        segments = ends_at - count
        group[rows[np.add.reduceat(wrong, segments) != 0]] = False
        lows[rows] = np.minimum.reduceat(option, segments) >> 1
        highs[rows] = np.maximum.reduceat(option, segments) >> 1
    lows[anybyte], highs[anybyte] = 1, 1
    lows[star], highs[star] = 0, _UNBOUNDED
    rows = np.flatnonzero(jump)
    if len(rows):
        spans = np.fromiter(map(_JUMP_SPANS.__getitem__, map(text.__getitem__, map(
            slice, (first[rows] + 1).tolist(), last[rows].tolist()))), np.int64, len(rows))
        usable = spans >= 0
        jump[rows[~usable]] = False
        lows[rows], highs[rows] = spans >> 32, (spans & 0xFFFFFFFF) - 1
    # A summary needs a run of MIN_RUN bytes: the first longest of the two runs.
    size1, size2 = run1 >> 1, run2 >> 1
    gapped = anybyte | star | jump | group
    take_first = gapped & (size1 >= size2) & (size1 >= MIN_RUN)
    take_second = gapped & ~take_first & (size2 >= MIN_RUN)
    taken = pure | take_first | take_second
    # Plain offsets: '*' here, the others by the line loop's own test (few, repeated).
    starred = (c3 == c2 + 2) & (raw[np.minimum(c2 + 1, size - 1)] == _STAR)
    rows = np.flatnonzero(taken & ~starred)
    if len(rows):
        plain = _PlainOffsets(plain_offset)
        taken[rows[~np.fromiter(map(plain.__getitem__, map(text.__getitem__, map(
            slice, (c2[rows] + 1).tolist(), c3[rows].tolist()))), np.bool_, len(rows))]] = False
    rows = np.flatnonzero(taken)
    rest = np.flatnonzero(~taken).tolist()
    rest = [(i, text[s:e]) for i, s, e in zip(rest, starts[rest].tolist(), ends[rest].tolist())]
    if not len(rows):
        return Bulk([], [], [], [], iter(()), rest)
    # The strings: one split of the whole text at colons and line breaks, where line i's
    # fields start at i + (colons before it); the runs cut from the bodies.
    fields = text.replace("\n", ":").split(":")
    at = rows + before[rows]
    names, offsets, bodies = (_pick(fields, at + k) for k in (0, 2, 3))
    unbounded = highs[rows] == _UNBOUNDED
    second = take_second[rows]
    body_start = c3[rows] + 1
    run = np.where(second, last[rows] + 1, body_start) - body_start
    run_end = np.where(second | pure[rows], ends[rows], first[rows]) - body_start
    runs = map(bytes.fromhex, map(getitem, bodies, map(slice, run.tolist(), run_end.tolist())))
    pre_max = np.where(second, size1[rows] + highs[rows], 0).astype(object)
    pre_max[second & unbounded] = None
    total_max = np.where(pure[rows], size1[rows], size1[rows] + highs[rows] + size2[rows])
    total_max = total_max.astype(object)
    total_max[~pure[rows] & unbounded] = None
    pre_min = np.where(second, size1[rows] + lows[rows], 0)
    summaries = zip(runs, pre_min.tolist(), pre_max.tolist(), total_max.tolist(),
                    pure[rows].tolist())
    return Bulk(rows.tolist(), names, offsets, bodies, summaries, rest)


def _pick(items: list, indexes) -> list:
    """items[i] for each i (ascending): one slice per stretch of lines of 4 fields each,
    which is most of a file."""
    if not len(indexes):
        return []
    cuts = np.flatnonzero(np.diff(indexes) != 4) + 1
    firsts = np.concatenate(([0], cuts)).tolist()
    lasts = np.concatenate((cuts - 1, [len(indexes) - 1])).tolist()
    if len(firsts) == 1:
        return items[int(indexes[0]):int(indexes[-1]) + 1:4]
    picked: list = []
    for a, b in zip(indexes[firsts].tolist(), indexes[lasts].tolist()):
        picked += items[a:b + 1:4]
    return picked


class _JumpSpans(dict):
    """Jump text (between the braces) -> low << 32 | (high + 1), high + 1 being 0 when
    unbounded; -1 when malformed or larger than summarize takes. Filled as needed."""

    def __missing__(self, inner: str) -> int:
        span = jump_span(inner)
        if span is None or max(span[0], span[1] or 0) > MAX_JUMP:
            value = -1
        else:
            value = span[0] << 32 | (0 if span[1] is None else span[1] + 1)
        self[inner] = value
        return value


_JUMP_SPANS = _JumpSpans()


class _PlainOffsets(dict):
    """Offset text -> is it plain (`plain_offset`), each text tested once."""

    def __init__(self, plain_offset) -> None:
        super().__init__()
        self.plain_offset = plain_offset

    def __missing__(self, offset: str) -> bool:
        value = self[offset] = bool(self.plain_offset(offset))
        return value
