"""Two-fold cross-validation inside the TRAINING part of the accuracy corpus (never the test part).

    python bench/bench_spam_cv.py --workdir /tmp/bspam-acc [--rules-only]

The training part is bench_spam.py's (first 8 hex digits of the file's MD5 even). It is split
again in two folds by the next 8 hex digits' parity. For each fold, mailyard learns Bayes from
the other fold and scans this one with its own + the stock SpamAssassin rules (threshold 5.0);
the two folds' counts are summed. This is how changes to the rules engine, the evals and the
Bayes tokenizer/constants are judged before the one measurement on the test part.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_spam import STOCK, corpus, metrics, my_learn  # noqa: E402

from mailyard.spam import SpamEngine  # noqa: E402


def fold_of(path: Path) -> int:
    digest = path.stem.split(".")[-1]
    return int(digest[8:16], 16) % 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True, help="where bench_spam.py keeps the corpus")
    ap.add_argument("--rules-only", action="store_true", help="no Bayes")
    ap.add_argument("--show-errors", action="store_true",
                    help="list the misclassified training messages with their rule hits")
    args = ap.parse_args()
    train_ham, train_spam, _, _ = corpus(Path(args.workdir))
    spam_scores: list[float] = []
    ham_scores: list[float] = []
    bayes_spam: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ruleset = None
        for fold in (0, 1):
            learn_spam = [f for f in train_spam if fold_of(f) != fold]
            learn_ham = [f for f in train_ham if fold_of(f) != fold]
            db = None
            if not args.rules_only:
                db = Path(tmp) / f"fold{fold}.sqlite3"
                my_learn(db, learn_spam, learn_ham)
            engine = SpamEngine(rules_dirs=[STOCK], bayes_path=db, autolearn=False,
                                ruleset=ruleset)
            ruleset = engine.ruleset
            for f in train_spam:
                if fold_of(f) == fold:
                    v = engine.scan(f.read_bytes())
                    spam_scores.append(v.score)
                    if args.show_errors and not v.is_spam:
                        print("FN", f.name, v.score, v.rule_names, file=sys.stderr)
                    if v.bayes_probability is not None:
                        bayes_spam.append(v.bayes_probability)
            for f in train_ham:
                if fold_of(f) == fold:
                    v = engine.scan(f.read_bytes())
                    ham_scores.append(v.score)
                    if args.show_errors and v.is_spam:
                        print("FP", f.name, v.score, v.rule_names, file=sys.stderr)
            engine.close()
    out = {"cv_folds": 2, "training_part": {"spam": len(train_spam), "ham": len(train_ham)},
           "own_plus_stock" + ("" if args.rules_only else "_bayes"):
               metrics(spam_scores, ham_scores, 5.0)}
    if bayes_spam:
        out["spam_bayes_between_0.5_and_0.99"] = sum(0.5 <= p < 0.99 for p in bayes_spam)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
