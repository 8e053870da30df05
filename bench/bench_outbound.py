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

import asyncio
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from harness import DnsServer, MailyardServer, free_port, wait_for_port  # noqa: E402

N = int(os.environ.get("N", "1000"))
C = int(os.environ.get("C", "10"))
BODY = ("x" * 76 + "\r\n") * 52


class Sink:
    """SMTP sink on HOST: 250 to everything, counts messages and notes the last arrival."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = free_port(host)
        self.count = 0
        self.last = 0.0
        ready = threading.Event()

        async def session(reader, writer) -> None:
            writer.write(b"220 sink ESMTP\r\n")
            in_data = False
            while line := await reader.readline():
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        self.count += 1
                        self.last = time.perf_counter()
                        writer.write(b"250 2.0.0 ok\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"DATA":
                    in_data = True
                    writer.write(b"354 go\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                elif verb in (b"EHLO", b"LHLO"):
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(session, host, self.port, backlog=512)
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
        ready.wait(10)

    def wait_for(self, count: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.05)


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


POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
alias_maps =
alias_database =
local_transport = error:no local delivery
relayhost = [{host}]:{sink}
smtp_host_lookup = native
smtputf8_enable = no
"""


def run_postfix(sink: Sink) -> float | None:
    if not shutil.which("postfix") or os.geteuid() != 0:
        print("postfix: not installed or not root; skipped", flush=True)
        return None
    root = Path(tempfile.mkdtemp(prefix="bench-outbound-postfix-"))
    os.chmod(root, 0o755)
    for sub in ("etc", "spool", "data"):
        (root / sub).mkdir()
    shutil.chown(root / "data", "postfix", "postfix")
    port = free_port()
    (root / "etc" / "master.cf").write_text(POSTFIX_MASTER_CF.format(port=port))
    (root / "etc" / "main.cf").write_text(POSTFIX_MAIN_CF.format(root=root, host=sink.host,
                                                                 sink=sink.port))
    try:
        subprocess.run(["postfix", "-c", str(root / "etc"), "start"], check=True,
                       capture_output=True)
        wait_for_port("127.0.0.1", port, 30)
        base = sink.count
        started = drive(port)
        sink.wait_for(base + N)
        return N / (sink.last - started)
    finally:
        subprocess.run(["postfix", "-c", str(root / "etc"), "stop"], capture_output=True)
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


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
