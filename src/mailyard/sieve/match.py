"""Comparators (RFC 4790 via RFC 5228 §2.7.3) and match types: :is, :contains, :matches,
:regex (draft), :value and :count (RFC 5231).

`:matches` is not translated to a backtracking regex: a hostile pattern like "*a*a*a*a*b"
would take exponential time. Instead each literal segment between stars is placed at its
earliest position (the classic linear glob algorithm), which also yields RFC 5229's
leftmost-shortest captures for the match variables.
"""

from __future__ import annotations

from mailyard.sieve.validate import compile_regex

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
REGEX_TIMEOUT = 1.0  # seconds; the draft regex match type is the one unbounded matcher


class MatchBudgetExceeded(Exception):
    """A regular expression ran too long (caught by the interpreter as a runtime error)."""


def casemap(value: str) -> str:
    """i;ascii-casemap: fold ASCII letters only (RFC 4790 §9.2)."""
    return value.translate(_ASCII_LOWER)


def fold(value: str, comparator: str) -> str:
    return casemap(value) if comparator == "i;ascii-casemap" else value


def numeric(value: str) -> int | None:
    """i;ascii-numeric (RFC 4790 §9.1): leading digits; None stands for positive infinity."""
    end = 0
    while end < len(value) and "0" <= value[end] <= "9":
        end += 1
    return int(value[:end]) if end else None


def _order(a: str, b: str, comparator: str) -> int:
    """-1, 0, 1 as a compares to b under the comparator."""
    if comparator == "i;ascii-numeric":
        x, y = numeric(a), numeric(b)
        if x == y:
            return 0
        if x is None:
            return 1
        if y is None:
            return -1
        return -1 if x < y else 1
    a, b = fold(a, comparator), fold(b, comparator)
    return (a > b) - (a < b)


_RELATIONS = {
    "gt": lambda c: c > 0, "ge": lambda c: c >= 0, "lt": lambda c: c < 0,
    "le": lambda c: c <= 0, "eq": lambda c: c == 0, "ne": lambda c: c != 0,
}


def relational(value: str, key: str, relation: str, comparator: str) -> bool:
    return _RELATIONS[relation](_order(value, key, comparator))


# -- :matches ------------------------------------------------------------------------------

def _glob_tokens(pattern: str) -> list[list[str | None]]:
    """Split a :matches pattern into segments between '*'; in a segment None is '?'."""
    segments: list[list[str | None]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            segments[-1].append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            segments.append([])
        elif c == "?":
            segments[-1].append(None)
        else:
            segments[-1].append(c)
        i += 1
    return segments


def _seg_at(value: str, pos: int, seg: list[str | None]) -> bool:
    if pos + len(seg) > len(value):
        return False
    for k, ch in enumerate(seg):
        if ch is not None and value[pos + k] != ch:
            return False
    return True


def _find_with_singles(text: str, seg: list[str | None], start: int, end: int) -> int:
    """Earliest index >= start where `seg` (with '?' as None) fits before `end`, or -1.

    Anchors the search on the segment's longest literal run so `str.find` does the work.
    """
    runs: list[tuple[int, str]] = []
    k = 0
    while k < len(seg):
        if seg[k] is None:
            k += 1
            continue
        j = k
        while j < len(seg) and seg[j] is not None:
            j += 1
        runs.append((k, "".join(seg[k:j])))
        k = j
    last_start = end - len(seg)
    if not runs:
        return start if start <= last_start else -1
    offset, literal = max(runs, key=lambda r: len(r[1]))
    at = text.find(literal, start + offset, end)
    while at >= 0 and at - offset <= last_start:
        if _seg_at(text, at - offset, seg):
            return at - offset
        at = text.find(literal, at + 1, end)
    return -1


def glob_match(value: str, pattern: str, comparator: str) -> list[str] | None:
    """Match `value` against a wildcard pattern; the captures (${0}, ${1}, ...) or None."""
    folded = fold(value, comparator)
    segments = [[fold(c, comparator) if c is not None else None for c in seg]
                for seg in _glob_tokens(pattern)]
    captures: list[str] = []

    def singles(seg, start):
        return [value[start + k] for k, ch in enumerate(seg) if ch is None]

    first = segments[0]
    if len(segments) == 1:
        if len(first) != len(value) or not _seg_at(folded, 0, first):
            return None
        return [value] + singles(first, 0)
    if not _seg_at(folded, 0, first):
        return None
    captures.extend(singles(first, 0))
    pos = len(first)
    last = segments[-1]
    tail_start = len(value) - len(last)
    if tail_start < pos or not _seg_at(folded, tail_start, last):
        return None
    for seg in segments[1:-1]:
        found = -1
        if None not in seg:
            # A plain literal: let str.find do the scanning at C speed.
            found = folded.find("".join(seg), pos, tail_start)
        else:
            found = _find_with_singles(folded, seg, pos, tail_start)
        if found < 0:
            return None
        captures.append(value[pos:found])   # the '*' before this segment
        captures.extend(singles(seg, found))
        pos = found + len(seg)
    captures.append(value[pos:tail_start])
    captures.extend(singles(last, tail_start))
    return [value] + captures


def regex_match(value: str, pattern: str, comparator: str) -> list[str] | None:
    compiled = compile_regex(pattern, comparator)
    try:
        m = compiled.search(value, timeout=REGEX_TIMEOUT)
    except TimeoutError:
        raise MatchBudgetExceeded(f"regular expression {pattern!r} ran too long") from None
    if m is None:
        return None
    return [m.group(0)] + [g or "" for g in m.groups()]


def match_value(value: str, key: str, match: str, comparator: str,
                relation: str | None) -> list[str] | None | bool:
    """One value against one key: True/False, or captures for :matches/:regex."""
    if match == "is":
        if comparator == "i;ascii-numeric":
            return numeric(value) == numeric(key)
        return fold(value, comparator) == fold(key, comparator)
    if match == "contains":
        return fold(key, comparator) in fold(value, comparator)
    if match == "matches":
        return glob_match(value, key, comparator)
    if match == "regex":
        return regex_match(value, key, comparator)
    if match == "value":
        return relational(value, key, relation, comparator)
    raise ValueError(match)
