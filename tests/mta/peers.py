"""Real peers for MTA tests: an aiosmtpd sink standing in for the content filter, and a raw
socket client for byte-exact exchanges (pipelining, smuggling, STARTTLS injection)."""

from __future__ import annotations

import socket
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from harness import DnsServer, free_port

UNTRUSTED = "127.0.0.2"        # loopback alias outside trusted_networks in these tests
# Clients from 127.0.0.2+ are untrusted; sender authentication (DNS) is off unless a test
# turns it on with its own DNS server.
TRUSTED_ONLY_LOCALHOST = '[smtp]\ntrusted_networks = ["127.0.0.1/32"]\n'
SENDERAUTH_OFF = "[senderauth]\ncheck = false\n"

_quiet_dns: DnsServer | None = None


def with_quiet_dns(toml: str) -> str:
    """`toml` plus a `[dns]` table naming a loopback DNS server that knows nothing (every
    name NXDOMAIN), unless the test brought its own: no test depends on the machine's DNS."""
    global _quiet_dns
    if "[dns]" in toml:
        return toml
    if _quiet_dns is None:
        _quiet_dns = DnsServer()
    return toml + f'\n[dns]\nnameservers = ["{_quiet_dns.address}"]\n'


class Sink:
    """An SMTP server (aiosmtpd) recording what the queue forwards to `[filter] next_hop`."""

    def __init__(self, port: int | None = None) -> None:
        self.messages: list[dict] = []
        self._cond = threading.Condition()
        self.port = port or free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):
        with self._cond:
            self.messages.append({"sender": envelope.mail_from,
                                  "recipients": list(envelope.rcpt_tos),
                                  "content": envelope.original_content or envelope.content})
            self._cond.notify_all()
        return "250 2.0.0 Ok: sunk"

    def toml(self) -> str:
        return f'[filter]\nnext_hop = "127.0.0.1:{self.port}"\n'

    def wait(self, count: int = 1, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"sink got {len(self.messages)} of {count} messages")
                self._cond.wait(left)
            return list(self.messages)

    def find(self, marker: bytes, timeout: float = 20.0) -> dict:
        """The message whose content contains `marker` (tests sharing a sink use markers)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages if marker in m["content"]]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message with {marker!r} reached the sink")
                self._cond.wait(left)

    def has(self, marker: bytes) -> bool:
        with self._cond:
            return any(marker in m["content"] for m in self.messages)

    def stop(self) -> None:
        self.controller.stop()


class RawClient:
    """A line-level SMTP client on a plain socket: send exact bytes, read whole replies."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: (code, text of all lines joined by newline)."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        return int(lines[0][:3]), "\n".join(l[4:] for l in lines)

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext) -> None:
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")

    def closed_by_server(self) -> bool:
        try:
            return self.file.readline() == b""
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass
