"""Virus engine throughput and database load time, side by side with Debian's ClamAV.

Generates (under a temp dir) a signature database — N random body signatures in ClamAV's
.ndb syntax (plain, `??`, `{n-m}`, `*`, alternatives, anchored offsets) plus M random MD5
hash signatures — and a mixed corpus (binary, text, zip archives, mail with base64
attachments; a few files carry a planted signature). Then measures, on the same files:

Load is given as wall time and as CPU seconds (the process and its children or threads, up
to the moment it is ready): the machine is shared, and CPU time is the steadier figure.

  mailyard engine   VirusEngine(db) load time (cold, then from the compiled cache);
                    scan_bytes() MB/s in one process
  clamscan          load time (scan of an empty file); whole-corpus time, MB/s
  clamd             time until it answers PING; clamdscan CONTSCAN over the corpus, MB/s
  mailyard clamd    the same clamdscan run against `mailyard serve --only clamd`

Usage: python bench/bench_av.py [--sigs 10000,100000] [--hashes 1000000] [--corpus-mb 60]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

WORDS = ["the", "mail", "server", "scans", "every", "message", "for", "viruses", "and", "spam", "before", "delivery", "to", "the", "user", "mailbox", "where", "imap", "clients", "read", "it", "later", "invoice", "payment", "report"]


def random_sig(rng: random.Random, i: int) -> tuple[str, bytes | None]:
    """One .ndb line; returns (line, literal sample bytes or None)."""
    def hexbytes(n: int) -> str:
        return rng.randbytes(n).hex()

    kind = i % 6
    if kind == 0:
        raw = rng.randbytes(rng.randint(10, 20))
        return f"Bench.Plain.{i}:0:*:{raw.hex()}", raw
    if kind == 1:
        return f"Bench.Wild.{i}:0:*:{hexbytes(6)}??{hexbytes(6)}", None
    if kind == 2:
        return f"Bench.Jump.{i}:0:*:{hexbytes(6)}{{2-8}}{hexbytes(6)}", None
    if kind == 3:
        return f"Bench.Alt.{i}:0:*:{hexbytes(6)}({hexbytes(2)}|{hexbytes(2)}){hexbytes(5)}", None
    if kind == 4:
        return f"Bench.Star.{i}:0:*:{hexbytes(8)}*{hexbytes(8)}", None
    return f"Bench.Off.{i}:0:0,64:{hexbytes(12)}", None


def make_db(root: Path, nsigs: int, nhashes: int, rng: random.Random) -> tuple[Path, list]:
    db = root / f"db-{nsigs}"
    db.mkdir()
    planted = []
    with open(db / "bench.ndb", "w") as f:
        for i in range(nsigs):
            line, literal = random_sig(rng, i)
            f.write(line + "\n")
            if literal is not None and len(planted) < 50:
                planted.append(literal)
    with open(db / "bench.hdb", "w") as f:
        for i in range(nhashes):
            f.write(f"{rng.randbytes(16).hex()}:{rng.randint(100, 5_000_000)}:Bench.Hash.{i}\n")
    return db, planted


def make_corpus(root: Path, megabytes: int, planted: list, rng: random.Random) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    total, n = 0, 0
    target = megabytes * 1024 * 1024
    while total < target:
        kind = n % 4
        if kind == 0:
            data = rng.randbytes(rng.randint(256 * 1024, 2 * 1024 * 1024))
        elif kind == 1:
            data = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2000, 60000))).encode()
        elif kind == 2:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("a.txt", " ".join(rng.choice(WORDS) for _ in range(20000)))
                z.writestr("b.bin", rng.randbytes(300 * 1024))
            data = buf.getvalue()
        else:
            attachment = base64.encodebytes(rng.randbytes(rng.randint(100_000, 900_000)))
            data = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: bench\r\n"
                    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
                    b"--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B\r\n"
                    b"Content-Type: application/octet-stream; name=x.bin\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + b"\r\n--B--\r\n")
        if n % 20 == 5 and planted:
            cut = len(data) // 2
            data = data[:cut] + rng.choice(planted) + data[cut:]
        (corpus / f"f{n:05d}").write_bytes(data)
        total += len(data)
        n += 1
    return corpus


def corpus_bytes(corpus: Path) -> int:
    return sum(p.stat().st_size for p in corpus.iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"zPING\0")
                if s.recv(16).startswith(b"PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("no PONG")


def _ticks(pid: int) -> int:
    """utime + stime of one process (all its threads) and of its children that have
    exited and been waited for (cutime + cstime: say, a loader it forked), in clock ticks.
    A live child is not in these; `tree_cpu` counts it on its own."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _ticks(p)
        todo += children.get(p, [])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def infected_count(output: str) -> int:
    return sum(1 for line in output.splitlines() if line.endswith(" FOUND"))


def bench_mailyard(db: Path, corpus: Path, cache: Path | None = None) -> dict:
    from mailyard.antivirus import VirusEngine

    started, cpu = time.monotonic(), time.process_time()
    engine = VirusEngine(db, cache_dir=cache)
    load = time.monotonic() - started
    load_cpu = time.process_time() - cpu
    files = sorted(corpus.iterdir())
    started = time.monotonic()
    found = sum(engine.scan_bytes(p.read_bytes()).infected for p in files)
    scan = time.monotonic() - started
    return {"load": load, "load_cpu": load_cpu, "scan": scan, "found": found}


def bench_clamscan(db: Path, corpus: Path, root: Path) -> dict:
    empty = root / "empty.txt"
    empty.write_bytes(b"x")
    started, cpu = time.monotonic(), children_cpu()
    subprocess.run(["clamscan", "--no-summary", "-d", str(db), str(empty)],
                   capture_output=True, check=False)
    load = time.monotonic() - started
    load_cpu = children_cpu() - cpu
    started = time.monotonic()
    out = subprocess.run(["clamscan", "--no-summary", "-d", str(db), str(corpus)],
                         capture_output=True, text=True, check=False)
    total = time.monotonic() - started
    return {"load": load, "load_cpu": load_cpu, "scan": total - load,
            "found": infected_count(out.stdout)}


def clamdscan_conf(port: int, root: Path) -> Path:
    """A clamdscan config pointing at a clamd on 127.0.0.1:`port`."""
    conf = root / f"clamdscan-{port}.conf"
    conf.write_text(f"TCPSocket {port}\nTCPAddr 127.0.0.1\n")
    return conf


def clamd_conf(db: Path, root: Path, port: int, log: Path) -> Path:
    """A foreground clamd config: `db` on 127.0.0.1:`port`, two threads, files under `root`."""
    conf = root / f"clamd-{port}.conf"
    conf.write_text(f"Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
                    f"DatabaseDirectory {db}\nLogFile {log}\nMaxThreads 2\n"
                    f"PidFile {root}/clamd-{port}.pid\nTemporaryDirectory {root}\n")
    return conf


def bench_clamdscan(port: int, corpus: Path, root: Path) -> dict:
    conf = clamdscan_conf(port, root)
    started = time.monotonic()
    out = subprocess.run(["clamdscan", f"--config-file={conf}", "--no-summary", str(corpus)],
                         capture_output=True, text=True, check=False)
    return {"scan": time.monotonic() - started, "found": infected_count(out.stdout)}


def bench_clamd(db: Path, corpus: Path, root: Path) -> dict:
    port = free_port()
    conf = clamd_conf(db, root, port, root / "clamd.log")
    started = time.monotonic()
    proc = subprocess.Popen(["clamd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_ping(port)
        load = time.monotonic() - started
        load_cpu = tree_cpu(proc.pid)
        result = bench_clamdscan(port, corpus, root)
    finally:
        proc.terminate()
        proc.wait()
    return {"load": load, "load_cpu": load_cpu, **result}


def bench_mailyard_clamd(db: Path, corpus: Path, root: Path) -> dict:
    port = free_port()
    config = root / f"mailyard-{port}.toml"
    config.write_text(f'[server]\ndata_dir = "{root}/var"\n[listen]\nclamd = "127.0.0.1:{port}"\n'
                      f'[antivirus]\ndatabases = "{db}"\n')
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mailyard", "-c", str(config), "serve",
                             "--only", "clamd"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_ping(port)
        # The pool's workers load the database on first use: one small scan warms them.
        warm = root / "warm.txt"
        warm.write_bytes(b"warm")
        bench_clamdscan(port, warm.parent / "warm.txt", root)
        load = time.monotonic() - started
        load_cpu = tree_cpu(proc.pid)  # the server, its forkserver and pool workers
        result = bench_clamdscan(port, corpus, root)
    finally:
        proc.terminate()
        proc.wait()
    return {"load": load, "load_cpu": load_cpu, **result}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigs", default="10000,100000")
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--corpus-mb", type=int, default=60)
    parser.add_argument("--no-servers", action="store_true", help="skip clamd runs")
    args = parser.parse_args()
    rng = random.Random(7)
    root = Path(tempfile.mkdtemp(prefix="bench-av-"))
    try:
        have_clam = shutil.which("clamscan") is not None
        for nsigs in (int(s) for s in args.sigs.split(",")):
            db, planted = make_db(root, nsigs, args.hashes, rng)
            corpus = root / "corpus"
            if corpus.exists():
                shutil.rmtree(corpus)
            corpus = make_corpus(root, args.corpus_mb, planted, rng)
            size = corpus_bytes(corpus) / 1e6
            files = len(list(corpus.iterdir()))
            print(f"\n{nsigs} body signatures + {args.hashes} MD5 hashes; corpus "
                  f"{size:.0f} MB in {files} files", flush=True)
            cache = root / f"cache-{nsigs}"
            rows = [("mailyard engine (1 process)", bench_mailyard(db, corpus, cache))]
            print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
            rows.append(("mailyard engine, compiled cache", bench_mailyard(db, corpus, cache)))
            print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
            if have_clam:
                rows.append(("clamscan", bench_clamscan(db, corpus, root)))
                print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
                if not args.no_servers:
                    rows.append(("clamd + clamdscan", bench_clamd(db, corpus, root)))
                    print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
                    rows.append(("mailyard clamd + clamdscan",
                                 bench_mailyard_clamd(db, corpus, root)))
                    print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
            print(f"\n| {nsigs} sigs, {args.hashes} hashes, {size:.0f} MB | load s "
                  "| load CPU s | scan s | MB/s | infected files |")
            print("|---|---|---|---|---|---|")
            for name, r in rows:
                print(f"| {name} | {r['load']:.1f} | {r['load_cpu']:.1f} | {r['scan']:.1f} | "
                      f"{size / max(r['scan'], 1e-9):.1f} | {r['found']} |")
            shutil.rmtree(db)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
