#!/usr/bin/env python3
"""POP3 server CPU per RETR, RETR phase only: this tree, another mailyard tree and Dovecot.

    cd bench && ../.venv/bin/python bench_pop3_cpu.py --base-src /tmp/main-src/src [--rounds 8]

The same corpus and servers as bench_pop3_paired.py (one Maildir served by this tree's code,
by the code under --base-src, and by Dovecot on a copy), but driven by a minimal raw-socket
client (`RETR n`, read to the terminator, no line parsing beyond that) and measured where
the servers spend CPU on the downloads alone: the CPU time of the serving process (mailyard:
every thread of the server; Dovecot: its `pop3` process for the session), read from
/proc/PID/task/*/schedstat in nanoseconds just before RETR 1 and just after the last RETR,
so the login (argon2id for mailyard, PLAIN for Dovecot) and the maildrop scan are left out.
Each round runs one session per server in rotating order; prints per round msg/s and server
CPU µs per RETR, then the medians. CPU per RETR is what decides the rate on a machine whose
cores are all busy; msg/s here is the latency-bound rate of a client that costs ~nothing.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import bench_pop3_run as run
from bench_pop3_paired import parse_args, start_servers, stop_servers


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except OSError:
                pass
    return total / 1e9


def children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent:
                found.append(int(entry))
    return found


def session(port: int, serving) -> tuple[float, float]:
    """One raw session; (msg/s, server CPU µs per RETR) over the RETR phase."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")

        def command(line: bytes) -> bytes:
            sock.sendall(line + b"\r\n")
            return reader.readline()

        reader.readline()
        command(b"USER " + run.USER.encode())
        assert command(b"PASS " + run.PASSWORD.encode()).startswith(b"+OK")
        count = int(command(b"STAT").split()[1])
        pids = serving()
        cpu0, t0 = cpu_seconds(pids), time.perf_counter()
        for number in range(1, count + 1):
            sock.sendall(b"RETR %d\r\n" % number)
            assert reader.readline().startswith(b"+OK")
            while reader.readline() != b".\r\n":
                pass
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pids) - cpu0
        command(b"QUIT")
    return count / elapsed, cpu / count * 1e6


def main() -> None:
    args = parse_args(__doc__)
    work = Path(tempfile.mkdtemp(prefix="bench-pop3-cpu-"))
    os.chmod(work, 0o755)
    procs: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        start_servers(work, args.messages, args.base_src, procs)

        def serving(label: str):
            pid = procs[label][1].pid
            if label != "dovecot":
                return [pid]
            return [c for c in children(pid)
                    if Path(f"/proc/{c}/comm").read_text().strip() == "pop3"]

        for label, (p, _) in procs.items():
            session(p, lambda label=label: serving(label))  # warm-up: indexes, caches
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in procs}
        order = list(procs)
        for r in range(args.rounds):
            for label in order[r % 3:] + order[:r % 3]:
                results[label].append(session(procs[label][0],
                                              lambda label=label: serving(label)))
            print(json.dumps({"round": r, "load": os.getloadavg()[0],
                              **{k: round(v[-1][0]) for k, v in results.items()},
                              **{k + "_us_per_retr": round(v[-1][1], 1)
                                 for k, v in results.items()}}), flush=True)
        summary = {}
        for k, v in results.items():
            summary[k] = round(statistics.median(x[0] for x in v))
            summary[k + "_us_per_retr"] = round(statistics.median(x[1] for x in v), 1)
            summary[k + "_cpu_ratio_to_dovecot"] = round(statistics.median(
                a[1] / b[1] for a, b in zip(v, results["dovecot"])), 3)
        print("summary " + json.dumps(summary), flush=True)
    finally:
        stop_servers(work, procs)


if __name__ == "__main__":
    main()
