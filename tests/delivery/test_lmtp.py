"""LMTP over a real socket against the real server, with Python's smtplib.LMTP."""

import smtplib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import MailyardServer

from mailyard.delivery.agent import QUOTA_FULL, USER_UNKNOWN
from mailyard.maildir import MailStore

MSG = (b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: lmtp test\r\n"
       b"Return-Path: <forged@evil.test>\r\n\r\nHello over LMTP.\r\n.leading dot\r\n")


USERS = ["alice", "bob", "dan", "erin", "frank", "grace", "henry", "ivan", "zoe"]


def start_server(root, toml="", users=USERS, quota_users=("carol",)):
    """A real `mailyard serve` with LMTP and users made in one `user import`."""
    srv = MailyardServer(root=root, services={"lmtp"}, domains=["example.test"], toml=toml)
    srv.start()
    lines = [f"{u}@example.test:{{PLAIN}}secret::::::" for u in users]
    lines += [f"{u}@example.test:{{PLAIN}}secret::::::userdb_quota_rule=*:storage=1K"
              for u in quota_users]
    passwd = root / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    srv.cli("user", "import", str(passwd))
    return srv


@pytest.fixture(scope="module")
def lmtp_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("lmtp"))
    srv.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    srv.cli("alias", "add", "mixed@example.test", "ivan@example.test", "friend@elsewhere.test")
    yield srv
    srv.stop()


def lmtp(srv) -> smtplib.LMTP:
    client = smtplib.LMTP("127.0.0.1", srv.port("lmtp"), timeout=30)
    client.ehlo_or_helo_if_needed()
    return client


def send_lmtp(client, sender, recipients, message):
    """MAIL, RCPTs, DATA; returns (rcpt replies, per-recipient DATA replies)."""
    code, _ = client.mail(sender)
    assert code == 250
    rcpt_replies = [client.rcpt(r) for r in recipients]
    accepted = [r for r, (c, _) in zip(recipients, rcpt_replies) if c == 250]
    data_replies = []
    if accepted:
        data_replies.append(client.data(message))
        # RFC 2033 §4.2: one reply per accepted recipient; smtplib reads only the first.
        data_replies += [client.getreply() for _ in accepted[1:]]
    return rcpt_replies, data_replies


def messages(srv, address, folder="INBOX"):
    store = MailStore(srv.maildir(address))
    box = store.open(folder)
    return [box.read(uid) for uid in box.uids()]


def test_one_reply_per_recipient_and_unknown_user(lmtp_server):
    client = lmtp(lmtp_server)
    rcpts, datas = send_lmtp(client, "sender@remote.test",
                             ["alice@example.test", "nobody@example.test",
                              "bob+news@example.test", "team@example.test",
                              "someone@elsewhere.test"], MSG)
    client.quit()
    assert rcpts[0][0] == 250
    assert rcpts[1][0] == USER_UNKNOWN.code and b"5.1.1" in rcpts[1][1]
    assert rcpts[2][0] == 250
    assert rcpts[3][0] == 250
    assert rcpts[4][0] == 550  # not a local domain
    assert [code for code, _ in datas] == [250, 250, 250]
    alice = messages(lmtp_server, "alice@example.test")
    bob = messages(lmtp_server, "bob@example.test")
    assert len(alice) == 2 and len(bob) == 2  # direct + via the alias
    first = alice[0]
    assert first.startswith(b"Return-Path: <sender@remote.test>\r\n"
                            b"Delivered-To: alice@example.test\r\nReceived: from ")
    assert b"forged@evil.test" not in first  # an existing Return-Path is not trusted
    assert first.endswith(b"\r\n\r\nHello over LMTP.\r\n.leading dot\r\n")
    assert any(b"Delivered-To: bob+news@example.test\r\n" in m for m in bob)


def test_over_quota_552_and_quota_counted(lmtp_server):
    client = lmtp(lmtp_server)
    big = MSG + b"x" * 2000 + b"\r\n"
    rcpts, datas = send_lmtp(client, "sender@remote.test",
                             ["carol@example.test", "ivan@example.test"], big)
    assert [c for c, _ in rcpts] == [250, 250]
    assert datas[0][0] == QUOTA_FULL.code and b"5.2.2" in datas[0][1]
    assert datas[1][0] == 250
    # A small one still fits; once over quota, RCPT itself is refused.
    rcpts, datas = send_lmtp(client, "sender@remote.test", ["carol@example.test"],
                             b"Subject: s\r\n\r\n" + b"y" * 700 + b"\r\n")
    assert datas[0][0] == 250
    rcpts, datas = send_lmtp(client, "sender@remote.test", ["carol@example.test"],
                             b"Subject: t\r\n\r\n" + b"z" * 700 + b"\r\n")
    assert datas[0][0] == 552
    client.quit()
    assert len(messages(lmtp_server, "carol@example.test")) == 1


def test_spam_flag_goes_to_junk(lmtp_server):
    client = lmtp(lmtp_server)
    spam = b"X-Spam-Flag: YES\r\nSubject: buy now\r\n\r\nspam\r\n"
    _, datas = send_lmtp(client, "spammer@remote.test", ["dan@example.test"], spam)
    client.quit()
    assert datas[0][0] == 250
    assert messages(lmtp_server, "dan@example.test") == []
    assert len(messages(lmtp_server, "dan@example.test", "Junk")) == 1


def test_null_sender_and_pipelined_session(lmtp_server):
    port = lmtp_server.port("lmtp")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"LHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<erin@example.test>\r\n"
                     b"RCPT TO:<frank@example.test>\r\nDATA\r\n")
        lines = []
        while not (lines and lines[-1].startswith(b"354")):
            lines.append(f.readline())
        sock.sendall(b"Subject: bounce\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        rest = [f.readline() for _ in range(3)]
    assert rest[0].startswith(b"250 2.0.0") and rest[1].startswith(b"250 2.0.0")
    assert rest[2].startswith(b"221")
    (msg,) = messages(lmtp_server, "erin@example.test")
    assert msg.startswith(b"Return-Path: <>\r\n")


def test_bare_lf_in_data_refused_per_recipient(lmtp_server):
    port = lmtp_server.port("lmtp")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"LHLO client.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<grace@example.test>\r\n"
                     b"RCPT TO:<grace@example.test>\r\nDATA\r\n")
        for _ in range(4):
            f.readline()
        sock.sendall(b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<x@y>\r\n.\r\n")
        replies = [f.readline(), f.readline()]
        sock.sendall(b"NOOP\r\n")
        assert f.readline().startswith(b"250")
    assert all(r.startswith(b"554 5.6.0") for r in replies)
    assert messages(lmtp_server, "grace@example.test") == []


def test_twenty_parallel_lmtp_deliveries(lmtp_server):
    def one(i):
        client = lmtp(lmtp_server)
        _, datas = send_lmtp(client, "s@remote.test", ["henry@example.test"],
                             f"Subject: parallel {i}\r\n\r\nbody {i}\r\n".encode())
        client.quit()
        return datas[0][0]

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(one, range(20))) == [250] * 20
    folder = MailStore(lmtp_server.maildir("henry@example.test")).open("INBOX")
    assert folder.uids() == list(range(1, 21))
    subjects = sorted(folder.read(u).split(b"Subject: ")[1].split(b"\r\n")[0]
                      for u in folder.uids())
    assert subjects == sorted(f"parallel {i}".encode() for i in range(20))


def test_untrusted_client_refused(mailyard_server):
    srv = mailyard_server(services={"lmtp"}, domains=["example.test"],
                          toml='[smtp]\ntrusted_networks = ["10.0.0.0/8"]\n')
    with socket.create_connection(("127.0.0.1", srv.port("lmtp")), timeout=30) as sock:
        assert sock.makefile("rb").readline().startswith(b"554 5.7.1")


def test_alias_with_external_target_is_forwarded_through_the_queue(lmtp_server):
    client = lmtp(lmtp_server)
    _, datas = send_lmtp(client, "s@remote.test", ["mixed@example.test"],
                         b"Subject: to an alias\r\n\r\nx\r\n")
    client.quit()
    assert datas[0][0] == 250
    assert any(b"Subject: to an alias" in m for m in messages(lmtp_server, "ivan@example.test"))
    # The queue took it (as mail we generated) before the 250; it then tries elsewhere.test.
    log = lmtp_server.wait_for_log("forwarded=friend@elsewhere.test")
    assert "sender=<s@remote.test> recipients=1" in log and "via=internal" in log


def test_lmtp_over_a_unix_socket(mailyard_server, tmp_path):
    """How Postfix usually reaches an LDA: `lmtp:unix:/path` (no trusted-network check)."""
    path = tmp_path / "lmtp.sock"
    srv = mailyard_server(services={"metrics"}, domains=["example.test"],
                          toml=f'[listen]\nlmtp = "unix:{path}"\n')
    srv.add_user("unix@example.test")
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.05)
    client = smtplib.LMTP(str(path), timeout=30)
    client.ehlo_or_helo_if_needed()
    _, datas = send_lmtp(client, "s@remote.test", ["unix@example.test"],
                         b"Subject: via unix\r\n\r\nx\r\n")
    client.quit()
    assert datas[0][0] == 250
    assert len(messages(srv, "unix@example.test")) == 1


def test_delivery_precomputes_imap_structure_cache(lmtp_server):
    """Each delivery caches IMAP's ENVELOPE/BODYSTRUCTURE with the message's UID, so a
    client's first FETCH of new mail is an index hit, not a MIME parse."""
    from mailyard.imap.ops.fetch import CACHE_KEY, precompute

    client = lmtp(lmtp_server)
    _rcpts, datas = send_lmtp(client, "sender@remote.test", ["zoe@example.test"], MSG)
    client.quit()
    assert [code for code, _ in datas] == [250]
    folder = MailStore(lmtp_server.maildir("zoe@example.test")).open("INBOX")
    uid = folder.uids()[-1]
    cached = folder.cache_get(uid, CACHE_KEY)
    assert cached is not None
    assert cached == precompute(folder.read(uid))[1]
