"""Superset translation of rule regexes into Hyperscan expressions.

The engine's texts are octet strings: every character is one byte, 0-255 (see
`engine.octets`). `superset_expression(pattern, flags)` rewrites a `regex` pattern into a
Hyperscan expression over bytes that matches *at least* wherever the original can match on
such a text, so "Hyperscan found nothing" proves "the regex finds nothing" and the regex need
not run. Being a superset (not an exact translation) keeps the rewrite small and safe:

- every one-character item (literal, class, `.`, `\\w`, ...) becomes an explicit byte class,
  worked out by asking `regex` itself which of the 256 characters it matches under the
  pattern's flags in scope (so Unicode `\\w`/`\\s`, case folding of Latin-1 letters and
  DOTALL are exactly the original's);
- zero-width assertions (`^`, `$`, `\\b`, `\\A`, lookahead, lookbehind) are dropped — only
  ever widening the set of matches;
- atomic groups and possessive or lazy repeats become plain greedy ones (same or more
  matches); a back-reference becomes "any bytes"; repeat bounds above `MAX_BOUND` become
  unbounded, lower bounds above it are lowered;
- anything else (conditionals, constructs the standard parser reads differently from
  `regex`: POSIX classes, `\\p{..}`, `\\N`) gives None: the rule is not gated and always
  runs its regex. So does a result that can match the empty string (it would match any
  text, proving nothing).
"""

from __future__ import annotations

import re

import regex

try:  # Python 3.11+
    import re._constants as C
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as C  # type: ignore
    import sre_parse  # type: ignore

MAX_BOUND = 64
NEVER = "(?!)"
_FLAGS = regex.IGNORECASE | regex.DOTALL | regex.MULTILINE | regex.VERBOSE
_OCTETS = [chr(i) for i in range(256)]
_ANY = "[\\x00-\\xff]"
_HIGH = "[\\x80-\\xff]"
_POSIX = re.compile(r"\[:\^?[A-Za-z]+:\]")   # `[:alpha:]` (but `[:;,]` is a plain class)
_classes: dict[tuple[str, int], tuple[int, ...]] = {}
_CATEGORY = {
    C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_SPACE: r"\s",
    C.CATEGORY_NOT_SPACE: r"\S", C.CATEGORY_WORD: r"\w", C.CATEGORY_NOT_WORD: r"\W",
}


class _Unsupported(Exception):
    pass


class _Fail(Exception):
    """The item can match no octet: its sequence fails, and so the branch holding it."""


def _esc(cp: int) -> str:
    return f"\\x{cp:02x}" if cp < 256 else f"\\U{cp:08x}"


def _members(snippet: str, flags: int) -> tuple[int, ...]:
    """The octets `snippet` (one character's worth of `regex` syntax) matches."""
    key = (snippet, flags)
    found = _classes.get(key)
    if found is None:
        pattern = regex.compile(snippet, flags & (regex.IGNORECASE | regex.DOTALL))
        found = _classes[key] = tuple(i for i, c in enumerate(_OCTETS) if pattern.fullmatch(c))
    return found


def _char(cp: int) -> str:
    return chr(cp) if chr(cp).isascii() and chr(cp).isalnum() else f"\\x{cp:02x}"


def _ranges(members: list[int]) -> str:
    """Byte values as a class (`[A-Za-z]`, `x`), or "" when there are none."""
    if not members:
        return ""
    if len(members) == 256:
        return _ANY
    if len(members) == 1:
        return _char(members[0])
    parts = []
    start = prev = members[0]
    for b in [*members[1:], None]:
        if b is not None and b == prev + 1:
            prev = b
            continue
        if start == prev:
            parts.append(_char(start))
        elif prev == start + 1:
            parts.append(_char(start) + _char(prev))
        else:
            parts.append(f"{_char(start)}-{_char(prev)}")
        if b is not None:
            start = prev = b
    return "[" + "".join(parts) + "]"


def _leaf(op, av, flags: int, coarse: bool) -> str:
    if op is C.LITERAL:
        snippet = _esc(av)
    elif op is C.NOT_LITERAL:
        snippet = f"[^{_esc(av)}]"
    elif op is C.ANY:
        snippet = "."
    else:  # IN
        parts = []
        for iop, iav in av:
            if iop is C.NEGATE:
                parts.insert(0, "^")
            elif iop is C.LITERAL:
                parts.append(_esc(iav))
            elif iop is C.RANGE:
                parts.append(f"{_esc(iav[0])}-{_esc(iav[1])}")
            elif iop is C.CATEGORY and iav in _CATEGORY:
                parts.append(_CATEGORY[iav])
            else:
                raise _Unsupported(str(iop))
        if not parts or parts == ["^"]:
            raise _Unsupported("empty class")
        snippet = "[" + "".join(parts) + "]"
    members = _members(snippet, flags)
    if not members:
        raise _Fail
    if coarse and members[0] >= 0x80:
        return _HIGH     # coarse form: a class of high octets only widens to all of them
    return _ranges(members)


def _seq(items, flags: int, coarse: bool) -> str:
    return "".join(_node(op, av, flags, coarse) for op, av in items)


def _node(op, av, flags: int, coarse: bool) -> str:
    if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
        return _leaf(op, av, flags, coarse)
    if op is C.AT or op in (C.ASSERT, C.ASSERT_NOT):
        return ""
    if op is C.SUBPATTERN:
        _group, add, remove, items = av
        if (add | remove) & ~_FLAGS:
            raise _Unsupported("flags")
        return "(?:" + _seq(items, (flags | add) & ~remove, coarse) + ")"
    if op is C.ATOMIC_GROUP:
        return "(?:" + _seq(av, flags, coarse) + ")"
    if op is C.BRANCH:
        alternatives = []
        for branch in av[1]:
            try:
                alternative = _seq(branch, flags, coarse)
                if alternative not in alternatives:
                    alternatives.append(alternative)
            except _Fail:
                continue
        if not alternatives:
            raise _Fail
        return "(?:" + "|".join(alternatives) + ")"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, high, item = av
        try:
            body = _seq(item, flags, coarse)
        except _Fail:
            if low == 0:
                return ""
            raise
        if not body or high == 0:
            return ""
        if high == C.MAXREPEAT or high > MAX_BOUND:
            count = f"{{{min(low, MAX_BOUND)},}}"
        else:
            count = f"{{{low},{high}}}"
        if count == "{1,1}":
            return "(?:" + body + ")"
        return "(?:" + body + ")" + count
    if op is C.GROUPREF:
        return _ANY + "*"
    raise _Unsupported(str(op))             # conditionals, ...


def superset_expression(pattern: str, flags: int, *, coarse: bool = False) -> str | None:
    """A Hyperscan expression matching a superset of `pattern` on octet text, NEVER, or None.

    NEVER: the pattern matches no octet text at all. `coarse` widens every class of
    non-ASCII octets to all of them (and merges the alternatives that become equal): a much
    shorter, looser form for the fuzzy rules too long for Hyperscan as written.
    """
    if _POSIX.search(pattern) or "\\p" in pattern or "\\P" in pattern or "\\N" in pattern:
        return None  # POSIX classes, properties: the standard parser reads them differently
    if flags & ~(_FLAGS | regex.VERSION0 | regex.UNICODE):
        return None
    try:
        parsed = sre_parse.parse(pattern, flags & _FLAGS)
        flags = parsed.state.flags & _FLAGS
        try:
            body = _seq(list(parsed), flags, coarse)
        except _Fail:
            return NEVER
        # a result that matches the empty string (after dropping assertions) proves nothing
        if not body or re.compile(body).match("") is not None:
            return None
    except (_Unsupported, RecursionError, regex.error, re.error, OverflowError, ValueError):
        return None     # (re.error: the standard parser rejects something `regex` accepted)
    return body
