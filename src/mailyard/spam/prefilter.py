"""Literal prefilters: skip a regex when the text cannot possibly match it.

Most rule regexes can only match text that contains one of a few literal strings (`/cheap
(?:pills|meds)/i` needs "cheap "). `required_literals(pattern, flags)` works that out from the
pattern's parse tree: a set S such that every match contains some member of S (lower-cased),
or None when no such set is known (then the regex always runs). At scan time a rule whose
literals are all absent from the lower-cased text is a miss without running the regex — a
substring test in C instead of a backtracking search, which is most of the engine's speed.

Conservative by construction: only plain literal runs (ASCII, so lower-casing is exact; a
class of one letter in both cases, `[aA]`, counts as that letter) and alternations whose
every branch yields literals count; anything the standard parser cannot
read (`\\p{..}`, branch reset, ...) gets no prefilter.
"""

from __future__ import annotations

try:  # Python 3.11+
    import re._parser as sre_parse
    from re._constants import (
        ASSERT,
        ASSERT_NOT,
        ATOMIC_GROUP,
        BRANCH,
        IN,
        LITERAL,
        MAX_REPEAT,
        MIN_REPEAT,
        POSSESSIVE_REPEAT,
        SUBPATTERN,
    )
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore
    from sre_constants import (  # type: ignore
        ASSERT,
        ASSERT_NOT,
        BRANCH,
        IN,
        LITERAL,
        MAX_REPEAT,
        MIN_REPEAT,
        SUBPATTERN,
    )
    POSSESSIVE_REPEAT = ATOMIC_GROUP = object()

MIN_LITERAL = 3
MAX_ALTERNATIVES = 64
_REPEATS = (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT)


def required_literals(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """Lower-cased literals of which every match of `pattern` contains at least one."""
    import re

    if "[:" in pattern:
        return None  # POSIX classes: the standard parser would misread them as literals
    try:
        parsed = sre_parse.parse(pattern, flags & (re.VERBOSE | re.IGNORECASE | re.DOTALL |
                                                    re.MULTILINE))
    except Exception:
        return None
    try:
        found = _sequence(list(parsed))
    except RecursionError:
        return None
    return frozenset(found) if found else None


def _better(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    """The more selective of two candidate sets (fewer, longer strings)."""
    if a is None:
        return b
    if b is None:
        return a
    score_a = min(len(s) for s in a) * 4 - len(a)
    score_b = min(len(s) for s in b) * 4 - len(b)
    return a if score_a >= score_b else b


def _sequence(items: list) -> set[str] | None:
    best: set[str] | None = None
    run: list[str] = []

    def flush() -> None:
        nonlocal best, run
        if len(run) >= MIN_LITERAL:
            best = _better(best, {"".join(run)})
        run = []

    for op, av in items:
        if op is LITERAL and av < 128:
            run.append(chr(av).lower())
            continue
        if op is IN:
            folded = _case_pair(av)
            if folded is not None:
                run.append(folded)
                continue
        if op in _REPEATS and av[0] >= 1:
            char = _one_char(av[2])
            if char is not None:
                # `l+`, `x{2,5}`: the match holds `low` copies right here; the run can
                # continue past a fixed count, else it restarts after the last copy
                low, high = av[0], av[1]
                run.extend(char * min(low, 8))
                if high != low or low > 8:
                    flush()
                    run.append(char)
                continue
        flush()
        sub: set[str] | None = None
        if op is SUBPATTERN:
            sub = _sequence(list(av[-1]))
        elif op is ATOMIC_GROUP:
            sub = _sequence(list(av))
        elif op is BRANCH:
            sub = _branch(av[1])
        elif op in _REPEATS:
            low, _high, item = av
            if low >= 1:
                sub = _sequence(list(item))
        elif op is ASSERT:
            direction, item = av
            sub = _sequence(list(item))
        elif op is IN or op is ASSERT_NOT:
            sub = None
        best = _better(best, sub)
    flush()
    return best


def _one_char(items) -> str | None:
    """The lower-cased ASCII character a one-item sequence stands for, if it is one."""
    items = list(items)
    if len(items) != 1:
        return None
    op, av = items[0]
    if op is LITERAL and av < 128:
        return chr(av).lower()
    if op is IN:
        return _case_pair(av)
    return None


def _case_pair(items) -> str | None:
    """`[aA]` (or `[a]`): the one lower-cased ASCII character the class stands for."""
    chars = set()
    for op, av in items:
        if op is not LITERAL or av >= 128:
            return None
        chars.add(chr(av).lower())
    return chars.pop() if len(chars) == 1 else None


def _branch(branches) -> set[str] | None:
    out: set[str] = set()
    for branch in branches:
        found = _sequence(list(branch))
        if not found:
            return None
        out |= found
        if len(out) > MAX_ALTERNATIVES:
            return None
    return out


def plain_literal(pattern: str, flags: int = 0) -> str | None:
    """The string `pattern` stands for when it is nothing but literal characters, else None.

    Then counting its matches is `str.count` (both count non-overlapping occurrences from the
    left). Case-insensitive patterns qualify only if no character has another case.
    """
    import re

    if "[:" in pattern or "\\p" in pattern or "\\N" in pattern:
        return None
    try:
        parsed = sre_parse.parse(pattern, flags & (re.VERBOSE | re.IGNORECASE | re.DOTALL |
                                                    re.MULTILINE))
        items = list(parsed)
        caseless = bool(parsed.state.flags & re.IGNORECASE)
    except Exception:
        return None
    while len(items) == 1 and items[0][0] is SUBPATTERN:
        _group, add, remove, sub = items[0][1]
        if add or remove:
            return None
        items = list(sub)
    if not items or any(op is not LITERAL for op, _ in items):
        return None
    text = "".join(chr(av) for _, av in items)
    if caseless and (text.lower() != text.upper() or not text.isascii()):
        return None
    return text
