"""Perl regular expressions, as written in SpamAssassin rule files, for the `regex` module.

Rule files carry Perl match operators: `/pattern/flags`, `m{pattern}flags`, `m!pattern!i`.
`parse_match` splits one into pattern and flags; `translate` rewrites the Perl-isms the
`regex` module reads differently (`\\x{263a}`, `\\k<name>`, `\\Z`, `\\Q...\\E`, `\\v`, `\\e`,
unknown letter escapes that Perl takes literally); `compile_perl` does both and compiles.
Anything that still fails raises `PerlRegexError` with the reason, so the rule loader can
report the rule with its file and line and skip it.
"""

from __future__ import annotations

import regex

_PAIRS = {"{": "}", "(": ")", "[": "]", "<": ">"}
# Escapes `regex` understands with the same meaning as Perl.
_KNOWN = set("dDwWsSbBAGKnrtfaNpPXhHRzx0123456789uUL")
_VERTICAL = "\\n\\x0b\\f\\r\\x85\\u2028\\u2029"


class PerlRegexError(ValueError):
    """A Perl regex we cannot use (bad syntax, or a feature we do not translate)."""


def parse_match(text: str) -> tuple[str, str]:
    """Split a Perl match operator into (pattern, flags)."""
    text = text.strip()
    if text.startswith("m") and len(text) > 1 and not text[1].isalnum() and not text[1].isspace():
        text = text[1:]
    if not text:
        raise PerlRegexError("empty pattern")
    opener = text[0]
    if opener.isalnum() or opener.isspace() or opener == "\\":
        raise PerlRegexError(f"not a match operator: {text[:40]!r}")
    closer = _PAIRS.get(opener, opener)
    end = _find_closer(text, opener, closer) if closer != opener else text.rfind(closer)
    if end <= 0:
        raise PerlRegexError("unterminated pattern")
    flags = text[end + 1:].strip()
    if not all(c in "imsxgo" for c in flags):
        raise PerlRegexError(f"unsupported flags {flags!r}")
    pattern = text[1:end]
    if closer != "/" and opener == closer:
        pattern = pattern.replace("\\" + opener, opener)
    return pattern, flags


def _find_closer(text: str, opener: str, closer: str) -> int:
    """Index of the delimiter closing text[0] (Perl nests paired delimiters)."""
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def translate(pattern: str) -> str:
    """Rewrite the Perl-only escapes of `pattern` for the `regex` module."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            i += 1
            # `[]...]` and `[^]...]`: a leading ] is a literal
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "[" and in_class:
            if pattern.startswith("[:", i):
                close = pattern.find(":]", i + 2)
                if close != -1:
                    out.append(pattern[i:close + 2])
                    i = close + 2
                    continue
            out.append("\\[")
            i += 1
            continue
        if c == "]" and in_class:
            in_class = False
            out.append(c)
            i += 1
            continue
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            out.append("\\\\")
            break
        e = pattern[i + 1]
        i += 2
        if e == "x" and i < n and pattern[i] == "{":
            close = pattern.find("}", i)
            if close == -1:
                raise PerlRegexError("unterminated \\x{")
            digits = pattern[i + 1:close].strip() or "0"
            try:
                cp = int(digits, 16)
            except ValueError:
                raise PerlRegexError(f"bad \\x{{{digits}}}") from None
            out.append(f"\\U{cp:08x}" if cp <= 0x10FFFF else "\\uFFFD")
            i = close + 1
        elif e in "kg" and i < n and pattern[i] in "<{'":
            close = pattern.find({"<": ">", "{": "}", "'": "'"}[pattern[i]], i + 1)
            if close == -1:
                raise PerlRegexError("unterminated group reference")
            name = pattern[i + 1:close]
            out.append(f"\\{name}" if name.isdigit() else f"(?P={name})")
            i = close + 1
        elif e == "g" and i < n and pattern[i].isdigit():
            j = i
            while j < n and pattern[j].isdigit():
                j += 1
            out.append("\\" + pattern[i:j])
            i = j
        elif e == "Q":
            close = pattern.find("\\E", i)
            literal = pattern[i:] if close == -1 else pattern[i:close]
            out.append(regex.escape(literal))
            i = n if close == -1 else close + 2
        elif e == "E":
            pass
        elif e == "Z":
            out.append("(?=\\n?\\Z)" if not in_class else "Z")
        elif e == "z":
            out.append("\\Z" if not in_class else "z")
        elif e == "v":
            out.append(_VERTICAL if in_class else f"[{_VERTICAL}]")
        elif e == "V":
            out.append(f"[^{_VERTICAL}]" if not in_class else "")
        elif e == "e":
            out.append("\\x1b")
        elif e == "c" and i < n:
            out.append(f"\\x{ord(pattern[i].upper()) ^ 64:02x}")
            i += 1
        elif e.isalpha() and e not in _KNOWN:
            out.append(e)  # Perl takes an unknown letter escape literally
        elif e == "b" and in_class:
            out.append("\\x08")
        else:
            out.append("\\" + e)
    return "".join(out)


def compile_perl(text: str, *, extra_flags: int = 0) -> regex.Pattern[str]:
    """Compile a Perl match operator (`/.../flags`) into a `regex` pattern."""
    pattern, flags = parse_match(text)
    return compile_pattern(pattern, flags, extra_flags=extra_flags)


def compile_pattern(pattern: str, flags: str = "", *, extra_flags: int = 0, cache=None):
    """Compile Perl `pattern` with Perl `flags` (through `cache`, a CompiledCache, if given)."""
    value = extra_flags
    for f in flags:
        value |= {"i": regex.IGNORECASE, "s": regex.DOTALL, "m": regex.MULTILINE,
                  "x": regex.VERBOSE}.get(f, 0)
    try:
        if cache is not None:
            return cache.compile(translate(pattern), value)
        return regex.compile(translate(pattern), value)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:
        raise PerlRegexError(str(exc)) from None
