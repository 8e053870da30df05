"""Sieve at delivery: scripts that file, flag, reject, discard, redirect and answer vacation,
run by the real server over LMTP; broken and hostile scripts keep the message."""

import smtplib
import time

import pytest

from mailyard.maildir import MailStore
from mailyard.sieve.storage import ScriptStore

from .test_lmtp import lmtp, send_lmtp, start_server

USERS = ["filer", "rejecter", "dropper", "fwd", "fwdtarget", "vac", "asker", "broken",
         "hostile", "loopa", "loopb", "spamvac", "global", "editor", "copier", "copytarget"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sieve")
    after = root / "after.sieve"
    after.write_text('require ["imap4flags"];\n'
                     'if header :contains "Subject" "tag-after" { addflag "$AfterRan"; }\n')
    srv = start_server(root, users=USERS, quota_users=(),
                       toml=f'[sieve]\nafter = "{after}"\n')
    yield srv
    srv.stop()


def activate(srv, user, text):
    store = ScriptStore(srv.data_dir, f"{user}@example.test")
    store.put("main", text)
    store.set_active("main")


def deliver(srv, rcpt, message, sender="someone@remote.test"):
    client = lmtp(srv)
    _, datas = send_lmtp(client, sender, [f"{rcpt}@example.test"], message)
    client.quit()
    return datas[0]


def folder(srv, user, name="INBOX"):
    store = MailStore(srv.maildir(f"{user}@example.test"))
    return store.open(name) if name == "INBOX" or store.exists(name) else None


def wait_for_messages(srv, user, count, name="INBOX", timeout=60.0):
    """Poll until the queue has delivered (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = folder(srv, user, name)
        if box is not None and len(box.uids()) >= count:
            return box
        time.sleep(0.1)
    raise AssertionError(f"{user}/{name} did not get {count} messages\n{srv.log_text()[-3000:]}")


def test_fileinto_with_flags_creates_folder(server):
    activate(server, "filer", 'require ["fileinto", "imap4flags"];\n'
             'if header :contains "Subject" "report" {\n'
             '  fileinto :flags ["\\\\Seen", "$Report"] "Reports/Daily";\n}\n')
    assert deliver(server, "filer", b"Subject: daily report\r\n\r\nnumbers\r\n")[0] == 250
    assert deliver(server, "filer", b"Subject: hello\r\n\r\nhi\r\n")[0] == 250
    reports = folder(server, "filer", "Reports.Daily")
    (info,) = reports.messages()
    assert info.flags == {"\\Seen"} and "$Report" in info.keywords
    assert len(folder(server, "filer").uids()) == 1


def test_reject_refuses_in_protocol(server):
    activate(server, "rejecter", 'require "reject";\n'
             'if header :contains "Subject" "offer" { reject "No offers, thanks."; }\n')
    code, text = deliver(server, "rejecter", b"Subject: special offer\r\n\r\nbuy\r\n")
    assert code == 550 and b"5.7.1" in text and b"No offers, thanks." in text
    assert folder(server, "rejecter").uids() == []


def test_discard_stores_nothing(server):
    activate(server, "dropper", 'if address :is "from" "noise@remote.test" { discard; }\n')
    assert deliver(server, "dropper", b"From: noise@remote.test\r\n\r\nx\r\n")[0] == 250
    assert folder(server, "dropper").uids() == []


def test_redirect_goes_through_the_queue(server):
    activate(server, "fwd", 'redirect "fwdtarget@example.test";\n')
    assert deliver(server, "fwd", b"Subject: pass it on\r\n\r\nbody\r\n")[0] == 250
    assert folder(server, "fwd").uids() == []  # redirect cancels the implicit keep
    box = wait_for_messages(server, "fwdtarget", 1)
    text = box.read(box.uids()[0])
    assert b"Subject: pass it on" in text
    assert b"Delivered-To: fwd@example.test" in text
    assert b"Return-Path: <someone@remote.test>" in text


def test_vacation_reply_is_sent_once(server):
    activate(server, "vac", 'require "vacation";\n'
             'vacation :days 7 :subject "Away" "I am away until Monday.";\n')
    message = (b"From: asker@example.test\r\nTo: vac@example.test\r\n"
               b"Message-ID: <q1@example.test>\r\nSubject: question\r\n\r\n?\r\n")
    assert deliver(server, "vac", message, sender="asker@example.test")[0] == 250
    assert deliver(server, "vac", message, sender="asker@example.test")[0] == 250
    assert len(folder(server, "vac").uids()) == 2  # vacation keeps the message
    box = wait_for_messages(server, "asker", 1)
    reply = box.read(box.uids()[0])
    assert b"Subject: Away" in reply
    assert b"Auto-Submitted: auto-replied" in reply
    assert b"In-Reply-To: <q1@example.test>" in reply
    assert b"Return-Path: <>" in reply
    # The reply memory (:days 7) held the second one back: one reply was queued in all.
    log = server.log_text()
    assert log.count("vacation reply queued user=vac@example.test") == 1


def test_spam_goes_to_junk_without_user_script_effects(server):
    activate(server, "spamvac", 'require "vacation";\nvacation "away";\n')
    spam = b"From: spammer@remote.test\r\nX-Spam-Flag: YES\r\nSubject: win\r\n\r\n$$$\r\n"
    assert deliver(server, "spamvac", spam, sender="spammer@remote.test")[0] == 250
    assert len(folder(server, "spamvac", "Junk").uids()) == 1
    assert folder(server, "spamvac").uids() == []


def test_broken_script_keeps_message_in_inbox(server):
    activate(server, "broken", 'require "fileinto";\nfileinto "Work";\n')
    # Break it on disk the way a bad editor would (ManageSieve itself refuses bad scripts).
    store = ScriptStore(server.data_dir, "broken@example.test")
    (store.dir / "main.sieve").write_text('if header :contains "Subject" { fileinto; ')
    assert deliver(server, "broken", b"Subject: x\r\n\r\nx\r\n")[0] == 250
    assert len(folder(server, "broken").uids()) == 1
    server.wait_for_log("does not compile")


def test_hostile_script_hits_limits_and_keeps(server):
    body = "".join(f'redirect "r{i}@remote.test";\n' for i in range(50))
    activate(server, "hostile", body)
    assert deliver(server, "hostile", b"Subject: x\r\n\r\nx\r\n")[0] == 250
    assert len(folder(server, "hostile").uids()) == 1


def test_hostile_folder_name_from_script_falls_back_to_inbox(server):
    activate(server, "hostile", 'require "fileinto";\nfileinto "../../../etc";\n')
    assert deliver(server, "hostile", b"Subject: y\r\n\r\ny\r\n")[0] == 250
    assert len(folder(server, "hostile").uids()) == 2
    assert not (server.data_dir / "etc").exists()


def test_redirect_loop_is_broken(server):
    activate(server, "loopa", 'redirect "loopb@example.test";\n')
    activate(server, "loopb", 'redirect "loopa@example.test";\n')
    assert deliver(server, "loopa", b"Subject: loop\r\n\r\nround and round\r\n")[0] == 250
    box = wait_for_messages(server, "loopa", 1)
    assert b"Delivered-To: loopb@example.test" in box.read(box.uids()[0])
    assert folder(server, "loopb").uids() == []


def test_global_after_script_runs(server):
    assert deliver(server, "global", b"Subject: tag-after please\r\n\r\nx\r\n")[0] == 250
    (info,) = folder(server, "global").messages()
    assert "$AfterRan" in info.keywords


def test_plus_detail_reaches_sieve(server):
    activate(server, "filer", 'require ["fileinto", "envelope", "subaddress"];\n'
             'if envelope :detail "to" "lists" { fileinto "Lists"; }\n')
    client = lmtp(server)
    _, datas = send_lmtp(client, "x@remote.test", ["filer+lists@example.test"],
                         b"Subject: list mail\r\n\r\nx\r\n")
    client.quit()
    assert datas[0][0] == 250
    assert len(folder(server, "filer", "Lists").uids()) == 1


def test_smtplib_lmtp_is_a_real_peer(server):
    # Guard against a silent fixture problem: the port really speaks LMTP.
    with smtplib.LMTP("127.0.0.1", server.port("lmtp")) as client:
        code, _ = client.ehlo()
        assert code == 250


def test_editheader_changes_the_stored_copy(server):
    activate(server, "editor", 'require "editheader";\naddheader "X-Filtered" "by sieve";\n'
             'deleteheader "X-Remove-Me";\n')
    assert deliver(server, "editor",
                   b"X-Remove-Me: 1\r\nSubject: edit\r\n\r\nx\r\n")[0] == 250
    box = folder(server, "editor")
    text = box.read(box.uids()[0])
    assert b"X-Filtered: by sieve" in text and b"X-Remove-Me" not in text
    # Return-Path stays on top (RFC 5321 §4.4): trace headers go on after the edits.
    assert text.startswith(b"Return-Path: <someone@remote.test>\r\nDelivered-To: ")


def test_redirect_copy_keeps_and_forwards(server):
    activate(server, "copier", 'require "copy";\nredirect :copy "copytarget@example.test";\n')
    assert deliver(server, "copier", b"Subject: both\r\n\r\nx\r\n")[0] == 250
    assert len(folder(server, "copier").uids()) == 1
    wait_for_messages(server, "copytarget", 1)
