"""Command name → operation coroutine (one module per big command, Stalwart-style)."""

from __future__ import annotations

import functools

from mailyard.imap.ops import append, copy, fetch, mailboxes, search, select, sort, store

_OPS = {
    "SELECT": select.cmd_select, "EXAMINE": select.cmd_select, "CLOSE": select.cmd_close,
    "UNSELECT": select.cmd_unselect, "EXPUNGE": select.cmd_expunge,
    "CHECK": select.cmd_check, "FETCH": fetch.cmd_fetch, "SEARCH": search.cmd_search,
    "STORE": store.cmd_store, "COPY": copy.cmd_copy, "MOVE": copy.cmd_copy,
    "APPEND": append.cmd_append, "LIST": mailboxes.cmd_list, "LSUB": mailboxes.cmd_list,
    "STATUS": mailboxes.cmd_status, "CREATE": mailboxes.cmd_create,
    "DELETE": mailboxes.cmd_delete, "RENAME": mailboxes.cmd_rename,
    "SUBSCRIBE": mailboxes.cmd_subscribe, "UNSUBSCRIBE": mailboxes.cmd_unsubscribe,
    "SORT": sort.cmd_sort, "THREAD": sort.cmd_thread,
}


def handler(session, name: str):
    return functools.partial(_OPS[name], session)
