"""The spool: commit, abort, recovery after torn writes, group commit, the CLI's operations."""

from __future__ import annotations

import asyncio
import os

import pytest

from mailyard.envelope import Envelope, Recipient
from mailyard.queue.records import PENDING, QueueEntry, Reply, new_entry
from mailyard.queue.spool import (
    CommitJob,
    GroupCommitter,
    Spool,
    execute_batch,
    new_queue_id,
    valid_queue_id,
)

ENV = Envelope(sender="a@example.net", recipients=(Recipient("b@example.test"),),
               received_via="smtp")


def committed(spool: Spool, queue_id: str, message: bytes = b"Subject: x\r\n\r\nbody\r\n"):
    """Put an entry into active/ the way a commit does (synchronously)."""
    spool.ensure()
    entry = new_entry(queue_id, ENV, 1000.0, "filter", len(message))
    spool.msg_path(queue_id).write_bytes(message)
    spool.env_path(queue_id).write_bytes(entry.to_json())
    return entry


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

async def test_commit_makes_both_files_and_abort_leaves_nothing(make_queue):
    _app, queue = make_queue()
    incoming = await queue.receive(ENV)
    incoming.write(b"Subject: one\r\n\r\n")
    incoming.write(b"body\r\n")
    qid = await incoming.commit()
    assert queue.spool.msg_path(qid).read_bytes() == b"Subject: one\r\n\r\nbody\r\n"
    assert QueueEntry.from_json(queue.spool.env_path(qid).read_bytes()).size == 22
    aborted = await queue.receive(ENV)
    aborted.write(b"half a message")
    aborted.abort()
    # (The scheduler may be rewriting the committed entry's state through tmp/ meanwhile.)
    assert not any(p.name.startswith(aborted.queue_id) for p in queue.spool.tmp.iterdir())
    assert not any(p.name.startswith(aborted.queue_id) for p in queue.spool.active.iterdir())
    assert sorted(p.name for p in queue.spool.active.iterdir()) == [f"{qid}.env",
                                                                   f"{qid}.msg"]
    with pytest.raises(RuntimeError):
        await incoming.commit()


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

def test_recover_discards_tmp_and_incomplete_pairs_and_keeps_committed(tmp_path):
    spool = Spool(tmp_path / "queue")
    committed(spool, "AAAA00000001")
    committed(spool, "AAAA00000002")
    (spool.tmp / "AAAA00000003.msg").write_bytes(b"torn mid-DATA")
    (spool.tmp / "AAAA00000003.env").write_bytes(b"{")
    # Crash between the two renames of a commit: .msg in active/, .env still in tmp/.
    spool.msg_path("AAAA00000004").write_bytes(b"no envelope")
    # Crash during removal: .env gone first, .msg left.
    os.unlink(spool.env_path("AAAA00000002"))
    entries = spool.recover()
    assert [e.queue_id for e in entries] == ["AAAA00000001"]
    assert list(spool.tmp.iterdir()) == []
    assert sorted(p.name for p in spool.active.iterdir()) == ["AAAA00000001.env",
                                                              "AAAA00000001.msg"]


def test_unreadable_envelope_is_kept_in_corrupt_not_deleted(tmp_path):
    spool = Spool(tmp_path / "queue")
    committed(spool, "BBBB00000001")
    spool.env_path("BBBB00000001").write_bytes(b'{"version": 1, "queue_id": ')
    assert spool.recover() == []
    assert sorted(p.name for p in spool.corrupt.iterdir()) == ["BBBB00000001.env",
                                                               "BBBB00000001.msg"]


def test_unknown_format_version_is_not_guessed(tmp_path):
    spool = Spool(tmp_path / "queue")
    committed(spool, "CCCC00000001")
    spool.env_path("CCCC00000001").write_bytes(b'{"version": 99}')
    assert spool.recover() == []
    assert (spool.corrupt / "CCCC00000001.msg").exists()


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
