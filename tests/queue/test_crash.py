"""Crash safety: a process that commits is SIGKILLed; every message it acknowledged is in
the spool after restart and gets delivered; a message killed mid-DATA never is."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from queue_support import Recorder, eventually, write_config

from mailyard.config import load
from mailyard.queue import Queue
from mailyard.queue.incoming import FLUSH_AT
from mailyard.server.app import App

CHILD = Path(__file__).with_name("crash_child.py")


def run_child(config: Path, mode: str, wait_for: str, count: int) -> list[str]:
    proc = subprocess.Popen([sys.executable, str(CHILD), str(config), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:
            if line.startswith(wait_for):
                seen.append(line.split()[-1])
                if len(seen) >= count:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)          # kill -9: no shutdown hook runs
        proc.wait(timeout=30)
    assert seen, proc.stderr.read()
    return seen


async def test_sigkill_after_commit_loses_nothing(tmp_path, peers):
    root = tmp_path / "node"
    # First life: the filter is down, so everything stays queued.
    committed = run_child(write_config(root), "committed", "COMMITTED", 40)
    # Second life: the filter is up; every acknowledged message must reach it.
    filt = peers(Recorder())
    app = App(load(str(write_config(root, filter_hop=filt.address))))
    queue = app.component("queue", Queue)
    try:
        await queue.start()
        assert set(committed) <= set(queue.entries)
        await eventually(lambda: not queue.entries, timeout=60, what="all delivered")
    finally:
        await app.stop()
    subjects = {m["content"].split(b"\r\n")[0] for m in filt.handler.messages}
    assert len(subjects) == len(filt.handler.messages)     # nothing delivered twice here
    assert len(filt.handler.messages) >= len(committed)
    assert list((root / "data" / "queue" / "tmp").iterdir()) == []


async def test_sigkill_mid_data_delivers_nothing(tmp_path, peers):
    root = tmp_path / "node"
    (torn,) = run_child(write_config(root), "mid-data", "WRITING", 1)
    spool_tmp = root / "data" / "queue" / "tmp"
    active = root / "data" / "queue" / "active"
    # The torn message is there (in its queue file, without a commit marker), beside the
    # unused queue files the process had made ahead.
    assert (active / f"{torn}.q").stat().st_size > FLUSH_AT
    assert {p.suffix for p in active.iterdir()} == {".q"}
    filt = peers(Recorder())
    app = App(load(str(write_config(root, filter_hop=filt.address))))
    queue = app.component("queue", Queue)
    try:
        await queue.start()
        assert queue.entries == {}
        assert list(spool_tmp.iterdir()) == []
        assert list(active.iterdir()) == []
    finally:
        await app.stop()
    assert filt.handler.messages == []
