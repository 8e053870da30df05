"""A real Postfix (Debian's) delivering to mailyard LMTP as its `virtual_transport`: one
transaction with several recipients gets one reply per recipient, and Postfix acts on each."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from harness import free_port, wait_for_port

from .test_lmtp import messages, start_server

pytestmark = pytest.mark.skipif(shutil.which("postfix") is None or os.geteuid() != 0,
                                reason="needs Debian's postfix and root (make test installs it)")

MASTER_CF = """\
127.0.0.1:{smtp} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
alias_maps =
alias_database =
local_transport = error:no local delivery
default_transport = error:no outbound delivery
smtputf8_enable = no
lmtp_host_lookup = native
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
"""


@pytest.fixture
def postfix():
    root = Path(tempfile.mkdtemp(prefix="mailyard-postfix-lmtp-"))
    os.chmod(root, 0o755)
    for sub in ("etc", "spool", "data"):
        (root / sub).mkdir()
    shutil.chown(root / "data", "postfix", "postfix")
    yield root
    subprocess.run(["postfix", "-c", str(root / "etc"), "stop"], check=False,
                   capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_postfix_virtual_transport_lmtp(postfix, tmp_path):
    srv = start_server(tmp_path / "mailyard", users=["alice", "bob"], quota_users=("carol",))
    try:
        root, smtp_port = postfix, free_port()
        (root / "etc" / "vmailbox").write_text(
            "".join(f"{u}@example.test ok\n" for u in ("alice", "bob", "carol", "ghost")))
        (root / "etc" / "master.cf").write_text(MASTER_CF.format(smtp=smtp_port))
        (root / "etc" / "main.cf").write_text(MAIN_CF.format(root=root,
                                                             lmtp=srv.port("lmtp")))
        started = subprocess.run(["postfix", "-c", str(root / "etc"), "start"],
                                 check=False, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        wait_for_port("127.0.0.1", smtp_port, 30)
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
        srv.stop()
