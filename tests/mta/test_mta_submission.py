"""Submission (587, STARTTLS + AUTH), submissions (465, implicit TLS), reinjection (10025),
and STARTTLS command injection (CVE-2011-0411), with smtplib, aiosmtplib and swaks."""

from __future__ import annotations

import base64
import smtplib
import subprocess

import aiosmtplib
import pytest

from .peers import SENDERAUTH_OFF, TRUSTED_ONLY_LOCALHOST, UNTRUSTED, RawClient

MESSAGE = "From: alice@example.test\r\nTo: carol@remote.example\r\nSubject: hi\r\n\r\nhello\r\n"


def message(marker: str) -> str:
    return MESSAGE.replace("Subject: hi", f"Subject: {marker}")


@pytest.fixture(scope="module")
def sink(module_sink):
    return module_sink


@pytest.fixture(scope="module")
def server(module_server, module_sink, tls_certs):
    return module_server(services={"smtp", "submission", "submissions", "reinject"},
                         toml=TRUSTED_ONLY_LOCALHOST + SENDERAUTH_OFF + module_sink.toml()
                         + tls_certs.toml(), password="wonderland")


def test_submission_plaintext_refuses_auth_and_mail(server):
    with smtplib.SMTP("127.0.0.1", server.port("submission"),
                      source_address=(UNTRUSTED, 0)) as client:
        client.ehlo("laptop")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth"), "AUTH offered over plaintext"
        code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(
            b"\0alice@example.test\0wonderland").decode())
        assert (code, text[:6]) == (538, b"5.7.11")
        code, text = client.docmd("MAIL", "FROM:<alice@example.test>")
        assert (code, text[:5]) == (530, b"5.7.0")


def test_submission_starttls_auth_relays(server, sink, tls_certs):
    with smtplib.SMTP("127.0.0.1", server.port("submission"),
                      source_address=(UNTRUSTED, 0)) as client:
        client.starttls(context=tls_certs.client_context())
        client.ehlo("laptop")
        assert "PLAIN" in client.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("alice@example.test", "wrong")
        assert info.value.smtp_code == 535
        client.login("alice@example.test", "wonderland")
        refused = client.sendmail("alice@example.test", ["carol@remote.example"],
                                  message("starttls-auth"))
        assert refused == {}
    got = sink.find(b"Subject: starttls-auth")
    assert got["recipients"] == ["carol@remote.example"]
    content = got["content"]
    assert b"with ESMTPSA id" in content
    assert b"authenticated as alice@example.test" in content
    assert b"using TLSv1." in content


def test_submission_auth_login_exchange(server, tls_certs):
    with smtplib.SMTP("127.0.0.1", server.port("submission")) as client:
        client.starttls(context=tls_certs.client_context())
        client.ehlo("laptop")
        client.user, client.password = "alice@example.test", "wonderland"
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        # RFC 4954 §4: once per session.
        assert client.docmd("AUTH", "PLAIN =")[0] == 503


async def test_submissions_implicit_tls_with_aiosmtplib(server, sink, tls_certs):
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("submissions"),
                             use_tls=True, tls_context=tls_certs.client_context())
    await client.connect()
    await client.login("alice@example.test", "wonderland")
    errors, response = await client.sendmail(
        "alice@example.test", ["carol@remote.example", "dave@remote.example"],
        message("implicit-tls"))
    await client.quit()
    assert errors == {} and "queued as" in response
    got = sink.find(b"Subject: implicit-tls")
    assert sorted(got["recipients"]) == ["carol@remote.example", "dave@remote.example"]


def test_swaks_submission_with_starttls_and_auth(server, sink, tls_certs):
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port("submission")),
         "--from", "alice@example.test", "--to", "carol@remote.example", "--tls",
         "--tls-verify", "--tls-ca-path", str(tls_certs.ca_path),
         "--auth", "PLAIN", "--auth-user", "alice@example.test",
         "--auth-password", "wonderland", "--helo", "laptop.example",
         "--header", "Subject: swaks"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    sink.find(b"Subject: swaks")


def test_swaks_mx_pipelining(server, sink):
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port("smtp")),
         "--from", "bob@remote.example", "--to", "alice@example.test", "--pipeline",
         "--helo", "mx.remote.example", "--header", "Subject: swaks-mx"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    sink.find(b"Subject: swaks-mx")


def test_reinject_only_from_trusted(server, sink):
    client = RawClient(server.port("reinject"), source=UNTRUSTED)
    code, _ = client.reply()
    assert code == 554
    assert client.closed_by_server()
    client.close()
    # From a trusted address, anything goes, without checks; nothing goes to the filter
    # hop again (the queue routes reinjected mail to final delivery).
    with smtplib.SMTP("127.0.0.1", server.port("reinject")) as client:
        client.ehlo("filter")
        assert client.sendmail("bob@remote.example", ["nobody@example.test"],
                               message("reinjected")) == {}
    server.wait_for_log("message accepted service=reinject")
    # The queue sends reinjected mail to final delivery, never back to the filter.
    assert "via=reinject stage=final" in server.log_text()
    assert not sink.has(b"Subject: reinjected")


def test_starttls_command_injection_discarded(server, tls_certs):
    """CVE-2011-0411: a MAIL pipelined in the clear after STARTTLS must not be executed."""
    client = RawClient(server.port("smtp"), source=UNTRUSTED)
    try:
        client.reply()
        client.command("EHLO attacker")
        client.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n")
        assert client.reply()[0] == 220
        client.starttls(tls_certs.client_context())
        code, text = client.command("EHLO attacker")
        assert code == 250 and "STARTTLS" not in text
        # Had the injected MAIL run, this RCPT would get past "need MAIL".
        assert client.command("RCPT TO:<alice@example.test>")[0] == 503
    finally:
        client.close()


def test_starttls_injection_split_packets(server, tls_certs):
    """The injected plaintext arrives in a second packet, before the handshake."""
    client = RawClient(server.port("smtp"), source=UNTRUSTED)
    try:
        client.reply()
        client.command("EHLO attacker")
        client.send(b"STARTTLS\r\n")
        client.send(b"MAIL FROM:<evil@attacker.example>\r\n")
        assert client.reply()[0] == 220
        try:
            client.starttls(tls_certs.client_context())
        except (OSError, ConnectionError):
            return  # the server treated the plaintext as a broken handshake: also safe
        client.command("EHLO attacker")
        assert client.command("RCPT TO:<alice@example.test>")[0] == 503
    finally:
        client.close()
