#!/usr/bin/env python3
"""POP3 RETR throughput: mailyard vs Debian's Dovecot on copies of the same Maildir, one run.

    .venv/bin/python bench/bench_pop3_run.py [--messages 5000] [--repeat 3] [--sessions 1]

Generates the corpus with /work/shared/bench/bench_pipeline.py --dump (deterministic, seed
42), delivers it through mailyard's Maildir store into one user's INBOX, serves it with
`mailyard serve --only pop3` on a free loopback port, and drives
/work/shared/bench/bench_pop3.py (USER/PASS, STAT, LIST, RETR of every message) against it.
If /usr/sbin/dovecot is installed, a private Dovecot instance (no SSL, passwd-file, one POP3
listener on loopback) serves a copy of the same Maildir and is driven the same way; it is
stopped by its own PID afterwards. After one warm-up session each, the repetitions alternate
between the two servers so the shared machine's load hits both alike. Prints one JSON line per
session and a summary with the medians and their ratio; append it to bench/RESULTS.md by hand
with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("MAILYARD_SHARED_BENCH", "/work/shared/bench"))
USER, PASSWORD = "bench@bench.test", "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} never opened")


def drive(port: int, label: str, args, results: Path | None) -> list[dict]:
    cmd = [sys.executable, str(SHARED / "bench_pop3.py"), "--port", str(port), "--user", USER,
           "--password", PASSWORD, "--sessions", str(args.sessions), "--label", label]
    if results is not None:
        cmd += ["--json", str(results)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out, end="", flush=True)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def start_mailyard(work: Path, corpus: list[Path]) -> tuple[int, subprocess.Popen, Path]:
    port = free_port()
    data = work / "mailyard"
    config = work / "mailyard.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\ndomains = ["bench.test"]\n'
                      f'log_level = "warning"\n[listen]\n'
                      + "".join(f'{s} = ""\n' for s in (
                          "smtp", "submission", "submissions", "reinject", "filter", "lmtp",
                          "imap", "imaps", "pop3s", "managesieve"))
                      + f'pop3 = "127.0.0.1:{port}"\n')
    mailyard = [sys.executable, "-m", "mailyard", "-c", str(config)]
    subprocess.run(mailyard + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                   text=True, check=True, capture_output=True)
    from mailyard.accounts import AccountStore
    from mailyard.config import load
    from mailyard.maildir import MailStore

    settings = load(str(config))
    maildir = AccountStore.open(settings).maildir_path(USER)
    store = MailStore(maildir)
    for path in corpus:
        store.deliver(path.read_bytes())
    proc = subprocess.Popen(mailyard + ["serve", "--only", "pop3"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return port, proc, maildir


DOVECOT_CONF = """instance_name = benchpop3
base_dir = {run}
state_dir = {state}
log_path = {log}
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 1000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
  default_fields = uid=nobody gid=nogroup home={home}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def start_dovecot(work: Path, maildir: Path) -> tuple[int, subprocess.Popen]:
    dv = work / "dovecot"
    home = dv / "home"
    (dv / "run").mkdir(parents=True)
    (dv / "state").mkdir()
    home.mkdir()
    # A copy of the same Maildir, without mailyard's own index files.
    shutil.copytree(maildir, home / "Maildir", ignore=shutil.ignore_patterns("mailyard*"))
    subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
    users = dv / "users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    port = free_port()
    conf = dv / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(run=dv / "run", state=dv / "state", log=dv / "log",
                                        users=users, home=home, port=port))
    proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return port, proc


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--max-kb", type=float, default=50)
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pop3-"))
    os.chmod(work, 0o755)
    try:
        corpus_dir = work / "corpus"
        subprocess.run([sys.executable, str(SHARED / "bench_pipeline.py"), "--dump",
                        str(corpus_dir), "-n", str(args.messages), "--max-kb",
                        str(args.max_kb)], check=True, capture_output=True)
        corpus = sorted(corpus_dir.glob("*.eml"))
        results = work / "results.jsonl"
        summary = {"messages": len(corpus),
                   "MB": round(sum(p.stat().st_size for p in corpus) / 1e6, 1)}
        servers: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            port, proc, maildir = start_mailyard(work, corpus)
            servers["mailyard"] = (port, proc)
            if not args.no_dovecot and os.path.exists("/usr/sbin/dovecot"):
                servers["dovecot"] = start_dovecot(work, maildir)
            for label, (port, _) in servers.items():
                drive(port, label + "-warmup", args, None)  # indexes built, caches warm
            runs: dict[str, list[dict]] = {label: [] for label in servers}
            # Interleaved, so that the shared machine's load hits both alike.
            for _ in range(args.repeat):
                for label, (port, _) in servers.items():
                    runs[label] += drive(port, label, args, results)
        finally:
            for _, proc in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        for label, rs in runs.items():
            summary[f"{label}_msgs_per_s"] = median([r["msgs_per_s"] for r in rs])
            summary[f"{label}_MB_per_s"] = median([r["MB_per_s"] for r in rs])
        if "dovecot" in runs:
            summary["ratio"] = round(summary["mailyard_msgs_per_s"]
                                     / summary["dovecot_msgs_per_s"], 2)
        print("summary " + json.dumps(summary), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
