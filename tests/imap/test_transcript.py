"""Byte-exact transcripts: the client sends X, the server must answer exactly Y.

The real Connection and ImapSession run over an in-memory stream (an asyncio StreamReader
fed the client's bytes, a writer collecting the server's), with a real App, AccountStore and
Maildir store under tmp_path, so every byte the server would put on the wire is compared.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from mailyard.config.loader import load
from mailyard.imap.server import Connection, LoginThrottle
from mailyard.maildir import MailStore
from mailyard.server.app import App

USER = "carol@example.test"
PASSWORD = "s3cret"
CAPS_PRE = ("IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE "
            "SPECIAL-USE CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH CONDSTORE QRESYNC "
            "SORT THREAD=REFERENCES THREAD=ORDEREDSUBJECT COMPRESS=DEFLATE")


class MemoryWriter:
    """The server side of an in-memory stream: collects what the server writes."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        pass


@pytest.fixture
def app(tmp_path):
    cfg = tmp_path / "mailyard.toml"
    cfg.write_text(f'[server]\nhostname = "imap.example.test"\ndata_dir = "{tmp_path}/data"\n'
                   f'domains = ["example.test"]\n[imap]\nplaintext_auth_networks = '
                   f'["127.0.0.0/8"]\n')
    application = App(load(str(cfg)))
    application.accounts.add_user(USER, PASSWORD)
    yield application
    application.accounts.close()


async def converse(app, client: bytes) -> bytes:
    reader = asyncio.StreamReader()
    reader.feed_data(client)
    reader.feed_eof()
    writer = MemoryWriter()
    await Connection(app, reader, writer, False, LoginThrottle(3, 0.0)).run()
    return bytes(writer.data)


def seed(app, *messages: bytes) -> MailStore:
    store = MailStore(app.accounts.maildir_path(USER))
    for m in messages:
        store.deliver(m, internal_date=1707296400.0)   # 7-Feb-2024 09:00:00 UTC
    return store


GREETING = (f"* OK [CAPABILITY {CAPS_PRE} STARTTLS AUTH=PLAIN APPENDLIMIT=52428800] "
            f"imap.example.test mailyard IMAP ready\r\n").encode()
LOGIN_OK = (f"a OK [CAPABILITY {CAPS_PRE} APPENDLIMIT=52428800] logged in\r\n").encode()


async def test_transcript_login_select_fetch(app):
    seed(app, b"Subject: one\r\nFrom: a@b.c\r\n\r\nbody 1\r\n")
    out = await converse(app, (
        b"a LOGIN carol@example.test s3cret\r\n"
        b"b SELECT INBOX\r\n"
        b"c FETCH 1 (FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
        b"d LOGOUT\r\n"))
    store = MailStore(app.accounts.maildir_path(USER))
    validity = store.open("INBOX").uid_validity
    assert out == GREETING + LOGIN_OK + (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] limited\r\n"
        b"* 1 EXISTS\r\n"
        b"* 0 RECENT\r\n"
        b"* OK [UNSEEN 1] first unseen\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 2] predicted next UID\r\n"
        b"b OK [READ-WRITE] SELECT completed\r\n"
        b'* 1 FETCH (FLAGS () RFC822.SIZE 37 INTERNALDATE " 7-Feb-2024 09:00:00 +0000" '
        b"BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: one\r\n\r\n)\r\n"
        b"c OK FETCH completed\r\n"
        b"* BYE logging out\r\n"
        b"d OK LOGOUT completed\r\n") % validity


async def test_transcript_bad_command_keeps_session(app):
    out = await converse(app, b"a FROB\r\n\r\nb NOOP\r\n")
    assert out == GREETING + (b"a BAD unknown command FROB\r\n"
                              b"* BAD missing tag or command\r\n"
                              b"b OK NOOP completed\r\n")


async def test_transcript_state_rules(app):
    out = await converse(app, b"a SELECT INBOX\r\nb FETCH 1 FLAGS\r\n")
    assert out == GREETING + (b"a BAD SELECT is not allowed before authentication\r\n"
                              b"b BAD FETCH is not allowed before authentication\r\n")


async def test_transcript_authenticate_plain_continuation(app):
    token = base64.b64encode(b"\0carol@example.test\0s3cret")
    out = await converse(app, b"a AUTHENTICATE PLAIN\r\n" + token + b"\r\nb LOGOUT\r\n")
    assert out == GREETING + b"+ \r\n" + LOGIN_OK + \
        b"* BYE logging out\r\nb OK LOGOUT completed\r\n"


async def test_transcript_authenticate_sasl_ir_bad_password(app):
    token = base64.b64encode(b"\0carol@example.test\0wrong").decode()
    out = await converse(app, f"a AUTHENTICATE PLAIN {token}\r\n".encode())
    assert out == GREETING + b"a NO [AUTHENTICATIONFAILED] invalid credentials\r\n"


async def test_transcript_too_big_literal_refused_before_continuation(app):
    out = await converse(app, b"a LOGIN carol@example.test s3cret\r\n"
                              b"b APPEND INBOX {2147483648}\r\nc NOOP\r\n")
    assert out == GREETING + LOGIN_OK + (b"b NO [TOOBIG] literal too big\r\n"
                                         b"c OK NOOP completed\r\n")


async def test_transcript_too_many_errors_bye(app):
    out = await converse(app, b"x BOGUS\r\n" * 25)
    assert out.count(b"BAD unknown command") == 20
    assert out.endswith(b"* BYE too many errors\r\n")


async def test_transcript_list_and_status(app):
    store = seed(app, b"Subject: s\r\n\r\nx\r\n")
    store.create_folder("Work.Projects")
    out = await converse(app, b"a LOGIN carol@example.test s3cret\r\n"
                              b'b LIST "" "*"\r\n'
                              b'c LIST "" ""\r\n'
                              b"d STATUS INBOX (MESSAGES UNSEEN)\r\n")
    assert out == GREETING + LOGIN_OK + (
        b'* LIST (\\HasNoChildren) "." INBOX\r\n'
        b'* LIST (\\HasNoChildren \\Archive) "." "Archive"\r\n'
        b'* LIST (\\HasNoChildren \\Drafts) "." "Drafts"\r\n'
        b'* LIST (\\HasNoChildren \\Junk) "." "Junk"\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "." "Sent"\r\n'
        b'* LIST (\\HasNoChildren \\Trash) "." "Trash"\r\n'
        b'* LIST (\\Noselect \\HasChildren) "." "Work"\r\n'
        b'* LIST (\\HasNoChildren) "." "Work.Projects"\r\n'
        b"b OK LIST completed\r\n"
        b'* LIST (\\Noselect) "." ""\r\n'
        b"c OK LIST completed\r\n"
        b'* STATUS INBOX (MESSAGES 1 UNSEEN 1)\r\n'
        b"d OK STATUS completed\r\n")


# -- server-level fuzz: random commands in every state never crash the session ---------------

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_COMMAND_WORDS = st.sampled_from([
    b"FETCH", b"UID FETCH", b"STORE", b"UID STORE", b"SEARCH", b"UID SEARCH", b"COPY",
    b"MOVE", b"UID MOVE", b"EXPUNGE", b"UID EXPUNGE", b"SORT", b"THREAD", b"STATUS", b"LIST",
    b"LSUB", b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"APPEND", b"NOOP",
    b"CHECK", b"CLOSE", b"UNSELECT", b"ENABLE", b"ID", b"NAMESPACE", b"SUBSCRIBE"])
_ARG_WORDS = st.sampled_from([
    b"1", b"1:*", b"*", b"2,4:5", b"0", b"4294967296", b"INBOX", b"Junk", b"\"a.b\"",
    b"(FLAGS)", b"(BODY[1.2.MIME])", b"BODY.PEEK[HEADER.FIELDS (To)]<0.5>", b"ALL", b"FAST",
    b"+FLAGS", b"-FLAGS.SILENT", b"(\\Seen)", b"(\\Bogus)", b"OR", b"NOT", b"SEEN",
    b"BODY x", b"SINCE 1-Jan-2020", b"(REVERSE DATE)", b"UTF-8", b"REFERENCES", b"(MESSAGES)",
    b"{3+}\r\nabc", b"\"\"", b"%", b"(CONDSTORE)", b"(CHANGEDSINCE 1)", b"RETURN (ALL)", b"("])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(_COMMAND_WORDS, st.lists(_ARG_WORDS, max_size=4)), max_size=6))
async def test_fuzz_commands_in_selected_state_never_crash(app, commands):
    seed(app, b"Subject: a\r\nFrom: x@y.z\r\n\r\nbody\r\n",
         b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\npart\r\n--b--\r\n")
    script = b"a LOGIN carol@example.test s3cret\r\nb SELECT INBOX\r\n"
    for n, (verb, args) in enumerate(commands):
        script += b"t%d %s %s\r\n" % (n, verb, b" ".join(args))
    script += b"z NOOP\r\n"
    out = await converse(app, script)
    assert b"SERVERBUG" not in out
    assert b"z OK NOOP completed\r\n" in out or b"* BYE" in out


async def test_transcript_condstore_unchangedsince_modified(app):
    store = seed(app, b"Subject: a\r\n\r\nx\r\n", b"Subject: b\r\n\r\ny\r\n")
    folder = store.open("INBOX")
    folder.store_flags([2], ["\\Flagged"], "add")      # message 2 now has a newer modseq
    modseq_1 = folder.get(1).modseq
    modseq_2 = folder.get(2).modseq
    assert modseq_2 > modseq_1
    out = await converse(app, (
        b"a LOGIN carol@example.test s3cret\r\n"
        b"b SELECT INBOX (CONDSTORE)\r\n"
        b"c STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Seen)\r\n" % modseq_1))
    tail = out.split(b"b OK [READ-WRITE] SELECT completed\r\n")[1]
    new_modseq = store.open("INBOX").get(1).modseq
    assert tail == (b"* 1 FETCH (MODSEQ (%d))\r\n"
                    b"c OK [MODIFIED 2] STORE conditional\r\n") % new_modseq
