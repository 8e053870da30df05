"""SEARCH / UID SEARCH (RFC 3501 §6.4.4) and ESEARCH results (RFC 4731).

The criteria tree is evaluated per message with everything loaded lazily: flag, size, date
and UID keys never open the file; header keys parse only the header; BODY and TEXT decode
the message (transfer encodings and charsets, RFC 2047 words in headers) and match
case-insensitively on the decoded text, as RFC 3501 asks ("substring ... the search is
case-insensitive"). Messages are evaluated off the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.errors
import email.header
import email.policy
import email.utils

from mailyard.imap import responses as r
from mailyard.imap.ops.selected import SelectedMailbox
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto import mime
from mailyard.imap.proto.types import SearchCommand, SearchKey


def decode_header_value(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        parts = email.header.decode_header(text)
    except (ValueError, email.errors.HeaderParseError):
        return text
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(charset or "utf-8", "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
        else:
            out.append(chunk)
    return "".join(out)


class Candidate:
    """One message under evaluation; parses only as much as the criteria need."""

    def __init__(self, sel: SelectedMailbox, uid: int, seq: int, info):
        self.sel = sel
        self.uid = uid
        self.seq = seq
        self.info = info
        self._data: bytes | None = None
        self._headers: list[tuple[bytes, bytes]] | None = None
        self._body_text: str | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.sel.folder.read(self.uid)
        return self._data

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        if self._headers is None:
            end = mime.split_header(self.data, 0, len(self.data))
            self._headers = mime.parse_headers(self.data[:end])
        return self._headers

    def header_text(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [decode_header_value(v) for k, v in self.headers if k == key]

    def body_text(self) -> str:
        if self._body_text is None:
            msg = email.message_from_bytes(self.data, policy=email.policy.default)
            chunks = []
            for part in msg.walk():
                if part.is_multipart():
                    continue
                if part.get_content_maintype() not in ("text", "message"):
                    continue
                try:
                    content = part.get_content()
                except Exception:  # noqa: BLE001 - hostile MIME: any decoder error
                    payload = part.get_payload(decode=True) or b""
                    content = payload.decode("utf-8", "replace")
                if isinstance(content, bytes):
                    content = content.decode("utf-8", "replace")
                chunks.append(str(content))
            self._body_text = "\n".join(chunks).casefold()
        return self._body_text

    def sent_date(self) -> dt.date:
        """The Date: header's date; the internal date when it is missing or unparsable
        (as RFC 5256 §2.2 does for SORT)."""
        for value in self.header_text("date"):
            try:
                return email.utils.parsedate_to_datetime(value).date()
            except (TypeError, ValueError, IndexError):
                break
        return self.internal_date()

    def internal_date(self) -> dt.date:
        when = self.info.internal_date
        if not isinstance(when, dt.datetime):
            when = dt.datetime.fromtimestamp(float(when), dt.UTC)
        return when.date()


def matches(key: SearchKey, c: Candidate, largest_seq: int, largest_uid: int) -> bool:
    kind = key.kind
    if kind == "all":
        return True
    if kind == "and":
        return all(matches(k, c, largest_seq, largest_uid) for k in key.children)
    if kind == "or":
        return any(matches(k, c, largest_seq, largest_uid) for k in key.children)
    if kind == "not":
        return not matches(key.children[0], c, largest_seq, largest_uid)
    if kind == "seqset":
        return key.value.contains(c.seq, largest_seq)
    if kind == "uid":
        return key.value.contains(c.uid, largest_uid)
    if kind == "flag":
        return key.value in c.info.flags
    if kind == "keyword":
        return key.value.lower() in (k.lower() for k in c.info.keywords)
    if kind in ("new", "recent"):
        return c.uid in c.sel.recent and (kind == "recent" or "\\Seen" not in c.info.flags)
    if kind == "old":
        return c.uid not in c.sel.recent
    if kind == "larger":
        return c.info.size > key.value
    if kind == "smaller":
        return c.info.size < key.value
    if kind in ("before", "on", "since"):
        return _compare_date(kind, c.internal_date(), key.value)
    if kind in ("sentbefore", "senton", "sentsince"):
        return _compare_date(kind[4:], c.sent_date(), key.value)
    if kind in ("younger", "older"):
        when = c.info.internal_date
        stamp = when.timestamp() if isinstance(when, dt.datetime) else float(when)
        age = dt.datetime.now(dt.UTC).timestamp() - stamp
        return age <= key.value if kind == "younger" else age >= key.value
    if kind == "header":
        name, needle = key.value
        needle = needle.casefold()
        values = c.header_text(name)
        if not needle:   # RFC 3501 §6.4.4: an empty string matches any message with the field
            return bool(values)
        return any(needle in v.casefold() for v in values)
    if kind == "body":
        return key.value.casefold() in c.body_text()
    if kind == "text":
        needle = key.value.casefold()
        header = decode_header_value(c.data[:mime.split_header(c.data, 0, len(c.data))])
        return needle in header.casefold() or needle in c.body_text()
    if kind == "modseq":
        return c.info.modseq >= key.value
    return False


def _compare_date(kind: str, value: dt.date, wanted: dt.date) -> bool:
    if kind == "before":
        return value < wanted
    if kind == "on":
        return value == wanted
    return value >= wanted


def run_search(sel: SelectedMailbox, criteria: SearchKey) -> list[int]:
    """UIDs of matching live messages, in sequence order."""
    largest_seq = len(sel.uids)
    largest_uid = sel.uids[-1] if sel.uids else 0
    out = []
    for seq, uid in enumerate(sel.uids, 1):
        info = sel.infos.get(uid)
        if info is None:
            continue   # expunged meanwhile
        try:
            if matches(criteria, Candidate(sel, uid, seq, info), largest_seq, largest_uid):
                out.append(uid)
        except LookupError:   # the file went away while we read it
            continue
    return out


def _uses_modseq(key: SearchKey) -> bool:
    return key.kind == "modseq" or any(_uses_modseq(k) for k in key.children)


async def cmd_search(session, cmd: SearchCommand):
    sel: SelectedMailbox = session.selected
    hits = await asyncio.to_thread(run_search, sel, cmd.criteria)
    numbers = hits if cmd.uid else [sel.seq_of(u) for u in hits]
    modseq = None
    if _uses_modseq(cmd.criteria) and hits:
        modseq = max(getattr(sel.infos.get(u), "modseq", 0) for u in hits)
    if cmd.returns is None:
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if modseq is not None:
            line += b" (MODSEQ %d)" % modseq
        await session.send(line + b"\r\n")
    else:
        # ESEARCH (RFC 4731 §3.1)
        parts = [b'* ESEARCH (TAG "%s")' % cmd.tag.encode()]
        if cmd.uid:
            parts.append(b"UID")
        returns = set(cmd.returns)
        if "MIN" in returns and numbers:
            parts.append(b"MIN %d" % min(numbers))
        if "MAX" in returns and numbers:
            parts.append(b"MAX %d" % max(numbers))
        if "ALL" in returns and numbers:
            parts.append(b"ALL " + fmt.seq_list(numbers))
        if "COUNT" in returns:
            parts.append(b"COUNT %d" % len(numbers))
        if modseq is not None:
            parts.append(b"MODSEQ %d" % modseq)
        await session.send(b" ".join(parts) + b"\r\n")
    await session.updates(allow_expunge=cmd.uid)
    await session.send(r.tagged(cmd.tag, r.OK, f"{'UID ' if cmd.uid else ''}SEARCH completed"))
