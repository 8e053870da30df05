"""The real server over real sockets, driven by Python's poplib (and raw sockets for abuse)."""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
import time

import pytest
from pop3_helpers import PASSWORD, deliver, login, new_user, sample_message

from mailyard.pop3 import proto


def crlf(raw: bytes) -> bytes:
    return proto.to_crlf(raw)


def retr_bytes(client: poplib.POP3, number: int) -> tuple[bytes, int]:
    """RETR as poplib reassembles it: lines un-stuffed, each ended with CRLF; and octets."""
    _, lines, octets = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines), octets


def login_when_released(srv, address) -> poplib.POP3:
    """Log in once the server has noticed a dropped session (its lock is then released)."""
    for _ in range(200):
        try:
            return login(srv, address)
        except poplib.error_proto as exc:
            if b"[IN-USE]" not in exc.args[0]:
                raise
            time.sleep(0.05)
    raise AssertionError("the dropped session's lock was never released")


def store_folder(srv, address):
    from mailyard.maildir import MailStore

    folder = MailStore(srv.maildir(address)).open("INBOX")
    folder.refresh()
    return folder


# -- every command ------------------------------------------------------------------------
def test_every_transaction_command(pop3_server):
    messages = [sample_message(n, body_lines=n + 1) for n in range(3)]
    address, _uids = new_user(pop3_server, messages)
    c = login(pop3_server, address)
    sizes = [len(crlf(m)) for m in messages]
    assert c.stat() == (3, sum(sizes))
    _resp, listing, _ = c.list()
    assert listing == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
    assert c.list(2) == b"+OK 2 %d" % sizes[1]
    for i, m in enumerate(messages, 1):
        body, octets = retr_bytes(c, i)
        assert body == crlf(m) and octets == sizes[i - 1]
    _, top, _ = c.top(3, 1)
    assert top == crlf(messages[2]).split(b"\r\n")[:6]  # 4 header lines, blank, 1
    assert c.noop().startswith(b"+OK")
    assert c.dele(1).startswith(b"+OK")
    assert c.stat() == (2, sizes[1] + sizes[2])
    with pytest.raises(poplib.error_proto, match="deleted"):
        c.retr(1)
    with pytest.raises(poplib.error_proto, match="No such message"):
        c.retr(4)
    with pytest.raises(poplib.error_proto, match="No such message"):
        c.list(0)
    c.rset()
    assert c.stat() == (3, sum(sizes))
    assert c.quit().startswith(b"+OK")
    assert len(store_folder(pop3_server, address).messages()) == 3


def test_uidl_is_uid_and_uidvalidity_and_stable(pop3_server):
    address, uids = new_user(pop3_server, [sample_message(n) for n in range(3)])
    validity = store_folder(pop3_server, address).uid_validity
    expected = [b"%d %08X%08X" % (i + 1, uid, validity) for i, uid in enumerate(uids)]
    c = login(pop3_server, address)
    assert c.uidl()[1] == expected
    assert c.uidl(2) == b"+OK " + expected[1]
    c.dele(1)
    c.quit()
    c = login(pop3_server, address)
    assert c.uidl()[1] == [b"%d %s" % (i + 1, e.split()[1]) for i, e in enumerate(expected[1:])]
    c.quit()


def test_capa(pop3_server):
    c = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    caps = c.capa()
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert cap in caps
    assert caps["SASL"] == ["PLAIN"] and caps["IMPLEMENTATION"] == ["mailyard"]
    c.quit()


def test_auth_plain_initial_response_and_continuation(pop3_server):
    address, _ = new_user(pop3_server, [sample_message(1)])
    token = base64.b64encode(b"\0" + address.encode() + b"\0" + PASSWORD.encode())
    c = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    assert c._shortcmd("AUTH PLAIN " + token.decode()).startswith(b"+OK")
    assert c.stat()[0] == 1
    c.quit()
    c = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    c._putcmd("AUTH PLAIN")
    assert c._getline()[0] == b"+ "
    assert c._shortcmd(token.decode()).startswith(b"+OK")
    c.quit()


def test_auth_plain_refuses_acting_as_another_user(pop3_server):
    address, _ = new_user(pop3_server, [])
    token = base64.b64encode(b"postmaster@example.test\0" + address.encode() + b"\0"
                             + PASSWORD.encode())
    c = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        c._shortcmd("AUTH PLAIN " + token.decode())
    c.quit()


def test_wrong_password_then_right(pop3_server):
    address, _ = new_user(pop3_server, [])
    c = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    c.user(address)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        c.pass_("wrong")
    c.user(address)
    c.pass_(PASSWORD)
    assert c.stat() == (0, 0)
    c.quit()


def test_apop_is_off(pop3_server):
    c = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    with pytest.raises(poplib.error_proto):
        c.apop("someone@example.test", "secret")  # no timestamp banner: refused client-side
    with pytest.raises(poplib.error_proto, match="APOP is not available"):
        c._shortcmd("APOP someone@example.test 0123456789abcdef0123456789abcdef")
    c.quit()


# -- message form -------------------------------------------------------------------------
def test_lf_only_and_dot_lines_come_out_crlf_and_stuffed(pop3_server):
    tricky = [
        b"Subject: lf only\n\n.leading dot\n..two dots\n.\nend\n",
        b"Subject: mixed\r\n\r\ncrlf\nlf\r\n.\r\n",
        b"Subject: no final newline\n\nlast line",
        b"Subject: dot start\r\n\r\n.\r\n..\r\n...\r\n",
    ]
    address, _ = new_user(pop3_server, tricky)
    c = login(pop3_server, address)
    _, listing, _ = c.list()
    for i, raw in enumerate(tricky, 1):
        body, octets = retr_bytes(c, i)
        assert body == crlf(raw)
        assert octets == len(body)
    assert [int(x.split()[1]) for x in listing][:2] == [len(crlf(tricky[0])),
                                                        len(crlf(tricky[1]))]
    c.quit()
    # On the wire: CRLF everywhere, stuffed dots, one terminator.
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as s:
        wire = _raw_session(s, [b"USER " + address.encode(), b"PASS " + PASSWORD.encode(),
                                b"RETR 1", b"QUIT"])
    start = wire.index(b"octets\r\n") + len(b"octets\r\n")
    assert wire[start:].startswith(b"Subject: lf only\r\n\r\n..leading dot\r\n...two dots\r\n"
                                   b"..\r\nend\r\n.\r\n+OK")


def test_lf_only_file_written_by_another_tool(pop3_server):
    """A Maildir file with bare LF line ends (migrated, or written by procmail) on disk."""
    address, _ = new_user(pop3_server, [])
    raw = b"Subject: foreign\n\n.dot\nplain\n"
    maildir = pop3_server.maildir(address)
    store_folder(pop3_server, address)  # creates the Maildir
    (maildir / "tmp" / "1700000000.foreign.host").write_bytes(raw)
    (maildir / "tmp" / "1700000000.foreign.host").rename(
        maildir / "new" / "1700000000.foreign.host")
    c = login(pop3_server, address)
    assert c.list()[1] == [b"1 %d" % len(crlf(raw))]
    assert retr_bytes(c, 1) == (crlf(raw), len(crlf(raw)))
    assert c.top(1, 0)[1] == [b"Subject: foreign", b""]
    c.quit()


def _raw_session(sock: socket.socket, commands: list[bytes]) -> bytes:
    sock.sendall(b"".join(c + b"\r\n" for c in commands))
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_pipelined_commands(pop3_server):
    address, _ = new_user(pop3_server, [sample_message(n) for n in range(3)])
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as s:
        wire = _raw_session(s, [b"USER " + address.encode(), b"PASS " + PASSWORD.encode(),
                                b"STAT", b"RETR 1", b"RETR 2", b"RETR 3", b"QUIT"])
    assert wire.count(b"\r\n.\r\n") == 3
    assert wire.endswith(b"(0 messages deleted)\r\n")


# -- UPDATE semantics -----------------------------------------------------------------------
def test_deletions_only_at_clean_quit(pop3_server):
    address, uids = new_user(pop3_server, [sample_message(n) for n in range(3)])
    c = login(pop3_server, address)
    c.dele(1)
    c.dele(2)
    c.file.close()
    c.sock.close()  # dropped connection: no UPDATE
    c = login_when_released(pop3_server, address)
    assert c.stat()[0] == 3
    c.dele(2)
    c.quit()
    remaining = [m.uid for m in store_folder(pop3_server, address).messages()]
    assert remaining == [uids[0], uids[2]]  # gone for IMAP too


def test_mail_arriving_during_session_appears_in_next(pop3_server):
    address, _ = new_user(pop3_server, [sample_message(1)])
    c = login(pop3_server, address)
    deliver(pop3_server, address, [sample_message(2)])
    assert c.stat()[0] == 1
    c.dele(1)
    c.quit()
    c = login(pop3_server, address)
    assert c.stat()[0] == 1
    assert b"Subject: message 2" in retr_bytes(c, 1)[0]
    c.quit()


def test_second_session_gets_in_use(pop3_server):
    address, _ = new_user(pop3_server, [sample_message(1)])
    first = login(pop3_server, address)
    second = poplib.POP3("127.0.0.1", pop3_server.port("pop3"), timeout=30)
    second.user(address)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(PASSWORD)
    first.quit()
    second.user(address)
    second.pass_(PASSWORD)
    assert second.stat()[0] == 1
    second.quit()


def test_lock_held_by_another_process_gives_in_use(pop3_server):
    from mailyard.pop3.session import MailboxLock

    address, _ = new_user(pop3_server, [sample_message(1)])
    lock = MailboxLock(pop3_server.data_dir / "run" / "pop3", address)
    assert lock.acquire()
    try:
        with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
            login(pop3_server, address)
    finally:
        lock.release()
    login(pop3_server, address).quit()


def test_message_renamed_by_imap_flag_change_during_session(pop3_server):
    """IMAP sets \\Seen meanwhile: the file moves to cur/BASE:2,S; RETR still finds it."""
    address, uids = new_user(pop3_server, [sample_message(1)])
    c = login(pop3_server, address)
    store_folder(pop3_server, address).store_flags([uids[0]], ["\\Seen"], mode="add")
    assert retr_bytes(c, 1)[0] == crlf(sample_message(1))
    c.quit()


def test_message_expunged_elsewhere_during_session(pop3_server):
    address, uids = new_user(pop3_server, [sample_message(1), sample_message(2)])
    c = login(pop3_server, address)
    store_folder(pop3_server, address).expunge([uids[0]])
    with pytest.raises(poplib.error_proto, match="removed by another session"):
        c.retr(1)
    assert b"message 2" in retr_bytes(c, 2)[0]
    c.dele(1)
    assert c.quit().startswith(b"+OK")


# -- TLS ----------------------------------------------------------------------------------
def test_stls_with_verifying_client(pop3_server, tls_certs):
    address, _ = new_user(pop3_server, [sample_message(1)])
    c = poplib.POP3("localhost", pop3_server.port("pop3"), timeout=30)
    c.stls(context=tls_certs.client_context())
    assert "STLS" not in c.capa()
    c.user(address)
    c.pass_(PASSWORD)
    assert retr_bytes(c, 1)[0] == crlf(sample_message(1))
    c.quit()


def test_pop3s_with_verifying_client(pop3_server, tls_certs):
    address, _ = new_user(pop3_server, [sample_message(1)])
    c = poplib.POP3_SSL("localhost", pop3_server.port("pop3s"),
                        context=tls_certs.client_context(), timeout=30)
    assert "STLS" not in c.capa()
    c.user(address)
    c.pass_(PASSWORD)
    assert c.stat()[0] == 1
    c.quit()


def test_pop3s_refuses_an_unverified_name(pop3_server, tls_certs):
    ctx = tls_certs.client_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("127.0.0.1", pop3_server.port("pop3s"), timeout=30,
                        context=_with_hostname(ctx, "wrong.example"))


def _with_hostname(ctx, name):
    class Ctx:
        def wrap_socket(self, sock, server_hostname=None):
            return ctx.wrap_socket(sock, server_hostname=name)
    return Ctx()


def test_stls_command_injection_is_not_executed(pop3_server, tls_certs):
    """CVE-2011-0411 style: a USER pipelined with STLS in plaintext must be discarded."""
    address, _ = new_user(pop3_server, [])
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as raw:
        raw.recv(1024)
        raw.sendall(b"STLS\r\nUSER " + address.encode() + b"\r\n")
        assert raw.recv(1024).startswith(b"+OK")
        ctx = tls_certs.client_context()
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"PASS " + PASSWORD.encode() + b"\r\n")
            assert tls.recv(1024) == b"-ERR No USER given before PASS.\r\n"
