"""`make bench`: run every bench/bench_*.py in turn (each prints its own figures).

Benchmarks compare mailyard with the classic Debian stack side by side in one run, as
ratios; record the figures and the command in bench/RESULTS.md. Pass names to run a subset:
`python bench/run.py spam av`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
wanted = sys.argv[1:]
status = 0
for script in sorted(here.glob("bench_*.py")):
    name = script.stem.removeprefix("bench_")
    if wanted and name not in wanted:
        continue
    print(f"== {script.name}", flush=True)
    status |= subprocess.call([sys.executable, str(script)])
sys.exit(status)
