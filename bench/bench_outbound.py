"""Outbound delivery rate: mailyard's queue → remote MX vs a Debian Postfix relaying there.

A counting SMTP sink plays the remote MX on 127.0.0.2; a dnslib server on loopback publishes
`remote.test MX mx.remote.test` → 127.0.0.2 for mailyard. N 4 KB messages go in over 10
connections on mailyard's trusted reinjection port (so they go straight to outbound delivery:
MX lookup, connection reuse, per-destination limits), and we time until the sink has them
all. Then the same load through a private Postfix instance (own config and queue, loopback)
relaying to the same sink — side by side in one run, as a ratio.

    python bench/bench_outbound.py            # N=1000 C=10
    N=300 python bench/bench_outbound.py
"""

from __future__ import annotations

import os
import smtplib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from harness import DnsServer, MailyardServer
from sink import Sink

N = int(os.environ.get("N", "1000"))
C = int(os.environ.get("C", "10"))
BODY = ("x" * 76 + "\r\n") * 52


def message(i: int) -> bytes:
    return (f"From: sender@example.test\r\nTo: user{i % 5}@remote.test\r\n"
            f"Subject: outbound {i}\r\nMessage-ID: <out-{i}-{time.monotonic_ns()}@example.test>"
            f"\r\n\r\n{BODY}").encode()


def drive(port: int) -> float:
    """Submit N messages over C connections; returns the submit start time."""
    started = time.perf_counter()

    def worker(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            for i in range(k, N, C):
                client.sendmail("sender@example.test", [f"user{i % 5}@remote.test"],
                                message(i))

    with ThreadPoolExecutor(C) as pool:
        list(pool.map(worker, range(C)))
    return started


def run_mailyard(sink: Sink, tmp: Path) -> float:
    dns = DnsServer()
    dns.add("remote.test.", "MX", "10 mx.remote.test.")
    dns.add("mx.remote.test.", "A", sink.host)
    try:
        srv = MailyardServer(
            root=tmp / "mailyard", services={"reinject"}, domains=["example.test"],
            toml=f'[server]\nlog_level = "warning"\n[dns]\nnameservers = ["{dns.address}"]\n'
                 f'[queue]\noutbound_port = {sink.port}\n[senderauth]\ndkim_sign = false\n')
        srv.start()
        try:
            base = sink.count
            started = drive(srv.port("reinject"))
            sink.wait_for(base + N)
            return N / (sink.last - started)
        finally:
            srv.stop()
    finally:
        dns.stop()


def run_postfix(sink: Sink) -> float | None:
    from postfix_instance import PostfixInstance, available

    if not available():
        print("postfix: not installed or not root; skipped", flush=True)
        return None
    with PostfixInstance(main_extra=f"relayhost = [{sink.host}]:{sink.port}\n",
                         prefix="bench-outbound-postfix-") as postfix:
        base = sink.count
        started = drive(postfix.port)
        sink.wait_for(base + N)
        return N / (sink.last - started)


def main() -> None:
    sink = Sink("127.0.0.2")
    with tempfile.TemporaryDirectory(prefix="bench-outbound-") as d:
        ours = run_mailyard(sink, Path(d))
    print(f"mailyard outbound: {ours:.1f} msg/s (N={N}, C={C})", flush=True)
    theirs = run_postfix(sink)
    if theirs:
        print(f"postfix outbound:  {theirs:.1f} msg/s", flush=True)
        print(f"ratio mailyard/postfix: {ours / theirs:.2f}", flush=True)


if __name__ == "__main__":
    main()
