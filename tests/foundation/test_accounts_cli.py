"""The `mailyard` command: domain, user, alias, --json, --help, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture
def cli(tmp_path):
    config = tmp_path / "mailyard.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')

    def run(*args, input=None):
        return subprocess.run([sys.executable, "-m", "mailyard", "-c", str(config), *args],
                              input=input, capture_output=True, text=True, timeout=60)

    return run


def test_user_add_password_stdin_and_list_json(cli):
    r = cli("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    assert r.returncode == 0, r.stderr
    r = cli("user", "list", "--json")
    users = json.loads(r.stdout)
    assert [u["address"] for u in users] == ["alice@example.test"]
    assert users[0]["maildir"].endswith("mail/example.test/alice/Maildir")
    r = cli("domain", "list", "--json")
    assert json.loads(r.stdout)[0]["domain"] == "example.test"


def test_alias_round_trip(cli):
    cli("domain", "add", "example.test")
    r = cli("alias", "add", "team@example.test", "a@example.test", "b@remote.test")
    assert r.returncode == 0, r.stderr
    r = cli("alias", "list", "--json")
    assert json.loads(r.stdout) == [{"source": "team@example.test", "target": "a@example.test"},
                                    {"source": "team@example.test", "target": "b@remote.test"}]
    assert cli("alias", "remove", "team@example.test").returncode == 0
    assert json.loads(cli("alias", "list", "--json").stdout) == []


def test_errors_are_one_clear_line(cli):
    r = cli("user", "add", "not-an-address", "--password-stdin", input="pw\n")
    assert r.returncode == 1
    assert r.stderr.startswith("mailyard: not an address")
    r = cli("user", "remove", "ghost@example.test")
    assert r.returncode == 1 and "no such user" in r.stderr
    r = cli("user", "add", "e@example.test", "--password-stdin", input="\n")
    assert r.returncode == 1 and "empty password" in r.stderr
    r = cli("user", "add", "q@example.test", "--password-stdin", "--quota", "lots",
            input="pw\n")
    assert r.returncode == 2 and "--quota" in r.stderr


def test_user_import_cli(cli, tmp_path):
    passwd = tmp_path / "users"
    passwd.write_text("u1@example.test:{PLAIN}a\nu2:{PLAIN}b\n")
    r = cli("user", "import", str(passwd), "--domain", "example.test", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"imported": ["u1@example.test", "u2@example.test"],
                                    "problems": []}


def test_help_teaches():
    r = subprocess.run([sys.executable, "-m", "mailyard", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0
    for word in ("serve", "user", "domain", "alias", "--password-stdin"):
        assert word in r.stdout
