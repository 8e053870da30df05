"""Config: defaults that work; every bad case refused with one line naming file and key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.config import ConfigError, load, parse_hostport, render_example
from mailyard.config.loader import is_trusted


def write(tmp_path, text: str):
    path = tmp_path / "mailyard.toml"
    path.write_text(text)
    return path


def test_defaults_work_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load(None)
    assert s.listen.smtp == "0.0.0.0:25"
    assert s.listen.spamd == ""  # off by default per DESIGN
    assert s.server.data_dir == str(tmp_path / "var")
    assert s.filter_next_hop() == s.listen.filter
    assert s.filter_reinject() == s.listen.reinject


def test_data_dir_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", '[server]\ndata_dir = "spool"\n')
    assert load(str(path)).server.data_dir == str(tmp_path / "etc" / "spool")


def test_example_config_loads_and_documents_every_key(tmp_path):
    text = render_example()
    # Uncomment every key: the documented defaults must load as they are.
    uncommented = "\n".join(line[1:] if line.startswith("#") and line[1:2].isalpha() else line
                            for line in text.splitlines())
    s = load(str(write(tmp_path, uncommented)))
    assert s.smtp.max_recipients == 100
    for table in ("server", "listen", "filter", "dns", "tls", "smtp", "dnsbl", "greylist",
                  "spam", "antivirus", "sieve"):
        assert f"[{table}]" in text


@pytest.mark.parametrize("text, key, fragment", [
    ("[smtp]\nmax_recipients = \"many\"\n", "smtp.max_recipients", "must be integer"),
    ("[smtp]\nmax_recipients = 0\n", "smtp.max_recipients", "greater than 0"),
    ("[smtp]\nbogus = 1\n", "smtp.bogus", "unknown key"),
    ("[nosuchtable]\nx = 1\n", "nosuchtable", "unknown table"),
    ("[listen]\nsmtp = \"localhost\"\n", "listen.smtp", "HOST:PORT"),
    ("[listen]\nsmtp = \"127.0.0.1:99999\"\n", "listen.smtp", "port must be"),
    ("[smtp]\ntrusted_networks = [\"10.0.0.0/33\"]\n", "smtp.trusted_networks", "CIDR"),
    ("[greylist]\nenabled = \"yes\"\n", "greylist.enabled", "must be boolean"),
    ("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
     "tls.cert", "file not found"),
    ("[tls]\ncert = \"/etc/hostname\"\n", "tls.key", "set together"),
    ("[dns]\nnameservers = [\"1.2.3.4\"]\n", "dns.nameservers", "HOST:PORT"),
    ("[server]\ndomains = [\"a b\"]\n", "server.domains", "not a domain"),
    ("server = 3\n", "server", "must be a table"),
])
def test_bad_config_names_file_and_key(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: ")
    assert fragment in message


def test_not_toml_is_refused(tmp_path):
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(path))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load(str(tmp_path / "absent.toml"))


def test_cli_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "[smtp]\nmax_message_size = -1\n")
    result = subprocess.run([sys.executable, "-m", "mailyard", "-c", str(path), "config",
                             "check"], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"mailyard: {path}: smtp.max_message_size: must be greater than 0, "
                     f"got -1"]


def test_port_in_use_stops_startup(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        listen = "\n".join(f'{k} = ""' for k in (
            "submission", "submissions", "reinject", "filter", "lmtp", "imap", "imaps", "pop3",
            "pop3s", "managesieve", "spamd", "clamd", "metrics"))
        path = write(tmp_path, f'[server]\ndata_dir = "data"\n[listen]\nsmtp = '
                               f'"127.0.0.1:{port}"\n{listen}\n')
        result = subprocess.run([sys.executable, "-m", "mailyard", "-c", str(path), "serve"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{path}: listen.smtp: 127.0.0.1:{port} is already in use" in result.stderr


def test_hostport_forms():
    assert parse_hostport("127.0.0.1:25") == ("127.0.0.1", 25)
    assert parse_hostport("[::1]:143") == ("::1", 143)
    assert parse_hostport("unix:/run/x.sock") == ("unix:/run/x.sock", 0)
    for bad in ("", ":25", "host", "[::1]143", "h:-1", "unix:"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_hostport_fuzz_only_value_errors(text):
    try:
        host, port = parse_hostport(text)
    except ValueError:
        return
    assert 0 <= port <= 65535


def test_trusted_networks(tmp_path):
    s = load(str(write(tmp_path, '[smtp]\ntrusted_networks = ["192.0.2.0/24"]\n')))
    assert is_trusted(s, "192.0.2.9")
    assert is_trusted(s, "::ffff:192.0.2.9")
    assert not is_trusted(s, "127.0.0.1")
    assert not is_trusted(s, "not-an-ip")
