"""Mailbox management: LIST / LSUB (RFC 3501, LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819,
SPECIAL-USE RFC 6154, CHILDREN RFC 3348), STATUS, CREATE, DELETE, RENAME, (UN)SUBSCRIBE."""

from __future__ import annotations

import asyncio

from mailyard.imap import responses as r
from mailyard.imap.ops.selected import all_flags
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto import mailbox as mbox
from mailyard.imap.proto.types import (
    Command,
    CreateCommand,
    ListCommand,
    ParseError,
    StatusCommand,
)
from mailyard.maildir.errors import MaildirError

try:
    from mailyard.maildir.store import SPECIAL_USE as _STORE_SPECIAL
except ImportError:  # pragma: no cover
    _STORE_SPECIAL = {}
SPECIAL_USES = {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}


def _special(info) -> tuple[str, ...]:
    value = getattr(info, "special_use", None)
    if not value:
        return ()
    if isinstance(value, str):
        return (value if value.startswith("\\") else "\\" + value,)
    return tuple(v if v.startswith("\\") else "\\" + v for v in value)


def status_items(folder, items, selected=None) -> bytes:
    """The parenthesised STATUS data of a folder (RFC 3501 §6.3.10, RFC 7162 §3.1.10)."""
    infos = list(selected.infos.values()) if selected is not None else folder.messages()
    out = []
    for item in items:
        if item == "MESSAGES":
            value = len(infos)
        elif item == "RECENT":
            value = 0
        elif item == "UIDNEXT":
            value = folder.uid_next
        elif item == "UIDVALIDITY":
            value = folder.uid_validity
        elif item == "UNSEEN":
            value = sum(1 for i in infos if "\\Seen" not in i.flags)
        elif item == "HIGHESTMODSEQ":
            value = folder.highest_modseq
        elif item == "SIZE":
            value = sum(i.size for i in infos)
        else:
            continue
        out.append(f"{item} {value}")
    return ("(" + " ".join(out) + ")").encode()


def _list_sync(session, cmd: ListCommand) -> list[bytes]:
    store = session.store
    folders = {f.name: f for f in store.list_folders()}
    names = set(folders)
    lsub = cmd.name == "LSUB"
    selection = set(cmd.selection)
    returns = set(cmd.returns)
    if "RECURSIVEMATCH" in selection and "SUBSCRIBED" not in selection:
        # RFC 5258 §3: RECURSIVEMATCH alone is a syntax error
        raise ParseError("RECURSIVEMATCH needs another selection option", cmd.tag)
    out: list[bytes] = []
    # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root.
    if cmd.patterns == ("",) and not cmd.extended:
        return [b'* %s (\\Noselect) "." ""\r\n' % cmd.name.encode()]
    regexes = [mbox.pattern_regex(cmd.reference, p) for p in cmd.patterns if p != ""]
    subscribed_only = lsub or "SUBSCRIBED" in selection
    special_only = "SPECIAL-USE" in selection
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        info = folders[name]
        if not any(rx.match(name) for rx in regexes):
            continue
        subscribed = bool(getattr(info, "subscribed", False))
        lsub_parent = False
        if subscribed_only and not subscribed:
            # RFC 3501 §6.3.9: a `%` that stops above a subscribed descendant names the
            # parent as \Noselect (LSUB), or with CHILDINFO (RFC 5258 RECURSIVEMATCH).
            below = [n for n in names if n.startswith(name + mbox.DELIMITER)
                     and getattr(folders[n], "subscribed", False)]
            if not below or any(rx.match(n) for n in below for rx in regexes) or \
                    not (lsub or "RECURSIVEMATCH" in selection):
                continue
            lsub_parent = True
        uses = _special(info)
        if special_only and not uses:
            continue
        attrs = []
        has_children = getattr(info, "has_children", None)
        if has_children is None:
            has_children = any(n.startswith(name + mbox.DELIMITER) for n in names)
        if lsub_parent and lsub:
            attrs.append("\\Noselect")
        elif not getattr(info, "selectable", True):
            attrs.append("\\NonExistent" if cmd.extended else "\\Noselect")
        if not lsub:
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
            attrs.extend(uses)
            if subscribed and ("SUBSCRIBED" in returns or "SUBSCRIBED" in selection):
                attrs.append("\\Subscribed")
        line = (b"* " + cmd.name.encode() + b" (" + " ".join(attrs).encode() + b') "." '
                + fmt.mailbox_name(name))
        if lsub_parent and not lsub:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        line += b"\r\n"
        out.append(line)
        if "STATUS" in returns and cmd.status_items:
            try:
                folder = store.open(name)
                data = status_items(folder, cmd.status_items)
            except (OSError, MaildirError):
                continue   # vanished or unselectable between listing and status
            out.append(b"* STATUS " + fmt.mailbox_name(name) + b" " + data + b"\r\n")
    return out


async def cmd_list(session, cmd: ListCommand):
    lines = await asyncio.to_thread(_list_sync, session, cmd)
    if lines:
        await session.send(b"".join(lines))
    await session.ok(cmd.tag, f"{cmd.name} completed")


async def cmd_status(session, cmd: StatusCommand):
    sel = session.selected
    if sel is not None and sel.name == cmd.mailbox:
        data = status_items(sel.folder, cmd.items, sel)
    else:
        folder = await asyncio.to_thread(session.store.open, cmd.mailbox)
        data = await asyncio.to_thread(status_items, folder, cmd.items)
    await session.send(b"* STATUS " + fmt.mailbox_name(cmd.mailbox) + b" " + data + b"\r\n")
    await session.updates()
    await session.ok(cmd.tag, "STATUS completed")


async def cmd_create(session, cmd: CreateCommand):
    name = cmd.mailbox.rstrip(mbox.DELIMITER)   # RFC 3501 §6.3.3: trailing delimiter
    if name == "INBOX":
        await session.no(cmd.tag, f"{r.ALREADYEXISTS} INBOX always exists")
        return
    for use in cmd.special_use:
        # The store derives special use from the folder name (Sent, Drafts, Junk, Trash,
        # Archive); a USE that the name does not carry cannot be honoured (RFC 6154 §3).
        if use not in SPECIAL_USES or _STORE_SPECIAL.get(name) != use:
            await session.no(cmd.tag, "[USEATTR] this special-use needs its standard name")
            return
    await asyncio.to_thread(session.store.create_folder, name)
    await session.updates()
    await session.ok(cmd.tag, "CREATE completed")


async def cmd_delete(session, cmd: Command):
    name = cmd.args[0]
    if name == "INBOX":
        await session.no(cmd.tag, f"{r.CANNOT} INBOX cannot be deleted")
        return
    if session.selected is not None and session.selected.name == name:
        # RFC 3501 does not forbid it; leave the selected state cleanly first.
        await session.deselect()
    await asyncio.to_thread(session.store.delete_folder, name)
    await session.updates()
    await session.ok(cmd.tag, "DELETE completed")


async def cmd_rename(session, cmd: Command):
    old, new = cmd.args
    # RFC 3501 §6.3.5: renaming INBOX moves its messages to the new name; the store does it.
    await asyncio.to_thread(session.store.rename_folder, old, new)
    await session.updates()
    await session.ok(cmd.tag, "RENAME completed")


async def cmd_subscribe(session, cmd: Command):
    await asyncio.to_thread(session.store.subscribe, cmd.args[0])
    await session.updates()
    await session.ok(cmd.tag, "SUBSCRIBE completed")


async def cmd_unsubscribe(session, cmd: Command):
    await asyncio.to_thread(session.store.unsubscribe, cmd.args[0])
    await session.updates()
    await session.ok(cmd.tag, "UNSUBSCRIBE completed")


__all__ = [
    "all_flags",
    "cmd_create",
    "cmd_delete",
    "cmd_list",
    "cmd_rename",
    "cmd_status",
    "cmd_subscribe",
    "cmd_unsubscribe",
    "status_items",
]
