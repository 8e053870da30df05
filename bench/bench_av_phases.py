"""CPU of each phase of a cold antivirus database load, this source against a baseline.

Each measurement is a fresh interpreter that imports numpy and the engine's modules, reads
the generated database's `.ndb` and `.hdb` files, decodes the `.ndb` text, then loads it —
`.ndb` lines, hash file (one process, no thread, no fork), anchored matcher — timing each
phase with `time.process_time()` (CPU of the process). The two sources alternate, in an
order that flips every round, so both see the same load. Medians per phase, and every
round of the three load phases.

The database is `bench_av.make_db(root, SIGS, HASHES, random.Random(1))`, generated once
under a temporary directory (or `--db DIR` for one made before).

Usage: python bench/bench_av_phases.py --baseline SRC [--rounds 11] [--sigs 100000]
                                        [--hashes 1000000] [--db DIR]
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

PHASES = ("numpy", "imports", "read", "decode", "ndb", "hashes", "matcher")
CHILD = """
import sys, time
P = time.process_time
t0 = P()
import numpy
t1 = P()
from mailyard.antivirus import engine
from mailyard.antivirus import database, matcher
t2 = P()
from pathlib import Path
ndb = Path(sys.argv[1], "bench.ndb").read_bytes()
hdb = Path(sys.argv[1], "bench.hdb").read_bytes()
t3 = P()
with database.no_gc():
    db = database.SignatureDatabase()
    text = ndb.decode("utf-8", "replace")
    t4 = P()
    if hasattr(database, "_load_ndb_text"):  # the bulk pass, the line loop for the rest
        database._load_ndb_text(db, text, 1, "x.ndb", "", [])
    else:  # before it: every line through the line loop
        database._load_ndb(db, text.splitlines(), 1, "x.ndb", "", [])
    t5 = P()
    db.hashes.load(hdb, "", set(), "x.hdb", [], size_first=False)
    db.hashes.finish()
    t6 = P()
    matcher.Matcher(db)
    t7 = P()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)
"""


def measure(src: str, db: Path) -> list[float]:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", CHILD, str(db)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, metavar="SRC")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--sigs", type=int, default=100_000)
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    sources = {"this": str(Path(__file__).resolve().parents[1] / "src"),
               "baseline": args.baseline}
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or make_db(Path(tmp), args.sigs, args.hashes, random.Random(1))[0]
        results: dict[str, list[list[float]]] = {name: [] for name in sources}
        loads = []
        for round_ in range(args.rounds):
            order = list(sources) if round_ % 2 == 0 else list(sources)[::-1]
            for name in order:
                loads.append(os.getloadavg()[0])
                results[name].append(measure(sources[name], db))
    print(f"{args.rounds} rounds, load average {min(loads):.2f}-{max(loads):.2f}; "
          f"medians, CPU s")
    print("| source | " + " | ".join(PHASES) + " | ndb + hashes + matcher | all |")
    print("|---" * (len(PHASES) + 3) + "|")
    for name, rows in results.items():
        medians = [statistics.median(column) for column in zip(*rows)]
        load = statistics.median(sum(row[4:7]) for row in rows)
        total = statistics.median(sum(row) for row in rows)
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in medians)
              + f" | {load:.3f} | {total:.3f} |")
    for name, rows in results.items():
        for index, phase in ((4, "ndb"), (5, "hashes"), (6, "matcher")):
            print(f"{name} {phase}: " + " ".join(f"{row[index]:.3f}" for row in rows))


if __name__ == "__main__":
    main()
