#!/usr/bin/env python3
"""POP3 RETR, paired rounds: this tree, another mailyard tree and Dovecot, all up at once.

    .venv/bin/python bench/bench_pop3_paired.py --base-src /tmp/main-src/src [--rounds 8]

For a machine too noisy for `bench_pop3_run.py`'s medians of 3: one corpus (the same as
bench_pop3_run.py's), one Maildir served by two mailyard processes (this tree's code, and the
code under --base-src via PYTHONPATH, e.g. `git archive main src | tar -x -C /tmp/main-src`)
and by Dovecot on a copy. Each round drives /work/shared/bench/bench_pop3.py once against
each server in rotating order; prints per round msg/s and each server's CPU time for the
session (mailyard: the process's utime+stime; Dovecot: the master's reaped children, i.e. the
pop3 and auth processes), then medians and the median of the per-round ratios to Dovecot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_pop3_run as run


def cpu_seconds(pid: int, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11  # utime is field 14 of stat(5), cutime field 16
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def parse_args(doc: str) -> argparse.Namespace:
    """--base-src, --messages, --rounds: the options of the paired POP3 benchmarks."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-src", required=True, help="src dir of the mailyard to compare")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=8)
    return ap.parse_args()


def start_servers(work: Path, messages: int, base_src: str,
                  procs: dict[str, tuple[int, subprocess.Popen]]) -> None:
    """Make the corpus in `work` and start "this", "base" and "dovecot" on it, into `procs`
    ({label: (port, process)}; the caller stops them, also after a failure)."""
    subprocess.run([sys.executable, str(run.SHARED / "bench_pipeline.py"), "--dump",
                    str(work / "corpus"), "-n", str(messages), "--max-kb", "50"],
                   check=True, capture_output=True)
    port, proc, maildir = run.start_mailyard(work, sorted((work / "corpus").glob("*.eml")))
    procs["this"] = (port, proc)
    base_port = run.free_port()
    config = (work / "mailyard.toml").read_text().replace(f"127.0.0.1:{port}",
                                                          f"127.0.0.1:{base_port}")
    (work / "base.toml").write_text(config)
    base = subprocess.Popen([sys.executable, "-m", "mailyard", "-c", str(work / "base.toml"),
                             "serve", "--only", "pop3"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=base_src))
    procs["base"] = (base_port, base)
    run.wait_port(base_port, base)
    procs["dovecot"] = run.start_dovecot(work, maildir)


def stop_servers(work: Path, procs: dict[str, tuple[int, subprocess.Popen]]) -> None:
    for _, proc in procs.values():
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    args = parse_args(__doc__)
    work = Path(tempfile.mkdtemp(prefix="bench-pop3-paired-"))
    os.chmod(work, 0o755)
    procs: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        start_servers(work, args.messages, args.base_src, procs)
        opts = argparse.Namespace(sessions=1)
        for label, (p, _) in procs.items():
            run.drive(p, label + "-warmup", opts, None)
        rates: dict[str, list[float]] = {k: [] for k in procs}
        cpus: dict[str, list[float]] = {k: [] for k in procs}
        order = list(procs)
        for r in range(args.rounds):
            for label in order[r % 3:] + order[:r % 3]:
                p, pr = procs[label]
                before = cpu_seconds(pr.pid, label == "dovecot")
                res = run.drive(p, label, opts, None)[0]
                cpus[label].append(cpu_seconds(pr.pid, label == "dovecot") - before)
                rates[label].append(res["msgs_per_s"])
            print(json.dumps({"round": r, "load": os.getloadavg()[0],
                              **{k: v[-1] for k, v in rates.items()},
                              **{k + "_cpu_s": round(v[-1], 2) for k, v in cpus.items()}}),
                  flush=True)
        summary = {k: statistics.median(v) for k, v in rates.items()}
        summary.update({k + "_cpu_s": statistics.median(v) for k, v in cpus.items()})
        for k in ("this", "base"):
            summary[k + "_paired_ratio"] = round(statistics.median(
                a / b for a, b in zip(rates[k], rates["dovecot"])), 3)
        print("summary " + json.dumps(summary), flush=True)
    finally:
        stop_servers(work, procs)


if __name__ == "__main__":
    main()
