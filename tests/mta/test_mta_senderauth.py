"""Sender authentication on the MX (SPF at MAIL, DKIM and DMARC after DATA,
Authentication-Results) and DKIM signing on submission, over real sockets and real DNS."""

from __future__ import annotations

import smtplib

from .peers import TRUSTED_ONLY_LOCALHOST, UNTRUSTED, with_quiet_dns

FORGED = "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=evil@x; dmarc=pass\r\n"
MESSAGE = (FORGED + "From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\n"
           "Subject: hello\r\n\r\nhi\r\n")


def test_mx_adds_authentication_results_and_enforces_dmarc(mailyard_server, sink, dns_server):
    dns_server.add("remote.example", "TXT", "v=spf1 ip4:127.0.0.2 -all")
    dns_server.add("_dmarc.remote.example", "TXT", "v=DMARC1; p=reject")
    dns_server.add("2.0.0.127.in-addr.arpa", "PTR", "mail.remote.example.")
    dns_server.add("mail.remote.example", "A", "127.0.0.2")
    srv = mailyard_server(services={"smtp"}, domains=["example.test"], toml=(
        TRUSTED_ONLY_LOCALHOST + sink.toml() + "[greylist]\nenabled = false\n"
        f'[dns]\nnameservers = ["{dns_server.address}"]\n[dmarc]\nenforce = true\n'))
    srv.add_user("alice@example.test")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=(UNTRUSTED, 0)) as c:
        c.ehlo("mx.remote.example")
        assert c.sendmail("bob@remote.example", ["alice@example.test"], MESSAGE) == {}
    [message] = sink.wait(1)
    content = message["content"]
    assert content.startswith(b"Authentication-Results: mx.example.test; "
                              b"spf=pass smtp.mailfrom=bob@remote.example; dkim=none; "
                              b"dmarc=pass (p=reject) header.from=remote.example\r\n"
                              b"Received: from mx.remote.example "
                              b"(mail.remote.example [127.0.0.2])")
    assert content.count(b"Authentication-Results:") == 1, "the forged field survived"
    # From an address the SPF record does not allow: DMARC fails, p=reject is enforced.
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=("127.0.0.3", 0)) as c:
        c.ehlo("mx.remote.example")
        c.mail("bob@remote.example")
        assert c.rcpt("alice@example.test")[0] == 250
        code, text = c.data(MESSAGE)
        assert (code, text[:5]) == (550, b"5.7.1")
        assert b"DMARC" in text
    assert len(sink.messages) == 1
    assert "sender authentication" in srv.log_text()



def test_submission_streams_unsigned(mailyard_server, sink, tls_certs):
    """Our users' mail is queued as submitted: the queue signs it at the outbound hop, after
    the filter, so the MTA must not sign it too (two signatures, one of them stale)."""
    srv = mailyard_server(services={"submission"}, domains=["example.test"], toml=with_quiet_dns(
        TRUSTED_ONLY_LOCALHOST + sink.toml() + tls_certs.toml()))
    srv.add_user("alice@example.test", "wonderland")
    srv.cli("dkim", "generate", "example.test", "--selector", "s1")
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), source_address=(UNTRUSTED, 0)) as c:
        c.starttls(context=tls_certs.client_context())
        c.login("alice@example.test", "wonderland")
        c.sendmail("alice@example.test", ["carol@remote.example"],
                   "From: Alice <alice@example.test>\r\nTo: carol@remote.example\r\n"
                   "Subject: unsigned\r\n\r\nhello\r\n")
    content = sink.wait(1)[0]["content"]
    assert content.startswith(b"Received: ")
    assert b"DKIM-Signature:" not in content
    assert b"Authentication-Results:" not in content
