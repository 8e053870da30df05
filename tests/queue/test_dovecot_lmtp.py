"""The queue's LMTP client against Dovecot's LMTP server (the classic final-delivery stage),
started here on a loopback port and stopped after the test.

Dovecot answers per recipient: alice is delivered, bob is over quota (452 4.2.2 with
`quota_full_tempfail`, retried), ghost — known to our accounts but not to Dovecot — is
refused 550 and reported to the sender in a DSN that Dovecot itself delivers.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from harness import free_port, wait_for_port
from queue_support import eventually

from mailyard.envelope import Envelope, Recipient
from mailyard.queue.records import DELIVERED, FAILED, PENDING

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVECOT_USER = "dovecot"          # mailboxes are owned by an unprivileged system user


def dovecot_available() -> bool:
    import pwd

    try:
        pwd.getpwnam(DOVECOT_USER)
    except KeyError:
        return False
    return os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/lmtp") \
        and os.geteuid() == 0


pytestmark = pytest.mark.skipif(not dovecot_available(),
                                reason="needs Debian dovecot-core + dovecot-lmtpd, run as root")


@pytest.fixture
def dovecot():
    import pwd

    user = pwd.getpwnam(DOVECOT_USER)
    # Outside pytest's 0700 tmp tree: Dovecot writes mail as the unprivileged user.
    root = Path(tempfile.mkdtemp(prefix="mailyard-dovecot-"))
    root.chmod(0o755)
    (root / "mail").mkdir(mode=0o777)
    (root / "mail").chmod(0o777)
    port = free_port()
    ids = f"{user.pw_uid}:{user.pw_gid}"
    (root / "users").write_text(
        f"alice@example.test:{{PLAIN}}x:{ids}::{root}/home/alice::\n"
        f"bob@example.test:{{PLAIN}}x:{ids}::{root}/home/bob::userdb_quota_rule=*:bytes=10\n")
    (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
ssl = no
listen = 127.0.0.1
first_valid_uid = {user.pw_uid}
mail_location = maildir:{root}/mail/%d/%n/Maildir
auth_username_format = %Lu
mail_plugins = quota
lmtp_rcpt_check_quota = yes
quota_full_tempfail = yes
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
plugin {{
  quota = maildir:User quota
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
""")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        yield f"127.0.0.1:{port}", root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def inbox(root: Path, user: str) -> list[bytes]:
    new = root / "mail" / "example.test" / user / "Maildir" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


async def test_queue_delivers_into_dovecot_per_recipient(make_queue, dovecot):
    address, root = dovecot
    _app, queue = make_queue(lmtp=address, toml="retry_initial = 3600\nretry_max = 3600",
                             users=("alice@example.test", "bob@example.test",
                                    "ghost@example.test"))
    message = (b"From: alice@example.test\r\nTo: team\r\nSubject: to dovecot\r\n\r\n"
               b".a line with a leading dot\r\n" + b"x" * 200 + b"\r\n")
    qid = await queue.submit(Envelope(
        sender="alice@example.test", received_via="reinject",
        recipients=(Recipient("alice@example.test"), Recipient("bob@example.test"),
                    Recipient("ghost@example.test"))), message)
    await eventually(lambda: qid not in queue.entries or (
        queue.entries[qid].attempts == 1 and queue.idle.is_set()),
        timeout=30, what="first attempt")
    assert qid in queue.entries, (root / "dovecot.log").read_text()
    state = {r.address: r for r in queue.spool.load(qid).recipients}
    assert state["alice@example.test"].status == DELIVERED
    assert state["bob@example.test"].status == PENDING
    assert state["bob@example.test"].reply.code == 452
    assert state["ghost@example.test"].status == FAILED
    assert state["ghost@example.test"].reply.code == 550
    # alice got the message (dot-stuffing undone by Dovecot) and the DSN about ghost.
    await eventually(lambda: len(inbox(root, "alice")) == 2, timeout=30, what="the DSN")
    received = [email.message_from_bytes(m, policy=email.policy.default)
                for m in inbox(root, "alice")]
    original = next(m for m in received if m["Subject"] == "to dovecot")
    assert ".a line with a leading dot" in original.get_content()
    report = next(m for m in received if m.get_content_type() == "multipart/report")
    block = report.get_payload()[1].get_payload()[1]
    assert block["Final-Recipient"] == "rfc822; ghost@example.test"
    assert block["Status"].startswith("5.")
    assert inbox(root, "bob") == []
