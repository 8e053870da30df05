"""Whole-pipeline benchmark: mailyard vs the Debian seed stack, side by side in one run.

Starts mailyard (smtp → queue → filter → reinject → LMTP → Maildir, spam and virus engines
on) in a temp dir on free loopback ports, drives it with ../shared/bench/bench_pipeline.py,
and — when SEEDSTACK=1 and we are root — stands up the classic stack with
../shared/bench/seedstack/setup.sh and drives it with the same workload right after.

    python bench/bench_pipeline_run.py                 # mailyard only
    SEEDSTACK=1 python bench/bench_pipeline_run.py     # both, as a ratio
    N=300 C=10 python bench/bench_pipeline_run.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# ../shared/bench beside the checkout (CI lays it there); SHARED_BENCH overrides.
SHARED = Path(os.environ.get("SHARED_BENCH") or next(
    (p for p in (ROOT.parent / "shared" / "bench", ROOT.parent.parent / "shared" / "bench")
     if p.is_dir()), ROOT.parent / "shared" / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from harness import MailyardServer  # noqa: E402

N = int(os.environ.get("N", "300"))
C = int(os.environ.get("C", "10"))
USERS = [f"user{i}@example.test" for i in range(1, 4)]


def drive(port: int, pattern: str, label: str, out: Path, extra: list[str] = ()) -> dict:
    cmd = [sys.executable, str(SHARED / "bench_pipeline.py"), "--port", str(port), "-n", str(N),
           "-c", str(C), "--rcpt", ",".join(USERS), "--maildir-pattern", pattern,
           "--json", str(out), "--label", label, *extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text().splitlines()[-1])


def run_mailyard(tmp: Path) -> dict:
    srv = MailyardServer(root=tmp / "mailyard", services={"smtp", "filter", "reinject", "lmtp"},
                         domains=["example.test"],
                         toml="[server]\nlog_level = \"warning\"\n[greylist]\nenabled = false\n")
    for i, user in enumerate(USERS, 1):
        srv.add_user(user, f"pass{i}")
    srv.start()
    try:
        pattern = str(srv.data_dir / "mail" / "{domain}" / "{local}" / "Maildir")
        return drive(srv.port("smtp"), pattern, "mailyard", tmp / "mailyard.json")
    finally:
        srv.stop()


def run_seedstack(tmp: Path) -> dict | None:
    if os.environ.get("SEEDSTACK") != "1" or os.geteuid() != 0:
        return None
    # The temp dir is 0700: the stack's daemons (postfix, amavis, vmail) must traverse it.
    os.chmod(tmp, 0o755)
    env = dict(os.environ, SEEDSTACK_DIR=str(tmp / "seedstack"), NUSERS="3")
    subprocess.run(["bash", str(SHARED / "seedstack" / "setup.sh")], check=True, env=env)
    try:
        pattern = str(tmp / "seedstack" / "mail" / "{domain}" / "{local}" / "Maildir")
        return drive(2525, pattern, "seedstack", tmp / "seed.json", ["--prime-greylist"])
    finally:
        subprocess.run(["bash", str(SHARED / "seedstack" / "teardown.sh")], env=env)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mailyard-bench-") as d:
        tmp = Path(d)
        ours = run_mailyard(tmp)
        seed = run_seedstack(tmp)
        print(json.dumps({"mailyard": ours, "seedstack": seed}, indent=1))
        if seed:
            for key in ("pipeline_rate", "accept_rate"):
                if key in ours and key in seed and seed[key]:
                    print(f"{key}: mailyard/seedstack = {ours[key] / seed[key]:.1f}x")


if __name__ == "__main__":
    main()
