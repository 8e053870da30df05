"""Bayes: tokenizer, learning (idempotent, forget), classification, per-user stores, expiry."""

from __future__ import annotations

import random

import pytest

from mailyard.spam import SpamEngine
from mailyard.spam.bayes import BayesStore, chi2q, tokenize
from mailyard.spam.message import ParsedMessage

SPAM_WORDS = ["viagra", "casino", "winner", "lottery", "prize", "cheap", "pills", "bitcoin", "investment", "urgent"]
HAM_WORDS = ["meeting", "agenda", "project", "review", "lunch", "garden", "report", "schedule", "family", "minutes"]


def make(words, i, kind):
    rnd = random.Random(i * 7 + len(kind))
    body = " ".join(rnd.choice(words) for _ in range(40))
    return (f"From: {kind}{i}@example.org\r\nTo: bob@example.test\r\n"
            f"Message-ID: <{kind}{i}@example.org>\r\nSubject: {kind} number {i}\r\n\r\n"
            f"{body}\r\n").encode()


@pytest.fixture
def engine(tmp_path):
    return SpamEngine(bayes_path=tmp_path / "bayes.sqlite3", bayes_min_learned=5,
                      autolearn=False)


def test_tokenizer_as_spamassassin_bayes():
    """Tokens as Mail::SpamAssassin::Plugin::Bayes makes them (see mailyard.spam.tokenizer)."""
    msg = ParsedMessage.parse(
        b"From: Alice <alice@example.org>\r\nSubject: Hello World\r\nX-Mailer: Foo Mailer 5.1\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nList-Id: <talk.lists.example>\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; b=abcdef\r\n"
        b"Received: from a.example (a.example [192.0.2.77]) by mx.example with ESMTP id "
        b"ABCDEF1234; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Content-Type: text/html\r\n\r\n<p>short ab supercalifragilisticexpialidocious "
        b"\xc3\xbcberlangeswortmitumlautenxyz \xe4\xb8\xad\xe6\x96\x87\xe4\xb8\xad\xe6\x96\x87"
        b"\xe4\xb8\xad\xe6\x96\x87 Free! Buy... now--today. Write to Sales@Shop.example.com "
        b"<a href='http://shop.example.com/buy/now'>x</a></p>")
    tokens = tokenize(msg)
    # the Subject is the body's first line; Title Case at a sentence start is lower-cased
    assert {"hello", "World", "world"} <= tokens and not any(t.startswith("H*s") for t in tokens)
    # body tokens keep their case and punctuation and are also learned decomposed
    assert {"Free!", "Free", "free!", "free", "today"} <= tokens and "ab" not in tokens
    assert {"U*Sales", "D*Shop.example.com", "D*example.com", "D*com"} <= tokens
    assert "sk:superca" in tokens and "u8:\u4e2d" in tokens and "sk:\u00fcberlan" in tokens
    # URIs: UD: for the host and each parent, path words
    assert {"UD:shop.example.com", "UD:example.com", "buy"} <= tokens
    # headers: compressed names, addresses pre-chewed, X-Mailer also under *UA, Received
    # IPs to the /24 plus ip*, presence-only DKIM, Date and List-Id ignored
    assert {"H*F:N*Alice", "H*F:U*alice", "H*F:D*example.org", "H*Ad:U*alice"} <= tokens
    assert {"H*x:Foo", "H*UA:Mailer", "H*r:192.0.2", "H*r:ip*192.0.2.77"} <= tokens
    assert "HDKIM-Signature:abcdef" not in tokens
    assert not any(t.startswith(("HDate:", "HList-Id:")) for t in tokens)
    assert "Hx-spam-relays-external:192.0.2.77" in tokens and "H*RU:a.example" in tokens


def test_database_learned_by_another_tokenizer_is_not_used(tmp_path):
    """A database from the first tokenizer (no version row, messages learned) abstains: its
    tokens would not match the current ones."""
    import sqlite3
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE tokens (id INTEGER PRIMARY KEY, spam INTEGER NOT NULL, "
                       "ham INTEGER NOT NULL, atime INTEGER NOT NULL);"
                       "CREATE TABLE seen (msgid TEXT PRIMARY KEY, verdict TEXT NOT NULL);"
                       "CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                       "INSERT INTO totals VALUES ('spam', 500), ('ham', 500);")
    conn.commit()
    conn.close()
    old = BayesStore(path)
    assert old.probability({"anything"}) is None
    assert old.stats()["tokenizer"] == 1 and old.stats()["usable"] is False
    new = BayesStore(tmp_path / "new.sqlite3")
    assert new.stats()["usable"] is True


def test_learning_twice_changes_nothing(engine):
    msg = make(SPAM_WORDS, 1, "spam")
    assert engine.learn(msg, True) is True
    store = engine.bayes.store()
    before = store.stats()
    counts_before = store.conn.execute("SELECT sum(spam), sum(ham) FROM tokens").fetchone()
    assert engine.learn(msg, True) is False
    assert store.stats() == before
    assert store.conn.execute("SELECT sum(spam), sum(ham) FROM tokens").fetchone() == \
        counts_before


def test_relearn_as_other_class_moves_counts(engine):
    msg = make(HAM_WORDS, 1, "ham")
    engine.learn(msg, True)
    assert engine.learn(msg, False) is True
    stats = engine.bayes.store().stats()
    assert (stats["spam"], stats["ham"]) == (0, 1)


def test_forget_undoes_learning(engine):
    msg = make(SPAM_WORDS, 2, "spam")
    engine.learn(msg, True)
    assert engine.learn(msg, True, forget=True) is True
    stats = engine.bayes.store().stats()
    assert stats["spam"] == 0 and stats["tokens"] == 0
    assert engine.learn(msg, True, forget=True) is False   # nothing left to forget


def test_classifier_abstains_until_trained_then_separates(engine):
    assert engine.scan(make(SPAM_WORDS, 99, "spam")).bayes_probability is None
    with engine.bayes.store().batch():
        for i in range(30):
            engine.learn(make(SPAM_WORDS, i, "spam"), True)
            engine.learn(make(HAM_WORDS, i, "ham"), False)
    spam = engine.scan(make(SPAM_WORDS, 500, "spam"))
    ham = engine.scan(make(HAM_WORDS, 500, "ham"))
    assert spam.bayes_probability > 0.9 and ham.bayes_probability < 0.1
    assert {"BAYES_99", "BAYES_999"} & set(spam.rule_names)
    assert "BAYES_00" in ham.rule_names


def test_autolearn(tmp_path):
    engine = SpamEngine(bayes_path=tmp_path / "b.sqlite3", bayes_min_learned=5)
    clean = (b"From: a@example.org\r\nTo: b@example.test\r\nDate: Mon, 3 Mar 2025 10:00:00 "
             b"+0000\r\nMessage-ID: <ok1@example.org>\r\nSubject: hello\r\n\r\nlunch?\r\n")
    verdict = engine.scan(clean)
    assert verdict.autolearn == "ham"
    assert engine.bayes.store().stats()["ham"] == 1
    gtube = (b"Subject: x\r\n\r\n"
             b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
    assert engine.scan(gtube).autolearn == "no"       # GTUBE is tflags noautolearn
    assert SpamEngine(autolearn=True).scan(clean).autolearn == "disabled"  # no Bayes at all


def test_per_user_databases(tmp_path):
    engine = SpamEngine(bayes_path=tmp_path / "bayes.sqlite3", per_user_bayes=True,
                        autolearn=False)
    engine.learn(make(SPAM_WORDS, 1, "spam"), True, user="alice@example.test")
    assert (tmp_path / "bayes" / "alice@example.test.sqlite3").exists()
    assert engine.bayes.store("alice@example.test").stats()["spam"] == 1
    assert engine.bayes.store().stats()["spam"] == 0
    assert engine.bayes.store("../../etc/passwd").path.parent == tmp_path / "bayes"


def test_expiry_drops_oldest_tokens(tmp_path):
    store = BayesStore(tmp_path / "b.sqlite3")
    for i in range(5):
        store.learn({f"tok{i}-{j}" for j in range(20)}, f"id{i}", True)
    assert store.stats()["tokens"] == 100
    assert store.expire(max_tokens=40) == 60
    assert store.stats()["tokens"] == 40


def test_chi2q_bounds():
    assert chi2q(0.0, 10) == pytest.approx(1.0)
    assert chi2q(1e6, 10) == 0.0
    assert 0.0 < chi2q(10.0, 10) < 1.0
