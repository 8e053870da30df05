"""Real mail clients from Debian against the real server: mbsync (isync) and mutt."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from imap_support import PASSWORD, message

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync not installed")


def mbsync_config(tmp: Path, port: int, user: str) -> Path:
    local = tmp / "local"
    local.mkdir(exist_ok=True)
    cfg = tmp / "mbsyncrc"
    cfg.write_text(f"""IMAPAccount acc
Host 127.0.0.1
Port {port}
User {user}
Pass {PASSWORD}
SSLType None
AuthMechs PLAIN

IMAPStore remote
Account acc

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
""")
    return cfg


def run_mbsync(cfg: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(["mbsync", "-c", str(cfg), "-a"], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def local_messages(folder: Path) -> dict[str, bytes]:
    out = {}
    for sub in ("cur", "new"):
        for entry in (folder / sub).iterdir() if (folder / sub).exists() else ():
            out[entry.name] = entry.read_bytes()
    return out


def strip_tuid(data: bytes) -> bytes:
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not line.startswith(b"X-TUID: "))


def by_subject(msgs) -> dict[bytes, bytes]:
    result = {}
    for data in msgs:
        for line in data.splitlines():
            if line.startswith(b"Subject: "):
                result[line[9:].strip()] = data
    return result


def test_mbsync_two_way_sync(imap_server, user, store, tmp_path):
    delivered = {f"in{i}".encode(): message(f"in{i}") for i in range(3)}
    for data in delivered.values():
        store.deliver(data)
    store.create_folder("Work")
    store.deliver(message("work1"), folder="Work")
    cfg = mbsync_config(tmp_path, imap_server.port("imap"), user)
    local = tmp_path / "local"

    # 1. first sync: everything arrives byte-exact, except what mbsync itself does to a
    #    local Maildir: LF line ends, and its own X-TUID tracking header.
    run_mbsync(cfg)
    got = by_subject(local_messages(local / "INBOX").values())
    assert set(got) == set(delivered)
    for subject, data in delivered.items():
        assert strip_tuid(got[subject]) == data.replace(b"\r\n", b"\n")
    assert set(by_subject(local_messages(local / "Work").values())) == {b"work1"}

    # 2. local changes: flag one seen, delete one, add a message, create a folder
    inbox = local / "INBOX"
    names = {by_subject([p.read_bytes()]).popitem()[0]: p
             for p in list((inbox / "cur").iterdir()) + list((inbox / "new").iterdir())}
    seen = names[b"in0"]
    base = seen.name.split(":2,")[0]
    seen.rename(inbox / "cur" / f"{base}:2,S")
    gone = names[b"in1"]
    gone_base = gone.name.split(":2,")[0]
    gone.rename(inbox / "cur" / f"{gone_base}:2,T")
    (local / "Work" / "new" / "1700000000.local1.host").write_bytes(
        message("from local").replace(b"\r\n", b"\n"))
    for sub in ("cur", "new", "tmp"):
        (local / "Local" / sub).mkdir(parents=True)
    (local / "Local" / "new" / "1700000001.local2.host").write_bytes(
        message("in new folder").replace(b"\r\n", b"\n"))
    run_mbsync(cfg)

    inbox_srv = store.open("INBOX")
    flags = {by_subject([inbox_srv.read(m.uid)]).popitem()[0]: m.flags
             for m in inbox_srv.messages()}
    assert set(flags) == {b"in0", b"in2"}
    assert "\\Seen" in flags[b"in0"]
    work = store.open("Work")
    assert {by_subject([work.read(m.uid)]).popitem()[0] for m in work.messages()} == \
        {b"work1", b"from local"}
    assert "Local" in {f.name for f in store.list_folders()}
    local_srv = store.open("Local")
    [only] = local_srv.messages()
    assert strip_tuid(local_srv.read(only.uid)) == message("in new folder")

    # 3. server-side changes: a new delivery and a flag set by another client
    store.deliver(message("late"))
    inbox_srv.refresh()
    target = next(m.uid for m in inbox_srv.messages()
                  if by_subject([inbox_srv.read(m.uid)]).popitem()[0] == b"in2")
    inbox_srv.store_flags([target], ["\\Flagged"], "add")
    run_mbsync(cfg)
    files = {by_subject([p.read_bytes()]).popitem()[0]: p.name
             for p in list((inbox / "cur").iterdir()) + list((inbox / "new").iterdir())}
    assert set(files) == {b"in0", b"in2", b"late"}
    assert "F" in files[b"in2"].split(":2,")[1]


@pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt not installed")
def test_mutt_batch_mode_opens_folder(imap_server, user, store, tmp_path):
    store.deliver(message("for mutt"))
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""set imap_user = "{user}"
set imap_pass = "{PASSWORD}"
set ssl_starttls = no
set ssl_force_tls = no
set folder = "imap://127.0.0.1:{imap_server.port('imap')}/"
set spoolfile = "+INBOX"
set header_cache = ""
set message_cachedir = ""
set sort = date
""")
    env = dict(os.environ, HOME=str(tmp_path), TERM="vt100")
    # mutt needs a terminal: run it under script(1)'s pty; `push` pipes the first message of
    # the opened IMAP folder into a file, then quits.
    out = tmp_path / "message.txt"
    command = (f"mutt -n -F {muttrc} -f imap://127.0.0.1:{imap_server.port('imap')}/INBOX "
               f"-e \"push '<pipe-message>cat > {out}<enter><quit>'\"")
    result = subprocess.run(["script", "-qec", command, "/dev/null"], check=False,
                            capture_output=True,
                            text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert out.exists(), result.stdout[-2000:] + result.stderr
    assert b"Subject: for mutt" in out.read_bytes()


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap not installed")
def test_offlineimap_two_way_sync(imap_server, user, store, tmp_path):
    store.deliver(message("o1"))
    store.create_folder("Lists")
    store.deliver(message("o2"), folder="Lists")
    local = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""[general]
accounts = test
metadata = {tmp_path}/meta

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {imap_server.port('imap')}
remoteuser = {user}
remotepass = {PASSWORD}
ssl = no
starttls = no
""")

    def sync():
        result = subprocess.run(["offlineimap", "-c", str(rc), "-o", "-u", "basic"],
                                check=False, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sync()
    got = by_subject(local_messages(local / "INBOX").values())
    assert got[b"o1"].replace(b"\r\n", b"\n") == message("o1").replace(b"\r\n", b"\n")
    assert set(by_subject(local_messages(local / "Lists").values())) == {b"o2"}
    # local: flag o1 seen and add a message; server: a new delivery
    inbox = local / "INBOX"
    [path] = [p for p in list((inbox / "cur").iterdir()) + list((inbox / "new").iterdir())]
    path.rename(inbox / "cur" / (path.name.split(":2,")[0] + ":2,S"))
    (inbox / "new" / "1700000002.off.host").write_bytes(message("o3").replace(b"\r\n", b"\n"))
    store.deliver(message("o4"))
    sync()
    inbox_srv = store.open("INBOX")
    server = {by_subject([inbox_srv.read(m.uid)]).popitem()[0]: m.flags
              for m in inbox_srv.messages()}
    assert set(server) == {b"o1", b"o3", b"o4"}
    assert "\\Seen" in server[b"o1"]
    assert set(by_subject(local_messages(inbox).values())) == {b"o1", b"o3", b"o4"}
