"""Delegating detection to a real clamd (`[antivirus] backend = "HOST:PORT"` or "unix:/path").

`ClamdBackend` has the engine's interface (`scan_message`, `scan_bytes` → `ScanVerdict`), so
the filter does not care which one it has. Detection is clamd's (INSTREAM of the whole
input, `zINSTREAM` framing); the attachment list is still ours, from a local walk with no
signatures, because banned-attachment policy needs names and types clamd does not give.
A clamd that cannot be reached, or answers ERROR, raises `BackendError`: the caller must
defer the message, never pass it unscanned.
"""

from __future__ import annotations

import socket
import struct

from mailyard.antivirus.engine import ScanOptions, VirusEngine
from mailyard.antivirus.verdict import ScanLimits, ScanVerdict
from mailyard.config import parse_hostport

CHUNK = 1 << 16


class BackendError(RuntimeError):
    """clamd could not give a verdict."""


class ClamdBackend:
    """A clamd socket used as the virus engine."""

    def __init__(self, address: str, limits: ScanLimits | None = None,
                 timeout: float = 120.0):
        self.address = address
        self.timeout = timeout
        self.limits = limits or ScanLimits()
        self._walker = VirusEngine(None, self.limits, builtin_eicar=False)

    def _connect(self) -> socket.socket:
        host, port = parse_hostport(self.address)
        try:
            if host.startswith("unix:"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(host[5:])
                return sock
            return socket.create_connection((host, port), timeout=self.timeout)
        except OSError as exc:
            raise BackendError(f"clamd at {self.address}: {exc}") from None

    def _command(self, payload: bytes, stream: bytes | None = None) -> str:
        with self._connect() as sock:
            try:
                sock.sendall(payload)
                if stream is not None:
                    view = memoryview(stream)
                    for i in range(0, len(view), CHUNK):
                        piece = view[i:i + CHUNK]
                        sock.sendall(struct.pack(">I", len(piece)) + piece)
                    sock.sendall(b"\0\0\0\0")
                reply = b""
                while not reply.endswith(b"\0"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            except OSError as exc:
                raise BackendError(f"clamd at {self.address}: {exc}") from None
        return reply.rstrip(b"\0").decode("utf-8", "replace")

    def ping(self) -> bool:
        return self._command(b"zPING\0") == "PONG"

    def version(self) -> str:
        return self._command(b"zVERSION\0")

    def _instream(self, data: bytes) -> tuple[str, ...]:
        reply = self._command(b"zINSTREAM\0", data)
        if reply.endswith(" ERROR") or not reply.startswith("stream: "):
            raise BackendError(f"clamd at {self.address}: {reply or 'no reply'}")
        result = reply[len("stream: "):]
        if result == "OK":
            return ()
        if result.endswith(" FOUND"):
            return (result[:-len(" FOUND")],)
        raise BackendError(f"clamd at {self.address}: unexpected reply {reply!r}")

    def scan_message(self, message: bytes, options: ScanOptions | None = None) -> ScanVerdict:
        return self._merge(self._walker.scan_message(message, options), message)

    def scan_bytes(self, data: bytes, name: str | None = None,
                   options: ScanOptions | None = None) -> ScanVerdict:
        return self._merge(self._walker.scan_bytes(data, name, options), data)

    def _merge(self, local: ScanVerdict, data: bytes) -> ScanVerdict:
        names = self._instream(data)
        limit = local.limits_exceeded
        infected = bool(names) or (limit is not None and self.limits.alert_exceeded)
        if not names and infected:
            names = (limit,)
        return ScanVerdict(infected=infected, names=names, limits_exceeded=limit,
                           encrypted=local.encrypted, attachments=local.attachments)
