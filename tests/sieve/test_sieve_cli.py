"""`mailyard sieve test` as a user runs it: a subprocess, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MESSAGE = (b"From: coyote@desert.example.org\r\nTo: roadrunner@acme.example.com\r\n"
           b"Subject: I have a present for you\r\n\r\nbirdseed\r\n")


def sieve_test(tmp_path, script: str, *args: str, message: bytes = MESSAGE):
    (tmp_path / "script.sieve").write_text(script)
    (tmp_path / "message.eml").write_bytes(message)
    return subprocess.run([sys.executable, "-m", "mailyard", "sieve", "test",
                           str(tmp_path / "script.sieve"), str(tmp_path / "message.eml"),
                           *args], check=False, capture_output=True, text=True, timeout=60)


def test_json_store_redirect_and_implicit_keep(tmp_path):
    proc = sieve_test(tmp_path, 'require ["fileinto", "copy", "imap4flags"];\n'
                      'addflag "\\\\Seen";\n'
                      'fileinto :copy :flags "\\\\Flagged" "Gifts";\n'
                      'redirect :copy "wile@example.net";\n', "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "result": "ok",
        "actions": [
            {"action": "store", "mailbox": "Gifts", "flags": ["\\Flagged"], "create": False,
             "copy": True},
            {"action": "redirect", "address": "wile@example.net", "copy": True},
        ],
        "implicit_keep": {"mailbox": "INBOX", "flags": ["\\Seen"]},
        "errors": [],
    }


def test_json_vacation_reject_discard(tmp_path):
    proc = sieve_test(tmp_path, 'require "vacation";\n'
                      'vacation :days 2 :subject "Away" :from "rr@acme.example.com" "Gone.";\n'
                      'discard;', "--json", "--from", "coyote@desert.example.org",
                      "--to", "roadrunner@acme.example.com")
    out = json.loads(proc.stdout)
    assert out["actions"] == [
        {"action": "discard"},
        {"action": "vacation", "seconds": 172800, "subject": "Away",
         "from": "rr@acme.example.com", "reason": "Gone."}]
    assert out["implicit_keep"] is None
    proc = sieve_test(tmp_path, 'require "reject"; reject "not you";', "--json")
    assert json.loads(proc.stdout)["actions"] == [{"action": "reject", "reason": "not you"}]


def test_json_compile_error(tmp_path):
    proc = sieve_test(tmp_path, "keep;\nfileinto \"x\";\n", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["result"] == "compile_error"
    assert out["actions"] == []
    assert out["errors"][0].startswith("line 2, column 1:")


def test_json_runtime_error_keeps(tmp_path):
    proc = sieve_test(tmp_path, 'require "include"; include "nothere";', "--json")
    out = json.loads(proc.stdout)
    assert out["result"] == "runtime_error"
    assert out["actions"] == []
    assert out["implicit_keep"] == {"mailbox": "INBOX", "flags": []}


def test_personal_and_global_dirs(tmp_path):
    personal, global_ = tmp_path / "p", tmp_path / "g"
    personal.mkdir()
    global_.mkdir()
    (personal / "mine.sieve").write_text('require "fileinto"; fileinto "Mine";')
    (global_ / "spam.sieve").write_text('require "fileinto"; fileinto "Global";')
    proc = sieve_test(tmp_path, 'require "include"; include :personal "mine"; '
                      'include :global "spam";', "--json", "--personal-dir", str(personal),
                      "--global-dir", str(global_))
    out = json.loads(proc.stdout)
    assert [a["mailbox"] for a in out["actions"]] == ["Mine", "Global"]


def test_human_output(tmp_path):
    proc = sieve_test(tmp_path, 'require "fileinto"; fileinto "Gifts";')
    assert proc.returncode == 0
    assert "file into Gifts" in proc.stdout


def test_human_compile_error_names_the_line(tmp_path):
    proc = sieve_test(tmp_path, "keep;\n\n  bogus;\n")
    assert proc.returncode == 1
    assert "line 3, column 3" in proc.stderr


@pytest.mark.parametrize("missing", ["script", "message"])
def test_missing_files_exit_2(tmp_path, missing):
    (tmp_path / "s").write_text("keep;")
    (tmp_path / "m").write_bytes(MESSAGE)
    args = [str(tmp_path / ("nope" if missing == "script" else "s")),
            str(tmp_path / ("nope" if missing == "message" else "m"))]
    proc = subprocess.run([sys.executable, "-m", "mailyard", "sieve", "test", *args],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2


def mailyard(*args, input=None):
    return subprocess.run([sys.executable, "-m", "mailyard", *args], check=False,
                          capture_output=True, text=True, timeout=60, input=input)


def test_operator_put_activate_list_check(tmp_path):
    config = tmp_path / "mailyard.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    good, bad = tmp_path / "good.sieve", tmp_path / "bad.sieve"
    good.write_text('require "fileinto"; fileinto "Lists";\n')
    bad.write_text("keep;\n  nope;\n")
    assert mailyard("sieve", "check", str(good)).stdout == "ok\n"
    proc = mailyard("sieve", "check", str(bad))
    assert proc.returncode == 1 and "line 2, column 3" in proc.stderr
    proc = mailyard("-c", str(config), "sieve", "put", "bob@example.test", "main", str(good),
                    "--activate")
    assert proc.returncode == 0, proc.stderr
    proc = mailyard("-c", str(config), "sieve", "put", "bob@example.test", "broken", str(bad))
    assert proc.returncode == 1 and "line 2" in proc.stderr
    proc = mailyard("-c", str(config), "sieve", "list", "bob@example.test", "--json")
    assert json.loads(proc.stdout) == [{"name": "main", "active": True}]
    from mailyard.sieve.storage import active_script_text

    assert active_script_text(tmp_path / "data", "bob@example.test") == good.read_text()
    assert mailyard("-c", str(config), "sieve", "activate", "bob@example.test",
                    "").returncode == 0
    assert active_script_text(tmp_path / "data", "bob@example.test") is None
    proc = mailyard("-c", str(config), "sieve", "put", "../evil", "x", str(good))
    assert proc.returncode == 1 and not (tmp_path / "evil").exists()
