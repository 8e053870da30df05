"""APPEND (RFC 3501 §6.3.11) with APPENDUID (RFC 4315 §3); several messages are accepted in
one command (MULTIAPPEND syntax, RFC 3502) and appended one by one."""

from __future__ import annotations

import asyncio

from mailyard.imap import responses as r
from mailyard.imap.proto.types import AppendCommand


def split_flags(flags) -> tuple[list[str], list[str]]:
    """System flags (\\Seen...) and keywords ($Forwarded...); \\Recent cannot be set."""
    system = [f for f in flags if f.startswith("\\") and f.lower() != "\\recent"]
    keywords = [f for f in flags if not f.startswith("\\")]
    return system, keywords


def _append(store, cmd: AppendCommand) -> tuple[int, list[int]]:
    folder = store.open(cmd.mailbox)
    uids = []
    for msg in cmd.messages:
        system, keywords = split_flags(msg.flags)
        when = msg.date.timestamp() if msg.date is not None else None
        uids.append(folder.append(msg.message, flags=system + keywords, internal_date=when))
    return folder.uid_validity, uids


async def cmd_append(session, cmd: AppendCommand):
    from mailyard.maildir.errors import FolderNotFound

    for msg in cmd.messages:
        if not msg.message:
            await session.no(cmd.tag, "empty message")
            return
        if len(msg.message) > session.ctx.max_append:
            await session.no(cmd.tag, f"{r.TOOBIG} message too large")
            return
    try:
        validity, uids = await asyncio.to_thread(_append, session.store, cmd)
    except FolderNotFound:
        await session.no(cmd.tag, f"{r.TRYCREATE} no such mailbox")
        return
    except ValueError as exc:   # a flag the store refuses
        await session.send(r.tagged(cmd.tag, r.BAD, str(exc)))
        return
    await session.updates()
    uid_text = ",".join(str(u) for u in uids)
    await session.ok(cmd.tag, f"[APPENDUID {validity} {uid_text}] APPEND completed")
