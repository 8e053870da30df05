"""Test harness: the real server as a subprocess, a real DNS server, real TLS certificates.

Everything binds 127.0.0.1 on ephemeral ports inside the test's temp dir.

    srv = mailyard_server(services={"smtp", "lmtp"}, domains=["example.test"],
                          toml="[greylist]\\nenabled = false\\n")
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input="pw\\n")
    smtplib.SMTP("127.0.0.1", srv.port("smtp"))
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ALL_SERVICES = ("smtp", "submission", "submissions", "reinject", "filter", "lmtp", "imap",
                "imaps", "pop3", "pop3s", "managesieve", "spamd", "clamd", "metrics")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0,
                  proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before "
                               f"{host}:{port} accepted")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept within {timeout}s")


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class MailyardServer:
    """One `mailyard serve` subprocess with its own config and data dir."""

    root: Path
    services: set[str]
    domains: list[str]
    toml: str = ""
    hostname: str = "mx.example.test"
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    _log_path: Path | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "data"
        self.config_path = self.root / "mailyard.toml"
        self._log_path = self.root / "server.log"
        for service in self.services:
            if service not in ALL_SERVICES:
                raise ValueError(f"unknown service {service}")
            self.ports[service] = free_port()
        self.write_config()

    # -- config --------------------------------------------------------------------------
    def write_config(self) -> None:
        listen = "\n".join(
            f"{svc} = " + (_toml_str(f"127.0.0.1:{self.ports[svc]}") if svc in self.ports
                           else '""') for svc in ALL_SERVICES)
        extra = self.toml
        server = (f"hostname = {_toml_str(self.hostname)}\n"
                  f"data_dir = {_toml_str(str(self.data_dir))}\n"
                  f"domains = [{', '.join(_toml_str(d) for d in self.domains)}]\n"
                  f"log_level = \"debug\"\n"
                  f"shutdown_timeout = 5.0")
        # Extra TOML may set keys of [server] or [listen]: they override ours.
        server_extra, listen_extra, rest = _split_tables(extra, ("server", "listen"))
        text = ("[server]\n" + _override(server, server_extra) + "\n\n[listen]\n"
                + _override(listen, listen_extra) + "\n\n" + rest)
        self.config_path.write_text(text)

    def port(self, service: str) -> int:
        return self.ports[service]

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    # -- process -------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, timeout: float = 30.0) -> MailyardServer:
        log = open(self._log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailyard", "-c", str(self.config_path), "serve"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.root)
        log.close()
        try:
            for port in self.ports.values():
                wait_for_port("127.0.0.1", port, timeout, self.proc)
        except Exception:
            self.kill()
            raise RuntimeError(f"mailyard did not start:\n{self.log_text()}") from None
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mailyard did not stop within {timeout}s on SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> MailyardServer:
        self.stop()
        return self.start()

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log_text()}")

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run `mailyard -c CONFIG ARGS...` against this server's config."""
        result = subprocess.run(
            [sys.executable, "-m", "mailyard", "-c", str(self.config_path), *args],
            input=input, capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"mailyard {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def add_user(self, address: str, password: str = "secret", *extra: str) -> None:
        self.cli("user", "add", address, "--password-stdin", *extra, input=password + "\n")

    def maildir(self, address: str) -> Path:
        local, domain = address.lower().rsplit("@", 1)
        return self.data_dir / "mail" / domain / local / "Maildir"


def _split_tables(text: str, tables: tuple[str, ...]) -> tuple[str, str, str]:
    """Pull the bodies of `[server]` and `[listen]` out of extra TOML; return the rest."""
    bodies = {t: [] for t in tables}
    rest: list[str] = []
    current: list[str] = rest
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]") and not stripped.startswith("[["):
            name = stripped[1:-1].strip()
            current = bodies[name] if name in bodies else rest
            if current is rest:
                rest.append(line)
            continue
        current.append(line)
    return ("\n".join(bodies["server"]), "\n".join(bodies["listen"]),
            "\n".join(rest) + "\n")


def _override(listen: str, extra: str) -> str:
    keys = {ln.split("=", 1)[0].strip() for ln in extra.splitlines() if "=" in ln}
    kept = [ln for ln in listen.splitlines() if ln.split("=", 1)[0].strip() not in keys]
    return "\n".join(kept + [ln for ln in extra.splitlines() if ln.strip()])


# -- DNS ---------------------------------------------------------------------------------

class DnsServer:
    """A small authoritative DNS server (dnslib) on 127.0.0.1 whose records tests set.

    Names not added answer NXDOMAIN; `fail(name)` makes a name answer SERVFAIL, and
    `hang(name)` makes it never answer (timeouts).
    """

    def __init__(self) -> None:
        from dnslib.server import BaseResolver, DNSServer

        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail: set[str] = set()
        self.hanging: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        outer = self

        class _Resolver(BaseResolver):
            def resolve(self, request, handler):
                return outer._answer(request)

        self.port = free_port()
        from dnslib.server import DNSLogger

        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._server = DNSServer(_Resolver(), address="127.0.0.1", port=self.port, tcp=False,
                                 logger=quiet)
        self._server_tcp = DNSServer(_Resolver(), address="127.0.0.1", port=self.port,
                                     tcp=True, logger=quiet)
        self._server.start_thread()
        self._server_tcp.start_thread()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, value: str) -> None:
        self.records.setdefault((self._key(name), rdtype.upper()), []).append(value)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        for key in list(self.records):
            if key[0] == self._key(name) and (rdtype is None or key[1] == rdtype.upper()):
                del self.records[key]

    def fail(self, name: str) -> None:
        self.servfail.add(self._key(name))

    def hang(self, name: str) -> None:
        self.hanging.add(self._key(name))

    def _answer(self, request):
        from dnslib import QTYPE, RCODE, RR

        reply = request.reply()
        qname = str(request.q.qname)
        key = self._key(qname)
        qtype = QTYPE[request.q.qtype]
        self.queries.append((key, qtype))
        if key in self.hanging:
            time.sleep(30)
            return None
        if key in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        values = self.records.get((key, qtype), [])
        for value in values:
            if qtype == "TXT":
                chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
                quoted = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"'
                                  for c in chunks)
                zone = f"{key} 60 IN TXT {quoted}"
            else:
                zone = f"{key} 60 IN {qtype} {value}"
            reply.add_answer(*RR.fromZone(zone))
        if not values and not any(k[0] == key for k in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    def stop(self) -> None:
        self._server.stop()
        self._server_tcp.stop()


# -- TLS ---------------------------------------------------------------------------------

class TlsCerts:
    """A trustme CA and a server certificate for 127.0.0.1 / localhost / mx.example.test."""

    def __init__(self, directory: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1", "localhost", "mx.example.test")
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / "server.crt"
        self.key_path = directory / "server.key"
        self.ca_path = directory / "ca.crt"
        self.server.private_key_pem.write_to_path(str(self.key_path))
        self.server.cert_chain_pems[0].write_to_path(str(self.cert_path))
        for pem in self.server.cert_chain_pems[1:]:
            with open(self.cert_path, "ab") as fh:
                fh.write(pem.bytes())
        self.ca.cert_pem.write_to_path(str(self.ca_path))

    def client_context(self):
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        return ctx

    def toml(self) -> str:
        return f"[tls]\ncert = {_toml_str(str(self.cert_path))}\n" \
               f"key = {_toml_str(str(self.key_path))}\n"

