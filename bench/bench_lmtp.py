"""LMTP deliveries/s into Maildir with a 20-rule Sieve script: mailyard vs Dovecot LMTP.

Both servers get the same workload in the same run: N messages over C concurrent LMTP
connections to one user whose active Sieve script has 20 rules (header/address/size tests;
one in four messages is filed into a folder, the rest kept). Dovecot (Debian's dovecot-lmtpd
+ dovecot-sieve) is started as a private instance on a free loopback port when we are root
and it is installed; otherwise only mailyard is measured.

    python bench/bench_lmtp.py              # N=400 C=8
    N=1000 C=16 python bench/bench_lmtp.py
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from harness import MailyardServer, free_port, wait_for_port

N = int(os.environ.get("N", "400"))
C = int(os.environ.get("C", "8"))
USER = "bench@example.test"

RULES = "\n".join(
    [f'if header :contains "Subject" "project-{i}" {{ fileinto :create "Projects.P{i}"; stop; }}'
     for i in range(10)]
    + [f'if address :is "from" "list{i}@lists.test" {{ fileinto :create "Lists"; stop; }}'
       for i in range(5)]
    + ['if size :over 500K { fileinto :create "Big"; stop; }',
       'if header :is "X-Spam-Flag" "YES" { fileinto :create "Junk"; stop; }',
       'if exists "X-Bench-Archive" { fileinto :create "Archive"; stop; }',
       'if header :matches "X-Mailer" "*Outlook*" { addflag "$Outlook"; }',
       'if header :contains "To" "nobody@example.test" { discard; stop; }'])
SCRIPT = 'require ["fileinto", "mailbox", "imap4flags"];\n' + RULES + "\nkeep;\n"


def message(i: int) -> bytes:
    extra = "X-Bench-Archive: yes\r\n" if i % 4 == 0 else ""
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "\r\n") * 3
    return (f"From: sender{i}@remote.test\r\nTo: {USER}\r\nSubject: bench message {i}\r\n"
            f"Message-ID: <bench{i}@remote.test>\r\n{extra}\r\n{body}").encode()


async def _connection(port: int, jobs: asyncio.Queue, failures: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"LHLO bench.test\r\n")
    await reply()
    while True:
        try:
            i = jobs.get_nowait()
        except asyncio.QueueEmpty:
            break
        writer.write(f"MAIL FROM:<sender{i}@remote.test>\r\nRCPT TO:<{USER}>\r\nDATA\r\n"
                     .encode())
        for _ in range(3):
            await reply()
        data = message(i).replace(b"\r\n.", b"\r\n..")
        writer.write(data + b".\r\n")
        answer = await reply()
        if not answer.startswith(b"250"):
            failures.append(answer)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def _drive(port: int) -> tuple[float, list]:
    jobs: asyncio.Queue = asyncio.Queue()
    for i in range(N):
        jobs.put_nowait(i)
    failures: list = []
    start = time.perf_counter()
    await asyncio.gather(*(_connection(port, jobs, failures) for _ in range(C)))
    return time.perf_counter() - start, failures


def drive(port: int, label: str) -> float:
    asyncio.run(_drive_warmup(port))
    elapsed, failures = asyncio.run(_drive(port))
    rate = N / elapsed
    print(f"{label}: {N} deliveries over {C} connections in {elapsed:.2f}s = "
          f"{rate:.0f} msg/s" + (f" ({len(failures)} failed: {failures[:2]})" if failures
                                  else ""), flush=True)
    return rate


async def _drive_warmup(port: int) -> None:
    jobs: asyncio.Queue = asyncio.Queue()
    jobs.put_nowait(10_000_000)
    await _connection(port, jobs, [])


def report_maildir(root: Path) -> None:
    """Check the work was done: messages per folder, as both servers left them."""
    counts = {}
    for folder in [root] + sorted(p for p in root.glob(".*") if (p / "cur").is_dir()):
        n = sum(len(os.listdir(folder / sub)) for sub in ("new", "cur"))
        if n:
            counts[folder.name if folder != root else "INBOX"] = n
    print(f"  stored: {counts}", flush=True)


def run_mailyard(tmp: Path) -> float:
    srv = MailyardServer(root=tmp / "mailyard", services={"lmtp"}, domains=["example.test"],
                         toml='[server]\nlog_level = "warning"\n')
    srv.start()
    try:
        srv.add_user(USER)
        from mailyard.sieve.storage import ScriptStore

        store = ScriptStore(srv.data_dir, USER)
        store.put("bench", SCRIPT)
        store.set_active("bench")
        rate = drive(srv.port("lmtp"), "mailyard LMTP")
        report_maildir(srv.maildir(USER))
        return rate
    finally:
        srv.stop()


DOVECOT_CONF = """
instance_name = benchlmtp{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
hostname = mx.example.test
postmaster_address = postmaster@example.test
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = .
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
"""


def run_dovecot(tmp: Path) -> float | None:
    if os.geteuid() != 0 or not shutil.which("dovecot") \
            or not Path("/usr/lib/dovecot/lmtp").exists():
        print("dovecot LMTP: skipped (needs root and dovecot-lmtpd)")
        return None
    for name in ("vmail", "nobody"):
        try:
            account = pwd.getpwnam(name)
            break
        except KeyError:
            continue
    root = tmp / "dovecot"
    home = root / "mail" / "example.test" / "bench"
    (home / "sieve").mkdir(parents=True)
    (home / "sieve" / "bench.sieve").write_text(SCRIPT)
    (home / ".dovecot.sieve").symlink_to("sieve/bench.sieve")
    for sub in ("run", "state"):
        (root / sub).mkdir()
    os.chmod(tmp, 0o755)
    subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(root / "mail")],
                   check=True)
    os.chmod(root, 0o755)
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(root=root, port=port, uid=account.pw_uid,
                                        gid=account.pw_gid))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        rate = drive(port, "dovecot LMTP ")
        report_maildir(home / "Maildir")
        return rate
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-lmtp-") as tmp_name:
        tmp = Path(tmp_name)
        ours = run_mailyard(tmp)
        theirs = run_dovecot(tmp)
    if theirs:
        print(f"ratio mailyard/dovecot: {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
