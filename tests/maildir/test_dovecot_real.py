"""Interoperability with the real Dovecot (Debian dovecot-core): Dovecot writes a Maildir,
mailyard reads it as it is; mailyard changes flags, Dovecot sees them."""

import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest

from mailyard.maildir import MailStore

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("dovecot") or not shutil.which("doveadm"),
    reason="needs root and Debian's dovecot-core")

CONF = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = mailyard-test-{pid}
ssl = no
protocols = imap
listen = 127.0.0.1
first_valid_uid = {uid}
mail_location = maildir:{root}/home/Maildir
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home
}}
passdb {{
  driver = static
  args = nopassword=y
}}
namespace inbox {{
  inbox = yes
  separator = .
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class Dovecot:
    """A private Dovecot instance (no network listeners) so doveadm can find its auth."""

    def __init__(self, root):
        self.root = root
        account = pwd.getpwnam("nobody")
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(exist_ok=True)
        os.chown(root / "home", account.pw_uid, account.pw_gid)
        # The mail user must be able to reach its home through pytest's private tmp dirs.
        for parent in [root, *root.parents]:
            if str(parent) in ("/", "/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self.conf = root / "dovecot.conf"
        self.conf.write_text(CONF.format(root=root, pid=os.getpid(), uid=account.pw_uid,
                                         gid=account.pw_gid))
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not (self.root / "run" / "auth-userdb").exists():
            assert self.proc.poll() is None, (self.root / "dovecot.log").read_text()
            assert time.monotonic() < deadline, "dovecot auth did not come up"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def adm(self, *args, input=None):
        return subprocess.run(["doveadm", "-c", str(self.conf), *args], input=input,
                              capture_output=True, check=True, timeout=60).stdout


MSG1 = b"From: a@remote.test\nSubject: one\n\nbody one\n"
MSG2 = b"From: a@remote.test\nSubject: two\n\nbody two\n"


def test_dovecot_written_maildir_reads_as_it_is(tmp_path):
    with Dovecot(tmp_path) as dv:
        dv.adm("save", "-u", "bob", "-m", "INBOX", input=MSG1)
        dv.adm("save", "-u", "bob", "-m", "INBOX", input=MSG2)
        dv.adm("mailbox", "create", "-u", "bob", "Entw\u00fcrfe", "Work.Projects")
        dv.adm("save", "-u", "bob", "-m", "Entw\u00fcrfe", input=MSG1)
        dv.adm("flags", "add", "-u", "bob", "\\Seen $Label1 Important", "mailbox", "INBOX",
               "uid", "1")
        dv.adm("flags", "add", "-u", "bob", "\\Flagged", "mailbox", "INBOX", "uid", "2")
        dv.adm("mailbox", "subscribe", "-u", "bob", "Entw\u00fcrfe")
    root = tmp_path / "home" / "Maildir"
    uidlist_header = (root / "dovecot-uidlist").read_text().split()[1]
    store = MailStore(root)
    inbox = store.open("INBOX")
    assert inbox.uid_validity == int(uidlist_header[1:])
    assert inbox.uids() == [1, 2]
    one, two = inbox.messages()
    assert one.flags == {"\\Seen"} and one.keywords == {"$Label1", "Important"}
    assert two.flags == {"\\Flagged"} and two.keywords == frozenset()
    assert inbox.read(1) == MSG1.replace(b"\n", b"\r\n")
    assert one.size == len(MSG1.replace(b"\n", b"\r\n"))
    folders = {f.name: f for f in store.list_folders()}
    assert folders["Entw\u00fcrfe"].subscribed
    assert "Work.Projects" in folders
    assert store.open("Entw\u00fcrfe").read(1) == MSG1.replace(b"\n", b"\r\n")

    # Now mailyard changes flags and delivers; Dovecot must see it.
    inbox.store_flags([2], ["Important", "\\Answered"])
    store.deliver(b"Subject: three\r\n\r\nfrom mailyard\r\n", flags=["\\Seen"])
    # In production both run as the same mail user; here mailyard ran as root.
    subprocess.run(["chown", "-R", "nobody:", str(tmp_path / "home")], check=True)
    with Dovecot(tmp_path) as dv:
        out = dv.adm("-f", "flow", "fetch", "-u", "bob", "uid flags hdr.subject",
                     "mailbox", "INBOX").decode()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 3
    second = next(line for line in lines if "uid=2 " in line)
    assert "\\Answered" in second and "\\Flagged" in second and "Important" in second
    assert any("three" in line and "\\Seen" in line for line in lines)
