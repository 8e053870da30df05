"""SIGKILL the server while UPDATE deletes: no message that was not marked may be lost."""

from __future__ import annotations

import os
import socket

from pop3_helpers import PASSWORD, new_user, sample_message, start_server

from mailyard.pop3 import proto


def file_count(maildir) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("cur", "new"))


def test_kill_during_update_loses_no_undeleted_message(tmp_path, tls_certs):
    srv = start_server(tmp_path / "srv", tls_certs)
    try:
        messages = [sample_message(n, body_lines=50) for n in range(400)]
        address, uids = new_user(srv, messages)
        maildir = srv.maildir(address)
        before = file_count(maildir)
        marked = range(1, 301)  # the first 300 are deleted, the last 100 must survive
        with socket.create_connection(("127.0.0.1", srv.port("pop3"))) as s:
            s.settimeout(120)
            s.recv(1024)  # greeting
            s.sendall(b"USER %s\r\nPASS %s\r\n" % (address.encode(), PASSWORD.encode())
                      + b"".join(b"DELE %d\r\n" % n for n in marked))
            seen = b""
            while seen.count(b"\r\n") < 2 + len(marked):  # USER, PASS, DELEs
                seen += s.recv(65536)
            assert b"-ERR" not in seen
            s.sendall(b"QUIT\r\n")
            # Kill as soon as UPDATE has begun removing files (or has finished).
            while file_count(maildir) == before:
                pass
            srv.kill()
    finally:
        srv.kill()

    srv.start()
    try:
        from mailyard.maildir import MailStore

        folder = MailStore(maildir).open("INBOX")
        folder.refresh()
        present = {m.uid: m for m in folder.messages()}
        print("marked messages still present after the kill:", len(present) - 100)
        for number, uid in enumerate(uids, 1):
            if number not in marked:
                assert uid in present, f"message {number} (uid {uid}) was lost"
                assert folder.read(uid) == messages[number - 1]
        # And POP3 still serves the survivors, with the same unique ids as before.
        import poplib

        c = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
        c.user(address)
        c.pass_(PASSWORD)
        count, _ = c.stat()
        assert count == len(present)
        listed = {line.split()[1] for line in c.uidl()[1]}
        validity = folder.uid_validity
        for uid in uids[300:]:
            assert b"%08X%08X" % (uid, validity) in listed
        _, lines, _ = c.retr(count)
        assert b"".join(ln + b"\r\n" for ln in lines) == proto.to_crlf(messages[-1])
        c.quit()
    finally:
        srv.stop()
