"""mailyard.maildir — the one owner of mail on disk (Maildir++, Dovecot-compatible).

Public API (everything blocks on file I/O; from async code use `asyncio.to_thread`):

    from mailyard.maildir import MailStore
    store = MailStore(app.accounts.maildir_path(user))   # data_dir/mail/DOMAIN/LOCAL/Maildir

    uid = store.deliver(message_bytes, folder="INBOX", flags=("\\\\Seen",),
                        keywords=("$Junk",), internal_date=None, create=True)
    store.list_folders() -> [FolderInfo(name, special_use, subscribed, has_children,
                                        selectable)]
    store.create_folder(name) / delete_folder(name) / rename_folder(old, new)
    store.subscribe(name) / unsubscribe(name) / subscriptions()
    store.exists(name); store.usage() -> (bytes, messages); store.recount_usage()
    store.status(name) -> FolderStatus(messages, unseen, deleted, size, uid_next,
                                       uid_validity, highest_modseq)   # IMAP STATUS

    folder = store.open("Work.Projects")      # FolderNotFound if missing
    folder.uid_validity, folder.uid_next, folder.highest_modseq
    folder.refresh() -> Changes(new, expunged, flags_changed, uid_validity_changed)
    folder.messages() -> [MessageInfo(uid, size, internal_date, flags, keywords, modseq,
                                      filename)]          # snapshot; seq number = index + 1
    folder.uids(); folder.get(uid); folder.lookup(uid) -> MessageInfo | None
    folder.read(uid) -> bytes (CRLF); folder.path(uid)
    folder.store_flags(uids, ["\\\\Seen", "$Label1"], mode="add"|"remove"|"replace",
                       unchanged_since=None) -> {uid: frozenset(all flags)}
    folder.expunge(uids=None) -> [uids]   # None: every \\Deleted message
    folder.copy(uids, "Trash") -> {src_uid: dest_uid}; folder.move(...); folder.append(...)
    folder.cache_get(uid, key) / folder.cache_put(uid, key, value) / cache_put_many(uid, {})
    folder.cache_get_many(uids, key) -> {uid: value}; folder.cache_put_uids(key, {uid: value})
    register_cache_builder(fn)   # fn(message) -> {key: value}, run at every delivery/APPEND
                                 # so IMAP's ENVELOPE/BODYSTRUCTURE are computed once, there
    folder.cache_get_many(uids, CACHE_DOT_LINES)  # where lines starting with "." begin
                                 # ("" for none; files.dot_lines), recorded at delivery
    folder.keywords() -> set; folder.watch() -> FolderWatch (see mailyard.maildir.watch)

Folder names are Unicode with "." as the hierarchy delimiter (IMAP LIST shows "." as the
delimiter; the IMAP layer converts to/from modified UTF-7 with `encode_mutf7`/`decode_mutf7`).
"INBOX" is case-insensitive. Hostile names raise `FolderNameError` (a ValueError).

Flags use IMAP spelling. The Maildir info letters map D=\\Draft F=\\Flagged R=\\Answered
S=\\Seen T=\\Deleted P=$Forwarded; keywords get letters a..z via the folder's
`dovecot-keywords` (keywords beyond 26 are kept in the index only). \\Recent is not stored.

Concurrency: each folder's index is a SQLite database whose write transaction (fcntl locks)
is the folder lock across processes; deliveries and sessions in any number of processes may
work on the same folder. A Maildir written by Dovecot (dovecot-uidlist, dovecot-keywords,
`:2,` flags, `,S=`/`,W=` sizes) is read as it is, keeping its UIDVALIDITY and UIDs.

Change notification for IMAP IDLE: `mailyard.maildir.watch` (in-process, plus polling).
"""

from mailyard.maildir.errors import (
                                     FolderExists,
                                     FolderNameError,
                                     FolderNotFound,
                                     FolderOperationError,
                                     MaildirError,
                                     MessageGone,
)
from mailyard.maildir.files import CACHE_DOT_LINES, dot_lines
from mailyard.maildir.folder import Changes, Folder, MessageInfo, split_flags
from mailyard.maildir.names import DELIMITER, INBOX, decode_mutf7, encode_mutf7
from mailyard.maildir.store import (
    SPECIAL_USE,
    FolderInfo,
    FolderStatus,
    MailStore,
    register_cache_builder,
)
from mailyard.maildir.watch import FolderWatch

__all__ = [
    "CACHE_DOT_LINES",
    "DELIMITER",
    "INBOX",
    "SPECIAL_USE",
    "Changes",
    "Folder",
    "FolderExists",
    "FolderInfo",
    "FolderNameError",
    "FolderNotFound",
    "FolderOperationError",
    "FolderStatus",
    "FolderWatch",
    "MailStore",
    "MaildirError",
    "MessageGone",
    "MessageInfo",
    "decode_mutf7",
    "dot_lines",
    "encode_mutf7",
    "register_cache_builder",
    "split_flags",
]
