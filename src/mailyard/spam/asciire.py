"""ASCII-specialised rule regexes: the same matches on ASCII text, far less to try.

SpamAssassin's "fuzzy" rules spell each letter as an alternation of look-alikes, most of them
non-ASCII (`(?:[aA@4]|[\\xc3][\\xa0-\\xa5]|...)`), and have no literal for the prefilter; the
`regex` module then tries every alternative at every position. Most mail bodies are plain
ASCII, where none of the non-ASCII alternatives can ever match. `ascii_variant(pattern,
flags)` rewrites a pattern for ASCII-only subjects: a one-character item (literal, class,
`.`, `\\w`...) that matches no ASCII character under the pattern's flags (worked out by
asking `regex` itself, so case folding and `\\s`/`\\w` semantics are exactly the original's)
fails, and the failure spreads to its sequence, its group, and the branch holding it, which
is dropped; everything else is written back as it was, with the same flags. Alternatives keep
their order, so on an ASCII subject the variant finds exactly the matches the original does,
at the same places.

It returns the new pattern text, `NEVER` when the pattern cannot match any ASCII text, or
None when it cannot tell (a construct not handled here, back-references, anything the
standard parser reads differently); the engine then keeps the original.
"""

from __future__ import annotations

import regex

try:  # Python 3.11+
    import re._constants as C
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as C  # type: ignore
    import sre_parse  # type: ignore

NEVER = "(?!)"
_FLAGS = regex.IGNORECASE | regex.DOTALL | regex.MULTILINE | regex.VERBOSE
_CATEGORY = {
    C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_SPACE: r"\s",
    C.CATEGORY_NOT_SPACE: r"\S", C.CATEGORY_WORD: r"\w", C.CATEGORY_NOT_WORD: r"\W",
}
_ASCII = [chr(i) for i in range(128)]
_members: dict[tuple[str, int], str] = {}


class _Unsupported(Exception):
    pass


class _Fail(Exception):
    pass


def _esc(cp: int) -> str:
    return f"\\x{cp:02x}" if cp < 256 else f"\\U{cp:08x}"


def _class_members(snippet: str, flags: int) -> str:
    """The ASCII characters `snippet` (one character's worth of regex) matches."""
    key = (snippet, flags)
    found = _members.get(key)
    if found is None:
        pattern = regex.compile(snippet, flags & (regex.IGNORECASE | regex.DOTALL))
        found = "".join(c for c in _ASCII if pattern.fullmatch(c))
        _members[key] = found
    return found


def _leaf(op, av, flags: int) -> str:
    if op is C.LITERAL:
        snippet = _esc(av)
    elif op is C.NOT_LITERAL:
        snippet = f"[^{_esc(av)}]"
    elif op is C.ANY:
        snippet = "."
    else:  # IN
        parts = []
        negated = any(iop is C.NEGATE for iop, _ in av)
        for iop, iav in av:
            if iop is C.NEGATE:
                parts.insert(0, "^")
            elif iop is C.LITERAL:
                # a member no ASCII character can match is dropped (not from a negated set)
                if negated or iav < 128 or _class_members(_esc(iav), flags):
                    parts.append(_esc(iav))
            elif iop is C.RANGE:
                part = f"{_esc(iav[0])}-{_esc(iav[1])}"
                if negated or iav[0] < 128 or _class_members(f"[{part}]", flags):
                    parts.append(part)
            elif iop is C.CATEGORY and iav in _CATEGORY:
                parts.append(_CATEGORY[iav])
            else:
                raise _Unsupported(str(iop))
        if not parts or parts == ["^"]:
            raise _Fail if not parts else _Unsupported("[^]")
        snippet = "[" + "".join(parts) + "]"
    if not _class_members(snippet, flags):
        raise _Fail
    # On ASCII text the item behaves as written: keep it, so `regex` keeps its own
    # optimisations (literal strings, case-insensitive string search, native classes).
    return snippet


def _flag_letters(bits: int) -> str:
    if bits & ~(_FLAGS | regex.VERBOSE):
        raise _Unsupported("flags")
    return "".join(letter for bit, letter in ((regex.IGNORECASE, "i"),
                                               (regex.MULTILINE, "m"),
                                               (regex.DOTALL, "s")) if bits & bit)


def _at(code, flags: int) -> str:
    codes = {C.AT_BEGINNING: "^", C.AT_END: "$", C.AT_BEGINNING_STRING: "\\A",
             C.AT_END_STRING: "\\Z", C.AT_BOUNDARY: "\\b", C.AT_NON_BOUNDARY: "\\B"}
    if code not in codes:
        raise _Unsupported(str(code))
    return codes[code]


def _seq(items, flags: int) -> str:
    return "".join(_node(op, av, flags) for op, av in items)


def _node(op, av, flags: int) -> str:
    if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
        return _leaf(op, av, flags)
    if op is C.AT:
        return _at(av, flags)
    if op is C.SUBPATTERN:
        _group, add, remove, items = av
        scoped = _flag_letters(add) + ("-" + _flag_letters(remove) if _flag_letters(remove)
                                       else "")
        return "(?" + scoped + ":" + _seq(items, (flags | add) & ~remove) + ")"
    if op is C.ATOMIC_GROUP:
        return "(?>" + _seq(av, flags) + ")"
    if op is C.BRANCH:
        alternatives = []
        for branch in av[1]:
            try:
                alternatives.append(_seq(branch, flags))
            except _Fail:
                continue
        if not alternatives:
            raise _Fail
        return "(?:" + "|".join(alternatives) + ")"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, high, item = av
        try:
            body = _seq(item, flags)
        except _Fail:
            if low == 0:
                return ""
            raise
        count = f"{{{low},}}" if high == C.MAXREPEAT else f"{{{low},{high}}}"
        suffix = {C.MAX_REPEAT: "", C.MIN_REPEAT: "?", C.POSSESSIVE_REPEAT: "+"}[op]
        if len(item) != 1 or item[0][0] not in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
            body = "(?:" + body + ")"
        return body + count + suffix
    if op in (C.ASSERT, C.ASSERT_NOT):
        direction, item = av
        head = ("(?=" if direction == 1 else "(?<=") if op is C.ASSERT else \
            ("(?!" if direction == 1 else "(?<!")
        try:
            return head + _seq(item, flags) + ")"
        except _Fail:
            if op is C.ASSERT_NOT:
                return ""                   # can never match: the negative holds
            raise
    raise _Unsupported(str(op))             # back-references, conditionals, ...


def ascii_variant(pattern: str, flags: int) -> str | None:
    """The ASCII-subject form of `pattern` (see the module docstring), NEVER, or None."""
    if "[:" in pattern or "\\p" in pattern or "\\P" in pattern or "\\N" in pattern:
        return None  # POSIX classes, properties: the standard parser reads them differently
    try:
        parsed = sre_parse.parse(pattern, flags & _FLAGS)
    except Exception:
        return None
    try:
        flags = parsed.state.flags & _FLAGS
        body = _seq(list(parsed), flags)
        letters = _flag_letters(flags & ~regex.VERBOSE)
        return (f"(?{letters})" if letters else "") + body
    except _Fail:
        return NEVER
    except (_Unsupported, RecursionError, regex.error):
        return None
