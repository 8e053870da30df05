"""The spool: commit, abort, recovery after torn writes, group commit, the CLI's operations."""

from __future__ import annotations

import asyncio
import logging
import os
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.envelope import Envelope, Recipient
from mailyard.queue import spoolfile
from mailyard.queue.commit import CommitJob, GroupCommitter, execute_batch
from mailyard.queue.records import DELIVERED, PENDING, QueueEntry, Reply, new_entry
from mailyard.queue.spool import Spool, new_queue_id, valid_queue_id

ENV = Envelope(sender="a@example.net", recipients=(Recipient("b@example.test"),),
               received_via="smtp")


def committed(spool: Spool, queue_id: str, message: bytes = b"Subject: x\r\n\r\nbody\r\n"):
    """Put a committed queue file into active/ (synchronously)."""
    spool.ensure()
    entry = new_entry(queue_id, ENV, 1000.0, "filter", len(message))
    spoolfile.write_file(spool.entry_path(queue_id), message, entry)
    return entry


def legacy(spool: Spool, queue_id: str, message: bytes = b"Subject: old\r\n\r\nbody\r\n",
           stage: str = "final"):
    """An entry of the two-file format (ID.msg + ID.env) that earlier versions wrote."""
    spool.ensure()
    entry = new_entry(queue_id, ENV, 1000.0, stage, len(message))
    (spool.active / f"{queue_id}.msg").write_bytes(message)
    (spool.active / f"{queue_id}.env").write_bytes(entry.to_json())
    return entry


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def queue_log():
    """The queue's log lines (the mailyard logger may not propagate to pytest's caplog)."""
    logger = logging.getLogger("mailyard.queue")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- ids and records ----------------------------------------------------------------------

def test_queue_ids_are_unique_sortable_and_valid():
    ids = [new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(valid_queue_id(i) for i in ids)
    assert not valid_queue_id("../../etc/passwd")
    assert not valid_queue_id("")


def test_entry_json_round_trip_keeps_dsn_fields_and_state():
    env = Envelope(sender="", recipients=(
        Recipient("x@example.test", orcpt="rfc822;X@example.test", notify=("SUCCESS", "DELAY")),
    ), received_via="reinject", dsn_ret="HDRS", dsn_envid="E1", smtputf8=True,
        extra={"spf": "pass"})
    entry = new_entry("ABC123456789", env, 5.0, "final", 10)
    entry.recipients[0].reply = Reply(451, "later", "4.2.0", "mx.example")
    back = QueueEntry.from_json(entry.to_json())
    assert back.envelope == env
    assert back.envelope.extra == {"spf": "pass"}
    assert back.recipients == entry.recipients


def test_duplicate_rcpt_is_delivered_once():
    env = Envelope(sender="a@x", recipients=(Recipient("b@example.test"),
                                             Recipient("B@example.test")))
    assert len(new_entry("ABCDEF0123", env, 0, "final", 0).recipients) == 1


# -- commit and abort -----------------------------------------------------------------------

async def test_commit_makes_one_queue_file_and_abort_leaves_nothing(make_queue):
    _app, queue = make_queue()
    incoming = await queue.receive(ENV)
    incoming.write(b"Subject: one\r\n\r\n")
    incoming.write(b"body\r\n")
    qid = await incoming.commit()
    entry = spoolfile.read_entry(queue.spool.entry_path(qid))
    assert entry.size == 22 and entry.envelope.sender == ENV.sender
    assert queue.spool.read_message(qid, 22) == b"Subject: one\r\n\r\nbody\r\n"
    aborted = await queue.receive(ENV)
    aborted.write(b"half a message")
    aborted.abort()
    # (The scheduler may be rewriting the committed entry's state through tmp/ meanwhile.)
    assert not any(p.name.startswith(aborted.queue_id) for p in queue.spool.tmp.iterdir())
    assert not any(p.name.startswith(aborted.queue_id) for p in queue.spool.active.iterdir())
    # One file per entry; the others in active/ are queue files made ahead, not entries.
    assert [e.queue_id for e in queue.spool.entries()] == [qid]
    assert {p.suffix for p in queue.spool.active.iterdir()} <= {".q", ".st"}
    with pytest.raises(RuntimeError):
        await incoming.commit()


async def test_large_message_streams_through_the_file(make_queue):
    _app, queue = make_queue()
    body = b"".join(b"%07d " % i + b"y" * 90 + b"\r\n" for i in range(6000))   # 600 KB
    incoming = await queue.receive(ENV)
    for i in range(0, len(body), 8192):
        incoming.write(body[i:i + 8192])
    qid = await incoming.commit()
    assert queue.spool.read_message(qid, len(body)) == body
    assert spoolfile.read_entry(queue.spool.entry_path(qid)).size == len(body)


async def test_concurrent_first_receives_wait_for_recovery_and_share_fsyncs(make_queue):
    """Regression: recovery (which empties tmp/) ran while early receivers wrote there."""
    _app, queue = make_queue(toml="retry_initial = 3600\nretry_max = 3600")

    async def one(i: int) -> str:
        incoming = await queue.receive(ENV)
        incoming.write(b"Subject: %d\r\n\r\nbody\r\n" % i)
        await asyncio.sleep(0)
        return await incoming.commit()

    ids = await asyncio.gather(*(one(i) for i in range(50)))
    assert len(set(ids)) == 50
    assert all(queue.spool.exists(i) for i in ids)
    # 50 commits (+ the state updates of failed attempts) in fewer batches than jobs.
    assert queue.committer.batches < queue.committer.jobs


async def test_commit_without_group_commit(make_queue):
    _app, queue = make_queue(toml="group_commit = false")
    qid = await queue.submit(ENV, b"Subject: x\r\n\r\nx\r\n")
    assert queue.spool.exists(qid)
    assert queue.committer.batches == queue.committer.jobs


async def test_commit_failure_raises_and_cleans_up(tmp_path):
    committer = GroupCommitter()
    missing = tmp_path / "nope"
    with pytest.raises(OSError):
        await committer.run(CommitJob(fsync_files=[missing]))
    # The committer keeps working after a failed job.
    ok = tmp_path / "ok"
    ok.write_bytes(b"x")
    await committer.run(CommitJob(fsync_files=[ok], sync_dirs={tmp_path}))
    await committer.close()


def test_failed_directory_fsync_fails_every_job_of_the_batch(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"x")
    errors = execute_batch([CommitJob(fsync_files=[good]),
                            CommitJob(sync_dirs={tmp_path / "missing-dir"})])
    assert all(isinstance(e, OSError) for e in errors)


# -- recovery after a crash ---------------------------------------------------------------------

def test_recover_discards_tmp_and_incomplete_files_and_keeps_committed(tmp_path, queue_log):
    spool = Spool(tmp_path / "queue")
    committed(spool, "AAAA00000001")
    committed(spool, "AAAA00000002")
    (spool.tmp / "AAAA00000003.st.1234").write_bytes(b"{")
    # Killed mid-DATA: a queue file with a header and part of a message, no commit marker.
    reserved = spool.create_file()
    os.write(reserved.fd, b"Subject: torn\r\n\r\nhalf of the bo")
    os.close(reserved.fd)                         # (the process died: no flock held)
    # Killed during removal: the queue file gone first, its state file left.
    spool.state_path("AAAA00000002").write_bytes(b"{}")
    os.unlink(spool.entry_path("AAAA00000002"))
    # An empty file (created, killed before its header was written).
    spool.entry_path("AAAA00000005").write_bytes(b"")
    entries = spool.recover()
    assert [e.queue_id for e in entries] == ["AAAA00000001"]
    assert list(spool.tmp.iterdir()) == []
    assert sorted(p.name for p in spool.active.iterdir()) == ["AAAA00000001.q"]
    assert f"discarded incomplete entry queue_id={reserved.queue_id}" in queue_log.text
    # Files made ahead and never used (or empty) are counted in one line, not one each.
    assert "discarded unused queue files count=1" in queue_log.text
    assert "AAAA00000005" not in queue_log.text


@pytest.mark.parametrize("cut", [1, 20, spoolfile.FOOTER_SIZE, spoolfile.FOOTER_SIZE + 5])
def test_truncated_queue_file_is_discarded_with_a_log_line(tmp_path, queue_log, cut):
    spool = Spool(tmp_path / "queue")
    committed(spool, "EEEE00000001")
    path = spool.entry_path("EEEE00000001")
    os.truncate(path, path.stat().st_size - cut)
    assert spool.recover() == []
    assert list(spool.active.iterdir()) == []
    assert "discarded incomplete entry queue_id=EEEE00000001" in queue_log.text


def test_queue_file_in_use_by_another_process_is_left_alone(tmp_path):
    """`serve --only`: a file another live process is writing (it holds its flock) is not
    discarded by the recovering scheduler."""
    spool = Spool(tmp_path / "queue")
    spool.ensure()
    (reserved,) = spool.create_files(1)
    try:
        assert spool.recover() == []
        assert reserved.path.exists()
        assert spool.load(reserved.queue_id) is None          # not an entry yet
    finally:
        reserved.discard()


def test_message_content_cannot_forge_the_commit_marker(tmp_path):
    """A client ends its DATA with bytes shaped like a footer, then the server is killed:
    without the file's nonce the forged marker does not make an entry."""
    spool = Spool(tmp_path / "queue")
    spool.ensure()
    reserved = spool.create_file()
    forged_entry = new_entry(reserved.queue_id, Envelope(
        sender="x@evil.example", recipients=(Recipient("victim@elsewhere.example"),),
        received_via="reinject", skip_scan=True), 0.0, "final", 5)
    forged = b"hello" + spoolfile.tail(b"\0" * spoolfile.NONCE_SIZE, 5,
                                       zlib.crc32(b"hello"),
                                       forged_entry.to_json())
    os.write(reserved.fd, forged)
    os.close(reserved.fd)
    with pytest.raises(spoolfile.Incomplete):
        spoolfile.read_entry(reserved.path)
    assert spool.recover() == []


@pytest.mark.parametrize("damage", ["message", "record", "json", "version"])
def test_damaged_committed_file_is_kept_in_corrupt_not_deleted(tmp_path, queue_log, damage):
    spool = Spool(tmp_path / "queue")
    entry = committed(spool, "BBBB00000001")
    path = spool.entry_path("BBBB00000001")
    data = bytearray(path.read_bytes())
    if damage == "message":
        data[spoolfile.MESSAGE_OFFSET + 3] ^= 0x20
    elif damage == "record":
        data[spoolfile.MESSAGE_OFFSET + entry.size + 2] ^= 0x20
    else:
        # A record that checks (CRC) but does not parse or has an unknown version.
        message = bytes(data[spoolfile.MESSAGE_OFFSET:spoolfile.MESSAGE_OFFSET + entry.size])
        record = b'{"version": 1, "queue_id": ' if damage == "json" else b'{"version": 99}'
        nonce = bytes(data[len(spoolfile.MAGIC):spoolfile.HEADER_SIZE])
        data = bytearray(data[:spoolfile.MESSAGE_OFFSET] + message + spoolfile.tail(
            nonce, entry.size, zlib.crc32(message), record))
    path.write_bytes(data)
    assert spool.recover() == []
    assert sorted(p.name for p in spool.corrupt.iterdir()) == ["BBBB00000001.q"]
    assert "unreadable queue entry moved to corrupt/ queue_id=BBBB00000001" in queue_log.text


def test_state_file_supersedes_the_committed_record(tmp_path, queue_log):
    spool = Spool(tmp_path / "queue")
    entry = committed(spool, "FFFF00000001")
    entry.recipients[0].status = DELIVERED
    (error,) = execute_batch([spool.state_job(entry)])
    assert error is None
    (loaded,) = spool.recover()
    assert loaded.recipients[0].status == DELIVERED and loaded.size == entry.size
    # A damaged state file: every recipient is retried (at least once), nothing lost.
    spool.state_path("FFFF00000001").write_bytes(b"{not json")
    (loaded,) = spool.recover()
    assert loaded.recipients[0].status == PENDING
    assert "unreadable state file" in queue_log.text


def test_two_file_entries_are_migrated_at_start_up(tmp_path, queue_log):
    spool = Spool(tmp_path / "queue")
    old = legacy(spool, "AAAA0000000A", b"Subject: old\r\n\r\n" + b"z" * 3000)
    legacy(spool, "AAAA0000000B")
    (spool.active / "AAAA0000000B.env").write_bytes(b'{"version": 1, "queue_id": ')
    (spool.active / "AAAA0000000C.msg").write_bytes(b"a message without envelope")
    (entry,) = spool.recover()
    assert entry.queue_id == "AAAA0000000A" and entry.envelope == old.envelope
    assert spool.read_message("AAAA0000000A", entry.size) == \
        b"Subject: old\r\n\r\n" + b"z" * 3000
    assert sorted(p.name for p in spool.active.iterdir()) == ["AAAA0000000A.q"]
    assert sorted(p.name for p in spool.corrupt.iterdir()) == ["AAAA0000000B.env",
                                                               "AAAA0000000B.msg"]
    assert "migrated two-file queue entries entries=1" in queue_log.text
    # A migration interrupted after the new file was made: the old pair goes.
    legacy(spool, "AAAA0000000A")
    assert [e.queue_id for e in spool.recover()] == ["AAAA0000000A"]
    assert sorted(p.name for p in spool.active.iterdir()) == ["AAAA0000000A.q"]


async def test_two_file_entry_from_before_the_upgrade_is_delivered(make_queue, peers):
    from queue_support import Recorder, eventually

    filt = peers(Recorder())
    _app, queue = make_queue(filter_hop=filt.address)
    qid = new_queue_id()
    legacy(queue.spool, qid, b"Subject: from the old spool\r\n\r\nx\r\n", stage="filter")
    await queue.start()
    await eventually(lambda: filt.handler.messages, what="delivery of the migrated entry")
    assert filt.handler.messages[0]["content"].startswith(b"Subject: from the old spool")
    await eventually(lambda: not queue.spool.exists(qid), what="removal")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=400),
       flips=st.lists(st.integers(min_value=0, max_value=400), max_size=3),
       junk=st.binary(max_size=64))
def test_fuzzed_queue_files_never_crash_recovery(tmp_path_factory, cut, flips, junk):
    spool = Spool(tmp_path_factory.mktemp("fuzz") / "queue")
    committed(spool, "ABCD00000001")
    path = spool.entry_path("ABCD00000001")
    data = bytearray(path.read_bytes())
    for i in flips:
        data[i % len(data)] ^= 0xFF
    data = data[:max(0, len(data) - cut)] + junk
    path.write_bytes(bytes(data))
    entries = spool.recover()          # never raises; the entry is kept, discarded or
    assert len(entries) <= 1           # moved to corrupt/
    if entries:
        assert spool.read_message("ABCD00000001", entries[0].size)


async def test_restart_resumes_committed_entries(make_queue):
    app, queue = make_queue(toml="retry_initial = 3600\nretry_max = 3600")
    qid = await queue.submit(ENV, b"Subject: x\r\n\r\nx\r\n")
    await app.stop()
    from mailyard.config import load
    from mailyard.queue import Queue
    from mailyard.server.app import App

    app2 = App(load(app.settings.source))
    queue2 = app2.component("queue", Queue)
    try:
        await queue2.start()
        assert qid in queue2.entries
        assert queue2.entries[qid].recipients[0].status == PENDING
    finally:
        await app2.stop()


# -- the operations behind `mailyard queue` -----------------------------------------------------

def test_hold_release_delete_and_requests(tmp_path):
    spool = Spool(tmp_path / "queue")
    committed(spool, "DDDD00000001")
    assert spool.set_hold("DDDD00000001", True)
    assert [e.held for e in spool.entries()] == [True]
    assert spool.take_requests() == {"changed"}
    assert spool.set_hold("DDDD00000001", False)
    assert [e.held for e in spool.entries()] == [False]
    spool.notify("flush")
    assert spool.take_requests() == {"changed", "flush"}
    assert spool.take_requests() == set()
    assert spool.delete("DDDD00000001")
    assert list(spool.entries()) == []
    assert not spool.delete("DDDD00000001")
    assert not spool.set_hold("DDDD00000001", True)


async def test_second_process_on_a_spool_only_adds_and_the_owner_delivers(make_queue, peers):
    """`serve --only` processes sharing a data dir: one scheduler (the flock holder); the
    others commit into the spool and leave control/new for it."""
    from queue_support import Recorder, eventually

    from mailyard.config import load
    from mailyard.queue import Queue
    from mailyard.server.app import App

    filt = peers(Recorder())
    app, queue = make_queue(filter_hop=filt.address)
    await queue.start()
    assert queue.owner
    other_app = App(load(app.settings.source))
    other = other_app.component("queue", Queue)
    try:
        qid = await other.submit(ENV, b"Subject: from the other process\r\n\r\nx\r\n")
        assert not other.owner and other.entries == {}
        await eventually(lambda: filt.handler.messages, what="delivery by the owner")
        assert b"from the other process" in filt.handler.messages[0]["content"]
        await eventually(lambda: not queue.spool.exists(qid))
    finally:
        await other_app.stop()


# -- entries committed by an accepting worker process (mta.workers) -----------------------------

async def test_announced_entry_is_scheduled_from_its_record_without_reading_the_file(make_queue):
    app, queue = make_queue(toml="retry_initial = 3600\nretry_max = 3600")
    await queue.start()
    assert queue.owner
    message = b"Subject: from a worker\r\n\r\nbody\r\n"
    entry = committed(queue.spool, "AAAA00000001", message)
    queue.admit_announced("AAAA00000001", entry.to_json(), message)
    assert "AAAA00000001" in queue.entries
    assert await queue.message_bytes(queue.entries["AAAA00000001"]) == message
    # Announced twice (or also found by a scan): scheduled once.
    queue.admit_announced("AAAA00000001", entry.to_json(), message)
    assert list(queue.entries) == ["AAAA00000001"]
    # Without a record (too large for a packet): loaded from the queue file.
    committed(queue.spool, "AAAA00000002", message)
    queue.admit_announced("AAAA00000002")
    assert queue.entries["AAAA00000002"].size == len(message)
    # A message whose size disagrees with the record is not kept in memory.
    entry3 = committed(queue.spool, "AAAA00000003", message)
    queue.admit_announced("AAAA00000003", entry3.to_json(), message[:-1])
    assert "AAAA00000003" in queue.entries and "AAAA00000003" not in queue._fresh


async def test_adopt_orphans_after_an_accepting_process_died(make_queue, queue_log):
    app, queue = make_queue(toml="retry_initial = 3600\nretry_max = 3600")
    await queue.start()
    spool = queue.spool
    # What a killed worker leaves: a committed entry it did not announce, an unused stock
    # file, a message torn mid-DATA (its descriptors closed by its death, so no flock).
    committed(spool, "BBBB00000001")
    unused, torn, busy = spool.create_files(3)
    os.close(unused.fd)
    os.write(torn.fd, b"half a message")
    os.close(torn.fd)
    # `busy` stays open and flock'ed: another live worker is writing it.
    try:
        assert queue.adopt_orphans() == 1
        assert "BBBB00000001" in queue.entries
        assert not unused.path.exists() and not torn.path.exists()
        assert busy.path.exists()
        assert "took over the entries of a stopped accepting process" in queue_log.text
        # Nothing new: nothing adopted twice.
        assert queue.adopt_orphans() == 0
    finally:
        busy.discard()
