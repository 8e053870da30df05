"""Many deliveries into one folder at once: threads and separate processes."""

import multiprocessing
import os
import threading

from mailyard.maildir import MailStore


def _deliver_many(root, n, tag, results):
    store = MailStore(root)
    for i in range(n):
        uid = store.deliver(f"Subject: {tag} {i}\r\n\r\nbody {tag} {i}\r\n".encode())
        results.append(uid)


def test_twenty_parallel_deliveries_threads(tmp_path):
    root = tmp_path / "Maildir"
    results: list[int] = []
    threads = [threading.Thread(target=_deliver_many, args=(root, 1, f"t{i}", results))
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 21))
    folder = MailStore(root).open("INBOX")
    assert folder.uids() == list(range(1, 21))
    subjects = {folder.read(uid).split(b"\r\n")[0] for uid in folder.uids()}
    assert subjects == {f"Subject: t{i} 0".encode() for i in range(20)}
    assert len(os.listdir(root / "new")) == 20


def _process_worker(root, tag, n, queue):
    results: list[int] = []
    _deliver_many(root, n, tag, results)
    queue.put(results)


def test_deliveries_from_two_processes_and_a_reader(tmp_path):
    root = tmp_path / "Maildir"
    MailStore(root).ensure()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(root), f"p{i}", 10, queue))
             for i in range(2)]
    for p in procs:
        p.start()
    # Meanwhile this process delivers and refreshes a session on the same folder.
    local: list[int] = []
    session = MailStore(root).open("INBOX")
    seen = set(session.uids())
    for i in range(10):
        local.append(MailStore(root).deliver(f"Subject: local {i}\r\n\r\nx\r\n".encode()))
        changes = session.refresh()
        assert not changes.expunged
        seen.update(changes.new)
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    everything = local + results[0] + results[1]
    assert sorted(everything) == list(range(1, 31))
    for chunk in [local] + results:
        assert chunk == sorted(chunk)  # each deliverer sees its UIDs increase
    seen.update(session.refresh().new)
    assert sorted(seen) == list(range(1, 31))
    assert len(session.messages()) == 30
