"""Memory of the content filter's process pool with a large signature database (issue #7).

Starts `mailyard serve --only filter` on a fresh data_dir with the generated database
(`bench_av.make_db(root, SIGS, HASHES, random.Random(1))`), waits for the filter's
"engines ready" log line (every pool worker has scanned a warm-up message), lets the
compiled-cache writer finish, then reads /proc/PID/smaps_rollup of every process of the
tree: PSS (each shared page split between its sharers, so the sum is the real cost), RSS
and private dirty memory per process. With `--baseline SRC` the same from another source
tree, in alternating rounds.

Usage: python bench/bench_filter_memory.py [--rounds 2] [--sigs 100000] [--hashes 1000000]
                                           [--baseline SRC]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_av import free_port, make_db  # noqa: E402

FIELDS = ("Rss", "Pss", "Private_Dirty")


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                pids += _tree(int(child))
    return pids


def _memory(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        rows = (line.split() for line in f)
        return {row[0].rstrip(":"): int(row[1]) // 1024 for row in rows
                if row[0].rstrip(":") in FIELDS}


def _role(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    if "forkserver" in cmd:
        return "fork server or pool worker"
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "server"


def run(db: Path, root: Path, src: str | None) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="var-", dir=root))
    config = root / f"filter-{free_port()}.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n[listen]\n'
                      f'filter = "127.0.0.1:{free_port()}"\n[antivirus]\ndatabases = "{db}"\n')
    log = root / "serve.log"
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    started = time.monotonic()
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mailyard", "-c", str(config), "serve",
                                 "--only", "filter"], stdout=subprocess.DEVNULL, stderr=err,
                                env=env)
    try:
        while "engines ready" not in log.read_text():
            if time.monotonic() - started > 300 or proc.poll() is not None:
                raise RuntimeError("the filter did not get ready:\n" + log.read_text())
            time.sleep(0.01)
        ready = time.monotonic() - started
        time.sleep(5)  # the compiled-cache writer
        processes = [(pid, _role(pid), _memory(pid)) for pid in _tree(proc.pid)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"ready": ready, "processes": processes,
            "pss": sum(m["Pss"] for _, _, m in processes)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sigs", type=int, default=100_000)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--baseline", metavar="SRC")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-filter-mem-"))
    try:
        db, _ = make_db(root, args.sigs, args.hashes, random.Random(1))
        print(f"{args.sigs} body signatures + {args.hashes} MD5 hashes, {os.cpu_count()} CPUs "
              f"(one pool worker each), load {os.getloadavg()[0]:.1f}")
        sources = [("this tree", None)] + ([("baseline", args.baseline)] if args.baseline else [])
        for r in range(args.rounds):
            for label, src in sources if r % 2 == 0 else sources[::-1]:
                result = run(db, root, src)
                print(f"\nround {r + 1}, {label}: engines ready after {result['ready']:.2f} s, "
                      f"PSS of the tree {result['pss']} MiB")
                for pid, role, memory in result["processes"]:
                    print(f"  {pid:>7} {role:<28} " +
                          " ".join(f"{k} {memory[k]:>4} MiB" for k in FIELDS))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
