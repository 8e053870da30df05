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
class Byte:
    value: int


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
_JUMP = re.compile(r"\{(-?\d*)(-?)(\d*)\}")


def parse(text: str) -> tuple:
    """Parse a ClamAV hex signature into tokens; raise SignatureError on bad syntax."""
    tokens, pos = _parse_seq(text, 0, top=True)
    if pos != len(text):
        raise SignatureError(f"unexpected {text[pos]!r} at {pos}")
    if not tokens:
        raise SignatureError("empty signature")
    if isinstance(tokens[0], Jump) or isinstance(tokens[-1], Jump):
        raise SignatureError("a signature cannot start or end with a jump")
    if not any(isinstance(t, Byte) for t in tokens) and not any(
            isinstance(t, Alternatives) and not t.negated for t in tokens):
        raise SignatureError("a signature needs at least one fixed byte")
    return tuple(tokens)


def _parse_seq(text: str, pos: int, top: bool) -> tuple[list, int]:
    tokens: list = []
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in "|)":
            if top:
                raise SignatureError(f"unexpected {c!r} at {pos}")
            return tokens, pos
        if c == "*":
            tokens.append(Jump(0, None))
            pos += 1
        elif c == "{":
            end = text.find("}", pos)
            if end < 0:
                raise SignatureError(f"unclosed '{{' at {pos}")
            tokens.append(_parse_jump(text[pos + 1:end], pos))
            pos = end + 1
        elif c == "(" or (c == "!" and text[pos + 1:pos + 2] == "("):
            negated = c == "!"
            pos += 2 if negated else 1
            options = []
            while True:
                option, pos = _parse_seq(text, pos, top=False)
                if not option:
                    raise SignatureError(f"empty alternative before {pos}")
                options.append(tuple(option))
                if pos >= n:
                    raise SignatureError("unclosed '('")
                if text[pos] == ")":
                    pos += 1
                    break
                pos += 1  # '|'
            if negated and not all(len(o) == 1 and isinstance(o[0], Byte) for o in options):
                raise SignatureError("only single bytes are supported in !(..)")
            tokens.append(Alternatives(tuple(options), negated))
        else:
            pair = text[pos:pos + 2]
            if len(pair) < 2:
                raise SignatureError(f"odd number of hex digits at {pos}")
            a, b = pair
            if a in _HEX and b in _HEX:
                tokens.append(Byte(int(pair, 16)))
            elif a == "?" and b == "?":
                tokens.append(AnyByte())
            elif a == "?" and b in _HEX:
                tokens.append(Nibble(int(b, 16), 0x0F))
            elif b == "?" and a in _HEX:
                tokens.append(Nibble(int(a, 16) << 4, 0xF0))
            else:
                raise SignatureError(f"bad hex byte {pair!r} at {pos}")
            pos += 2
    if not top:
        raise SignatureError("unclosed '('")
    return tokens, pos


def _parse_jump(body: str, pos: int) -> Jump:
    if re.fullmatch(r"\d+", body):
        return Jump(int(body), int(body))
    if re.fullmatch(r"-\d+", body):
        return Jump(0, int(body[1:]))
    if re.fullmatch(r"\d+-", body):
        return Jump(int(body[:-1]), None)
    m = re.fullmatch(r"(\d+)-(\d+)", body)
    if m and int(m.group(1)) <= int(m.group(2)):
        return Jump(int(m.group(1)), int(m.group(2)))
    raise SignatureError(f"bad jump {{{body}}} at {pos}")


def needs_regex(tokens: tuple) -> bool:
    """True when the signature has a negated alternative (only the regex form says it)."""
    for t in tokens:
        if isinstance(t, Alternatives) and (t.negated or any(needs_regex(o) for o in t.options)):
            return True
    return False


def to_yara_hex(tokens: tuple) -> str:
    """YARA hex string body (without braces)."""
    out = []
    for t in tokens:
        if isinstance(t, Byte):
            out.append(f"{t.value:02X}")
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
    for t in tokens:
        if isinstance(t, Byte):
            out.append(f"\\x{t.value:02x}")
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
                out.append("[^" + "".join(f"\\x{o[0].value:02x}" for o in t.options) + "]")
            else:
                out.append("(" + "|".join(to_yara_regex(o) for o in t.options) + ")")
    return "".join(out)


def literal_bytes(tokens: tuple) -> bytes | None:
    """The signature as plain bytes when it is only fixed bytes, else None."""
    if all(isinstance(t, Byte) for t in tokens):
        return bytes(t.value for t in tokens)
    return None
