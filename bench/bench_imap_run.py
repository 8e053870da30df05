"""IMAP read-path benchmark: FETCH of a whole folder, bodies and metadata, first open and warm.

Starts mailyard (imap only) in a temp dir on a free loopback port, fills one user's INBOX
with N realistic messages (../shared/bench/bench_pipeline.py --dump, delivered through the
maildir API), and drives it with ../shared/bench/bench_imap.py: `body` (BODY.PEEK[]) and
`meta` (ENVELOPE BODYSTRUCTURE FLAGS), REPEAT times each: the first meta run is the first
open (structures computed and cached), the later ones are warm.

    python bench/bench_imap_run.py               # N=5000 REPEAT=3
    N=1000 REPEAT=2 python bench/bench_imap_run.py
    IDLE=2000 python bench/bench_imap_run.py     # also hold 2000 IDLE sessions, PSS each
    DOVECOT=0 python bench/bench_imap_run.py     # skip the side-by-side Dovecot run
    EML=/tmp/eml python bench/bench_imap_run.py  # reuse (or create) the generated messages
    PRECOMPUTE=0 python bench/bench_imap_run.py  # deliver without the IMAP cache builder
                                                 # (first open computes the structures)

With DOVECOT=1 (the default when running as root and `dovecot` is installed) a private
Debian Dovecot (bench/dovecot_imap.py) serves a copy of the same Maildir on another
loopback port and is driven the same way, interleaved with mailyard run by run.
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
SHARED = next((p for p in (Path(os.environ.get("BENCH_SHARED", "/nonexistent")),
                           ROOT.parent / "shared" / "bench", ROOT.parent.parent / "shared" / "bench")
               if (p / "bench_imap.py").exists()), ROOT.parent / "shared" / "bench")
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from harness import MailyardServer

N = int(os.environ.get("N", "5000"))
REPEAT = int(os.environ.get("REPEAT", "3"))
IDLE = int(os.environ.get("IDLE", "0"))
DOVECOT = os.environ.get("DOVECOT", "1" if os.geteuid() == 0 and shutil.which("dovecot")
                         else "0") == "1"
EML = os.environ.get("EML")
PRECOMPUTE = os.environ.get("PRECOMPUTE", "1") == "1"
USER, PASSWORD = "bench@example.test", "benchpass"


def pss_kb(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def cpu_s(pid: int) -> float:
    """CPU seconds of a server: its own (all threads) plus its reaped children's (Dovecot's
    master reaps the per-session imap and imap-login processes)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dump = Path(EML) if EML else tmp / "eml"
        if len(list(dump.glob("*.eml"))) != N:
            subprocess.run([sys.executable, str(SHARED / "bench_pipeline.py"), "--dump",
                            str(dump), "-n", str(N)], check=True, stdout=subprocess.DEVNULL)
        srv = MailyardServer(root=tmp / "mailyard", services={"imap"},
                             domains=["example.test"],
                             toml="[server]\nlog_level = \"warning\"\n")
        srv.add_user(USER, PASSWORD)
        from mailyard.maildir import MailStore

        if PRECOMPUTE:
            # Deliver as the LMTP delivery agent does: importing it registers the IMAP
            # structure cache builder (ENVELOPE/BODYSTRUCTURE computed at delivery).
            import mailyard.delivery.agent  # noqa: F401

        store = MailStore(srv.maildir(USER))
        for path in sorted(dump.glob("*.eml")):
            store.deliver(path.read_bytes())
        out = tmp / "results.jsonl"
        with contextlib.ExitStack() as stack:
            targets = []
            if DOVECOT:   # its copy is taken before mailyard serves (and touches) the Maildir
                from dovecot_imap import dovecot_imap

                port = stack.enter_context(
                    dovecot_imap(tmp / "dovecot", srv.maildir(USER), USER, PASSWORD))
                master = int((tmp / "dovecot" / "run" / "master.pid").read_text())
                targets.append(("dovecot", port, master))
            srv.start()
            stack.callback(srv.stop)
            targets.insert(0, ("mailyard", srv.port("imap"), srv.proc.pid))
            cpu: dict = {}
            # Interleaved, mode by mode and repetition by repetition, so a burst of load
            # from the shared machine hits both servers alike; rep 0 meta = first open.
            for rep in range(REPEAT):
                for mode in ("body", "meta"):
                    for label, port, pid in targets:
                        cmd = [sys.executable, str(SHARED / "bench_imap.py"), "--port",
                               str(port), "--user", USER, "--password", PASSWORD, "--mode",
                               mode, "--repeat", "1", "--json", str(out), "--label",
                               f"{label} rep={rep}"]
                        if rep == 0 and mode == "body":
                            print("$", " ".join(cmd), flush=True)
                        before = cpu_s(pid)
                        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                        time.sleep(0.5)   # let Dovecot's master reap the session process
                        cpu[(label, mode, rep)] = cpu_s(pid) - before
            if IDLE:
                before = pss_kb(srv.proc.pid)
                cmd = [sys.executable, str(SHARED / "bench_imap.py"), "--port",
                       str(srv.port("imap")), "--user", USER, "--password", PASSWORD,
                       "--idle", str(IDLE), "--hold", "5", "--json", str(out),
                       "--label", "mailyard-idle", "--mem-cmd",
                       f"grep Pss: /proc/{srv.proc.pid}/smaps_rollup"]
                print("$", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
                print(json.dumps({"idle_sessions": IDLE, "pss_before_kb": before}))
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for row in rows:
            server, _, rep = row["label"].partition(" rep=")
            if rep:
                row["server_cpu_s"] = round(cpu.get((server, row["mode"], int(rep)), 0), 3)
            print(json.dumps(row))
        summarize(rows)


def summarize(rows: list[dict]) -> None:
    """One line per server: first run and median of the warm runs, msgs/s per mode, and the
    server's CPU time per warm run (median)."""
    table: dict = {}
    for row in rows:
        server, _, rep = row["label"].partition(" rep=")
        if not rep:
            continue
        table.setdefault(server, {}).setdefault(row["mode"], []).append(
            (int(rep), row["msgs_per_s"], row.get("server_cpu_s", float("nan"))))
    for server, modes in table.items():
        parts = []
        for mode, runs in sorted(modes.items()):
            runs.sort()
            warm = sorted(rate for rep, rate, _cpu in runs if rep > 0)
            median = warm[len(warm) // 2] if warm else float("nan")
            warm_cpu = sorted(c for rep, _rate, c in runs if rep > 0)
            cpu_run = warm_cpu[len(warm_cpu) // 2] if warm_cpu else float("nan")
            parts.append(f"{mode}: first {runs[0][1]:,.0f} warm median {median:,.0f} msg/s, "
                         f"server CPU {cpu_run:.2f} s/run")
        print(f"SUMMARY {server}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
