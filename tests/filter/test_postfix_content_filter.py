"""Drop-in for a real Postfix: Postfix → mailyard filter → Postfix → mailyard LMTP → Maildir.

A private Postfix instance (Debian's postfix, own config and queue directory, loopback ports)
uses the mailyard filter as its `content_filter` and mailyard LMTP as its
`virtual_transport` — exactly the lines README.md shows operators.
"""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
from harness import free_port
from postfix_instance import PostfixInstance, available

pytestmark = pytest.mark.skipif(not available(),
                                reason="needs Debian's postfix and root (make test installs it)")

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

MASTER_EXTRA = """\
mailyard-filter unix - - n - 4 smtp
  -o smtp_data_done_timeout=1200
  -o disable_dns_lookups=yes
127.0.0.1:{reinject} inet n - n - - smtpd
  -o content_filter=
  -o smtpd_client_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
"""

MAIN_EXTRA = """\
default_transport = error:no outbound delivery
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:{{root}}/etc/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
content_filter = mailyard-filter:[127.0.0.1]:{filter}
"""


def test_postfix_uses_mailyard_as_content_filter_and_lmtp(mailyard_server):
    reinject = free_port()
    srv = mailyard_server(services={"filter", "lmtp"}, start=False,
                          toml=f'[filter]\nreinject = "127.0.0.1:{reinject}"\n')
    srv.add_user("alice@example.test", "secret")
    srv.start()
    postfix = PostfixInstance(
        main_extra=MAIN_EXTRA.format(lmtp=srv.port("lmtp"), filter=srv.port("filter")),
        master_extra=MASTER_EXTRA.format(reinject=reinject),
        files={"vmailbox": "alice@example.test ok\n"})
    try:
        postfix.start()
        run_scenario(srv, postfix)
    finally:
        postfix.stop()


def run_scenario(srv, postfix) -> None:
    def send(subject: str, body: bytes) -> None:
        msg = (f"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@remote.test>\r\n\r\n").encode() + body + b"\r\n"
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
            client.sendmail("carol@remote.test", ["alice@example.test"], msg)

    send("ham", b"Hello Alice, lunch tomorrow?")
    send("gtube", GTUBE)
    send("eicar", EICAR)
    maildir = srv.maildir("alice@example.test")
    deadline = time.monotonic() + 90
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = [f for f in maildir.rglob("*") if f.is_file() and f.parent.name in ("new", "cur")]
        if len(files) >= 2:
            break
        time.sleep(0.2)
    log = postfix.log_text()
    assert len(files) == 2, log[-4000:] + srv.log_text()[-4000:]
    texts = {f.read_bytes() for f in files}
    ham = next(t for t in texts if b"Subject: ham" in t)
    spam = next(t for t in texts if b"GTUBE" in t)
    assert b"X-Spam-Flag: NO" in ham and b"X-Virus-Scanned: mailyard" in ham
    assert b"X-Spam-Flag: YES" in spam
    import json

    quarantined = json.loads(srv.cli("quarantine", "list", "--json").stdout)
    assert [q["subject"] for q in quarantined] == ["eicar"]
