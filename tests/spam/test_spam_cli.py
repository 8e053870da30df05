"""`mailyard spam …` as a subprocess; learn jobs."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys

import pytest

from mailyard.spam import SpamEngine, process_learn_jobs
from mailyard.spam.bayes import BayesDatabases
from mailyard.spam.learnjobs import JOB_DIR, write_learn_job

GTUBE = (b"Subject: test\r\nFrom: a@example.org\r\nDate: Mon, 3 Mar 2025 10:00:00 +0000\r\n"
         b"Message-ID: <gtube@example.org>\r\n\r\n"
         b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


def message(i: int, kind: str = "ham") -> bytes:
    return (f"From: {kind}{i}@example.org\r\nTo: b@example.test\r\nSubject: {kind} {i}\r\n"
            f"Message-ID: <{kind}{i}@example.org>\r\nDate: Mon, 3 Mar 2025 10:00:00 +0000\r\n"
            f"\r\nwords for message {i} about {kind} things\r\n").encode()


@pytest.fixture
def cli(tmp_path):
    cfg = tmp_path / "mailyard.toml"
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "mailyard", "-c", str(cfg), "spam",
                                 *args], capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode in (0, 1), result.stderr
        return result

    run.data = tmp_path / "data"
    return run


def test_check_human_and_json(cli, tmp_path):
    (tmp_path / "g.eml").write_bytes(GTUBE)
    (tmp_path / "h.eml").write_bytes(message(1))
    human = cli("check", str(tmp_path / "g.eml"))
    assert "SPAM, score=1000.0 required=5.0" in human.stdout and "GTUBE" in human.stdout
    out = cli("check", "--json", str(tmp_path / "g.eml"), str(tmp_path / "h.eml")).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [l["file"] for l in lines] == [str(tmp_path / "g.eml"), str(tmp_path / "h.eml")]
    assert lines[0]["is_spam"] and lines[0]["rules"][0] == {
        "name": "GTUBE", "score": 1000.0, "description": "Generic Test for Unsolicited Bulk Email"}
    assert not lines[1]["is_spam"] and lines[1]["required"] == 5.0


def test_check_missing_file(cli, tmp_path):
    result = cli("check", str(tmp_path / "nope.eml"), check=False)
    assert result.returncode == 2 and "nope.eml" in result.stderr


def test_learn_files_dirs_mbox_maildir_then_stats(cli, tmp_path):
    eml_dir = tmp_path / "emls"
    eml_dir.mkdir()
    for i in range(3):
        (eml_dir / f"{i}.eml").write_bytes(message(i, "spam"))
    box = mailbox.mbox(str(tmp_path / "box.mbox"))
    for i in range(3, 6):
        box.add(message(i, "spam"))
    box.flush()
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    for i in range(4):
        md.add(message(i, "ham"))
    first = cli("learn", "--spam", str(eml_dir), str(tmp_path / "box.mbox"))
    assert first.stdout.startswith("6 message(s) learned as spam, 0 already known")
    again = cli("learn", "--spam", str(eml_dir))
    assert again.stdout.startswith("0 message(s) learned as spam, 3 already known")
    ham = cli("learn", "--ham", "--json", str(tmp_path / "Maildir"))
    assert json.loads(ham.stdout)["learned"] == 4
    stats = json.loads(cli("stats", "--json").stdout)["databases"][0]
    assert (stats["spam"], stats["ham"]) == (6, 4) and stats["tokens"] > 0
    forget = cli("learn", "--forget", str(eml_dir))
    assert forget.stdout.startswith("3 message(s) forgotten")


def test_learn_needs_a_class(cli, tmp_path):
    (tmp_path / "a.eml").write_bytes(message(1))
    assert cli("learn", str(tmp_path / "a.eml"), check=False).returncode == 2


def test_rules_report(cli, tmp_path):
    (tmp_path / "bad.cf").write_text("body OK_RULE /fine/\nbody BROKEN /(oops/\n")
    out = cli("rules", "--report", "--rules", str(tmp_path / "bad.cf")).stdout
    assert "skipped" in out and "bad.cf:2: BROKEN: regex" in out
    data = json.loads(cli("rules", "--json", "--report", "--rules",
                          str(tmp_path / "bad.cf")).stdout)
    assert data["loaded"] > 50 and data["skipped_rules"][0]["rule"] == "BROKEN"


def test_learn_jobs_are_consumed_once(tmp_path):
    dbs = BayesDatabases(tmp_path / "bayes.sqlite3", per_user=True)
    msg_path = tmp_path / "m.eml"
    msg_path.write_bytes(message(1, "spam"))
    write_learn_job(tmp_path, "alice@example.test", "spam", str(msg_path))
    write_learn_job(tmp_path, "alice@example.test", "spam", str(msg_path))  # a duplicate
    (tmp_path / JOB_DIR / "broken.json").write_text("{not json")
    report = process_learn_jobs(dbs, tmp_path)
    assert (report.learned, report.unchanged, report.failed) == (1, 1, 1)
    assert not list((tmp_path / JOB_DIR).glob("*.json"))
    assert (tmp_path / JOB_DIR / "failed" / "broken.json").exists()
    assert dbs.store("alice@example.test").stats()["spam"] == 1
    # forgetting through a job
    write_learn_job(tmp_path, "alice@example.test", "forget", str(msg_path))
    assert process_learn_jobs(dbs, tmp_path).learned == 1
    assert dbs.store("alice@example.test").stats()["spam"] == 0


def test_learn_jobs_with_an_engine(tmp_path):
    engine = SpamEngine(bayes_path=tmp_path / "bayes.sqlite3", autolearn=False)
    path = tmp_path / "m.eml"
    path.write_bytes(message(2, "ham"))
    write_learn_job(tmp_path, None, "ham", "m.eml")   # relative to data_dir
    assert process_learn_jobs(engine, tmp_path).learned == 1
    assert engine.bayes.store().stats()["ham"] == 1
