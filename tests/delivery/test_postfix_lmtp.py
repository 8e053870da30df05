"""A real Postfix (Debian's) delivering to mailyard LMTP as its `virtual_transport`: one
transaction with several recipients gets one reply per recipient, and Postfix acts on each."""

from __future__ import annotations

import smtplib
import time

import pytest
from postfix_instance import PostfixInstance, available

from .test_lmtp import messages, start_server

pytestmark = pytest.mark.skipif(not available(),
                                reason="needs Debian's postfix and root (make test installs it)")

MAIN_EXTRA = """\
default_transport = error:no outbound delivery
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:{{root}}/etc/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
"""


def test_postfix_virtual_transport_lmtp(tmp_path):
    srv = start_server(tmp_path / "mailyard", users=["alice", "bob"], quota_users=("carol",))
    postfix = PostfixInstance(
        main_extra=MAIN_EXTRA.format(lmtp=srv.port("lmtp")),
        files={"vmailbox": "".join(f"{u}@example.test ok\n"
                                   for u in ("alice", "bob", "carol", "ghost"))},
        prefix="mailyard-postfix-lmtp-")
    try:
        postfix.start()
        root, smtp_port = postfix.root, postfix.port
        body = (b"y" * 70 + b"\r\n") * 45 + b".dot-stuffed line\r\n"  # over carol's 1K
        msg = (b"From: dave@remote.test\r\nTo: team@example.test\r\nSubject: via postfix\r\n"
               b"Message-ID: <pf1@remote.test>\r\n\r\n" + body)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("dave@remote.test", ["alice@example.test", "bob@example.test",
                                                 "carol@example.test", "ghost@example.test"],
                            msg)
        log_path = root / "postfix.log"
        deadline = time.monotonic() + 90
        log = ""
        while time.monotonic() < deadline:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            if log.count("status=sent") >= 2 and log.count("status=bounced") >= 2:
                break
            time.sleep(0.2)
        lines = [line for line in log.splitlines() if "postfix/lmtp" in line]
        status = {r: next((line for line in lines if f"to=<{r}@example.test>" in line), "")
                  for r in ("alice", "bob", "carol", "ghost")}
        assert "status=sent" in status["alice"] and "status=sent" in status["bob"], log
        assert "status=bounced" in status["carol"] and "5.2.2" in status["carol"], log
        assert "status=bounced" in status["ghost"] and "5.1.1" in status["ghost"], log
        for user in ("alice", "bob"):
            (text,) = messages(srv, f"{user}@example.test")
            assert text.startswith(b"Return-Path: <dave@remote.test>\r\n")
            assert text.endswith(body)
    finally:
        postfix.stop()
        srv.stop()
