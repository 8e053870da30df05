"""Errors raised by the Maildir store. All derive from `MaildirError`."""

from __future__ import annotations


class MaildirError(Exception):
    """Base class of every error the store raises on purpose."""


class FolderNameError(MaildirError, ValueError):
    """A folder name that is malformed or hostile (`..`, `/`, NUL, over-long, ...)."""


class FolderNotFound(MaildirError, LookupError):
    """The named folder does not exist (IMAP answers NO [TRYCREATE] / [NONEXISTENT])."""


class FolderExists(MaildirError):
    """CREATE or RENAME onto a folder that already exists (IMAP [ALREADYEXISTS])."""


class FolderOperationError(MaildirError):
    """An operation the folder model forbids (deleting INBOX, renaming onto a child, ...)."""


class MessageGone(MaildirError, LookupError):
    """The message with that UID has been expunged (or never existed)."""
