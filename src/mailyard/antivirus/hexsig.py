"""ClamAV hex body signatures: parse to a small token list, emit YARA pattern text.

Grammar (ClamAV's signature format, `.ndb` bodies and `.ldb` subsignatures):
    AA        a byte                      ??        any byte
    A? / ?A   a byte with one nibble set  *         any number of bytes
    {n}       exactly n bytes             {-n}      0..n bytes
    {n-}      n or more bytes             {n-m}     n..m bytes
    (AA|BBCC) alternatives                !(AA|BB)  any byte except these (single bytes)

Two emitters: `to_yara_hex` (YARA hex string, the fast path) and `to_yara_regex` (YARA
regular expression, used when a subsignature has modifiers — nocase, wide, fullword — or a
negated alternative, which YARA hex strings cannot say).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class SignatureError(ValueError):
    """A hex signature that does not follow the format."""


@dataclass(frozen=True)
class Literal:
    """A run of fixed bytes."""

    data: bytes


@dataclass(frozen=True)
class Nibble:
    value: int  # the fixed nibble, in place
    mask: int   # 0xF0: high nibble fixed ("A?"), 0x0F: low nibble fixed ("?A")


@dataclass(frozen=True)
class AnyByte:
    pass


@dataclass(frozen=True)
class Jump:
    low: int
    high: int | None  # None = unbounded


@dataclass(frozen=True)
class Alternatives:
    options: tuple[tuple, ...]  # each a token tuple
    negated: bool = False


_HEX = "0123456789abcdefABCDEF"
# One token per match, tried at each position in turn (signatures load by the 100,000,
# so the tokenizer is a single compiled regex, and fixed bytes come as whole runs).
_TOKEN = re.compile(r"((?:[0-9a-fA-F]{2})+)|(\?\?)|([0-9a-fA-F])\?|\?([0-9a-fA-F])|(\*)"
                    r"|\{([^{}]*)\}|(!?\()|(\|)|(\))")
_PURE_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_ANY = AnyByte()
_STAR = Jump(0, None)


def parse(text: str) -> tuple:
    """Parse a ClamAV hex signature into tokens; raise SignatureError on bad syntax."""
    if _PURE_HEX.fullmatch(text):  # the common case: fixed bytes only
        return (Literal(bytes.fromhex(text)),)
    # stack of (tokens of the current sequence, options so far, negated) per open '('
    stack: list[tuple[list, list, bool]] = []
    tokens: list = []
    pos, n = 0, len(text)
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            _bad_at(text, pos)
        run, anyb, high, low, star, jump, opening, bar, closing = m.groups()
        if run is not None:
            tokens.append(Literal(bytes.fromhex(run)))
        elif anyb is not None:
            tokens.append(_ANY)
        elif high is not None:
            tokens.append(Nibble(int(high, 16) << 4, 0xF0))
        elif low is not None:
            tokens.append(Nibble(int(low, 16), 0x0F))
        elif star is not None:
            tokens.append(_STAR)
        elif jump is not None:
            tokens.append(_parse_jump(jump, pos))
        elif opening is not None:
            stack.append((tokens, [], opening == "!("))
            tokens = []
        elif bar is not None or closing is not None:
            if not stack:
                raise SignatureError(f"unexpected {text[pos]!r} at {pos}")
            if not tokens:
                raise SignatureError(f"empty alternative before {pos}")
            outer, options, negated = stack[-1]
            options.append(tuple(tokens))
            tokens = []
            if closing is not None:
                stack.pop()
                if negated and not all(len(o) == 1 and isinstance(o[0], Literal)
                                       and len(o[0].data) == 1 for o in options):
                    raise SignatureError("only single bytes are supported in !(..)")
                outer.append(Alternatives(tuple(options), negated))
                tokens = outer
        pos = m.end()
    if stack:
        raise SignatureError("unclosed '('")
    if not tokens:
        raise SignatureError("empty signature")
    if isinstance(tokens[0], Jump) or isinstance(tokens[-1], Jump):
        raise SignatureError("a signature cannot start or end with a jump")
    if not any(isinstance(t, Literal) or (isinstance(t, Alternatives) and not t.negated)
               for t in tokens):
        raise SignatureError("a signature needs at least one fixed byte")
    return tuple(_merge_literals(tokens))


def _merge_literals(tokens: list) -> list:
    out: list = []
    for t in tokens:
        if isinstance(t, Literal) and out and isinstance(out[-1], Literal):
            out[-1] = Literal(out[-1].data + t.data)
        else:
            out.append(t)
    return out


def _bad_at(text: str, pos: int) -> None:
    c = text[pos]
    if c == "{":
        raise SignatureError(f"unclosed '{{' at {pos}")
    if c in _HEX and (pos + 1 >= len(text) or text[pos + 1] not in _HEX + "?"):
        raise SignatureError(f"odd number of hex digits at {pos}")
    raise SignatureError(f"bad hex byte {text[pos:pos + 2]!r} at {pos}")


def _parse_jump(body: str, pos: int) -> Jump:
    low, dash, high = body.partition("-")
    if not dash and low.isdigit():
        return Jump(int(low), int(low))
    if dash and not low and high.isdigit():
        return Jump(0, int(high))
    if dash and low.isdigit() and not high:
        return Jump(int(low), None)
    if dash and low.isdigit() and high.isdigit() and int(low) <= int(high):
        return Jump(int(low), int(high))
    raise SignatureError(f"bad jump {{{body}}} at {pos}")


def needs_regex(tokens: tuple) -> bool:
    """True when the signature has a negated alternative (only the regex form says it)."""
    for t in tokens:
        if isinstance(t, Alternatives) and (t.negated or any(needs_regex(o) for o in t.options)):
            return True
    return False


def _merge_jumps(tokens: tuple) -> list:
    """Adjacent jumps folded into one: `{1}{0-2}{2-}` matches what `{3-}` matches.

    Both emitters use it. It is also needed, not only tidier: YARA-X 1.23 misses matches
    of a regex with three gaps in a row (`/abab.{1}.{0,2}.{2,}ba/s` does not match
    `ababxxxxba`), found by the differential fuzz test against the anchored matcher.
    (clamscan refuses gaps in a row as a malformed signature; written as one gap, `{3-}`,
    it reports the match.)
    """
    out: list = []
    for t in tokens:
        if isinstance(t, Jump) and out and isinstance(out[-1], Jump):
            prev = out[-1]
            high = None if prev.high is None or t.high is None else prev.high + t.high
            out[-1] = Jump(prev.low + t.low, high)
        else:
            out.append(t)
    return out


def to_yara_hex(tokens: tuple) -> str:
    """YARA hex string body (without braces)."""
    out = []
    for t in _merge_jumps(tokens):
        if isinstance(t, Literal):
            out.append(t.data.hex(" ").upper())
        elif isinstance(t, AnyByte):
            out.append("??")
        elif isinstance(t, Nibble):
            out.append(f"{t.value >> 4:X}?" if t.mask == 0xF0 else f"?{t.value:X}")
        elif isinstance(t, Jump):
            if t.high == 0:
                continue  # {0} / {0-0}: no bytes at all
            if t.high is None:
                out.append("[-]" if t.low == 0 else f"[{t.low}-]")
            elif t.low == t.high:
                out.append(f"[{t.low}]")
            else:
                out.append(f"[{t.low}-{t.high}]")
        elif isinstance(t, Alternatives):
            if t.negated:
                raise SignatureError("negation needs the regex form")
            out.append("( " + " | ".join(to_yara_hex(o) for o in t.options) + " )")
    return " ".join(out)


def to_yara_regex(tokens: tuple) -> str:
    """YARA regex body (without slashes), matching the same bytes as the hex form."""
    out = []
    for t in _merge_jumps(tokens):
        if isinstance(t, Literal):
            out.append("".join(f"\\x{b:02x}" for b in t.data))
        elif isinstance(t, AnyByte):
            out.append(".")
        elif isinstance(t, Nibble):
            if t.mask == 0xF0:
                out.append(f"[\\x{t.value:02x}-\\x{t.value | 0x0F:02x}]")
            else:
                out.append("[" + "".join(f"\\x{h << 4 | t.value:02x}" for h in range(16)) + "]")
        elif isinstance(t, Jump):
            if t.high is None:
                out.append(f".{{{t.low},}}" if t.low else ".*")
            else:
                out.append(f".{{{t.low},{t.high}}}")
        elif isinstance(t, Alternatives):
            if t.negated:
                out.append("[^" + "".join(f"\\x{o[0].data[0]:02x}" for o in t.options) + "]")
            else:
                out.append("(" + "|".join(to_yara_regex(o) for o in t.options) + ")")
    return "".join(out)


def literal_bytes(tokens: tuple) -> bytes | None:
    """The signature as plain bytes when it is only fixed bytes, else None."""
    if len(tokens) == 1 and isinstance(tokens[0], Literal):
        return tokens[0].data
    return None


# -- the load-time fast path -------------------------------------------------------------
_JUMPS: dict[str, tuple[int, int | None]] = {}
MAX_JUMP = 1 << 30  # summarize's default: larger jumps are left to parse() and YARA-X
# Two fixed runs with one `??`, `*` or `{..}` between them: one regex match, no tokens.
_TWO_RUNS = re.compile(r"((?:[0-9a-fA-F]{2})+)(\?\?|\*|\{[0-9-]*\})((?:[0-9a-fA-F]{2})+)")


def jump_span(body: str) -> tuple[int, int | None] | None:
    """(low, high) of a jump's text between the braces; None when it is malformed.
    Cached: a database repeats a few jumps many times."""
    span = _JUMPS.get(body)
    if span is None:
        try:
            parsed = _parse_jump(body, 0)
        except SignatureError:
            return None
        span = _JUMPS.setdefault(body, (parsed.low, parsed.high))
    return span


def summarize(text: str, min_run: int = 4, max_jump: int = MAX_JUMP):
    """What the anchored matcher needs of a signature, straight from its text, for the
    common shape — fixed runs, `??`, nibbles, `*`, `{..}` jumps and un-nested `(..|..)` /
    `!(..)` alternatives — with a top-level fixed run of at least `min_run` bytes:
    (longest run, pre_min, pre_max, total_max, only_run). pre_min/pre_max: bytes before
    that run (None = unbounded). Returns None for every other text (then `parse` decides,
    with its error messages); whatever it accepts, `parse` accepts too. No tokens are
    built, which keeps loading 100,000 signatures well under a second."""
    if _PURE_HEX.fullmatch(text):
        run = bytes.fromhex(text)
        return (run, 0, 0, len(run), True) if len(run) >= min_run else None
    two = _TWO_RUNS.fullmatch(text)
    if two is not None:  # the next most common shape: run, one gap, run
        first, gap, second = two.groups()
        span = (1, 1) if gap == "??" else (0, None) if gap == "*" else jump_span(gap[1:-1])
        if span is not None and max(span[0], span[1] or 0) <= max_jump:
            size1, size2 = len(first) >> 1, len(second) >> 1
            high = None if span[1] is None else size1 + span[1] + size2
            if size1 >= size2 and size1 >= min_run:
                return bytes.fromhex(first), 0, 0, high, False
            if size2 >= min_run:
                pre_max = None if span[1] is None else size1 + span[1]
                return bytes.fromhex(second), size1 + span[0], pre_max, high, False
            return None
    parts = _TOKEN.findall(text)
    covered = 0
    best, best_size = None, 0
    low, high = 0, 0          # span of the top level so far
    group = None              # inside (..): [spans of closed options, negated, all single]
    o_low, o_high, o_count, o_single = 0, 0, 0, True  # the open option
    for run, anyb, nib_high, nib_low, star, jump, opening, bar, closing in parts:
        if run:
            covered += len(run)
            size = len(run) >> 1
            span = (size, size)
            if group is None and size >= min_run and (best is None or size > best_size):
                best, best_size = (run, low, high), size  # the first longest, as plan()
        elif anyb or nib_high or nib_low:
            covered += 2
            span = (1, 1)
        elif star:
            covered += 1
            span = (0, None)
        elif opening:
            covered += len(opening)
            if group is not None:
                return None  # nested: parse() knows
            group = [[], opening == "!(", True]
            o_low, o_high, o_count, o_single = 0, 0, 0, True
            continue
        elif bar or closing:
            covered += 1
            if group is None or not o_count:
                return None
            group[0].append((o_low, o_high))
            group[2] = group[2] and o_single and o_count == 1
            o_low, o_high, o_count, o_single = 0, 0, 0, True
            if bar:
                continue
            spans, negated, singles = group
            group = None
            if negated:
                if not singles:
                    return None
                span = (1, 1)
            else:  # (shortest option, longest option); a loop, not comprehensions:
                g_low, g_high = spans[0]  # this runs for every group at load
                for o_lo, o_hi in spans[1:]:
                    g_low = o_lo if o_lo < g_low else g_low
                    g_high = None if g_high is None or o_hi is None else max(g_high, o_hi)
                span = (g_low, g_high)
        else:  # a jump (possibly malformed)
            covered += len(jump) + 2
            span = jump_span(jump)
            if span is None or max(span[0], span[1] or 0) > max_jump:
                return None
        if group is not None:
            o_count += 1
            o_single = o_single and bool(run) and len(run) == 2
            o_low += span[0]
            o_high = None if o_high is None or span[1] is None else o_high + span[1]
        else:
            low += span[0]
            high = None if high is None or span[1] is None else high + span[1]
    if best is None or group is not None or covered != len(text):
        return None
    first, last = parts[0], parts[-1]
    if first[4] or first[5] or last[4] or last[5] or text[0] == "{" or text[-1] == "}":
        return None  # a leading/trailing jump: parse() reports it
    run, pre_min, pre_max = best
    return bytes.fromhex(run), pre_min, pre_max, high, len(parts) == 1
