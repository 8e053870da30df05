"""The pool's fork server loads the clamd listener's database once; workers fork with it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time

from av_samples import write_db

from mailyard.antivirus.engine import _CacheLock
from mailyard.config import load
from mailyard.server import pool_warm

MARK_NDB = "Pool.Mark:0:*:706f6f6c2d6d61726b\n"


def _settings(tmp_path, db):
    cfg = tmp_path / "mailyard.toml"
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path / "var"}"\n[listen]\n'
                   f'clamd = "127.0.0.1:0"\n[antivirus]\ndatabases = "{db}"\n')
    return load(str(cfg))


# Run in a fresh interpreter: multiprocessing's fork server is one per process, and other
# tests in this one may have started it already (without our preload).
_PROBE = """
import asyncio, json, sys
from mailyard.antivirus import worker
from mailyard.antivirus.engine import cache_dir_for, limits_from_settings
from mailyard.config import load
from mailyard.server.app import App

async def main():
    settings = load(sys.argv[1])
    app = App(settings)
    await app.start({"clamd"})
    try:
        await app.pool_ready()
        loop = asyncio.get_running_loop()
        pool = app.process_pool
        answers = await asyncio.gather(*(loop.run_in_executor(pool, worker.loaded)
                                         for _ in range(8)))
        want = (settings.antivirus.databases, limits_from_settings(settings), 0,
                str(cache_dir_for(settings)))
        verdict = await loop.run_in_executor(pool, worker.scan_bytes, want[0], want[1],
                                             b"a pool-mark", None, 0, want[3])
        print(json.dumps({"same_key": [key == want for key, _, _ in answers],
                          "loaded_in": [loaded_in for _, loaded_in, _ in answers],
                          "pids": [pid for _, _, pid in answers],
                          "names": list(verdict.names)}))
    finally:
        await app.stop()

asyncio.run(main())
"""


def test_workers_fork_with_the_preloaded_engine(tmp_path):
    db = write_db(tmp_path / "db", {"local.ndb": MARK_NDB})
    _settings(tmp_path, db)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "mailyard.toml")],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    # the key the listener's scans ask for: no worker loads the database again
    assert all(result["same_key"])
    pids = set(result["pids"])
    for loaded_in, pid in zip(result["loaded_in"], result["pids"]):
        assert loaded_in != pid and loaded_in not in pids  # loaded before the fork
    assert result["names"] == ["Pool.Mark.UNOFFICIAL"]


_FILTER_PROBE = """
import asyncio, json, sys
from pathlib import Path
from mailyard.antivirus import worker
from mailyard.config import load
from mailyard.server.app import App

async def main():
    settings = load(sys.argv[1])
    db, spool = Path(sys.argv[2]), Path(sys.argv[3])
    app = App(settings)
    await app.start({"filter", "clamd"})
    try:
        await app.pool_ready()
        content_filter = app.component("filter", None)
        def message(text):
            path = spool / (text + ".eml")
            path.write_text("From: a@example.test\\r\\nSubject: x\\r\\n\\r\\n" + text + "\\r\\n")
            return path
        first = await content_filter.scan(message("a pool-mark"))
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(*(loop.run_in_executor(app.process_pool, worker.loaded)
                                         for _ in range(8)))
        (db / "new.ndb").write_text("Pool.New:0:*:706f6f6c2d6e6577\\n")
        app.component("antivirus.clamd", None).reload()  # clamd RELOAD
        second = await content_filter.scan(message("a pool-new"))
        print(json.dumps({"first": list(first.virus_names), "second": list(second.virus_names),
                          "errors": [first.error, second.error],
                          "loaded_in": [loaded_in for _, loaded_in, _ in answers],
                          "pids": [pid for _, _, pid in answers]}))
    finally:
        await app.stop()

asyncio.run(main())
"""


def test_filter_workers_share_the_preloaded_engine_and_see_a_clamd_reload(tmp_path):
    db = write_db(tmp_path / "db", {"local.ndb": MARK_NDB})
    cfg = tmp_path / "mailyard.toml"
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path / "var"}"\n[listen]\n'
                   f'clamd = "127.0.0.1:0"\nfilter = "127.0.0.1:0"\n'
                   f'[antivirus]\ndatabases = "{db}"\n')
    spool = tmp_path / "messages"
    spool.mkdir()
    out = subprocess.run([sys.executable, "-c", _FILTER_PROBE, str(cfg), str(db), str(spool)],
                         capture_output=True, text=True, timeout=180, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["errors"] == [None, None]
    assert result["first"] == ["Pool.Mark.UNOFFICIAL"]
    # Forked with the fork server's engine: one copy for the filter and clamd, shared.
    pids = set(result["pids"])
    assert len(set(result["loaded_in"])) == 1 and not set(result["loaded_in"]) & pids
    # clamd's RELOAD bumps the generation the filter's scans ask for too.
    assert result["second"] == ["Pool.New.UNOFFICIAL"]


def test_a_failed_preload_is_logged_and_scans_report_the_error(mailyard_server, tmp_path):
    srv = mailyard_server(services={"clamd"}, toml=(
        f'[antivirus]\ndatabases = "{tmp_path / "no-such-db"}"\n'))
    srv.wait_for_log("pool preload mailyard.antivirus.worker:preload failed", timeout=60)
    with socket.create_connection(("127.0.0.1", srv.port("clamd")), timeout=60) as conn:
        conn.sendall(b"zSCAN /etc/hostname\0")
        reply = conn.recv(4096)
    assert reply.endswith(b"no-such-db: no such database file or directory. ERROR\0")
    with socket.create_connection(("127.0.0.1", srv.port("clamd")), timeout=10) as conn:
        conn.sendall(b"zPING\0")
        assert conn.recv(16) == b"PONG\0"  # the listener itself keeps serving


def test_filter_with_a_missing_database_defers_and_loses_nothing(mailyard_server, tmp_path):
    # The filter's engine now comes from the fork server's preload: when that fails, the
    # failure is logged and every message is answered 451 (the queue keeps it), never 250.
    import smtplib

    srv = mailyard_server(services={"filter"}, toml=(
        f'[antivirus]\ndatabases = "{tmp_path / "no-such-db"}"\n'))
    srv.wait_for_log("pool preload mailyard.antivirus.worker:preload failed", timeout=60)
    with smtplib.SMTP("127.0.0.1", srv.port("filter"), timeout=60) as client:
        client.ehlo("queue.example")
        client.mail("a@example.net")
        client.rcpt("alice@example.test")
        code, _ = client.data(b"From: a@example.net\r\nSubject: kept\r\n\r\nHello.\r\n")
    assert code == 451
    assert "no-such-db" in srv.wait_for_log("deferred reason=\"scan error\"", timeout=30)


def test_run_jobs_runs_each_and_reports_failures(capsys):
    done = pool_warm.run_jobs('[["os:getpid", []], ["os.path:join", ["a", 2]], '
                              '["no.such.module:f", []]]')
    assert done == 1
    err = capsys.readouterr().err
    assert "os.path:join failed" in err and "no.such.module:f failed" in err
    assert pool_warm.run_jobs(None) == 0


def test_jobs_reach_only_the_fork_servers_environment():
    with pool_warm.jobs_for_fork_server([("os:getpid", [])]):
        assert os.environ[pool_warm.ENV] == '[["os:getpid", []]]'
    assert pool_warm.ENV not in os.environ
    with pool_warm.jobs_for_fork_server([]):
        assert pool_warm.ENV not in os.environ


def test_cache_lock_is_not_kept_by_a_process_forked_while_held(tmp_path):
    # The fork server forks workers while its cache writer holds this lock; a worker's
    # inherited copy of the descriptor would otherwise hold the flock for good.
    lock = _CacheLock(tmp_path).__enter__()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only says it runs, then sleeps
        os.write(ready_w, b"x")
        time.sleep(5)
        os._exit(0)
    try:
        os.read(ready_r, 1)  # the child runs: its at-fork handlers are done
        lock.__exit__(None, None, None)
        with open(tmp_path / ".lock", "a") as other:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(ready_r)
        os.close(ready_w)


def test_fork_server_imports_only_what_the_enabled_pool_services_run(tmp_path):
    from mailyard.server import pool

    settings = _settings(tmp_path, tmp_path / "db")
    modules = pool.pool_modules(settings, {"clamd"})
    assert "mailyard.antivirus.engine" in modules and "mailyard.spam.worker" not in modules
    assert modules[-1] == "mailyard.server.pool_warm"  # the preload jobs run last
    # No service that uses the pool: import what any of them runs.
    assert {"mailyard.filter.worker", "mailyard.spam.worker"} <= set(
        pool.pool_modules(settings, {"smtp"}))
    assert pool.preload_jobs(settings, {"smtp"}) == []
    [(target, args)] = pool.preload_jobs(settings, {"clamd"})
    assert target == "mailyard.antivirus.worker:preload" and args[0] == str(tmp_path / "db")


# In a fresh interpreter: the at-fork hook the writer waits on is process-wide.
_DEFERRED = """
import json, os, sys, time
from pathlib import Path
from mailyard.antivirus import worker
from mailyard.antivirus.verdict import ScanLimits
import dataclasses

db, cache = sys.argv[1], Path(sys.argv[2])
worker.preload(db, dataclasses.asdict(ScanLimits()), str(cache))
engine = worker.engine_for(db, ScanLimits(), 0, str(cache))
before = sorted(p.name for p in cache.glob("*.yarx"))
started_before = engine._saver is not None
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
deadline = time.monotonic() + 60
while not list(cache.glob("*.yarx")) and time.monotonic() < deadline:
    time.sleep(0.05)
engine.wait_cache()
print(json.dumps({"before": before, "started_before": started_before,
                  "after": len(list(cache.glob("*.yarx")))}))
"""


def test_fork_server_writes_the_cache_only_after_its_first_fork(tmp_path):
    db = write_db(tmp_path / "db", {"pool.ndb": MARK_NDB})
    cache = tmp_path / "cache"
    out = subprocess.run([sys.executable, "-c", _DEFERRED, str(db), str(cache)],
                         capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout)
    assert result == {"before": [], "started_before": False, "after": 1}
    # The cache it wrote is whole: a later engine loads from it.
    from mailyard.antivirus import VirusEngine

    again = VirusEngine(db, cache_dir=cache)
    assert again.from_cache and again.scan_bytes(b"a pool-mark").infected


def test_wait_cache_starts_a_writer_that_waits_for_a_fork(tmp_path):
    from mailyard.antivirus import VirusEngine

    db = write_db(tmp_path / "db", {"pool.ndb": MARK_NDB})
    engine = VirusEngine(db, cache_dir=tmp_path / "cache", cache_after_fork=True)
    assert not list((tmp_path / "cache").glob("*.yarx"))
    engine.wait_cache()  # no fork here: it writes now
    assert len(list((tmp_path / "cache").glob("*.yarx"))) == 1
