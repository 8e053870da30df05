"""`mailyard queue ...` run as a real subprocess against the spool of a running queue."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from harness import free_port
from queue_support import Recorder, eventually

from mailyard.envelope import Envelope, Recipient

ENV = Envelope(sender="sender@example.net",
               recipients=(Recipient("a@example.test"), Recipient("b@example.test")),
               received_via="smtp")


async def cli(app, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mailyard", "-c", app.settings.source, "queue", *args]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   timeout=60)


async def test_list_show_hold_release_delete_flush(make_queue, peers):
    port = free_port()
    app, queue = make_queue(filter_hop=f"127.0.0.1:{port}",
                            toml="retry_initial = 3600\nretry_max = 3600")
    first = await queue.submit(ENV, b"Subject: one\r\n\r\nbody\r\n")
    second = await queue.submit(ENV, b"Subject: two\r\n\r\nbody\r\n")
    await eventually(lambda: queue.idle.is_set() and queue.entries[second].attempts == 1)

    listed = json.loads((await cli(app, "list", "--json")).stdout)
    assert [e["queue_id"] for e in listed] == [first, second]
    assert listed[0]["recipients"][0]["status"] == "pending"
    assert listed[0]["last_error"].startswith("451")
    human = (await cli(app, "list")).stdout
    assert first in human and "<sender@example.net>" in human

    shown = json.loads((await cli(app, "show", first, "--json")).stdout)
    assert shown["sender"] == "sender@example.net" and shown["attempts"] == 1
    assert (await cli(app, "show", first, "--message")).stdout.startswith("Subject: one")
    missing = await cli(app, "show", "0123456789ABCDEF")
    assert missing.returncode == 1 and "no message" in missing.stderr
    bad = await cli(app, "delete", "../../etc")
    assert bad.returncode == 1 and "not a queue id" in bad.stderr

    assert (await cli(app, "hold", first)).returncode == 0
    assert (await cli(app, "delete", second, "--json")).stdout.strip() == json.dumps(
        {"queue_id": second, "action": "deleted"})
    await eventually(lambda: second not in queue.entries, what="deletion noticed")

    filt = peers(Recorder(), port=port)
    assert (await cli(app, "flush")).returncode == 0
    await eventually(lambda: queue.entries[first].held and queue.idle.is_set())
    assert filt.handler.messages == []                # held: flush skips it
    assert (await cli(app, "release", first)).returncode == 0
    await eventually(lambda: filt.handler.messages, what="delivery after release")
    assert b"Subject: one" in filt.handler.messages[0]["content"]
    await eventually(lambda: not queue.entries, what="empty queue")
    assert json.loads((await cli(app, "list", "--json")).stdout) == []
