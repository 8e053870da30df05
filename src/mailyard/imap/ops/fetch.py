"""FETCH and UID FETCH (RFC 3501 §6.4.5, §7.4.2; CONDSTORE/QRESYNC RFC 7162; BINARY RFC 3516).

ENVELOPE, BODY and BODYSTRUCTURE are computed once per message from a MIME parse and kept in
the store's per-message cache (`cache_put`), so a client re-syncing a folder costs one index
lookup per message, not a parse. Messages are answered in batches built off the event loop;
each batch is sent (and drained) before the next is built, so memory stays bounded by one
batch however large the folder. Fetching a body section without .PEEK sets \\Seen first and
the response carries the new FLAGS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import quopri
import sqlite3

from mailyard.imap import responses as r
from mailyard.imap.ops.selected import SelectedMailbox, all_flags
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto import mime
from mailyard.imap.proto.envelope import envelope
from mailyard.imap.proto.types import FetchAttribute, FetchCommand, Section

BATCH_MESSAGES = 200
STREAM_MIN = 1024 * 1024      # whole messages at least this big are streamed from the file
STREAM_CHUNK = 256 * 1024
BATCH_BYTES = 4 * 1024 * 1024
_STRUCTURE_ITEMS = ("ENVELOPE", "BODYSTRUCTURE", "BODY")
CACHE_KEY = "imap.structure.v1"   # bump the version when the formatting changes


def _needs_seen(att: FetchAttribute) -> bool:
    if att.name in ("RFC822", "RFC822.TEXT"):
        return True
    return att.section is not None and not att.peek and att.name in ("BODY", "BINARY")


class MessageView:
    """Lazily loaded bytes and MIME tree of one message, plus the cached structure items."""

    def __init__(self, folder, info):
        self.folder = folder
        self.info = info
        self._data: bytes | None = None
        self._tree: mime.Entity | None = None
        self._structures: dict[str, bytes] | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.folder.read(self.info.uid)
        return self._data

    @property
    def tree(self) -> mime.Entity:
        if self._tree is None:
            self._tree = mime.parse_message(self.data)
        return self._tree

    def structure(self, item: str) -> bytes:
        """ENVELOPE, BODYSTRUCTURE or BODY: all three live in one cache entry, so a client
        fetching them together costs one index lookup per message."""
        if self._structures is None:
            self._structures = self._load_structures()
        return self._structures[item]

    def _load_structures(self) -> dict[str, bytes]:
        cached = _cache_get(self.folder, self.info.uid, CACHE_KEY)
        if cached is not None:
            decoded = _unpack(cached)
            if decoded is not None:
                return decoded
        extended, basic = mime.body_structures(self.data, self.tree)
        values = {"ENVELOPE": envelope(self.tree.headers), "BODYSTRUCTURE": extended,
                  "BODY": basic}
        _cache_put(self.folder, self.info.uid, CACHE_KEY, _pack(values))
        return values


def precompute(message: bytes) -> tuple[str, bytes]:
    """(cache key, value) of a message's ENVELOPE/BODYSTRUCTURE/BODY, for a deliverer that
    wants the first FETCH to be warm: `folder.cache_put(uid, *precompute(message_bytes))`
    (`message_bytes` with CRLF line ends, as the store keeps them)."""
    tree = mime.parse_message(message)
    extended, basic = mime.body_structures(message, tree)
    return CACHE_KEY, _pack({"ENVELOPE": envelope(tree.headers), "BODYSTRUCTURE": extended,
                             "BODY": basic})


def cache_builder(message: bytes) -> dict:
    """For `mailyard.maildir.register_cache_builder`: the structure cache entry computed at
    delivery/APPEND time, so even the first FETCH of a message is a cache hit."""
    key, value = precompute(message)
    return {key: value}


def _pack(values: dict[str, bytes]) -> bytes:
    """`len len\n` + envelope + bodystructure + body (lengths make any byte safe)."""
    env, bs, body = values["ENVELOPE"], values["BODYSTRUCTURE"], values["BODY"]
    return b"%d %d\n" % (len(env), len(bs)) + env + bs + body


def _unpack(blob: bytes) -> dict[str, bytes] | None:
    head, sep, rest = blob.partition(b"\n")
    try:
        a, b = (int(x) for x in head.split())
    except ValueError:
        return None
    if not sep or a + b > len(rest):
        return None
    return {"ENVELOPE": rest[:a], "BODYSTRUCTURE": rest[a:a + b], "BODY": rest[a + b:]}


def _cache_get(folder, uid: int, key: str) -> bytes | None:
    getter = getattr(folder, "cache_get", None)
    if getter is None:
        return None
    try:
        value = getter(uid, key)
    except (OSError, sqlite3.Error):
        return None   # the cache is an optimisation: compute instead
    if isinstance(value, str):
        value = value.encode("latin-1")
    return value


def _cache_put(folder, uid: int, key: str, value: bytes) -> None:
    putter = getattr(folder, "cache_put", None)
    if putter is None:
        return
    try:
        putter(uid, key, value)
    except (OSError, sqlite3.Error):
        return   # a read-only or busy index: the value is recomputed next time


def decode_part(data: bytes, entity: mime.Entity) -> bytes | None:
    """A part's body with its Content-Transfer-Encoding undone (None if unknown: RFC 3516
    [UNKNOWN-CTE])."""
    body = data[entity.body_start:entity.end]
    cte = (entity.header(b"content-transfer-encoding") or b"7bit").strip().lower()
    if cte == b"base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=False)
        except (binascii.Error, ValueError):
            return None
    if cte == b"quoted-printable":
        return quopri.decodestring(body)
    if cte in (b"7bit", b"8bit", b"binary"):
        return body
    return None


def _item(view: MessageView, att: FetchAttribute, seq: int,
          modseq_wanted: bool) -> bytes | list:
    """One item of a FETCH response: bytes, or [prefix, FileBody] for a streamed body."""
    info = view.info
    name = att.name
    if name == "UID":
        return b"UID %d" % info.uid
    if name == "FLAGS":
        return b"FLAGS " + fmt.flag_list(all_flags(info))
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + fmt.internal_date(info.internal_date)
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % info.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % info.modseq
    if name in _STRUCTURE_ITEMS and att.section is None:
        return name.encode() + b" " + view.structure(name)
    if name == "RFC822" or (name == "BODY" and att.section == Section()
                            and att.partial is None):
        streamed = _streamed(view)
        label = b"RFC822" if name == "RFC822" else att.response_name().encode()
        if streamed is not None:
            return [label + b" {%d}\r\n" % streamed.size, streamed]
        return label + b" " + fmt.literal(view.data)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + fmt.literal(
            mime.section_bytes(view.data, view.tree, Section((), "HEADER")))
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + fmt.literal(
            mime.section_bytes(view.data, view.tree, Section((), "TEXT")))
    if name in ("BINARY", "BINARY.SIZE"):
        return _binary(view, att)
    # BODY[section]<partial>
    if att.section == Section():
        content = view.data
    else:
        content = mime.section_bytes(view.data, view.tree, att.section)
    if att.partial is not None:
        start, length = att.partial
        content = content[start:start + length]
    return att.response_name().encode() + b" " + fmt.literal(content)


class FileBody:
    """A whole message sent straight from its file, in chunks (big messages only)."""

    __slots__ = ("path", "size")

    def __init__(self, path, size: int):
        self.path = path
        self.size = size

    def chunks(self):
        with open(self.path, "rb") as fh:
            left = self.size
            while left > 0:
                chunk = fh.read(min(STREAM_CHUNK, left))
                if not chunk:   # truncated under us: pad to keep the literal's promise
                    yield b" " * left
                    return
                left -= len(chunk)
                yield chunk


def _streamed(view: MessageView) -> FileBody | None:
    """A FileBody for a big message whose file is byte-identical to what read() returns
    (already CRLF: the file's size equals RFC822.SIZE), else None."""
    info = view.info
    if info.size < STREAM_MIN or view._data is not None:
        return None
    try:
        path = view.folder.path(info.uid)
        if os.path.getsize(path) != info.size:
            return None
    except (OSError, LookupError):
        return None
    return FileBody(path, info.size)


def _binary(view: MessageView, att: FetchAttribute) -> bytes:
    section = att.section
    if not section.part:
        content = view.data
    else:
        entity = mime.find_part(view.tree, section.part)
        content = b"" if entity is None else decode_part(view.data, entity)
        if content is None:
            from mailyard.imap.proto.types import ParseError

            raise ParseError("unknown Content-Transfer-Encoding", code="UNKNOWN-CTE")
    if att.name == "BINARY.SIZE":
        return f"BINARY.SIZE[{section}] {len(content)}".encode()
    if att.partial is not None:
        content = content[att.partial[0]:att.partial[0] + att.partial[1]]
    name = f"BINARY[{section}]" + (f"<{att.partial[0]}>" if att.partial else "")
    return name.encode() + b" ~{%d}\r\n" % len(content) + content


def build_batch(sel: SelectedMailbox, uids: list[int], atts: tuple[FetchAttribute, ...],
                modseq_wanted: bool) -> tuple[list[bytes], int]:
    """FETCH responses for a prefix of `uids`: stops after BATCH_BYTES of output, so one
    batch of big messages never holds more than a few MB; returns (lines, uids consumed)."""
    out = []
    size = 0
    consumed = 0
    for uid in uids:
        consumed += 1
        info = sel.infos.get(uid)
        seq = sel.seq_of(uid)
        if info is None or seq is None:
            continue   # expunged meanwhile (a ghost): nothing to say (RFC 2180 §4.1.2)
        view = MessageView(sel.folder, info)
        try:
            items = [_item(view, att, seq, modseq_wanted) for att in atts]
        except (LookupError, OSError):
            continue
        if modseq_wanted and not any(a.name == "MODSEQ" for a in atts):
            items.append(b"MODSEQ (%d)" % info.modseq)
        if any(isinstance(i, list) for i in items):
            parts: list = [b"* %d FETCH (" % seq]
            for n, item in enumerate(items):
                if n:
                    parts.append(b" ")
                parts.extend(item if isinstance(item, list) else [item])
            parts.append(b")\r\n")
            out.append(parts)
            size += sum(p.size if isinstance(p, FileBody) else len(p) for p in parts)
        else:
            line = b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"
            out.append(line)
            size += len(line)
        if size >= BATCH_BYTES:
            break
    return out, consumed


async def send_lines(session, lines: list) -> None:
    """Send FETCH responses; streamed bodies are read in a thread, one chunk at a time, so
    a session never holds more than STREAM_CHUNK of a big message."""
    pending: list[bytes] = []
    for line in lines:
        if isinstance(line, bytes):
            pending.append(line)
            continue
        for part in line:
            if isinstance(part, FileBody):
                if pending:
                    await session.send(pending)
                    pending = []
                chunks = part.chunks()
                while True:
                    chunk = await asyncio.to_thread(next, chunks, None)
                    if chunk is None:
                        break
                    await session.send(chunk)
            else:
                pending.append(part)
    if pending:
        await session.send(pending)


async def cmd_fetch(session, cmd: FetchCommand):
    sel: SelectedMailbox = session.selected
    try:
        uids = sel.resolve(cmd.sequence, cmd.uid)
    except IndexError:
        await session.send(r.tagged(cmd.tag, r.BAD, "invalid message number"))
        return
    atts = cmd.attributes
    modseq_wanted = cmd.changed_since is not None or any(a.name == "MODSEQ" for a in atts)
    if cmd.changed_since is not None:
        # CHANGEDSINCE (RFC 7162 §3.1.4): only messages whose modseq is higher
        uids = [u for u in uids
                if getattr(sel.infos.get(u), "modseq", 0) > cmd.changed_since]
        if cmd.vanished:
            from mailyard.imap.ops.select import missing_uids

            largest = max(sel.uid_next - 1, 1)
            gone = missing_uids(sel.uids, cmd.sequence, largest)
            if gone:
                text = ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in gone)
                await session.send(r.untagged(f"VANISHED (EARLIER) {text}"))
    if not sel.readonly and any(_needs_seen(a) for a in atts):
        unseen = [u for u in uids if (i := sel.infos.get(u)) is not None
                  and "\\Seen" not in i.flags]
        if unseen:
            done = await asyncio.to_thread(sel.folder.store_flags, unseen, ["\\Seen"], "add")
            for uid in done:
                sel.reload(uid)
            if not any(a.name == "FLAGS" for a in atts):
                atts = atts + (FetchAttribute("FLAGS"),)
    from mailyard.imap.ops import fetchfast

    plan = fetchfast.compile_plan(atts, modseq_wanted)
    step = BATCH_MESSAGES if plan is None else fetchfast.batch_size(plan)

    def build(start: int):
        batch = uids[start:start + step]
        if plan is None:
            return asyncio.to_thread(build_batch, sel, batch, atts, modseq_wanted)
        return asyncio.to_thread(fetchfast.build_fast, sel, batch, plan)

    # Pipelined: the next batch is built (in a thread) while this one is being sent, so
    # the socket does not wait for the file reads; at most two batches are held at once.
    i = 0
    pending = asyncio.ensure_future(build(0)) if uids else None
    while pending is not None:
        lines, consumed = await pending
        i += consumed
        pending = asyncio.ensure_future(build(i)) if i < len(uids) else None
        if lines:
            try:
                await send_lines(session, lines)
            except BaseException:
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
                raise
    # RFC 3501 §7.4.1: no EXPUNGE during FETCH; UID FETCH may carry them.
    await session.updates(allow_expunge=cmd.uid)
    await session.ok(cmd.tag, f"{'UID ' if cmd.uid else ''}FETCH completed")
