"""Body signatures found by a fixed 4-byte anchor and verified where the anchor hits.

Theory of operation: nearly every ClamAV body signature contains a run of at least four
fixed bytes. At load, each such signature picks a 4-byte window of its longest top-level
fixed run (its anchor) and records how far the signature's start can lie before that run
(the min/max length of the tokens in front) and how long the whole signature can be. The
anchors go into a sorted `uint32` array and a bit table of hashed anchors (numpy). A scan
views the data as one overlapping little-endian `uint32` per position, hashes and looks
them up in the table 16 KiB at a time (a few vector operations), and checks the rare
candidates exactly against the sorted array. Only a true anchor hit costs Python work:
the whole fixed run is compared in place, then — unless the signature is that run alone —
its full pattern, compiled on first use to a `regex` bytes pattern, is searched in the
window where a match through this anchor must lie, with the signature's offset (`n`,
`n,shift`, `EOF-n`) narrowing the start. A match found in that window is a match of the
signature, so a hit is never a false positive; and every match contains its anchor, so no
match is missed. Loading costs a few microseconds per signature and compiles nothing,
which is why 100,000 signatures load in a fraction of a second where compiling them to
YARA-X took seconds (bench/RESULTS.md). Signatures without such a run, with PE/ELF
offsets, and logical signatures stay with YARA-X (`matcher`).
"""

from __future__ import annotations

import time

import numpy as np
import regex

from mailyard.antivirus import hexsig

ANCHOR = 4
MAX_JUMP = 1 << 30  # larger jumps go to YARA-X, which reports them if it refuses them
_CHUNK = 1 << 14
_HITS_BEFORE_WHOLE = 64
_MULT = np.uint32(0x9E3779B1)
_COMMON = b"\x00\xff\x20\x90\xcc"
_IS_COMMON = np.zeros(256, np.bool_)
_IS_COMMON[np.frombuffer(_COMMON, np.uint8)] = True


class MatchTimeout(Exception):
    """The scan's time budget ran out while verifying anchor hits."""


def _span(token) -> tuple[int, int | None]:
    """(min, max) bytes a token matches; max None = unbounded."""
    if isinstance(token, hexsig.Literal):
        return len(token.data), len(token.data)
    if isinstance(token, hexsig.Jump):
        return token.low, token.high
    if isinstance(token, hexsig.Alternatives):
        if token.negated:
            return 1, 1
        spans = [_seq_span(option) for option in token.options]
        highs = [h for _, h in spans]
        return min(lo for lo, _ in spans), None if None in highs else max(highs)
    return 1, 1  # AnyByte, Nibble


def _seq_span(tokens) -> tuple[int, int | None]:
    low, high = 0, 0
    for token in tokens:
        lo, hi = _span(token)
        low += lo
        high = None if high is None or hi is None else high + hi
    return low, high


def _too_far(tokens) -> bool:
    for t in tokens:
        if isinstance(t, hexsig.Jump) and max(t.low, t.high or 0) > MAX_JUMP:
            return True
        if isinstance(t, hexsig.Alternatives) and any(_too_far(o) for o in t.options):
            return True
    return False


def _window(run: bytes) -> int:
    """Where in a fixed run to take the 4-byte anchor: of its start, middle and end, the
    window with the fewest common bytes (zero, 0xFF, space, NOP, INT3)."""
    if len(run) == ANCHOR or len(run[:ANCHOR].translate(None, _COMMON)) == ANCHOR:
        return 0  # the common case: the start is as good as any
    best, best_score = 0, -1
    for at in (0, len(run) - ANCHOR, (len(run) - ANCHOR) >> 1):
        score = len(run[at:at + ANCHOR].translate(None, _COMMON))
        if score > best_score:
            best, best_score = at, score
    return best


def plan(tokens: tuple, text: str):
    """The anchored form of a parsed signature, or None when it has no usable anchor:
    (run, anchor position in run, pre_min, pre_max, total_max, pattern text or None)."""
    if _too_far(tokens):
        return None
    best = None
    low, high = 0, 0
    for token in tokens:
        if isinstance(token, hexsig.Literal) and len(token.data) >= ANCHOR and (
                best is None or len(token.data) > len(best[0])):
            best = (token.data, low, high)
        lo, hi = _span(token)
        low += lo
        high = None if high is None or hi is None else high + hi
    if best is None:
        return None
    run, pre_min, pre_max = best
    if len(tokens) == 1:
        pattern = None
    else:  # the hex text, parsed again on the first hit; or, without one, the regex
        pattern = text or "re:" + hexsig.to_yara_regex(tokens)
    return (run, _window(run), pre_min, pre_max, high, pattern)


def windows(runs: list[bytes]) -> list[int]:
    """`_window` of each run, for many at once: the common case (no common byte in the
    first four) in vector passes, the others one by one (this runs for every signature
    at load)."""
    if not runs:
        return []
    joined = np.frombuffer(b"".join(runs), np.uint8)
    lengths = np.fromiter(map(len, runs), np.int64, len(runs))
    starts = np.cumsum(lengths) - lengths
    common = np.concatenate(([0], np.cumsum(_IS_COMMON[joined])))
    clean = (lengths == ANCHOR) | (common[starts + ANCHOR] == common[starts])
    at = np.zeros(len(runs), np.int64)
    rows = np.flatnonzero(~clean)
    at[rows] = [_window(runs[i]) for i in rows.tolist()]
    return at.tolist()


class AnchorIndex:
    """Anchored body signatures: `add(...)` each, `finish()`, then `scan(data, ftype)`."""

    def __init__(self) -> None:
        # per signature: (name, target, offset check, run, anchor-in-run, pre_min, pre_max,
        # total_max, pattern text or None). Offset check: (base, shift, from_end) or None.
        self.sigs: list[tuple] = []
        self.keys = np.zeros(0, np.uint32)
        self.ids = np.zeros(0, np.int64)
        self._regex: dict[int, object] = {}
        self._key_list: list[int] | None = None
        self._id_list: list[int] | None = None
        self._table = np.zeros(1, np.bool_)
        self._shift = np.uint32(31)

    def __len__(self) -> int:
        return len(self.sigs)

    def extend(self, rows: list[tuple]) -> None:
        """Add signatures as rows of `sigs` (name, target, check, then `plan`'s tuple)."""
        self.sigs.extend(rows)

    def finish(self) -> None:
        # Each signature's anchor: the 4 bytes at `at` in its run, read as one
        # little-endian word of all the runs joined (numpy, no slice per signature).
        sigs = self.sigs
        runs = [sig[3] for sig in sigs]
        joined = b"".join(runs) + bytes(ANCHOR)
        lengths = np.fromiter(map(len, runs), np.int64, len(runs))
        at = (np.cumsum(lengths) - lengths
              + np.fromiter((sig[4] for sig in sigs), np.int64, len(sigs)))
        words = np.ndarray((len(joined) - ANCHOR + 1,), "<u4", buffer=joined, strides=(1,))
        anchors = words[at].astype(np.uint32)
        order = np.argsort(anchors, kind="stable")
        self.keys = anchors[order]
        self.ids = order.astype(np.int64)
        self._build_table()

    def _build_table(self) -> None:
        # ~2.5% of the table set: few false candidates, and small enough to stay in cache.
        bits = min(24, max(12, int(len(self.keys) * 40).bit_length()))
        self._shift = np.uint32(32 - bits)
        self._table = np.zeros(1 << bits, np.bool_)
        if len(self.keys):
            self._table[(self.keys * _MULT) >> self._shift] = True

    def __getstate__(self):
        return {"sigs": self.sigs, "keys": self.keys, "ids": self.ids}

    def __setstate__(self, state) -> None:
        self.sigs = state["sigs"]
        self.keys = state["keys"]
        self.ids = state["ids"]
        self._regex = {}
        self._key_list = self._id_list = None
        self._build_table()

    # -- scanning ----------------------------------------------------------------------------
    def _hits(self, data, exhausted: set[int]):
        """(position, first index into keys) of every exact anchor occurrence, in order,
        leaving out the anchors (by first index) in `exhausted`."""
        n = len(data)
        if n < ANCHOR or not len(self.keys):
            return
        keys, table, shift = self.keys, self._table, self._shift
        words = np.ndarray((n - ANCHOR + 1,), "<u4", buffer=data, strides=(1,))
        hashed = np.empty(min(_CHUNK, len(words)), np.uint32)
        flags = np.empty(len(hashed), np.bool_)
        last = len(keys) - 1
        for start in range(0, len(words), _CHUNK):
            part = words[start:start + _CHUNK]
            h, f = hashed[:len(part)], flags[:len(part)]
            np.multiply(part, _MULT, out=h)
            np.right_shift(h, shift, out=h)
            np.take(table, h, out=f)
            if not f.any():
                continue
            where = np.flatnonzero(f)
            values = part[where]
            slots = np.searchsorted(keys, values, "left")
            np.minimum(slots, last, out=slots)
            exact = keys[slots] == values
            if exhausted:
                exact &= ~np.isin(slots, np.fromiter(exhausted, np.int64, len(exhausted)))
            if exact.any():
                yield from zip((where[exact] + start).tolist(), slots[exact].tolist())

    def scan(self, data: bytes, ftype: int, deadline: float | None = None) -> list[int]:
        """Indexes (into `sigs`) of the signatures matching `data`, in signature order.

        An anchor that hits very often (a run of zeros in a signature, a file of zeros)
        does not cost a verification per hit: after `_HITS_BEFORE_WHOLE` hits a signature
        is verified once against the whole object, and an anchor whose signatures are all
        settled is dropped from the rest of the scan."""
        found: set[int] = set()
        settled: set[int] = set()  # found, or refuted for the whole of `data`
        exhausted: set[int] = set()  # anchors (first index) with every signature settled
        hits: dict[int, int] = {}
        if self._key_list is None:
            self._key_list, self._id_list = self.keys.tolist(), self.ids.tolist()
        keys, ids, sigs = self._key_list, self._id_list, self.sigs
        count = len(keys)
        size = len(data)
        checked = 0
        for pos, first in self._hits(data, exhausted):
            key = keys[first]
            slot = first
            open_sigs = False
            while slot < count and keys[slot] == key:
                sid = ids[slot]
                slot += 1
                if sid in settled:
                    continue
                target = sigs[sid][1]
                if target and target != ftype:
                    settled.add(sid)
                    continue
                checked += 1
                if deadline is not None and not checked % 64 and time.monotonic() > deadline:
                    raise MatchTimeout
                seen = hits[sid] = hits.get(sid, 0) + 1
                if seen > _HITS_BEFORE_WHOLE:
                    matched = self._verify(sid, data, None, size, settled, deadline)
                    settled.add(sid)
                else:
                    matched = self._verify(sid, data, pos, size, settled, deadline)
                if matched:
                    found.add(sid)
                    settled.add(sid)
                elif sid not in settled:
                    open_sigs = True
            if not open_sigs:
                exhausted.add(first)
        return sorted(found)

    def _verify(self, sid: int, data: bytes, pos: int | None, size: int, settled: set,
                deadline: float | None) -> bool:
        """Does signature `sid` match `data` through its anchor hit at `pos` — or, with
        `pos` None, anywhere in `data`?"""
        _name, _target, check, run, at, pre_min, pre_max, total_max, pattern = self.sigs[sid]
        if check is not None:
            base, shift, from_end = check
            low = size - base if from_end else base
        if pos is None:
            lo, hi = 0, size
        else:
            start = pos - at  # where the fixed run starts
            if start < 0 or not data.startswith(run, start):
                return False
            # The signature's start lies in [lo, hi]: before the run by pre_min..pre_max
            # bytes, and where its offset puts it.
            lo = 0 if pre_max is None else start - pre_max
            hi = start - pre_min
        if check is not None:
            lo, hi = max(lo, low), min(hi, low + shift)
        lo = max(lo, 0)
        if hi < lo:
            return False
        if pattern is None:  # the signature is the fixed run alone
            return pos is not None or data.find(run, lo, hi + len(run)) >= 0
        compiled = self._regex.get(sid)
        if compiled is None:
            compiled = self._regex[sid] = _compile(pattern)
        if compiled is False:
            settled.add(sid)
            return False
        if isinstance(compiled, list):
            # Unbounded jumps at the top level: one linear pass over the whole object
            # (the offset's range, if any), which settles the signature.
            settled.add(sid)
            lo, hi = (0, size) if check is None else (max(low, 0), min(low + shift, size))
            return lo <= hi and _chain(compiled, data, lo, hi, size, deadline)
        end = size if total_max is None else min(size, hi + total_max)
        try:
            m = compiled.search(data, lo, end, timeout=_left(deadline))
        except TimeoutError:
            raise MatchTimeout from None
        if m is None and (pre_max is None or total_max is None):
            # The window ran to the end of the data from `lo`, and `lo` only grows with
            # later hits: no match will be found for this object.
            settled.add(sid)
        # Without an offset any match is a match of the signature; with one, it must
        # start where the offset allows.
        return m is not None and (check is None or m.start() <= hi)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def _regex(tokens) -> regex.Pattern:
    return regex.compile(hexsig.to_yara_regex(tokens).encode("latin-1"), regex.DOTALL)


def _compile(pattern: str):
    """The verifier of a signature: one regex, or — when the top level has unbounded jumps
    (`*`, `{n-}`) — a chain [(least gap before, regex, shortest length)] of the bounded
    pieces between them (a regex with `.*` in it would be quadratic on a miss). False when
    the pattern cannot be compiled."""
    try:
        if pattern.startswith("re:"):
            return regex.compile(pattern[3:].encode("latin-1"), regex.DOTALL)
        tokens = hexsig.parse(pattern)
        if not any(isinstance(t, hexsig.Jump) and t.high is None for t in tokens):
            return _regex(tokens)
        pieces, current, gap = [], [], 0
        for t in tokens:
            if isinstance(t, hexsig.Jump) and t.high is None:
                if current:
                    pieces.append((gap, tuple(current)))
                    current, gap = [], 0
                gap += t.low
            else:
                current.append(t)
        pieces.append((gap, tuple(current)))
        if any(_seq_span(piece)[1] is None for _, piece in pieces):
            return _regex(tokens)  # unbounded inside alternatives: rare, plain regex
        return [(gap, _regex(piece), _seq_span(piece)[0]) for gap, piece in pieces]
    except (regex.error, hexsig.SignatureError, OverflowError):
        return False


def _chain(chain: list, data: bytes, lo: int, hi: int, size: int,
           deadline: float | None) -> bool:
    """Is there a match of the pieces in order, the first starting in [lo, hi]? Each piece
    takes its earliest-ending match, which leaves the most room for the next."""
    try:
        pos = lo
        for i, (gap, piece, shortest) in enumerate(chain):
            start = pos + gap
            if start > size:
                return False
            limit = hi if i == 0 else None
            m = piece.search(data, start, size, timeout=_left(deadline))
            if m is None or (limit is not None and m.start() > limit):
                return False
            # Every match ending by m.end() starts at or after m.start(): find the least
            # end by bisection.
            first, low_end, high_end = m.start(), m.start() + shortest, m.end()
            while low_end < high_end:
                mid = (low_end + high_end) // 2
                probe = piece.search(data, first, mid, timeout=_left(deadline))
                if probe is not None and (limit is None or probe.start() <= limit):
                    high_end = mid
                else:
                    low_end = mid + 1
            pos = high_end
        return True
    except TimeoutError:
        raise MatchTimeout from None
