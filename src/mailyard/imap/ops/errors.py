"""Store errors → tagged NO responses with RFC 5530 response codes."""

from __future__ import annotations

from mailyard.imap import responses as r


def store_error_response(exc: Exception) -> tuple[str, str] | None:
    """(status, text) for an error the store raises on purpose; None for a bug."""
    try:
        from mailyard.maildir import errors as e
    except ImportError:  # pragma: no cover - the store always ships with imap
        return None
    if isinstance(exc, e.FolderNameError):
        return r.NO, f"{r.CANNOT} {exc}"
    if isinstance(exc, e.FolderNotFound):
        return r.NO, f"{r.NONEXISTENT} {exc}"
    if isinstance(exc, e.FolderExists):
        return r.NO, f"{r.ALREADYEXISTS} {exc}"
    if isinstance(exc, e.FolderOperationError):
        return r.NO, f"{r.CANNOT} {exc}"
    if isinstance(exc, e.MessageGone):
        return r.NO, f"{r.EXPUNGEISSUED} {exc}"
    quota = getattr(e, "QuotaExceeded", None)
    if quota is not None and isinstance(exc, quota):
        return r.NO, f"[OVERQUOTA] {exc}"
    if isinstance(exc, e.MaildirError):
        return r.NO, f"{exc}"
    if isinstance(exc, OSError):
        return r.NO, f"{r.UNAVAILABLE} storage error"
    return None
