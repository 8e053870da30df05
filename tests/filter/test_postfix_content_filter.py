"""Drop-in for a real Postfix: Postfix → mailyard filter → Postfix → mailyard LMTP → Maildir.

A private Postfix instance (Debian's postfix, own config and queue directory, loopback ports)
uses the mailyard filter as its `content_filter` and mailyard LMTP as its
`virtual_transport` — exactly the lines README.md shows operators.
"""

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

pytestmark = pytest.mark.skipif(shutil.which("postfix") is None or os.geteuid() != 0,
                                reason="needs Debian's postfix and root (make test installs it)")

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

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
smtp_host_lookup = native
lmtp_host_lookup = native
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
content_filter = mailyard-filter:[127.0.0.1]:{filter}
"""


@pytest.fixture
def postfix():
    root = Path(tempfile.mkdtemp(prefix="mailyard-postfix-"))
    os.chmod(root, 0o755)
    (root / "etc").mkdir()
    (root / "spool").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix", "postfix")
    ports = {"smtp": free_port(), "reinject": free_port()}
    instance = {"root": root, "ports": ports, "etc": root / "etc"}
    yield instance
    subprocess.run(["postfix", "-c", str(root / "etc"), "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_postfix_uses_mailyard_as_content_filter_and_lmtp(postfix, mailyard_server):
    ports = postfix["ports"]
    srv = mailyard_server(services={"filter", "lmtp"}, start=False,
                          toml=f'[filter]\nreinject = "127.0.0.1:{ports["reinject"]}"\n')
    srv.add_user("alice@example.test", "secret")
    srv.start()
    etc, root = postfix["etc"], postfix["root"]
    (etc / "vmailbox").write_text("alice@example.test ok\n")
    (etc / "master.cf").write_text(MASTER_CF.format(**ports))
    (etc / "main.cf").write_text(MAIN_CF.format(root=root, lmtp=srv.port("lmtp"),
                                                filter=srv.port("filter")))
    check = subprocess.run(["postfix", "-c", str(etc), "check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    started = subprocess.run(["postfix", "-c", str(etc), "start"], capture_output=True,
                             text=True)
    assert started.returncode == 0, started.stderr
    wait_for_port("127.0.0.1", ports["smtp"], 30)

    def send(subject: str, body: bytes) -> None:
        msg = (f"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@remote.test>\r\n\r\n").encode() + body + b"\r\n"
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as client:
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
    log = (root / "postfix.log").read_text(errors="replace") if (root / "postfix.log").exists() \
        else ""
    assert len(files) == 2, log[-4000:] + srv.log_text()[-4000:]
    texts = {f.read_bytes() for f in files}
    ham = next(t for t in texts if b"Subject: ham" in t)
    spam = next(t for t in texts if b"GTUBE" in t)
    assert b"X-Spam-Flag: NO" in ham and b"X-Virus-Scanned: mailyard" in ham
    assert b"X-Spam-Flag: YES" in spam
    import json

    quarantined = json.loads(srv.cli("quarantine", "list", "--json").stdout)
    assert [q["subject"] for q in quarantined] == ["eicar"]
