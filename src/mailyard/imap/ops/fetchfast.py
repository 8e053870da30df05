"""The FETCH fast path: the items clients sync with, answered in bulk.

Theory of operation: almost every FETCH a syncing client sends asks only for items the index
and the structure cache answer (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ, ENVELOPE,
BODYSTRUCTURE, BODY) and/or whole messages (BODY[], BODY.PEEK[], RFC822). For those,
`compile_plan` turns the attribute list into a tuple of (code, label) pairs once per
command; `build_fast` then reads the cached structures of a whole batch in one index query,
reads each whole message with one open/read/close (the file is already CRLF: no conversion,
no stat), and appends the responses of the batch to one list of byte strings the sender
writes as one vectored write (no join) — a message costs a few dictionary lookups and its file read, not a parse, a
query or a system call per item. Structures missing from the cache (a mailbox copied in from
elsewhere) are computed here and cached for the whole batch in one transaction. Any other
item (sections, partials, BINARY, RFC822.HEADER/TEXT) leaves the command to the general path
in fetch.py.
"""

from __future__ import annotations

import os
import sqlite3
from bisect import bisect_left

from mailyard.imap.ops.fetch import (
    BATCH_BYTES,
    CACHE_KEY,
    STREAM_MIN,
    FileBody,
    _unpack,
    precompute,
)
from mailyard.imap.ops.selected import SelectedMailbox, all_flags
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto.types import FetchAttribute, Section

WHOLE = "WHOLE"
_SIMPLE = frozenset(("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"))
_STRUCT = frozenset(("ENVELOPE", "BODYSTRUCTURE", "BODY"))
BATCH_META = 1000     # messages per batch when no whole message is fetched
BATCH_BODIES = 200

Plan = tuple[tuple[str, bytes], ...]


def compile_plan(atts: tuple[FetchAttribute, ...], modseq_wanted: bool) -> Plan | None:
    """The fast-path plan of a FETCH attribute list, or None if it needs the general path."""
    plan: list[tuple[str, bytes]] = []
    for att in atts:
        name = att.name
        if att.partial is not None:
            return None
        if name == "RFC822" or (name == "BODY" and att.section == Section()):
            label = b"RFC822" if name == "RFC822" else att.response_name().encode()
            plan.append((WHOLE, label))
        elif att.section is not None:
            return None
        elif name in _SIMPLE or name in _STRUCT:
            plan.append((name, name.encode()))
        else:
            return None
    if modseq_wanted and not any(code == "MODSEQ" for code, _ in plan):
        plan.append(("MODSEQ", b"MODSEQ"))
    return tuple(plan)


def batch_size(plan: Plan) -> int:
    return BATCH_BODIES if any(code == WHOLE for code, _ in plan) else BATCH_META


def build_fast(sel: SelectedMailbox, uids: list[int], plan: Plan) -> tuple[list, int]:
    """FETCH responses for a prefix of `uids` (ascending) as one line list for
    `fetch.send_lines`; stops after BATCH_BYTES of output. Returns (lines, uids consumed)."""
    folder = sel.hub.folder
    lookup = folder.lookup
    numbering = sel.uids
    count = len(numbering)
    codes = [code for code, _ in plan]
    structs: dict = {}
    computed: dict = {}
    if _STRUCT.intersection(codes):
        try:
            structs = folder.cache_get_many(uids, CACHE_KEY)
        except (OSError, sqlite3.Error):
            structs = {}
    flag_text: dict = {}
    out: list = []
    append = out.append
    size = 0
    consumed = 0
    for uid in uids:
        consumed += 1
        info = lookup(uid)
        i = bisect_left(numbering, uid)
        if info is None or i >= count or numbering[i] != uid:
            continue   # expunged meanwhile (a ghost): nothing to say (RFC 2180 §4.1.2)
        head = b"* %d FETCH (" % (i + 1)
        sep = b""
        unpacked = None
        try:
            for code, label in plan:
                if code == WHOLE:
                    body = _whole(folder, info)
                    if isinstance(body, FileBody):
                        append(head + sep + label + b" {%d}\r\n" % body.size)
                    else:
                        append(head + sep + label + b" {%d}\r\n" % len(body))
                    append(body)
                    size += info.size
                    head = b""
                elif code == "FLAGS":
                    key = (info.flags, info.keywords)
                    text = flag_text.get(key)
                    if text is None:
                        text = flag_text[key] = b"FLAGS " + fmt.flag_list(all_flags(info))
                    head += sep + text
                elif code == "UID":
                    head += sep + b"UID %d" % uid
                elif code == "RFC822.SIZE":
                    head += sep + b"RFC822.SIZE %d" % info.size
                elif code == "MODSEQ":
                    head += sep + b"MODSEQ (%d)" % info.modseq
                elif code == "INTERNALDATE":
                    head += sep + b"INTERNALDATE " + fmt.internal_date(info.internal_date)
                else:   # ENVELOPE, BODYSTRUCTURE, BODY
                    if unpacked is None:
                        unpacked = _structures(folder, info, structs, computed)
                    head += sep + label + b" " + unpacked[code]
                sep = b" "
        except (LookupError, OSError):
            continue   # gone under us: answered by nothing, like a ghost
        head += b")\r\n"
        append(head)
        size += len(head)
        if size >= BATCH_BYTES:
            break
    if computed:
        try:
            folder.cache_put_uids(CACHE_KEY, computed)
        except (OSError, sqlite3.Error):
            pass   # a read-only or busy index: recomputed next time
    return ([out] if out else []), consumed


def _whole(folder, info):
    """The message bytes, or a FileBody for a big message whose file is already CRLF."""
    if info.size >= STREAM_MIN:
        try:
            path = folder.path(info.uid)
            if os.path.getsize(path) == info.size:
                return FileBody(path, info.size)
        except OSError:
            pass
    return folder.read(info.uid)


def _structures(folder, info, structs: dict, computed: dict) -> dict[str, bytes]:
    blob = structs.get(info.uid)
    if blob is not None:
        if isinstance(blob, str):
            blob = blob.encode("latin-1")
        decoded = _unpack(blob)
        if decoded is not None:
            return decoded
    _key, packed = precompute(folder.read(info.uid))
    computed[info.uid] = packed
    return _unpack(packed)
