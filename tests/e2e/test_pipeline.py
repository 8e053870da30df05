"""End to end over real sockets: what arrives, tagged how, and what never arrives."""

from __future__ import annotations

import base64
import io
import smtplib
import socket
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

from e2e_support import maildir_messages, wait_for_messages

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(subject: str, body: bytes = b"Hello, this is a normal message.\r\n",
            extra: bytes = b"", sender: str = "carol@remote.test",
            to: str = "alice@example.test") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}-{time.monotonic_ns()}@remote.test>\r\n"
            ).encode() + extra + b"\r\n" + body


def send(srv, msg: bytes, to=("alice@example.test",), sender="carol@remote.test"):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as client:
        client.sendmail(sender, list(to), msg)


def attachment_message(subject: str, filename: str, payload: bytes) -> bytes:
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    body = (b"--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--BOUNDARY\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"" + filename.encode() + b"\"\r\n\r\n"
            + b64 + b"--BOUNDARY--\r\n")
    return message(subject, body, b"MIME-Version: 1.0\r\n"
                                  b"Content-Type: multipart/mixed; boundary=BOUNDARY\r\n")


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def test_ham_spam_and_viruses(pipeline):
    srv = pipeline()
    maildir = srv.maildir("alice@example.test")
    send(srv, message("ham one"))
    send(srv, message("forged", extra=b"X-Spam-Flag: NO\r\nX-Spam-Score: -50\r\n",
                      body=GTUBE + b"\r\n"))
    send(srv, message("eicar plain", body=EICAR + b"\r\n"))
    send(srv, attachment_message("eicar zipped", "eicar.zip", zipped("eicar.com", EICAR)))
    send(srv, attachment_message("eicar b64", "eicar.com", EICAR))
    send(srv, message("ham two"))
    found = wait_for_messages(maildir, 3, srv=srv)
    time.sleep(1.0)  # anything else would have arrived with the hams
    found = maildir_messages(maildir)
    by_subject = {m["Subject"].replace("***SPAM*** ", ""): (folder, m) for folder, _, m in found}
    assert set(by_subject) == {"ham one", "ham two", "forged"}, srv.log_text()[-4000:]
    for s in ("ham one", "ham two"):
        folder, m = by_subject[s]
        assert m["X-Spam-Flag"] == "NO"
        assert m["X-Virus-Scanned"].startswith("mailyard")
        assert folder == "INBOX"
    folder, spam = by_subject["forged"]
    assert spam.get_all("X-Spam-Flag") == ["YES"]          # the forged NO is gone
    assert float(spam["X-Spam-Score"]) >= 5
    assert "GTUBE" in spam["X-Spam-Status"]
    assert spam["Subject"].startswith("***SPAM***")
    assert folder == "Junk"                                # the shipped default Sieve
    listed = srv.cli("quarantine", "list", "--json").stdout
    import json

    entries = json.loads(listed)
    assert sorted(e["subject"] for e in entries) == ["eicar b64", "eicar plain", "eicar zipped"]
    assert all(e["reason"] == "virus" for e in entries)


def test_quarantine_release_delivers(pipeline):
    import json

    srv = pipeline()
    send(srv, message("eicar release", body=EICAR + b"\r\n"))
    deadline = time.monotonic() + 30
    entries = []
    while time.monotonic() < deadline and not entries:
        entries = json.loads(srv.cli("quarantine", "list", "--json").stdout)
        time.sleep(0.1)
    assert entries, srv.log_text()[-3000:]
    srv.cli("quarantine", "release", entries[0]["id"])
    found = wait_for_messages(srv.maildir("alice@example.test"), 1, srv=srv)
    assert found[0][2]["Subject"] == "eicar release"
    assert json.loads(srv.cli("quarantine", "list", "--json").stdout) == []


def test_reinjection_down_then_back(pipeline):
    from harness import free_port

    srv = pipeline(start=False)
    real, base = srv.address("reinject"), srv.toml
    srv.toml = base + f'\n[filter]\nreinject = "127.0.0.1:{free_port()}"\n'
    srv.write_config()
    srv.start()
    send(srv, message("waits for reinjection"))
    srv.wait_for_log("reinjection failed", timeout=30)
    assert maildir_messages(srv.maildir("alice@example.test")) == []
    srv.toml = base + f'\n[filter]\nreinject = "{real}"\n'
    srv.write_config()
    srv.reload()
    found = wait_for_messages(srv.maildir("alice@example.test"), 1, srv=srv)
    assert found[0][2]["Subject"] == "waits for reinjection"


def test_200_messages_10_connections_each_exactly_once(pipeline):
    srv = pipeline()

    def worker(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=60) as client:
            for i in range(20):
                to = "alice@example.test" if i % 2 else "bob@example.test"
                client.sendmail("carol@remote.test", [to], message(f"bulk {n}-{i}", to=to))

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(worker, range(10)))
    wait_for_messages(srv.maildir("alice@example.test"), 100, timeout=180, srv=srv)
    wait_for_messages(srv.maildir("bob@example.test"), 100, timeout=180, srv=srv)
    time.sleep(1.0)
    subjects = [m["Subject"] for _, _, m in maildir_messages(srv.maildir("alice@example.test"))
                + maildir_messages(srv.maildir("bob@example.test"))]
    assert len(subjects) == 200 and len(set(subjects)) == 200


def test_filter_port_refuses_untrusted_clients(pipeline):
    srv = pipeline(toml='[smtp]\ntrusted_networks = ["192.0.2.0/24"]\n')
    with socket.create_connection(("127.0.0.1", srv.port("filter")), timeout=10) as s:
        assert s.recv(200).startswith(b"554 5.7.1")


def test_spam_above_kill_level_is_quarantined(pipeline):
    import json

    srv = pipeline(toml="[filter]\nkill_level = 50.0\n")
    send(srv, message("very spammy", body=GTUBE + b"\r\n"))
    send(srv, message("plain ham"))
    wait_for_messages(srv.maildir("alice@example.test"), 1, srv=srv)
    time.sleep(1.0)
    assert [m["Subject"] for _, _, m in maildir_messages(srv.maildir("alice@example.test"))] \
        == ["plain ham"]
    entries = json.loads(srv.cli("quarantine", "list", "--json").stdout)
    assert [(e["reason"], e["subject"]) for e in entries] == [("spam", "very spammy")]
