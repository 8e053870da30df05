"""SELECT / EXAMINE (with CONDSTORE / QRESYNC), CLOSE, UNSELECT, EXPUNGE, CHECK."""

from __future__ import annotations

import asyncio

from mailyard.imap import responses as r
from mailyard.imap.ops.hub import acquire
from mailyard.imap.ops.selected import SYSTEM_FLAGS, SelectedMailbox, all_flags
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto.types import Command, SelectCommand, SequenceSet


def _open(store, name: str, readonly: bool) -> SelectedMailbox:
    hub = acquire(store, name)
    return SelectedMailbox(name, hub, readonly)


def missing_uids(existing: list[int], known: SequenceSet, largest: int) -> list[tuple[int, int]]:
    """Ranges of UIDs inside `known` (bounded by `largest`) that are not in `existing`."""
    import bisect

    out: list[tuple[int, int]] = []
    for lo, hi in known.bounds(largest):
        hi = min(hi, largest)
        cur = lo
        i = bisect.bisect_left(existing, lo)
        while cur <= hi:
            nxt = existing[i] if i < len(existing) else hi + 1
            if nxt > cur:
                out.append((cur, min(hi, nxt - 1)))
            cur = nxt + 1
            i += 1
    return out


async def cmd_select(session, cmd: SelectCommand):
    from mailyard.imap.session import State

    had_selected = session.selected is not None
    await session.deselect()
    if had_selected and session.enabled & {"CONDSTORE", "QRESYNC"}:
        await session.send(r.untagged(f"OK {r.CLOSED} previous mailbox closed"))
    if cmd.qresync is not None and "QRESYNC" not in session.enabled:
        await session.send(r.tagged(cmd.tag, r.BAD, "QRESYNC must be enabled first"))
        return
    sel = await asyncio.to_thread(_open, session.store, cmd.mailbox, cmd.readonly)
    if cmd.condstore:
        session.enabled.add("CONDSTORE")
    sel.condstore = "CONDSTORE" in session.enabled
    sel.qresync = "QRESYNC" in session.enabled
    keywords = set()
    unseen = None
    for seq, uid in enumerate(sel.uids, 1):
        info = sel.infos.get(uid)
        if info is None:
            continue
        keywords.update(info.keywords)
        if unseen is None and "\\Seen" not in info.flags:
            unseen = seq
    flags = list(SYSTEM_FLAGS) + sorted(keywords)
    lines = [
        r.untagged(b"FLAGS " + fmt.flag_list(flags)),
        r.untagged(b"OK [PERMANENTFLAGS " + (b"()" if cmd.readonly else fmt.flag_list(
            list(SYSTEM_FLAGS) + sorted(keywords) + ["\\*"])) + b"] limited"),
        r.untagged(f"{sel.exists} EXISTS"),
        r.untagged("0 RECENT"),
    ]
    if unseen is not None:
        lines.append(r.untagged(f"OK [UNSEEN {unseen}] first unseen"))
    lines.append(r.untagged(f"OK [UIDVALIDITY {sel.uid_validity}] UIDs valid"))
    lines.append(r.untagged(f"OK [UIDNEXT {sel.uid_next}] predicted next UID"))
    if sel.condstore:
        modseq = sel.folder.highest_modseq
        lines.append(r.untagged(f"OK [HIGHESTMODSEQ {modseq}] highest"))
    if cmd.qresync is not None and cmd.qresync[0] == sel.uid_validity:
        lines.extend(_qresync_lines(sel, cmd.qresync[1], cmd.qresync[2]))
    await session.send(b"".join(lines))
    session.selected = sel
    session.state = State.SELECTED
    code = r.READ_ONLY if cmd.readonly else r.READ_WRITE
    await session.ok(cmd.tag, f"{code} {cmd.name} completed")


def _qresync_lines(sel: SelectedMailbox, modseq: int, known: SequenceSet | None) -> list[bytes]:
    """RFC 7162 §3.2.5.1: VANISHED (EARLIER) for what is gone, FETCH for what changed."""
    out = []
    largest = max(sel.uid_next - 1, 1)
    known = known or SequenceSet(((1, largest),))
    gone = missing_uids(sel.uids, known, largest)
    if gone:
        text = ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in gone)
        out.append(r.untagged(f"VANISHED (EARLIER) {text}"))
    for seq, uid in enumerate(sel.uids, 1):
        info = sel.infos.get(uid)
        if info is not None and info.modseq > modseq:
            out.append(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (
                seq, uid, fmt.flag_list(all_flags(info)), info.modseq))
    return out


def _deleted(sel: SelectedMailbox, within: set[int] | None) -> list[int]:
    return [u for u in sel.uids if (i := sel.infos.get(u)) is not None
            and "\\Deleted" in i.flags and (within is None or u in within)]


async def cmd_expunge(session, cmd: Command):
    sel = session.selected
    if sel.readonly:
        await session.no(cmd.tag, "[READ-ONLY] mailbox is read-only")
        return
    within = None
    if cmd.uid:   # UID EXPUNGE (RFC 4315 §2.1)
        within = set(sel.resolve(cmd.args[0], True))
    await asyncio.to_thread(sel.sync)
    uids = _deleted(sel, within)
    if uids:
        for uid in await asyncio.to_thread(sel.folder.expunge, uids):
            sel.forget(uid)
    await session.updates()
    await session.ok(cmd.tag, "EXPUNGE completed")


async def cmd_close(session, cmd: Command):
    sel = session.selected
    if not sel.readonly:
        # RFC 3501 §6.4.2: expunge silently, no untagged EXPUNGE
        await asyncio.to_thread(sel.sync)
        uids = _deleted(sel, None)
        if uids:
            await asyncio.to_thread(sel.folder.expunge, uids)
    await session.deselect()
    await session.ok(cmd.tag, "CLOSE completed")


async def cmd_unselect(session, cmd: Command):
    await session.deselect()
    await session.ok(cmd.tag, "UNSELECT completed")


async def cmd_check(session, cmd: Command):
    await session.updates()
    await session.ok(cmd.tag, "CHECK completed")
