"""Extensions through imapclient (and raw sockets where imapclient has no API)."""

from __future__ import annotations

import json
import socket
import zlib

import imapclient
import pytest
from imap_support import PASSWORD, message


@pytest.fixture
def client(imap_server, user):
    c = imapclient.IMAPClient("127.0.0.1", port=imap_server.port("imap"), ssl=False,
                              timeout=30)
    c.login(user, PASSWORD)
    yield c
    try:
        c.logout()
    except Exception:
        pass


def test_idle_sees_a_delivery(client, store):
    client.select_folder("INBOX")
    client.idle()
    store.deliver(message("during idle"))
    responses = []
    for _ in range(20):   # bounded wait; the watch wakes the session at once
        responses += client.idle_check(timeout=1)
        if (1, b"EXISTS") in responses:
            break
    client.idle_done()
    assert (1, b"EXISTS") in responses


def test_idle_sees_another_sessions_expunge(client, store, imap_server, user):
    store.deliver(message("one"))
    store.deliver(message("two"))
    client.select_folder("INBOX")
    other = imapclient.IMAPClient("127.0.0.1", port=imap_server.port("imap"), ssl=False)
    other.login(user, PASSWORD)
    other.select_folder("INBOX")
    client.idle()
    other.delete_messages([1])
    other.expunge()
    responses = []
    for _ in range(20):
        responses += client.idle_check(timeout=1)
        if (1, b"EXPUNGE") in responses:
            break
    client.idle_done()
    other.logout()
    assert (1, b"EXPUNGE") in responses


def test_move_and_uidplus(client, store):
    for i in range(3):
        store.deliver(message(f"mv{i}"))
    client.create_folder("Dest")
    client.select_folder("INBOX")
    client.move([1, 3], "Dest")
    assert client.search() == [2]
    client.select_folder("Dest")
    assert client.search() == [1, 2]
    assert client.folder_status("Dest", ["MESSAGES"])[b"MESSAGES"] == 2
    client.select_folder("INBOX")
    client.add_flags([2], [imapclient.DELETED])
    assert client.uid_expunge([2]) is not None
    assert client.search() == []


def test_namespace_id_enable_unselect(client):
    ns = client.namespace()
    assert [tuple(x) for x in ns.personal] == [("", ".")]
    ident = client.id_({"name": "pytest"})
    assert b"mailyard" in repr(ident).encode()
    client.select_folder("INBOX")
    assert client.unselect_folder()
    assert client.enable("CONDSTORE") == [b"CONDSTORE"]


def test_special_use_and_create_special_use(client):
    folders = {name: flags for flags, _, name in client.list_folders()}
    assert b"\\Junk" in folders["Junk"]
    assert b"\\Sent" in folders["Sent"]
    special = client._imap._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    assert special[0] == "OK"
    found = client.find_special_folder(b"\\Trash")
    assert found == "Trash"
    typ, data = client._imap._simple_command("CREATE", "Spam2", "(USE (\\Junk))")
    assert typ == "NO" and b"USEATTR" in data[0]


def test_list_status_and_children(client, store):
    store.deliver(message("x"))
    client.create_folder("Parent.Child")
    typ, _ = client._imap._simple_command("LIST", '""', "*", "RETURN", "(CHILDREN STATUS "
                                          "(MESSAGES UNSEEN))")
    assert typ == "OK"
    status = client._imap.untagged_responses.pop("STATUS")
    assert b"INBOX (MESSAGES 1 UNSEEN 1)" in status
    listing = client._imap.untagged_responses.pop("LIST")
    # Maildir++ has no directory for "Parent": a nonexistent parent (RFC 5258 §3)
    assert b'(\\NonExistent \\HasChildren) "." "Parent"' in listing
    assert b'(\\HasNoChildren) "." "Parent.Child"' in listing


def test_esearch(client, store):
    for i in range(5):
        store.deliver(message(f"es{i}"), flags=("\\Seen",) if i % 2 else ())
    client.select_folder("INBOX")
    typ, data = client._imap._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT ALL)",
                                             "UNSEEN")
    assert typ == "OK"
    line = client._imap.untagged_responses.pop("ESEARCH")[0]
    assert line.endswith(b"MIN 1 MAX 5 ALL 1,3,5 COUNT 3")


def test_condstore_and_qresync(client, store):
    for i in range(3):
        store.deliver(message(f"cs{i}"))
    client.enable("QRESYNC")
    info = client.select_folder("INBOX")
    modseq = info[b"HIGHESTMODSEQ"]
    validity = info[b"UIDVALIDITY"]
    client.add_flags([2], [imapclient.FLAGGED])
    changed = client.fetch([1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
    assert list(changed) == [2]
    assert changed[2][b"MODSEQ"][0] > modseq
    # UNCHANGEDSINCE with an old modseq fails for message 2 ([MODIFIED 2])
    typ, data = client._imap.uid("STORE", "1:3", f"(UNCHANGEDSINCE {modseq})",
                                 "+FLAGS", "(\\Seen)")
    assert typ == "OK"
    flags = client.get_flags([1, 2, 3])
    assert b"\\Seen" in flags[1] and b"\\Seen" in flags[3] and b"\\Seen" not in flags[2]
    client.delete_messages([3])
    client.expunge()
    client.unselect_folder()
    # QRESYNC select: what vanished and what changed since the modseq we knew
    typ, data = client._imap._simple_command(
        "SELECT", "INBOX", f"(QRESYNC ({validity} {modseq} 1:3))")
    assert typ == "OK"
    vanished = client._imap.untagged_responses.pop("VANISHED")
    # the EXPUNGE itself was reported as VANISHED (RFC 7162 §3.2.10), then the resync
    assert vanished == [b"3", b"(EARLIER) 3"]
    fetches = client._imap.untagged_responses.pop("FETCH")
    assert any(b"UID 2 " in f for f in fetches)
    # UID FETCH ... (CHANGEDSINCE m VANISHED): the same answer inside the selected state
    client._imap.state = "SELECTED"   # imaplib did not see our raw SELECT
    typ, _ = client._imap.uid("FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {modseq} VANISHED)")
    assert typ == "OK"
    assert client._imap.untagged_responses.pop("VANISHED") == [b"(EARLIER) 3"]


def test_sort_and_thread(client, store):
    store.deliver(message("b topic", sender="Zed <z@x.org>", date="Tue, 2 Jan 2024 10:00 +0000"))
    store.deliver(message("a topic", sender="Amy <a@x.org>", date="Wed, 3 Jan 2024 10:00 +0000"))
    store.deliver(message("Re: b topic", sender="Amy <a@x.org>",
                          date="Thu, 4 Jan 2024 10:00 +0000",
                          extra="In-Reply-To: <b.topic@example.org>\r\n"
                                "References: <b.topic@example.org>\r\n"))
    client.select_folder("INBOX")
    assert client.sort(["SUBJECT"]) == [2, 1, 3]
    assert client.sort(["REVERSE", "DATE"]) == [3, 2, 1]
    assert client.sort(["FROM", "ARRIVAL"]) == [2, 3, 1]
    assert client.thread("REFERENCES") == ((1, 3), (2,))
    assert client.thread("ORDEREDSUBJECT") == ((1, 3), (2,))


def test_compress_deflate(imap_server, user):
    with socket.create_connection(("127.0.0.1", imap_server.port("imap")), timeout=30) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(f"a LOGIN {user} {PASSWORD}\r\nb COMPRESS DEFLATE\r\n".encode())
        f.flush()
        assert f.readline().startswith(b"a OK")
        assert f.readline().startswith(b"b OK")
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        inflate = zlib.decompressobj(-15)
        s.sendall(deflate.compress(b"c NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
        answer = b""
        while b"c OK" not in answer:
            answer += inflate.decompress(s.recv(4096))
        assert answer == b"c OK NOOP completed\r\n"


def test_moving_into_and_out_of_junk_writes_learn_jobs(client, store, imap_server, user):
    store.deliver(message("buy pills"))
    store.deliver(message("actually fine"))
    client.select_folder("INBOX")
    client.move([1, 2], "Junk")
    client.select_folder("Junk")
    client.move([2], "INBOX")      # ham
    client.move([1], "Trash")      # out of Junk into Trash: nothing to learn
    jobs_dir = imap_server.data_dir / "spam-learn"
    jobs = []
    for _ in range(50):
        jobs = [json.loads(p.read_text()) for p in sorted(jobs_dir.glob("*.json"))] \
            if jobs_dir.exists() else []
        if len(jobs) >= 3:
            break
        client.noop()
    mine = [j for j in jobs if j["user"] == user]
    verdicts = sorted((j["verdict"], j["folder"]) for j in mine)
    assert verdicts == [("ham", "INBOX"), ("spam", "Junk"), ("spam", "Junk")]
    for job in mine:
        assert (jobs_dir / job["message_file"]).read_bytes().startswith(b"From: Bob")
