"""The LMTP client (RFC 2033) the queue uses for final delivery to local mailboxes.

Theory of operation: one connection per delivery attempt to the `lmtp` listener (HOST:PORT
or unix:/path). LHLO, MAIL FROM, one RCPT TO per recipient, DATA, then the message
streamed from the spool file with dot-stuffing (RFC 5321 §4.5.2) and CRLF line ends, never
held in memory whole. After the final dot an LMTP server answers once per accepted
recipient, in RCPT order (RFC 2033 §4.2) — that is what lets one recipient be delivered
while another is deferred (over quota) or refused, and the queue records each outcome.

Anything the connection does wrong (refused, reset, timeout, garbage instead of a reply)
becomes a 4xx for every recipient not yet answered: nothing is lost, the queue retries.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from mailyard.config import parse_hostport
from mailyard.envelope import Envelope
from mailyard.queue.records import RecipientState, Reply
from mailyard.queue.smtp_out import CONNECT_FAILED, make_reply

_REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -])(.*?)\r?\n$", re.S)
MAX_REPLY_LINES = 100
CHUNK = 65536


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


async def read_reply(reader: asyncio.StreamReader, timeout: float) -> tuple[int, str]:
    """One (possibly multi-line) reply: (code, text with lines joined by newlines)."""
    lines = []
    for _ in range(MAX_REPLY_LINES):
        raw = await asyncio.wait_for(reader.readline(), timeout)
        if not raw:
            raise ConnectionResetError("connection closed by the LMTP server")
        match = _REPLY_LINE.match(raw)
        if not match:
            raise ProtocolError(f"not a reply line: {raw[:80]!r}")
        lines.append(match.group(3).decode("utf-8", "replace"))
        if match.group(2) == b" ":
            return int(match.group(1)), "\n".join(lines)
    raise ProtocolError("reply has too many lines")


def dot_stuff_lines(data: bytes, at_line_start: bool) -> tuple[bytes, bool]:
    """Dot-stuff a chunk and normalise line ends to CRLF. Returns (bytes, at_line_start)."""
    out = bytearray()
    for line in data.splitlines(keepends=True):
        if at_line_start and line.startswith(b"."):
            out += b"."
        if line.endswith(b"\r\n"):
            out += line
            at_line_start = True
        elif line.endswith(b"\n") or line.endswith(b"\r"):
            out += line.rstrip(b"\r\n") + b"\r\n"
            at_line_start = True
        else:
            out += line
            at_line_start = False
    return bytes(out), at_line_start


async def _send_message(writer: asyncio.StreamWriter, path: Path) -> None:
    at_line_start = True
    pending_cr = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            chunk = pending_cr + chunk
            pending_cr = b""
            # Never split a CRLF pair across chunks, nor a line's first byte from its start.
            if chunk.endswith(b"\r"):
                chunk, pending_cr = chunk[:-1], b"\r"
            stuffed, at_line_start = dot_stuff_lines(chunk, at_line_start)
            writer.write(stuffed)
            await writer.drain()
    tail = pending_cr
    if tail:
        stuffed, at_line_start = dot_stuff_lines(tail, at_line_start)
        writer.write(stuffed)
    if not at_line_start:
        writer.write(b"\r\n")            # the message did not end with a line break
    writer.write(b".\r\n")
    await writer.drain()


async def _open(address: str, timeout: float):
    host, port = parse_hostport(address)
    if host.startswith("unix:"):
        return await asyncio.wait_for(asyncio.open_unix_connection(host[5:]), timeout)
    return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)


async def lmtp_deliver(address: str, envelope: Envelope, recipients: list[RecipientState],
                       message_path: Path, *, helo: str, connect_timeout: float,
                       command_timeout: float) -> dict[str, Reply]:
    """Deliver one spooled message to `recipients`; a Reply for every one of them."""
    replies: dict[str, Reply] = {}
    remote = address
    writer = None
    try:
        reader, writer = await _open(address, connect_timeout)

        async def command(line: str) -> tuple[int, str]:
            encoding = "utf-8" if envelope.smtputf8 else "ascii"
            writer.write(line.encode(encoding) + b"\r\n")
            await writer.drain()
            return await read_reply(reader, command_timeout)

        code, text = await read_reply(reader, command_timeout)
        if code != 220:
            raise ProtocolError(f"greeting {code} {text}")
        code, text = await command(f"LHLO {helo}")
        if code != 250:
            reply = make_reply(code, text, remote)
            return {r.address: reply for r in recipients}
        extensions = {line.split(" ")[0].upper() for line in text.split("\n")[1:]}
        params = []
        if "8BITMIME" in extensions and envelope.body.upper() == "8BITMIME":
            params.append("BODY=8BITMIME")
        if "SMTPUTF8" in extensions and envelope.smtputf8:
            params.append("SMTPUTF8")
        code, text = await command(" ".join([f"MAIL FROM:<{envelope.sender}>"] + params))
        if code != 250:
            reply = make_reply(code, text, remote)
            return {r.address: reply for r in recipients}
        accepted: list[str] = []
        for rcpt in recipients:
            rcpt_params = ""
            if "DSN" in extensions:
                if rcpt.notify:
                    rcpt_params += " NOTIFY=" + ",".join(rcpt.notify)
                if rcpt.orcpt:
                    rcpt_params += " ORCPT=" + rcpt.orcpt.replace(" ", "")
            code, text = await command(f"RCPT TO:<{rcpt.address}>{rcpt_params}")
            if 200 <= code < 300:
                accepted.append(rcpt.address)
            else:
                replies[rcpt.address] = make_reply(code, text, remote)
        if not accepted:
            await command("QUIT")
            return replies
        code, text = await command("DATA")
        if code != 354:
            reply = make_reply(code, text, remote)
            replies.update({a: reply for a in accepted})
            return replies
        await _send_message(writer, message_path)
        # RFC 2033 §4.2: one reply per accepted recipient, in order.
        for accepted_address in accepted:
            code, text = await read_reply(reader, command_timeout)
            replies[accepted_address] = make_reply(code, text, remote)
        try:
            await command("QUIT")
        except (OSError, ProtocolError, asyncio.TimeoutError):
            pass
        return replies
    except (OSError, ProtocolError, asyncio.TimeoutError, UnicodeError, ValueError) as exc:
        reply = Reply(code=451, enhanced=CONNECT_FAILED, remote=remote,
                      text=f"LMTP {type(exc).__name__}: {exc}"[:300])
        for rcpt in recipients:
            replies.setdefault(rcpt.address, reply)
        return replies
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError, Exception):
                pass
