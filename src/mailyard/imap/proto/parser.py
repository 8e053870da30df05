"""The command parser: `parse(data) -> Command` for one complete command (literals inline).

Pure: bytes in, a typed command out, or `ParseError` (answered BAD by the session, which stays
connected). The grammar is RFC 3501 §9 plus the extensions we announce: UIDPLUS, MOVE,
LIST-EXTENDED / LIST-STATUS (RFC 5258/5819), CREATE-SPECIAL-USE (RFC 6154), CONDSTORE /
QRESYNC (RFC 7162), ESEARCH (RFC 4731), SORT / THREAD (RFC 5256), ID, ENABLE, COMPRESS.
"""

from __future__ import annotations

import re

from mailyard.imap.proto import mailbox as mbox
from mailyard.imap.proto.lexer import Lexer
from mailyard.imap.proto.search import parse_search_keys
from mailyard.imap.proto.types import (
    AppendCommand,
    AppendMessage,
    Command,
    CopyCommand,
    CreateCommand,
    FetchAttribute,
    FetchCommand,
    ListCommand,
    ParseError,
    SearchCommand,
    Section,
    SelectCommand,
    SortCommand,
    StatusCommand,
    StoreAction,
    StoreCommand,
    ThreadCommand,
)

# tag = 1*<any ASTRING-CHAR except "+">
_TAG = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\+]+")

SIMPLE = {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "EXPUNGE",
          "UNSELECT", "IDLE", "NAMESPACE"}
STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ",
                "SIZE"}
FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
FETCH_SIMPLE = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                "RFC822.TEXT", "BODYSTRUCTURE", "UID", "BODY", "MODSEQ"}
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")


def parse(data: bytes) -> Command:
    """Parse one complete command; raise ParseError (with the tag when one was read)."""
    m = _TAG.match(data)
    if m is None or m.end() >= len(data) or data[m.end():m.end() + 1] != b" ":
        raise ParseError("missing tag or command", "*")
    tag = m.group().decode("ascii", "replace")
    lx = Lexer(data, tag)
    lx.pos = m.end() + 1
    name = lx.atom().upper()
    uid = False
    if name == "UID":
        lx.sp()
        uid = True
        name = lx.atom().upper()
        if name not in ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT",
                        "THREAD"):
            raise lx.error(f"UID {name} is not a command")
    handler = _HANDLERS.get(name)
    if handler is None:
        if name in SIMPLE:
            if uid and name == "EXPUNGE":
                lx.sp()
                seq = lx.sequence_set()
                lx.end()
                return Command(tag, name, True, (seq,))
            lx.end()
            return Command(tag, name, uid)
        raise lx.error(f"unknown command {name}")
    cmd = handler(lx, tag, uid, name)
    lx.end()
    return cmd


def _mailbox(lx: Lexer) -> str:
    return mbox.normalize(mbox.decode_mutf7(lx.astring()))


def _login(lx, tag, uid, name):
    lx.sp()
    user = lx.astring()
    lx.sp()
    password = lx.astring()
    return Command(tag, name, False, (user, password))


def _authenticate(lx, tag, uid, name):
    lx.sp()
    mechanism = lx.atom().upper()
    initial = None
    if lx.maybe_sp():
        # SASL-IR (RFC 4959): base64 or "=" for an empty response
        initial = lx.atom() if lx.peek() != b"=" else (lx.expect(b"="), "=")[1]
    return Command(tag, name, False, (mechanism, initial))


def _select(lx, tag, uid, name):
    lx.sp()
    mailbox = _mailbox(lx)
    condstore = False
    qresync = None
    if lx.maybe_sp():
        lx.expect(b"(")
        while not lx.accept(b")"):
            param = lx.atom().upper()
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                # QRESYNC (uidvalidity modseq [known-uids] [(seq-match-data)]) (RFC 7162 §3.2.5)
                lx.sp()
                lx.expect(b"(")
                validity = lx.nz_number()
                lx.sp()
                modseq = lx.number()
                known = None
                if lx.maybe_sp() and lx.peek() != b"(":
                    known = lx.sequence_set()
                    lx.maybe_sp()
                if lx.accept(b"("):
                    lx.sequence_set()
                    lx.sp()
                    lx.sequence_set()
                    lx.expect(b")")
                lx.expect(b")")
                qresync = (validity, modseq, known)
                condstore = True
            else:
                raise lx.error(f"unknown SELECT parameter {param}")
            lx.maybe_sp()
    return SelectCommand(tag, mailbox, name == "EXAMINE", condstore, qresync, name)


def _one_mailbox(lx, tag, uid, name):
    lx.sp()
    return Command(tag, name, False, (_mailbox(lx),))


def _create(lx, tag, uid, name):
    lx.sp()
    mailbox = _mailbox(lx)
    uses: tuple[str, ...] = ()
    if lx.maybe_sp():
        # create-param = "USE" SP "(" use-attr *(SP use-attr) ")"  (RFC 6154 §3)
        lx.expect(b"(")
        lx.expect(b"USE")
        lx.sp()
        uses = lx.flag_list()
        lx.expect(b")")
    return CreateCommand(tag, mailbox, uses)


def _rename(lx, tag, uid, name):
    lx.sp()
    old = _mailbox(lx)
    lx.sp()
    new = _mailbox(lx)
    return Command(tag, name, False, (old, new))


def _list(lx, tag, uid, name):
    lx.sp()
    selection: tuple[str, ...] = ()
    extended = False
    if name == "LIST" and lx.peek() == b"(":
        selection = lx.paren_atoms()
        extended = True
        lx.sp()
    reference = mbox.decode_mutf7(lx.astring())
    lx.sp()
    patterns: list[str] = []
    if name == "LIST" and lx.peek() == b"(":
        extended = True
        lx.expect(b"(")
        while True:
            patterns.append(mbox.decode_mutf7(lx.list_mailbox()))
            if lx.accept(b")"):
                break
            lx.sp()
    else:
        patterns.append(mbox.decode_mutf7(lx.list_mailbox()))
    returns: list[str] = []
    status_items: tuple[str, ...] = ()
    if lx.maybe_sp():
        lx.expect(b"RETURN")
        lx.sp()
        extended = True
        lx.expect(b"(")
        while not lx.accept(b")"):
            opt = lx.atom().upper()
            returns.append(opt)
            if opt == "STATUS":
                lx.sp()
                status_items = lx.paren_atoms()
            lx.maybe_sp()
    return ListCommand(tag, reference, tuple(patterns), selection, tuple(returns),
                       status_items, name, False, extended)


def _status(lx, tag, uid, name):
    lx.sp()
    mailbox = _mailbox(lx)
    lx.sp()
    items = lx.paren_atoms()
    for item in items:
        if item not in STATUS_ITEMS:
            raise lx.error(f"unknown STATUS item {item}")
    return StatusCommand(tag, mailbox, items)


def _append(lx, tag, uid, name):
    lx.sp()
    mailbox = _mailbox(lx)
    messages = []
    while lx.maybe_sp():   # MULTIAPPEND-style repetition is harmless to accept
        flags: tuple[str, ...] = ()
        date = None
        if lx.peek() == b"(":
            flags = lx.flag_list()
            lx.sp()
        if lx.peek() == b'"':
            date = lx.date_time()
            if date is None:
                raise lx.error("bad APPEND date-time")
            lx.sp()
        message = lx.literal()
        if message is None:
            raise lx.error("APPEND needs the message as a literal")
        messages.append(AppendMessage(flags, date, message))
    if not messages:
        raise lx.error("APPEND needs a message")
    return AppendCommand(tag, mailbox, tuple(messages))


def _section(lx: Lexer) -> Section:
    # section = "[" [section-spec] "]"
    part: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    if lx.accept(b"]"):
        return Section()
    while lx.peek().isdigit():
        part.append(lx.nz_number())
        if not lx.accept(b"."):
            break
    if lx.peek() != b"]":
        word = lx._match(re.compile(rb"[A-Za-z.]+"))
        text = (word or b"").decode().upper()
        if text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise lx.error("bad section text")
        if text == "MIME" and not part:
            raise lx.error("MIME needs a part number")
        if text.startswith("HEADER.FIELDS"):
            lx.sp()
            lx.expect(b"(")
            names = []
            while True:
                names.append(lx.astring().upper())
                if lx.accept(b")"):
                    break
                lx.sp()
            fields = tuple(names)
    lx.expect(b"]")
    return Section(tuple(part), text, fields)


def _fetch_att(lx: Lexer) -> FetchAttribute:
    word = lx._match(_FETCH_NAME)
    if word is None:
        raise lx.error("expected a fetch attribute")
    att = word.decode().upper()
    if att in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") \
            and lx.accept(b"["):
        section = _section(lx)
        partial = None
        if lx.accept(b"<"):
            start = lx.number()
            lx.expect(b".")
            length = lx.nz_number()
            lx.expect(b">")
            partial = (start, length)
        return FetchAttribute(att.replace(".PEEK", ""), section, partial, att.endswith(".PEEK"))
    if att not in FETCH_SIMPLE:
        raise lx.error(f"unknown fetch attribute {att}")
    return FetchAttribute(att)


def _fetch(lx, tag, uid, name):
    lx.sp()
    seq = lx.sequence_set()
    lx.sp()
    atts: list[FetchAttribute] = []
    if lx.accept(b"("):
        while True:
            atts.append(_fetch_att(lx))
            if lx.accept(b")"):
                break
            lx.sp()
    else:
        m = _FETCH_NAME.match(lx.data, lx.pos)
        if m is not None and m.group().upper().decode() in FETCH_MACROS:
            lx.pos = m.end()
            atts = [FetchAttribute(a) for a in FETCH_MACROS[m.group().upper().decode()]]
        else:
            atts.append(_fetch_att(lx))
    changed_since = None
    vanished = False
    if lx.maybe_sp():
        # fetch-modifiers: CHANGEDSINCE (RFC 7162 §3.1.4), VANISHED (RFC 7162 §3.2.6)
        lx.expect(b"(")
        while not lx.accept(b")"):
            mod = lx.atom().upper()
            if mod == "CHANGEDSINCE":
                lx.sp()
                changed_since = lx.number()
            elif mod == "VANISHED" and uid:
                vanished = True
            else:
                raise lx.error(f"unknown FETCH modifier {mod}")
            lx.maybe_sp()
        if vanished and changed_since is None:
            raise lx.error("VANISHED needs CHANGEDSINCE")
    if uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAttribute("UID"))   # RFC 3501 §6.4.8: UID FETCH implies UID
    return FetchCommand(tag, seq, tuple(atts), uid, changed_since, vanished)


def _store(lx, tag, uid, name):
    lx.sp()
    seq = lx.sequence_set()
    lx.sp()
    unchanged_since = None
    if lx.accept(b"("):
        lx.expect(b"UNCHANGEDSINCE")
        lx.sp()
        unchanged_since = lx.number()
        lx.expect(b")")
        lx.sp()
    item = lx.atom().upper()
    m = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", item)
    if m is None:
        raise lx.error("expected [+|-]FLAGS[.SILENT]")
    lx.sp()
    flags = lx.flags_or_list()
    action = StoreAction(m.group(1) or "=", flags, bool(m.group(2)), unchanged_since)
    return StoreCommand(tag, seq, action, uid)


def _copy(lx, tag, uid, name):
    lx.sp()
    seq = lx.sequence_set()
    lx.sp()
    return CopyCommand(tag, seq, _mailbox(lx), uid, name)


def _charset(lx: Lexer) -> str:
    return lx.astring().upper()


def _search(lx, tag, uid, name):
    lx.sp()
    returns = None
    charset = None
    if lx.accept(b"RETURN "):
        # ESEARCH (RFC 4731 §3): RETURN (MIN MAX COUNT ALL SAVE)
        returns = lx.paren_atoms() or ("ALL",)
        lx.sp()
    if lx.accept(b"CHARSET "):
        charset = _charset(lx)
        lx.sp()
    criteria = parse_search_keys(lx, charset)
    return SearchCommand(tag, criteria, uid, charset, returns)


def _sort(lx, tag, uid, name):
    lx.sp()
    criteria = lx.paren_atoms()
    lx.sp()
    charset = _charset(lx)
    lx.sp()
    return SortCommand(tag, criteria, charset, parse_search_keys(lx, charset), uid)


def _thread(lx, tag, uid, name):
    lx.sp()
    algorithm = lx.atom().upper()
    lx.sp()
    charset = _charset(lx)
    lx.sp()
    return ThreadCommand(tag, algorithm, charset, parse_search_keys(lx, charset), uid)


def _id(lx, tag, uid, name):
    lx.sp()
    fields = {}
    if not lx.accept(b"NIL"):
        lx.expect(b"(")
        while not lx.accept(b")"):
            key = lx.string_bytes().decode("utf-8", "replace")
            lx.sp()
            value = lx.nstring()
            fields[key] = value.decode("utf-8", "replace") if value is not None else None
            lx.maybe_sp()
    return Command(tag, name, False, tuple(fields.items()))


def _enable(lx, tag, uid, name):
    caps = []
    while lx.maybe_sp():
        caps.append(lx.atom().upper())
    if not caps:
        raise lx.error("ENABLE needs a capability")
    return Command(tag, name, False, tuple(caps))


def _compress(lx, tag, uid, name):
    lx.sp()
    return Command(tag, name, False, (lx.atom().upper(),))


_HANDLERS = {
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "SELECT": _select, "EXAMINE": _select,
    "CREATE": _create, "DELETE": _one_mailbox, "SUBSCRIBE": _one_mailbox,
    "UNSUBSCRIBE": _one_mailbox, "RENAME": _rename, "LIST": _list, "LSUB": _list,
    "STATUS": _status, "APPEND": _append, "FETCH": _fetch, "STORE": _store, "COPY": _copy,
    "MOVE": _copy, "SEARCH": _search, "SORT": _sort, "THREAD": _thread, "ID": _id,
    "ENABLE": _enable, "COMPRESS": _compress,
}
