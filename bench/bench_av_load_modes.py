"""The database load in one process or in forked children, side by side (issue #7).

Each measurement is a fresh interpreter that imports the loader, loads the generated
database (`bench_av.make_db(root, SIGS, HASHES, random.Random(1))`) and builds the matcher,
in one of three modes, in an order that rotates from round to round:

  serial     `load_database(db, parallel=False)`: hash files in a thread beside the .ndb
  hashchild  the hash files in a forked child (`antivirus.forked`), the .ndb here
  both       that, and the second half of the .ndb in a second child

Wall and CPU seconds (getrusage of the interpreter and its waited-for children), medians
and every round, with the load average before and after.

Usage: python bench/bench_av_load_modes.py [--rounds 6] [--sigs 100000] [--hashes 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_av import make_db  # noqa: E402

CHILD = """
import resource, sys, time
started = time.perf_counter()
from mailyard.antivirus import database
from mailyard.antivirus.matcher import Matcher
mode = sys.argv[2]
if mode == "hashchild":
    database.PARALLEL_NDB_LINES = 10 ** 12
loaded = database.load_database(sys.argv[1], parallel=mode != "serial")
Matcher(loaded)
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - started, me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)
"""
MODES = ["serial", "hashchild", "both"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sigs", type=int, default=100_000)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-av-modes-") as tmp:
        db, _ = make_db(Path(tmp), args.sigs, args.hashes, random.Random(1))
        print(f"{args.sigs} body signatures + {args.hashes} MD5 hashes, {args.rounds} rounds, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            for mode in MODES[r % 3:] + MODES[:r % 3]:
                out = subprocess.run([sys.executable, "-c", CHILD, str(db), mode],
                                     capture_output=True, text=True, check=True).stdout.split()
                results[mode].append((float(out[0]), float(out[1])))
        print(f"load after {os.getloadavg()[0]:.1f}")
        for mode in MODES:
            runs = results[mode]
            print(f"{mode:10} wall {statistics.median(w for w, _ in runs):.2f} s "
                  f"CPU {statistics.median(c for _, c in runs):.2f} s   walls "
                  + " ".join(f"{w:.2f}" for w, _ in runs))


if __name__ == "__main__":
    main()
