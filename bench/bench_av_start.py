"""Cold start-up of the virus scanners, side by side: clamd, the engine, the listener.

One generated database (`bench_av.make_db(root, SIGS, HASHES, random.Random(1))`: random
`.ndb` body signatures + MD5 `.hdb` lines, as in bench_av.py), then ROUNDS rounds; each
round runs the three start-ups one after the other, in an order that rotates from round to
round (so a burst of load from other work does not always hit the same one):

  clamd     Debian's clamd (`Foreground yes`, `MaxThreads 2`) from exec until it answers
            PING (it loads the database before it listens); then the first clamdscan of a
            small file, for the same end point as the listener's.
  engine    `VirusEngine(db)` in a fresh interpreter, from exec until the engine is ready
            (includes the interpreter and the imports); no compiled cache.
  listener  `mailyard serve --only clamd` on a fresh data_dir (so no compiled cache) from
            exec until the first clamdscan of a small file is answered.

Each figure is wall seconds and CPU seconds (user + system of the process tree up to that
moment: /proc for the servers, getrusage in the engine's interpreter) with the 1-minute
load average before the round. Medians at the end, and the ratios to clamd's.

With `--baseline SRC` the engine and the listener also run from another source tree (the
code before a change), in the same rounds. `--only ...,listener@warm` adds a restart: the
listener on a data_dir kept from a first (unrecorded) start, so the compiled cache is used —
what a restart or a reload with unchanged database files costs.

Usage: python bench/bench_av_start.py [--rounds 5] [--sigs 100000] [--hashes 1000000]
                                      [--baseline SRC] [--only clamd,engine,...]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_av import clamd_conf, clamdscan_conf, free_port, make_db, tree_cpu  # noqa: E402

ENGINE_CHILD = """
import os, resource, sys, time
from mailyard.antivirus import VirusEngine
engine = VirusEngine(sys.argv[1])
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(time.time(), cpu, engine.signature_count, len(engine.errors), flush=True)
"""


def loadavg() -> float:
    return os.getloadavg()[0]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"zPING\0")
            return s.recv(16).startswith(b"PONG")
    except OSError:
        return False


def _wait_ping(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(port):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(0.01)
    raise TimeoutError("no PONG")


def _clamdscan(port: int, target: Path, root: Path) -> str:
    conf = clamdscan_conf(port, root)
    out = subprocess.run(["clamdscan", f"--config-file={conf}", "--no-summary", str(target)],
                         capture_output=True, text=True, check=False, timeout=300)
    return out.stdout.strip()


def run_clamd(db: Path, root: Path, small: Path) -> dict:
    port = free_port()
    conf = clamd_conf(db, root, port, root / f"clamd-{port}.log")
    started = time.monotonic()
    proc = subprocess.Popen(["clamd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        _wait_ping(port, proc)
        ping = time.monotonic() - started
        ping_cpu = tree_cpu(proc.pid)
        answer = _clamdscan(port, small, root)
        scan = time.monotonic() - started
        scan_cpu = tree_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    if not answer.endswith("OK"):
        raise RuntimeError(f"clamd answered {answer!r}")
    return {"wall": ping, "cpu": ping_cpu, "scan_wall": scan, "scan_cpu": scan_cpu}


def _env(src: str | None) -> dict | None:
    """The environment of a child that runs mailyard from another source tree."""
    return None if src is None else {**os.environ, "PYTHONPATH": src}


def run_engine(db: Path, src: str | None = None) -> dict:
    started = time.time()
    out = subprocess.run([sys.executable, "-c", ENGINE_CHILD, str(db)], capture_output=True,
                         text=True, check=True, timeout=300, env=_env(src))
    ready, cpu, count, errors = out.stdout.split()
    return {"wall": float(ready) - started, "cpu": float(cpu), "signatures": int(count),
            "errors": int(errors)}


def run_listener(db: Path, root: Path, small: Path, src: str | None = None,
                 data_dir: Path | None = None) -> dict:
    """A cold start on a fresh data_dir, or (`data_dir`) a start on one kept from an
    earlier start, whose compiled cache is then reused."""
    port = free_port()
    keep = data_dir is not None
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="var-", dir=root))
    config = root / f"mailyard-{port}.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n[listen]\n'
                      f'clamd = "127.0.0.1:{port}"\n[antivirus]\ndatabases = "{db}"\n')
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mailyard", "-c", str(config), "serve",
                             "--only", "clamd"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, env=_env(src))
    try:
        _wait_ping(port, proc)
        ping = time.monotonic() - started
        answer = _clamdscan(port, small, root)
        wall = time.monotonic() - started
        cpu = tree_cpu(proc.pid)  # the server, its fork server and pool workers
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    if not answer.endswith("OK"):
        raise RuntimeError(f"mailyard answered {answer!r}")
    return {"wall": wall, "cpu": cpu, "ping": ping}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sigs", type=int, default=100_000)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--only", default="clamd,engine,listener,engine@base,listener@base",
                        help="which start-ups to run (comma-separated; also listener@warm)")
    parser.add_argument("--baseline", metavar="SRC",
                        help="also run the engine and the listener from this source tree "
                             "(e.g. `git archive BASE src | tar -x -C DIR`, then DIR/src)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-av-start-"))
    try:
        db, _planted = make_db(root, args.sigs, args.hashes, random.Random(1))
        small = root / "small.txt"
        small.write_bytes(b"a small clean file\n")
        have_clamd = shutil.which("clamd") is not None
        runners = {"listener": lambda: run_listener(db, root, small),
                   "engine": lambda: run_engine(db)}
        if have_clamd:
            runners["clamd"] = lambda: run_clamd(db, root, small)
        warm_dir = root / "var-warm"
        if "listener@warm" in args.only.split(","):
            run_listener(db, root, small, data_dir=warm_dir)  # writes the compiled cache
            time.sleep(5)
            runners["listener@warm"] = lambda: run_listener(db, root, small, data_dir=warm_dir)
        if args.baseline:
            runners["engine@base"] = lambda: run_engine(db, args.baseline)
            runners["listener@base"] = lambda: run_listener(db, root, small, args.baseline)
        names = [name for name in runners if name in args.only.split(",")]
        results: dict[str, list[dict]] = {name: [] for name in names}
        loads = []
        print(f"{args.sigs} body signatures + {args.hashes} MD5 hashes, {args.rounds} rounds",
              flush=True)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            load = loadavg()
            loads.append(load)
            parts = []
            for name in order:
                result = runners[name]()
                results[name].append(result)
                parts.append(f"{name} {result['wall']:.2f}s/{result['cpu']:.2f}cpu")
            print(f"round {r + 1} (load {load:.1f} → {loadavg():.1f}): " + ", ".join(parts),
                  flush=True)
        loads.append(loadavg())
        print(f"\nload average {min(loads):.1f}–{max(loads):.1f}\n")
        print("| start-up | wall s (median) | CPU s (median) | wall vs clamd | CPU vs clamd "
              "| wall s, every round |")
        print("|---|---|---|---|---|---|")
        base = results.get("clamd") or None
        ref_wall = statistics.median(x["wall"] for x in base) if base else None
        ref_cpu = statistics.median(x["cpu"] for x in base) if base else None
        labels = {"clamd": "clamd, exec → PONG", "engine": "VirusEngine(db), exec → ready",
                  "listener": "mailyard serve --only clamd, exec → first scan answered",
                  "engine@base": "VirusEngine(db), baseline source",
                  "listener@base": "mailyard serve --only clamd, baseline source",
                  "listener@warm": "mailyard serve --only clamd, compiled cache kept, "
                                   "exec → first scan answered"}
        for name in ("clamd", "engine", "listener", "listener@warm", "engine@base",
                     "listener@base"):
            if not results.get(name):
                continue
            wall = statistics.median(x["wall"] for x in results[name])
            cpu = statistics.median(x["cpu"] for x in results[name])
            ratio = (f"{wall / ref_wall:.2f}× | {cpu / ref_cpu:.2f}×" if ref_wall
                     else "– | –")
            every = " ".join(f"{x['wall']:.2f}" for x in results[name])
            print(f"| {labels[name]} | {wall:.2f} | {cpu:.2f} | {ratio} | {every} |")
        if base:
            wall = statistics.median(x["scan_wall"] for x in base)
            cpu = statistics.median(x["scan_cpu"] for x in base)
            print(f"| clamd, exec → first scan answered | {wall:.2f} | {cpu:.2f} | "
                  f"{wall / ref_wall:.2f}× | {cpu / ref_cpu:.2f}× | "
                  + " ".join(f"{x['scan_wall']:.2f}" for x in base) + " |")
        if results.get("listener"):
            ping = statistics.median(x["ping"] for x in results["listener"])
            print(f"\n(the listener answers PING after {ping:.2f} s, median)")
        if results.get("engine"):
            engine = results["engine"][0]
            print(f"(engine: {engine['signatures']} signatures, {engine['errors']} errors)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
