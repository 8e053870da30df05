"""MTA accept rate: 4 KB messages over 10 concurrent connections, next hop a sink.

Starts mailyard with only the `smtp` listener (the queue forwards everything to an
in-process SMTP sink standing in for the content filter), then drives it with Postfix's
`smtp-source` (when installed) and with ../shared/bench/bench_pipeline.py --no-wait.
The 250 waits for the fsync (group commit), as in production. Then, when Debian's postfix
is installed and we are root, the same `smtp-source` run against a private Postfix instance
(own config and queue under a temp dir, loopback port, relaying to the same sink) — side by
side in one run, which is the figure that counts on a shared machine.

    python bench/bench_mta.py                  # N=2000 C=10
    N=500 C=10 python bench/bench_mta.py
    POSTFIX=0 python bench/bench_mta.py        # mailyard only
    EXTRA='[smtp]\nprocesses = 1' python bench/bench_mta.py   # extra mailyard config
    ROUNDS=3 N=1000 python bench/bench_mta.py  # interleaved: both servers up at once,
        # smtp-source against each in turn (order alternating per round, the sink drained
        # between runs, after an uncounted warm-up run of N/5 against each); one ratio per
        # round and the median — on a shared machine whose load drifts within seconds this
        # pairs each mailyard run with a Postfix run made moments apart
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = next((p for p in (ROOT.parent / "shared" / "bench", ROOT.parents[1] / "shared" / "bench",
                            Path("/work/shared/bench")) if p.is_dir()), Path("."))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from harness import MailyardServer
from sink import Sink

N = int(os.environ.get("N", "2000"))
C = int(os.environ.get("C", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "0"))
# Extra TOML for mailyard's config, e.g. EXTRA='[smtp]\nprocesses = 1' (one process).
EXTRA = os.environ.get("EXTRA", "").replace("\\n", "\n")


def smtp_source(port: int, count: int = N) -> float:
    cmd = ["smtp-source", "-s", str(C), "-m", str(count), "-l", "4096",
           "-f", "sender@example.net", "-t", "user1@example.test",
           "-M", "client.example.net", f"127.0.0.1:{port}"]
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return count / (time.perf_counter() - started)


def run_postfix(sink: Sink) -> float | None:
    from postfix_instance import PostfixInstance, available

    if os.environ.get("POSTFIX", "1") == "0" or not available():
        return None
    try:
        with PostfixInstance(main_extra=f"relayhost = [127.0.0.1]:{sink.port}\n",
                             prefix="bench-postfix-") as postfix:
            return smtp_source(postfix.port)
    except RuntimeError as exc:
        print(f"postfix did not start: {exc}", flush=True)
        return None


def tree_cpu(root_pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, the reaped ones
    included (their time is in their parent's cutime/cstime): the server's own cost,
    which the machine's load does not inflate the way it does wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(x) for x in fields[11:15]) / tick
    total, stack = 0.0, [root_pid]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def postfix_master_pid(postfix) -> int:
    for path in (postfix.root / "spool" / "pid" / "master.pid",):
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
    return 0


def wait_for_sink(sink: Sink, count: int) -> None:
    deadline = time.monotonic() + 120
    while sink.count < count and time.monotonic() < deadline:
        time.sleep(0.1)


def interleaved() -> int:
    """ROUNDS rounds of smtp-source against mailyard and Postfix, both running throughout."""
    from postfix_instance import PostfixInstance

    sink = Sink()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mta-"))
    srv = MailyardServer(root=tmp, services={"smtp"}, domains=["example.test"],
                         toml=f'[server]\nlog_level = "warning"\n[greylist]\nenabled = false\n'
                              f'[filter]\nnext_hop = "127.0.0.1:{sink.port}"\n' + EXTRA)
    srv.add_user("user1@example.test", "pass1")
    srv.start()
    rows = []
    try:
        with PostfixInstance(main_extra=f"relayhost = [127.0.0.1]:{sink.port}\n",
                             prefix="bench-postfix-") as postfix:
            ports = {"mailyard": srv.port("smtp"), "postfix": postfix.port}
            pids = {"mailyard": srv.proc.pid, "postfix": postfix_master_pid(postfix)}
            expected = 0
            # Warm-up, not counted: Postfix forks its smtpd processes, mailyard opens its
            # connections to the next hop; both then run in their steady state.
            warm = max(N // 5, 10)
            for name in ports:
                smtp_source(ports[name], warm)
                expected += warm
                wait_for_sink(sink, expected)
            for rnd in range(ROUNDS):
                order = ["mailyard", "postfix"] if rnd % 2 == 0 else ["postfix", "mailyard"]
                rates, cpu_ms = {}, {}
                for name in order:
                    load = os.getloadavg()[0]
                    cpu_before = tree_cpu(pids[name]) if pids[name] else 0.0
                    rates[name] = smtp_source(ports[name])
                    expected += N
                    wait_for_sink(sink, expected)       # each run starts with both idle
                    # Accepting and forwarding to the sink, per message (ms of CPU).
                    cpu_ms[name] = round(1000 * (tree_cpu(pids[name]) - cpu_before) / N, 2) \
                        if pids[name] else None
                    print(f"round {rnd + 1} {name}: {rates[name]:.1f} msg/s (load {load:.1f}, "
                          f"{cpu_ms[name]} ms CPU/msg)", flush=True)
                rows.append({"mailyard": round(rates["mailyard"], 1),
                             "postfix": round(rates["postfix"], 1),
                             "ratio": round(rates["mailyard"] / rates["postfix"], 2),
                             "first": order[0], "load": round(load, 1),
                             "cpu_ms_per_msg": cpu_ms})
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = sorted(r["ratio"] for r in rows)
    print(json.dumps({"rounds": rows, "median_ratio": ratios[len(ratios) // 2],
                      "forwarded_to_sink": sink.count}))
    return 0


def main() -> int:
    if ROUNDS:
        return interleaved()
    sink = Sink()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mta-"))
    srv = MailyardServer(root=tmp, services={"smtp"}, domains=["example.test"],
                         toml=f'[server]\nlog_level = "warning"\n[greylist]\nenabled = false\n'
                              f'[filter]\nnext_hop = "127.0.0.1:{sink.port}"\n' + EXTRA)
    srv.add_user("user1@example.test", "pass1")
    srv.start()
    results = {}
    try:
        if shutil.which("smtp-source"):
            rate = smtp_source(srv.port("smtp"))
            results["mailyard_smtp_source_msgs_per_s"] = round(rate, 1)
            print(f"mailyard smtp-source: {rate:.1f} msg/s", flush=True)
        out = tmp / "pipeline.json"
        cmd = [sys.executable, str(SHARED / "bench_pipeline.py"), "--port",
               str(srv.port("smtp")), "-n", str(N), "-c", str(C), "--min-kb", "4",
               "--max-kb", "4", "--attach-ratio", "0", "--html-ratio", "0",
               "--rcpt", "user1@example.test", "--no-wait", "--json", str(out),
               "--label", "mailyard-mta"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        line = json.loads(out.read_text().splitlines()[-1])
        results["bench_pipeline_accept_msgs_per_s"] = line.get("smtp_accept_msgs_per_s")
        deadline = time.monotonic() + 120
        while sink.count < 2 * N and time.monotonic() < deadline:
            time.sleep(0.2)
        results["forwarded_to_sink"] = sink.count
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if shutil.which("smtp-source"):
        rate = run_postfix(sink)
        if rate is not None:
            results["postfix_smtp_source_msgs_per_s"] = round(rate, 1)
            print(f"postfix smtp-source: {rate:.1f} msg/s", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
