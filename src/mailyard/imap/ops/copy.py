"""COPY / MOVE and their UID forms (RFC 3501 §6.4.7, UIDPLUS RFC 4315, MOVE RFC 6851),
and the spam-training jobs that moving mail into and out of Junk produces.

Spam-learn job files (the contract with the spam engine's background learner)
-----------------------------------------------------------------------------
Copying or moving a message into the Junk folder (special-use \\Junk, or named Junk/Spam)
teaches "spam"; out of Junk into any folder except Trash (\\Trash, or named Trash) teaches
"ham". For each message the IMAP server writes, without making the client wait, into
`DATA_DIR/spam-learn/`:

    JOBID.eml   the message bytes, exactly as stored (written first)
    JOBID.json  {"version": 1, "user": "alice@example.test", "verdict": "spam" | "ham",
                 "folder": "Junk" (destination), "source": "INBOX", "uid": 17 (UID in the
                 destination, or null), "uid_validity": 1732541234 (of the destination),
                 "message_file": "JOBID.eml", "created": 1732541234.5}

Both are written to a temporary name and renamed into place, the .json last, so a learner that
only looks at `*.json` never sees half a job. JOBID is a hash of (user, message bytes,
verdict): teaching the same message the same way twice gives the same JOBID, so the job is
idempotent. The learner deletes both files once done (or on any error it cannot retry).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

from mailyard.imap import responses as r
from mailyard.imap.ops.selected import SelectedMailbox
from mailyard.imap.proto import format as fmt
from mailyard.imap.proto.types import CopyCommand
from mailyard.log import get_logger
from mailyard.maildir.errors import MaildirError

log = get_logger("imap")


def folder_role(store, name: str) -> str | None:
    """"junk", "trash" or None for a folder, by special-use first, then by common names."""
    try:
        for info in store.list_folders():
            if info.name == name:
                use = getattr(info, "special_use", None) or ""
                uses = [use] if isinstance(use, str) else list(use)
                if any(u.lstrip("\\").lower() == "junk" for u in uses):
                    return "junk"
                if any(u.lstrip("\\").lower() == "trash" for u in uses):
                    return "trash"
    except (OSError, MaildirError):
        pass   # no listing: fall back to the folder's name alone
    low = name.lower()
    if low in ("junk", "spam", "junk e-mail", "junk email") or low.endswith(".junk"):
        return "junk"
    if low in ("trash", "deleted items", "deleted messages") or low.endswith(".trash"):
        return "trash"
    return None


def learn_verdict(source_role: str | None, dest_role: str | None) -> str | None:
    if dest_role == "junk" and source_role != "junk":
        return "spam"
    if source_role == "junk" and dest_role not in ("junk", "trash"):
        return "ham"
    return None


def write_learn_job(directory: Path, user: str, verdict: str, source: str, dest: str,
                    uid: int | None, uid_validity: int | None, message: bytes) -> Path:
    """Write one job (see module docstring); returns the .json path."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(user.encode() + b"\0" + verdict.encode() + b"\0" + message)
    job_id = digest.hexdigest()[:32]
    eml = directory / f"{job_id}.eml"
    meta = directory / f"{job_id}.json"
    tmp = directory / f".{job_id}.{os.getpid()}.tmp"
    tmp.write_bytes(message)
    os.replace(tmp, eml)
    record = {"version": 1, "user": user, "verdict": verdict, "folder": dest,
              "source": source, "uid": uid, "uid_validity": uid_validity,
              "message_file": eml.name, "created": time.time()}
    tmp.write_text(json.dumps(record))
    os.replace(tmp, meta)
    return meta


def _learn(session, sel: SelectedMailbox, uid_map: dict[int, int], dest: str,
           dest_validity: int, verdict: str, messages: dict[int, bytes]) -> None:
    for src_uid, data in messages.items():
        try:
            write_learn_job(Path(session.ctx.spam_learn_dir), session.user, verdict, sel.name,
                            dest, uid_map.get(src_uid), dest_validity, data)
        except OSError as exc:
            log.warning("spam-learn job not written: %s", exc)


def _do_copy(session, sel: SelectedMailbox, uids: list[int], dest: str, move: bool):
    store = session.store
    dest_folder = store.open(dest)   # raises FolderNotFound → TRYCREATE below
    verdict = None
    if session.ctx.spam_learn_dir is not None:
        verdict = learn_verdict(folder_role(store, sel.name), folder_role(store, dest))
    messages = {}
    if verdict is not None:
        for uid in uids:
            try:
                messages[uid] = sel.folder.read(uid)
            except (OSError, MaildirError):
                continue   # gone meanwhile: nothing to teach
    if move:
        uid_map = sel.folder.move(uids, dest)
        for uid in uid_map:
            sel.forget(uid)
    else:
        uid_map = sel.folder.copy(uids, dest)
    return dict(uid_map or {}), dest_folder.uid_validity, verdict, messages


async def cmd_copy(session, cmd: CopyCommand):
    from mailyard.maildir.errors import FolderNotFound

    sel: SelectedMailbox = session.selected
    move = cmd.name == "MOVE"
    if move and sel.readonly:
        await session.no(cmd.tag, "[READ-ONLY] mailbox is read-only")
        return
    try:
        uids = sel.live(sel.resolve(cmd.sequence, cmd.uid))
    except IndexError:
        await session.send(r.tagged(cmd.tag, r.BAD, "invalid message number"))
        return
    prefix = "UID " if cmd.uid else ""
    if not uids:
        await session.updates(allow_expunge=move)
        await session.ok(cmd.tag, f"{prefix}{cmd.name} completed (nothing to do)")
        return
    try:
        uid_map, validity, verdict, messages = await asyncio.to_thread(
            _do_copy, session, sel, uids, cmd.mailbox, move)
    except FolderNotFound:
        # RFC 3501 §6.4.7: TRYCREATE when the destination does not exist
        await session.no(cmd.tag, f"{r.TRYCREATE} no such mailbox")
        return
    if verdict is not None and messages:
        # The learner's job never delays the client: written in a worker thread.
        asyncio.get_running_loop().run_in_executor(
            None, _learn, session, sel, uid_map, cmd.mailbox, validity, verdict, messages)
    code = ""
    if uid_map:
        src = sorted(uid_map)
        code = (f"[COPYUID {validity} {fmt.seq_list(src).decode()} "
                f"{','.join(str(uid_map[u]) for u in src)}] ")
    if move:
        if code:
            await session.send(r.untagged(f"OK {code}moved"))
        await session.updates(allow_expunge=True)
        await session.ok(cmd.tag, f"{prefix}MOVE completed")
        return
    await session.updates(allow_expunge=cmd.uid)
    await session.ok(cmd.tag, f"{code}{prefix}COPY completed")
