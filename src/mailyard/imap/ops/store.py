"""STORE and UID STORE (RFC 3501 §6.4.6; UNCHANGEDSINCE from RFC 7162 §3.1.3)."""

from __future__ import annotations

import asyncio

from mailyard.imap import responses as r
from mailyard.imap.ops.selected import SelectedMailbox
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto.types import StoreCommand

_MODES = {"+": "add", "-": "remove", "=": "replace"}


async def cmd_store(session, cmd: StoreCommand):
    sel: SelectedMailbox = session.selected
    if sel.readonly:
        await session.no(cmd.tag, "[READ-ONLY] mailbox is read-only")
        return
    try:
        uids = sel.resolve(cmd.sequence, cmd.uid)
    except IndexError:
        await session.send(r.tagged(cmd.tag, r.BAD, "invalid message number"))
        return
    action = cmd.action
    # \Recent is session state and cannot be stored (RFC 3501 §2.3.2)
    flags = [f for f in action.flags if f.lower() != "\\recent"]
    uids = sel.live(uids)
    modified: list[int] = []
    if uids and (flags or action.mode == "="):
        try:
            done = await asyncio.to_thread(sel.folder.store_flags, uids, flags,
                                           _MODES[action.mode], action.unchanged_since)
        except ValueError as exc:
            await session.send(r.tagged(cmd.tag, r.BAD, str(exc)))
            return
        for uid in uids:
            if uid in done:
                sel.reload(uid)
            elif action.unchanged_since is not None and uid in sel.infos:
                modified.append(uid)   # RFC 7162 §3.1.3: failed the UNCHANGEDSINCE test
        uids = [u for u in uids if u in done]
    lines = []
    want_modseq = sel.condstore or action.unchanged_since is not None
    for uid in uids:
        info = sel.infos.get(uid)
        seq = sel.seq_of(uid)
        if info is None or seq is None:
            continue
        from mailyard.imap.ops.selected import all_flags

        if action.silent and not want_modseq:
            continue
        items = []
        if cmd.uid or sel.qresync:
            items.append(b"UID %d" % uid)
        if not action.silent:
            items.append(b"FLAGS " + fmt.flag_list(all_flags(info)))
        if want_modseq:
            items.append(b"MODSEQ (%d)" % info.modseq)
        lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
    if lines:
        await session.send(b"".join(lines))
    await session.updates(allow_expunge=cmd.uid)
    prefix = "UID " if cmd.uid else ""
    if modified:
        numbers = modified if cmd.uid else [sel.seq_of(u) for u in modified if sel.seq_of(u)]
        await session.ok(cmd.tag, f"[MODIFIED {fmt.seq_list(numbers).decode()}] "
                                  f"{prefix}STORE conditional")
        return
    await session.ok(cmd.tag, f"{prefix}STORE completed")
