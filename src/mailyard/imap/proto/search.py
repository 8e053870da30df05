"""SEARCH criteria grammar (RFC 3501 §6.4.4, §9 `search-key`) → a `SearchKey` tree.

A list of keys is an implicit AND; `OR a b`, `NOT a` and parenthesised lists nest. String
arguments are astrings decoded with the CHARSET (UTF-8 and US-ASCII; anything else is
refused with NO [BADCHARSET] per RFC 3501 §6.4.4).
"""

from __future__ import annotations

from mailyard.imap.proto.lexer import Lexer
from mailyard.imap.proto.types import SearchKey

CHARSETS = ("UTF-8", "US-ASCII")
_FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
              "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}
_UNFLAG_KEYS = {"UN" + k: v for k, v in _FLAG_KEYS.items()}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_ADDRESS_KEYS = {"BCC", "CC", "FROM", "TO", "SUBJECT"}
_MAX_DEPTH = 64


def parse_search_keys(lx: Lexer, charset: str | None) -> SearchKey:
    """Parse `search-key *(SP search-key)` up to the end of the command."""
    if charset is not None and charset not in CHARSETS:
        raise lx.error(f"unsupported charset {charset}", code="BADCHARSET (UTF-8 US-ASCII)")
    keys = [_key(lx, charset, 0)]
    while lx.maybe_sp():
        keys.append(_key(lx, charset, 0))
    return keys[0] if len(keys) == 1 else SearchKey("and", children=tuple(keys))


def _text(lx: Lexer, charset: str | None) -> str:
    raw = lx.astring_bytes()
    try:
        return raw.decode("utf-8" if charset != "US-ASCII" else "ascii")
    except UnicodeDecodeError:
        raise lx.error("search string is not valid in its charset") from None


def _key(lx: Lexer, charset: str | None, depth: int) -> SearchKey:
    if depth > _MAX_DEPTH:
        raise lx.error("search criteria nested too deeply")
    if lx.accept(b"("):
        keys = [_key(lx, charset, depth + 1)]
        while not lx.accept(b")"):
            lx.sp()
            keys.append(_key(lx, charset, depth + 1))
        return keys[0] if len(keys) == 1 else SearchKey("and", children=tuple(keys))
    c = lx.peek()
    if c.isdigit() or c == b"*":
        return SearchKey("seqset", lx.sequence_set())
    word = lx.atom().upper()
    if word == "ALL":
        return SearchKey("all")
    if word in _FLAG_KEYS:
        return SearchKey("flag", _FLAG_KEYS[word])
    if word in _UNFLAG_KEYS:
        return SearchKey("not", children=(SearchKey("flag", _UNFLAG_KEYS[word]),))
    if word in ("NEW", "OLD", "RECENT"):
        return SearchKey(word.lower())
    if word == "UNKEYWORD":
        lx.sp()
        return SearchKey("not", children=(SearchKey("keyword", lx.flag()),))
    if word == "KEYWORD":
        lx.sp()
        return SearchKey("keyword", lx.flag())
    if word in _DATE_KEYS:
        lx.sp()
        return SearchKey(word.lower(), lx.date())
    if word in ("LARGER", "SMALLER"):
        lx.sp()
        return SearchKey(word.lower(), lx.number())
    if word in ("YOUNGER", "OLDER"):
        lx.sp()
        return SearchKey(word.lower(), lx.nz_number())
    if word in _ADDRESS_KEYS:
        lx.sp()
        return SearchKey("header", (word, _text(lx, charset)))
    if word == "HEADER":
        lx.sp()
        name = lx.astring().upper()
        lx.sp()
        return SearchKey("header", (name, _text(lx, charset)))
    if word in ("BODY", "TEXT"):
        lx.sp()
        return SearchKey(word.lower(), _text(lx, charset))
    if word == "UID":
        lx.sp()
        return SearchKey("uid", lx.sequence_set())
    if word == "NOT":
        lx.sp()
        return SearchKey("not", children=(_key(lx, charset, depth + 1),))
    if word == "OR":
        lx.sp()
        a = _key(lx, charset, depth + 1)
        lx.sp()
        b = _key(lx, charset, depth + 1)
        return SearchKey("or", children=(a, b))
    if word == "MODSEQ":
        # MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 §3.1.5)
        lx.sp()
        if lx.peek() == b'"':
            lx.string_bytes()
            lx.sp()
            lx.atom()
            lx.sp()
        return SearchKey("modseq", lx.number())
    raise lx.error(f"unknown search key {word}")
