"""Table-driven tests of the command framer and parser, plus hypothesis fuzz."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.imap.proto import mailbox as mbox
from mailyard.imap.proto.framing import NEED_DATA, CommandFramer, Continuation, RawCommand, Refusal
from mailyard.imap.proto.parser import parse
from mailyard.imap.proto.types import (
    STAR,
    AppendCommand,
    FetchCommand,
    ParseError,
    SearchKey,
    Section,
    SequenceSet,
    StoreCommand,
)


def events(framer: CommandFramer) -> list:
    out = []
    while True:
        ev = framer.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)


# -- framing ----------------------------------------------------------------------------------

def test_framer_plain_lines():
    f = CommandFramer()
    f.feed(b"a1 NOOP\r\na2 CAPA")
    assert events(f) == [RawCommand(b"a1 NOOP\r\n")]
    f.feed(b"BILITY\r\n")
    assert events(f) == [RawCommand(b"a2 CAPABILITY\r\n")]


def test_framer_synchronizing_literal_asks_for_continuation():
    f = CommandFramer()
    f.feed(b"a APPEND INBOX {5}\r\n")
    assert events(f) == [Continuation()]
    f.feed(b"hel")
    assert events(f) == []
    f.feed(b"lo\r\n")
    assert events(f) == [RawCommand(b"a APPEND INBOX {5}\r\nhello\r\n")]


def test_framer_literal_plus_needs_no_continuation():
    f = CommandFramer()
    f.feed(b"a LOGIN {5+}\r\nalice {3+}\r\npw!\r\n")
    assert events(f) == [RawCommand(b"a LOGIN {5+}\r\nalice {3+}\r\npw!\r\n")]


def test_framer_refuses_2gb_literal_without_continuation():
    f = CommandFramer(max_literal=1024)
    f.feed(b"x APPEND INBOX {2147483648}\r\n")
    ev = events(f)
    assert ev == [Refusal("x", "[TOOBIG] literal too big", fatal=False)]
    assert f.buffered == 0
    f.feed(b"y NOOP\r\n")   # the session goes on
    assert events(f) == [RawCommand(b"y NOOP\r\n")]


def test_framer_huge_non_synchronizing_literal_is_fatal():
    f = CommandFramer(max_literal=1024)
    f.feed(b"x APPEND INBOX {99999999+}\r\n")
    [ev] = events(f)
    assert isinstance(ev, Refusal) and ev.fatal


def test_framer_overlong_line_is_fatal_and_bounded():
    f = CommandFramer(max_command=100)
    f.feed(b"a " + b"x" * 200)
    [ev] = events(f)
    assert isinstance(ev, Refusal) and ev.fatal
    assert f.buffered == 0


def test_framer_line_mode():
    f = CommandFramer()
    f.feed(b"DONE\r\nrest")
    assert f.next_line() == b"DONE"
    assert f.next_line() is NEED_DATA


# -- parser table -----------------------------------------------------------------------------

@pytest.mark.parametrize("line, name, check", [
    (b"a CAPABILITY\r\n", "CAPABILITY", None),
    (b"a login alice \"p w\"\r\n", "LOGIN", lambda c: c.args == ("alice", "p w")),
    (b"a LOGIN {5}\r\nalice {2}\r\npw\r\n", "LOGIN", lambda c: c.args == ("alice", "pw")),
    (b"a AUTHENTICATE PLAIN AGFAAGI=\r\n", "AUTHENTICATE",
     lambda c: c.args == ("PLAIN", "AGFAAGI=")),
    (b"a SELECT inbox\r\n", "SELECT", lambda c: c.mailbox == "INBOX" and not c.readonly),
    (b"a EXAMINE \"Entw&APw-rfe\"\r\n", "EXAMINE", lambda c: c.mailbox == "Entwürfe"),
    (b"a SELECT INBOX (CONDSTORE)\r\n", "SELECT", lambda c: c.condstore),
    (b"a CREATE Junk2 (USE (\\Junk))\r\n", "CREATE", lambda c: c.special_use == ("\\Junk",)),
    (b"a RENAME a b\r\n", "RENAME", lambda c: c.args == ("a", "b")),
    (b"a LIST \"\" %\r\n", "LIST", lambda c: c.patterns == ("%",)),
    (b"a LIST (SPECIAL-USE) \"\" *\r\n", "LIST", lambda c: c.selection == ("SPECIAL-USE",)),
    (b"a LSUB \"\" *\r\n", "LSUB", None),
    (b"a STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n", "STATUS",
     lambda c: c.items == ("MESSAGES", "UNSEEN", "UIDNEXT")),
    (b"a UID STORE 1:* -FLAGS (\\Seen)\r\n", "STORE",
     lambda c: c.uid and c.action.mode == "-" and c.sequence.ranges == ((1, STAR),)),
    (b"a STORE 2 (UNCHANGEDSINCE 5) FLAGS.SILENT \\Flagged\r\n", "STORE",
     lambda c: c.action.unchanged_since == 5 and c.action.silent),
    (b"a UID MOVE 3,5:7 Trash\r\n", "MOVE", lambda c: c.mailbox == "Trash"),
    (b"a FETCH 1 FULL\r\n", "FETCH", lambda c: len(c.attributes) == 5),
    (b"a FETCH 1 BODY[1.2.MIME]\r\n", "FETCH",
     lambda c: c.attributes[0].section == Section((1, 2), "MIME")),
    (b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Received)]<10.20>)\r\n", "FETCH",
     lambda c: c.attributes[0].peek and c.attributes[0].partial == (10, 20)
     and c.attributes[0].section.fields == ("RECEIVED",)),
    (b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)\r\n", "FETCH",
     lambda c: c.changed_since == 12 and c.vanished),
    (b"a SEARCH UNSEEN LARGER 100\r\n", "SEARCH",
     lambda c: c.criteria.kind == "and" and c.criteria.children[1] == SearchKey("larger", 100)),
    (b"a SEARCH RETURN (MIN COUNT) ALL\r\n", "SEARCH", lambda c: c.returns == ("MIN", "COUNT")),
    (b"a SEARCH CHARSET UTF-8 TEXT {6}\r\n\xc3\xa4rger\r\n", "SEARCH",
     lambda c: c.criteria == SearchKey("text", "ärger")),
    (b"a SEARCH (OR FROM a TO b) NOT DELETED\r\n", "SEARCH", None),
    (b"a SEARCH HEADER X-Spam yes SENTSINCE 1-Jan-2024\r\n", "SEARCH", None),
    (b"a SORT (REVERSE ARRIVAL) UTF-8 ALL\r\n", "SORT", None),
    (b"a THREAD REFERENCES UTF-8 ALL\r\n", "THREAD", None),
    (b"a ID (\"name\" \"mutt\")\r\n", "ID", lambda c: c.args == (("name", "mutt"),)),
    (b"a ENABLE QRESYNC\r\n", "ENABLE", None),
    (b"a UID EXPUNGE 4:5\r\n", "EXPUNGE", lambda c: c.uid),
])
def test_parse_accepts(line, name, check):
    cmd = parse(line)
    assert cmd.name == name
    if check is not None:
        assert check(cmd), cmd


def test_parse_append_with_flags_and_date():
    cmd = parse(b'a APPEND Sent (\\Seen $Label) "7-Feb-2024 10:00:00 +0100" {3}\r\nabc\r\n')
    assert isinstance(cmd, AppendCommand)
    [m] = cmd.messages
    assert m.flags == ("\\Seen", "$Label")
    assert m.date == dt.datetime(2024, 2, 7, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert m.message == b"abc"


@pytest.mark.parametrize("line", [
    b"\r\n", b"a\r\n", b"a BOGUS\r\n", b"a FETCH\r\n", b"a FETCH 0 FLAGS\r\n",
    b"a FETCH 1 (FLAGS\r\n", b"a FETCH 1 BODY[9.HEADERX]\r\n", b"a LOGIN alice\r\n",
    b"a SEARCH OR ALL\r\n", b"a SEARCH SINCE 31-Foo-2024\r\n", b"a STORE 1 FLAGZ x\r\n",
    b"a SELECT \"unterminated\r\n", b"a UID NOOP\r\n", b"a STATUS INBOX (BOGUS)\r\n",
    b"a NOOP extra\r\n", b"a FETCH 1 BODY[]<5.0>\r\n", b"a SEARCH " + b"(" * 100 + b"ALL",
])
def test_parse_rejects(line):
    with pytest.raises(ParseError):
        parse(line)


def test_parse_bad_charset_has_code():
    with pytest.raises(ParseError) as info:
        parse(b"a SEARCH CHARSET KOI8-R ALL\r\n")
    assert info.value.code.startswith("BADCHARSET")


def test_sequence_set_select_and_star():
    s = parse(b"a FETCH 2:*,1 FLAGS\r\n").sequence
    assert s.select([1, 2, 3, 10]) == [1, 2, 3, 10]
    assert SequenceSet(((STAR, 5),)).select([3, 4, 9]) == [9]   # *:5 with * = 9 is 5:9
    assert str(SequenceSet.of([1, 2, 3, 7, 9, 10])) == "1:3,7,9:10"


@pytest.mark.parametrize("name", ["INBOX", "Entwürfe", "a&b", "日本語.メール", "x~y"])
def test_mutf7_round_trip(name):
    assert mbox.decode_mutf7(mbox.encode_mutf7(name)) == name


def test_list_pattern_wildcards():
    rx = mbox.pattern_regex("", "%")
    assert rx.match("Work") and not rx.match("Work.Projects")
    assert mbox.pattern_regex("", "*").match("Work.Projects")
    assert mbox.pattern_regex("", "inbox").match("INBOX")
    assert mbox.pattern_regex("Work.", "%").match("Work.Projects")


# -- fuzz -------------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_only_raises_parse_error(data):
    try:
        parse(data)
    except ParseError:
        pass


_WORDS = st.sampled_from([b"a", b"FETCH", b"UID", b"SEARCH", b"STORE", b"1:*", b"(", b")",
                          b"BODY[", b"]", b"{3}\r\nabc", b"\"q\"", b"OR", b"NOT", b"*", b"<1.2>",
                          b"FLAGS", b"+FLAGS", b"\\Seen", b"LIST", b"APPEND", b"\"\"", b"%"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS, max_size=12))
def test_fuzz_parse_grammar_words(words):
    try:
        parse(b"t " + b" ".join(words) + b"\r\n")
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_fuzz_framer_never_raises_and_stays_bounded(chunks):
    f = CommandFramer(max_command=256, max_literal=256)
    for chunk in chunks:
        f.feed(chunk)
        for ev in events(f):
            assert isinstance(ev, (RawCommand, Continuation, Refusal))
            if isinstance(ev, RawCommand):
                assert len(ev.data) <= 256 * 2 + 512
                try:
                    parse(ev.data)
                except ParseError:
                    pass
        assert f.buffered <= 256 * 9 + 60


def test_store_command_type():
    assert isinstance(parse(b"a STORE 1 FLAGS ()\r\n"), StoreCommand)
    assert isinstance(parse(b"a FETCH * UID\r\n"), FetchCommand)
