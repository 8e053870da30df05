"""SORT and THREAD (RFC 5256): base subjects, sort keys, ORDEREDSUBJECT and REFERENCES."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import re

from mailyard.imap import responses as r
from mailyard.imap.ops.search import Candidate, decode_header_value, run_search
from mailyard.imap.ops.selected import SelectedMailbox
from mailyard.imap.proto.types import SortCommand, ThreadCommand

SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO"}
_BLOB = r"\[[^\[\]]*\]"
_LEADER = re.compile(rf"^(?:{_BLOB}\s*)*(?:re|fwd?)\s*(?:{_BLOB}\s*)*:\s*", re.IGNORECASE)
_LEADING_BLOB = re.compile(rf"^{_BLOB}\s*")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.IGNORECASE)
_MSGID = re.compile(r"<[^<>\s]+>")


def base_subject(raw: str) -> tuple[str, bool]:
    """RFC 5256 §2.1 base subject, and whether it looked like a reply/forward."""
    text = re.sub(r"\s+", " ", raw).strip()
    reply = False
    while True:
        before = text
        text = _TRAILER.sub("", text)
        while True:
            m = _LEADER.match(text)
            if m:
                text = text[m.end():]
                reply = True
                continue
            m = _LEADING_BLOB.match(text)
            if m and text[m.end():]:
                text = text[m.end():]
                continue
            break
        if text.lower().startswith("[fwd:") and text.endswith("]"):
            text = text[5:-1].strip()
            reply = True
        if text == before:
            break
    return text.casefold(), reply


class SortInfo:
    def __init__(self, c: Candidate):
        self.c = c
        self.uid = c.uid
        self.seq = c.seq

    def header(self, name: str) -> str:
        values = self.c.header_text(name)
        return values[0] if values else ""

    def date(self) -> float:
        value = self.header("date")
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            return when.timestamp()
        except (TypeError, ValueError, IndexError):
            return self.arrival()

    def arrival(self) -> float:
        when = self.c.info.internal_date
        return when.timestamp() if isinstance(when, dt.datetime) else float(when)

    def mailbox(self, name: str, display: bool = False) -> str:
        pairs = email.utils.getaddresses([self.header(name)])
        if not pairs:
            return ""
        display_name, addr = pairs[0]
        if display and display_name:
            return display_name.casefold()
        return addr.split("@")[0].casefold()

    def key(self, name: str):
        if name == "ARRIVAL":
            return self.arrival()
        if name == "DATE":
            return self.date()
        if name == "SIZE":
            return self.c.info.size
        if name == "SUBJECT":
            return base_subject(self.header("subject"))[0]
        if name in ("FROM", "TO", "CC"):
            return self.mailbox(name.lower())
        if name in ("DISPLAYFROM", "DISPLAYTO"):
            return self.mailbox(name[7:].lower(), display=True)
        return 0


def _infos(sel: SelectedMailbox, criteria) -> list[SortInfo]:
    uids = set(run_search(sel, criteria))
    return [SortInfo(Candidate(sel, u, seq, info)) for seq, u in enumerate(sel.uids, 1)
            if u in uids and (info := sel.infos.get(u)) is not None]


def run_sort(sel: SelectedMailbox, keys: tuple[str, ...], criteria) -> list[SortInfo]:
    items = _infos(sel, criteria)
    # Stable sorts from the last key to the first; ties keep sequence order (RFC 5256 §3).
    specs = []
    reverse = False
    for k in keys:
        if k == "REVERSE":
            reverse = True
            continue
        specs.append((k, reverse))
        reverse = False
    for k, rev in reversed(specs):
        items.sort(key=lambda i: i.key(k), reverse=rev)
    return items


async def cmd_sort(session, cmd: SortCommand):
    for k in cmd.criteria:
        if k != "REVERSE" and k not in SORT_KEYS:
            await session.send(r.tagged(cmd.tag, r.BAD, f"unknown sort key {k}"))
            return
    if cmd.charset not in ("UTF-8", "US-ASCII"):
        await session.no(cmd.tag, "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
        return
    items = await asyncio.to_thread(run_sort, session.selected, cmd.criteria, cmd.search)
    numbers = [i.uid if cmd.uid else i.seq for i in items]
    await session.send(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
    await session.updates(allow_expunge=cmd.uid)
    await session.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}SORT completed")


# -- THREAD ----------------------------------------------------------------------------------

class Node:
    __slots__ = ("children", "msg", "msgid", "parent")

    def __init__(self, msgid: str):
        self.msgid = msgid
        self.msg: SortInfo | None = None
        self.parent: Node | None = None
        self.children: list[Node] = []

    def first_date(self) -> float:
        if self.msg is not None:
            return self.msg.date()
        return min((c.first_date() for c in self.children), default=0.0)


def _ancestor(a: Node, b: Node) -> bool:
    while b is not None:
        if b is a:
            return True
        b = b.parent
    return False


def thread_references(items: list[SortInfo]) -> list[Node]:
    """RFC 5256 §3 REFERENCES (the JWZ algorithm, steps 1–5)."""
    table: dict[str, Node] = {}
    for n, item in enumerate(items):
        ids = _MSGID.findall(item.header("message-id"))
        msgid = ids[0] if ids and ids[0] not in table or ids and table[ids[0]].msg is None \
            else f"<dup-{n}@mailyard>"
        node = table.setdefault(msgid, Node(msgid))
        node.msg = item
        refs = _MSGID.findall(item.header("references")) or \
            _MSGID.findall(item.header("in-reply-to"))[:1]
        prev = None
        for ref in refs:
            ref_node = table.setdefault(ref, Node(ref))
            if prev is not None and ref_node.parent is None and not _ancestor(ref_node, prev):
                ref_node.parent = prev
                prev.children.append(ref_node)
            prev = ref_node
        if prev is not None and not _ancestor(node, prev):
            if node.parent is not None:
                node.parent.children.remove(node)
            node.parent = prev
            prev.children.append(node)
    roots = [n for n in table.values() if n.parent is None]
    roots = _prune(roots)
    # Step 5: gather roots by base subject
    by_subject: dict[str, Node] = {}
    out: list[Node] = []
    for root in roots:
        msg = root.msg or (root.children[0].msg if root.children else None)
        subject, reply = base_subject(msg.header("subject")) if msg else ("", False)
        if not subject:
            out.append(root)
            continue
        other = by_subject.get(subject)
        if other is None:
            by_subject[subject] = root
            out.append(root)
        elif other.msg is None or reply:
            other.children.append(root)
            root.parent = other
        else:
            dummy = Node("")
            idx = out.index(other)
            for n in (other, root):
                n.parent = dummy
                dummy.children.append(n)
            out[idx] = dummy
            by_subject[subject] = dummy
    return out


def _prune(nodes: list[Node]) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children)
        if node.msg is None:
            if not node.children:
                continue
            if node.parent is not None or len(node.children) == 1:
                for c in node.children:
                    c.parent = node.parent
                out.extend(node.children)
                continue
        out.append(node)
    return out


def _format(nodes: list[Node], uid: bool) -> str:
    def one(node: Node) -> str:
        parts = []
        cur = node
        while True:
            if cur.msg is not None:
                parts.append(str(cur.msg.uid if uid else cur.msg.seq))
            kids = sorted(cur.children, key=lambda c: c.first_date())
            if len(kids) == 1:
                cur = kids[0]
                continue
            if kids:
                parts.append("".join(one(k) for k in kids))
            break
        return "(" + " ".join(parts) + ")"

    ordered = sorted(nodes, key=lambda n: n.first_date())
    return "".join(one(n) for n in ordered)


def run_thread(sel: SelectedMailbox, algorithm: str, criteria, uid: bool) -> str:
    items = _infos(sel, criteria)
    if algorithm == "ORDEREDSUBJECT":
        groups: dict[str, list[SortInfo]] = {}
        for item in sorted(items, key=lambda i: (base_subject(i.header("subject"))[0],
                                                 i.date(), i.seq)):
            groups.setdefault(base_subject(item.header("subject"))[0], []).append(item)
        roots = []
        for members in groups.values():
            root = Node("")
            root.msg = members[0]
            for m in members[1:]:
                child = Node("")
                child.msg = m
                child.parent = root
                root.children.append(child)
            roots.append(root)
        return _format(roots, uid)
    return _format(thread_references(items), uid)


async def cmd_thread(session, cmd: ThreadCommand):
    if cmd.algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
        await session.send(r.tagged(cmd.tag, r.BAD, "unknown thread algorithm"))
        return
    if cmd.charset not in ("UTF-8", "US-ASCII"):
        await session.no(cmd.tag, "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
        return
    text = await asyncio.to_thread(run_thread, session.selected, cmd.algorithm, cmd.search,
                                   cmd.uid)
    await session.send(f"* THREAD {text}\r\n".encode())
    await session.updates(allow_expunge=cmd.uid)
    await session.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}THREAD completed")


__all__ = ["base_subject", "cmd_sort", "cmd_thread", "decode_header_value"]
