"""Debian's fetchmail and getmail6 retrieve a few hundred messages byte-exact, keep and delete.

fetchmail talks plain POP3 upgraded with STLS, verifying our certificate against the test CA;
getmail6 talks pop3s with the same CA. Both hand each message to us unchanged apart from the
line ends (fetchmail's MDA gets LF, getmail's Maildir gets LF) and the trace headers they are
told not to add.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import TlsCerts
from pop3_helpers import PASSWORD, new_user, start_server

COUNT = 1000   # issue 10: a 1,000-message mailbox, byte-exact


class NamedCerts(TlsCerts):
    """fetchmail (6.4) insists on a subject CN naming the server, which trustme omits."""

    def __init__(self, directory):
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        server = self.ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
        self.cert_path, self.key_path = directory / "server.crt", directory / "server.key"
        self.ca_path = directory / "ca.crt"
        server.private_key_pem.write_to_path(str(self.key_path))
        server.cert_chain_pems[0].write_to_path(str(self.cert_path))
        self.ca.cert_pem.write_to_path(str(self.ca_path))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return NamedCerts(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def pop3_server(tmp_path_factory, certs):
    srv = start_server(tmp_path_factory.mktemp("pop3clients"), certs)
    yield srv
    try:
        srv.stop()
    except AssertionError:
        srv.kill()


def corpus() -> list[bytes]:
    """Messages that exercise the wire form: CRLF and LF files, dot lines, 8-bit, sizes."""
    out = []
    for n in range(COUNT):
        eol = b"\n" if n % 3 == 0 else b"\r\n"
        body = [b"Body line %d of %d" % (i, n) for i in range(n % 40)]
        if n % 5 == 0:
            body += [b".", b"..", b".leading dot", b"From the start"]
        if n % 7 == 0:
            body += ["8-bit: Grüße, ünïcödé".encode()]
        if n % 50 == 0:
            body += [b"x" * 76] * 3000  # about 230 KB
        head = [b"From: sender%d@example.net" % n, b"To: rcpt@example.test",
                b"Subject: corpus %d" % n, b"Message-ID: <corpus-%d@example.net>" % n]
        out.append(eol.join(head + [b""] + body) + eol)
    return out


def as_lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def digests(messages) -> list[str]:
    return sorted(hashlib.sha256(as_lf(m)).hexdigest() for m in messages)


def drop_added_headers(raw: bytes, names: tuple[bytes, ...]) -> bytes:
    """Remove header lines a retriever prepends (only those before our own first header)."""
    while raw.split(b":", 1)[0].lower() in names:
        raw = raw.split(b"\n", 1)[1]
    return raw


def store_count(srv, address) -> int:
    from mailyard.maildir import MailStore

    folder = MailStore(srv.maildir(address)).open("INBOX")
    folder.refresh()
    return len(folder.messages())


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="Debian fetchmail not installed")
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_fetchmail(pop3_server, certs, tmp_path, keep):
    messages = corpus()
    address, _ = new_user(pop3_server, messages)
    out = tmp_path / "out"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\nset invisible\n"
        f"poll localhost service {pop3_server.port('pop3')} protocol pop3 uidl\n"
        f'  user "{address}" there with password "{PASSWORD}" is "nobody" here\n'
        f"  {'keep' if keep else 'nokeep'} fetchall no rewrite\n"
        f"  sslproto tls1.2+ sslcertck sslcertfile {certs.ca_path}\n"
        f"  mda \"cat > $(mktemp {out}/m.XXXXXXXX)\"\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    result = subprocess.run(["fetchmail", "-N", "-f", str(rc), "--pidfile",
                             str(tmp_path / "pid"), "-i", str(tmp_path / "ids")],
                            check=False, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    got = [p.read_bytes() for p in out.iterdir()]
    assert digests(got) == digests(messages)
    assert store_count(pop3_server, address) == (COUNT if keep else 0)


@pytest.fixture
def getmail_home(tmp_path):
    """A directory getmail may write, and the command prefix to run it with.

    getmail refuses to deliver as root, so as root it runs as `nobody` in a directory of
    nobody's own outside pytest's private temp tree.
    """
    if os.geteuid() != 0:
        yield tmp_path, []
        return
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="pop3-getmail-"))
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    try:
        yield home, ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                     "--clear-groups"]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def race_free() -> list[str]:
    """A command prefix that keeps getmail clear of its own fork race.

    getmail's Maildir destination forks a child per message and installs its SIGCHLD handler
    only after fork() returns; a child that exits first is never noticed, and getmail waits
    60 s and fails (seen on a loaded machine while our server sat idle with nothing to send).
    Pinned to one CPU under SCHED_FIFO the parent keeps the CPU after fork() until it blocks
    in its wait, so the handler is always in place first. Needs root (CI is); otherwise the
    plain command is used.
    """
    if os.geteuid() != 0 or not shutil.which("chrt") or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(min(os.sched_getaffinity(0))), "chrt", "-f", "1"]


def chown_tree(root: Path, like: Path) -> None:
    st = os.stat(like)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, st.st_uid, st.st_gid)


@pytest.mark.skipif(not shutil.which("getmail"), reason="Debian getmail6 not installed")
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_getmail(pop3_server, certs, getmail_home, keep):
    messages = corpus()
    address, _ = new_user(pop3_server, messages)
    home, run_as = getmail_home
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    ca = home / "ca.crt"
    shutil.copy(certs.ca_path, ca)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = localhost\n"
        f"port = {pop3_server.port('pop3s')}\nusername = {address}\npassword = {PASSWORD}\n"
        f"ca_certs = {ca}\n"
        f"[destination]\ntype = Maildir\npath = {maildir}/\n"
        "[options]\nread_all = true\n"
        f"delete = {'false' if keep else 'true'}\n"
        "delivered_to = false\nreceived = false\nverbose = 0\n")
    chown_tree(home, home)
    result = subprocess.run([*race_free(), *run_as, "getmail", f"--rcfile={rc}",
                             f"--getmaildir={home}"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    got = [drop_added_headers(p.read_bytes(), (b"return-path",))
           for p in (maildir / "new").iterdir()]
    assert digests(got) == digests(messages)
    assert store_count(pop3_server, address) == (COUNT if keep else 0)
