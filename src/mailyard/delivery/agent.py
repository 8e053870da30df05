"""The delivery agent: recipients in, one `Reply` per recipient out, mail in Maildir.

Theory of operation: the LMTP listener asks `check_recipient` at RCPT time (unknown user →
550 5.1.1, disabled → 550 5.2.1, already over quota → 552 5.2.2 or 452 4.2.2) and keeps the
resolved `Target` it returns. After DATA it calls `deliver(envelope, target, message)` once
per accepted recipient, in RCPT order. For each local user a recipient resolves to, the agent
adds the trace headers, checks the quota against the message size, runs the Sieve chain
(`sieve_glue.plan_delivery`), stores into the planned folders (creating them on demand), and
then hands redirects and vacation replies to the queue. Store work runs in a worker thread
(`asyncio.to_thread`): Maildir I/O and fsync must not stall the event loop.

Outcomes, per recipient (RFC 2033 §4.2: one reply each):
- 250 2.0.0 — stored, discarded by a script, or redirected;
- 550 5.7.1 — a script rejected it (RFC 5429 §2.1: refused in protocol, the sender's MTA
  returns it);
- 552 5.2.2 / 452 4.2.2 — over quota ([delivery] quota_tempfail picks 452);
- 451 4.3.0 — the store failed (disk full, I/O error): the sender retries.
A recipient that is an alias with several local targets gets 250 only when every target
succeeded; external alias targets are forwarded through the queue.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from mailyard.delivery import notices, sieve_glue
from mailyard.delivery.headers import add_trace
from mailyard.envelope import Envelope
from mailyard.imap.ops.fetch import cache_builder as imap_cache_builder
from mailyard.log import event, get_logger
from mailyard.maildir import FolderNameError, MailStore, register_cache_builder
from mailyard.smtp import replies
from mailyard.smtp.replies import Reply

log = get_logger("delivery")
# Every delivery precomputes IMAP's ENVELOPE/BODYSTRUCTURE in the same index transaction as
# its UID, so a client's first FETCH of new mail is a cache hit, not a MIME parse.
register_cache_builder(imap_cache_builder)

DELIVERED = Reply(250, "2.0.0", "Ok: delivered")
DISCARDED = Reply(250, "2.0.0", "Ok: discarded by a Sieve rule")
USER_UNKNOWN = replies.MAILBOX_UNKNOWN                          # 550 5.1.1
MAILBOX_DISABLED = Reply(550, "5.2.1", "Mailbox disabled")
QUOTA_FULL = Reply(552, "5.2.2", "Mailbox full: quota exceeded")
QUOTA_FULL_TEMP = Reply(452, "4.2.2", "Mailbox full: quota exceeded")
STORE_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message, try again later")
REJECTED = Reply(550, "5.7.1", "Message rejected")


@dataclass(frozen=True)
class Target:
    """An accepted recipient: the RCPT address and where it leads."""

    address: str
    users: tuple[str, ...]  # local users' canonical addresses
    external: tuple[str, ...] = ()  # alias targets elsewhere (forwarded via the queue)
    orcpt: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one recipient: the reply, and where copies went."""

    recipient: str
    reply: Reply
    stored: tuple[tuple[str, str, int], ...] = ()  # (user, folder, uid)
    forwarded: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)


class DeliveryAgent:
    """Resolves, checks quota, runs Sieve and stores; one per process
    (`app.component("delivery", DeliveryAgent)`)."""

    def __init__(self, app):
        self.app = app
        self.scripts = sieve_glue.ScriptCache()

    @property
    def settings(self):
        return self.app.settings

    def _quota_reply(self) -> Reply:
        return QUOTA_FULL_TEMP if self.settings.delivery.quota_tempfail else QUOTA_FULL

    # -- RCPT time ------------------------------------------------------------------------
    def check_recipient(self, address: str, orcpt: str | None = None) -> Target | Reply:
        """Resolve an RCPT address; a `Target` to accept, or the refusal `Reply`."""
        accounts = self.app.accounts
        resolved = accounts.resolve(address)
        if not resolved:
            return USER_UNKNOWN
        users, external = [], []
        for target in resolved:
            domain = target.rpartition("@")[2]
            if accounts.is_local_domain(domain):
                user = accounts.get_user(target)
                if user is None:
                    continue
                if not user.enabled:
                    return MAILBOX_DISABLED
                if user.quota_bytes and self._usage(user.address)[0] >= user.quota_bytes:
                    return self._quota_reply()
                users.append(user.address)
            else:
                external.append(target)
        if not users and not external:
            return USER_UNKNOWN
        return Target(address, tuple(users), tuple(external), orcpt)

    def _usage(self, user: str) -> tuple[int, int]:
        return MailStore(self.app.accounts.maildir_path(user)).usage()

    # -- after DATA ------------------------------------------------------------------------
    async def deliver(self, envelope: Envelope, target: Target, message: bytes,
                      session_id: str = "") -> DeliveryResult:
        """Deliver one recipient's copy; never raises (failures become 451)."""
        session_id = session_id or secrets.token_hex(6)
        stored: list[tuple[str, str, int]] = []
        forwarded: list[str] = []
        notes: list[str] = []
        worst: Reply | None = None
        for user in target.users:
            try:
                outcome = await self._deliver_user(envelope, target, user, message, session_id)
            except Exception as exc:
                log.exception("delivery to %s failed", user)
                outcome = _UserOutcome(STORE_FAILED, notes=(f"store failed: {exc!r}",))
            stored.extend(outcome.stored)
            forwarded.extend(outcome.forwarded)
            notes.extend(outcome.notes)
            worst = _worse(worst, outcome.reply)
        for address in target.external:
            try:
                await self._submit(notices.redirect_envelope(envelope.sender, address,
                                                             envelope.smtputf8), message)
                forwarded.append(address)
            except Exception as exc:
                log.exception("forwarding to %s failed", address)
                notes.append(f"forward failed: {exc!r}")
                worst = _worse(worst, STORE_FAILED)
        reply = worst or DELIVERED
        event(log, "delivered" if reply.code < 300 else "not delivered",
              session=session_id, recipient=target.address, sender=envelope.sender or "<>",
              status=f"{reply.code} {reply.enhanced}", size=len(message),
              stored=",".join(f"{u}/{f}/{uid}" for u, f, uid in stored) or None,
              forwarded=",".join(forwarded) or None, notes="; ".join(notes) or None)
        return DeliveryResult(target.address, reply, tuple(stored), tuple(forwarded),
                              tuple(notes))

    async def _deliver_user(self, envelope: Envelope, target: Target, user: str,
                            message: bytes, session_id: str) -> _UserOutcome:
        # The RCPT address names the mailbox when it is the user's own (maybe +detail).
        local, _, domain = target.address.rpartition("@")
        own = f"{local.split('+', 1)[0]}@{domain}".lower() == user.lower()
        delivered_to = target.address if own else user

        def trace(content: bytes) -> bytes:
            return add_trace(content, sender=envelope.sender, delivered_to=delivered_to,
                             helo=envelope.client_helo,
                             client_ip=envelope.client_ip or "127.0.0.1",
                             hostname=self.settings.server.hostname, session_id=session_id)

        plan_result = await asyncio.to_thread(self._plan_and_store, envelope, target, user,
                                              delivered_to, message, trace)
        if isinstance(plan_result, _UserOutcome):
            return plan_result
        plan, stored, to_send = plan_result
        forwarded: list[str] = []
        notes = list(plan.notes)
        for address in plan.redirects:
            try:
                await self._submit(notices.redirect_envelope(envelope.sender, address,
                                                             envelope.smtputf8), to_send)
                forwarded.append(address)
            except Exception as exc:
                # Never lose it: keep a copy when the redirect cannot be queued.
                log.exception("redirect to %s failed; keeping", address)
                notes.append(f"redirect failed: {exc!r}")
                if not stored:
                    uid = await asyncio.to_thread(self._store, user, "INBOX", (), to_send)
                    stored.append((user, "INBOX", uid))
        for vacation in plan.vacations:
            try:
                queue_id = await self._submit(notices.vacation_envelope(vacation),
                                              notices.vacation_message(
                                                  vacation, message,
                                                  self.settings.server.hostname))
                event(log, "vacation reply queued", user=user, to=vacation.to,
                      queue_id=queue_id)
            except Exception as exc:  # a lost auto-reply is not a lost message
                log.exception("vacation reply to %s failed", vacation.to)
                notes.append(f"vacation failed: {exc!r}")
        reply = DELIVERED if (stored or forwarded) else DISCARDED
        return _UserOutcome(reply, tuple(stored), tuple(forwarded), tuple(notes))

    def _plan_and_store(self, envelope: Envelope, target: Target, user: str,
                        delivered_to: str, message: bytes, trace):
        """Worker thread: quota check, Sieve on the message as received, store the (maybe
        edited) message with its trace headers on top. Returns (plan, stored, the traced
        message for redirects) or an outcome."""
        record = self.app.accounts.get_user(user)
        quota = record.quota_bytes if record is not None else 0
        store = MailStore(self.app.accounts.maildir_path(user))
        if quota and store.usage()[0] + len(message) > quota:
            return _UserOutcome(self._quota_reply(), notes=("over quota",))
        sieve_envelope = None
        context = None
        if sieve_glue.sieve_engine is not None:
            sieve_envelope = sieve_glue.sieve_engine.SieveEnvelope(
                sender=envelope.sender, recipient=delivered_to,
                orig_recipient=_orcpt_address(target.orcpt) or target.address,
                auth=envelope.auth_user or "")
            context = sieve_glue.make_context(
                self.settings, self.app.data_path, user,
                tuple(dict.fromkeys([user, delivered_to])), store.exists)
        try:
            plan = sieve_glue.plan_delivery(self.settings, self.app.data_path, user, message,
                                            sieve_envelope, context, self.scripts)
        finally:
            if context is not None:
                context.close()
        if plan.reject is not None:
            reason = " ".join(plan.reject.split())[:400] or REJECTED.message
            return _UserOutcome(REJECTED.with_text(reason), notes=("rejected by sieve",))
        # RFC 5321 §4.4: Return-Path goes on top, so it is added after the script's edits.
        body = trace(plan.message if plan.message is not None else message)
        stored: list[tuple[str, str, int]] = []
        for action in plan.stores:
            folder = action.folder
            try:
                uid = self._store_into(store, folder, action.flags, body)
            except FolderNameError as exc:
                event(log, "sieve named a bad folder; using INBOX", user=user, folder=folder,
                      error=str(exc), level=30)
                folder = "INBOX"
                uid = self._store_into(store, folder, action.flags, body)
            stored.append((user, folder, uid))
        return plan, stored, body

    @staticmethod
    def _store_into(store: MailStore, folder: str, flags, body: bytes) -> int:
        try:
            return store.deliver(body, folder=folder, flags=flags)
        except ValueError as exc:
            if isinstance(exc, FolderNameError):
                raise
            # A flag the store refuses (a bad keyword from a script): store without flags.
            event(log, "sieve flags refused; storing without them", folder=folder,
                  error=str(exc), level=30)
            return store.deliver(body, folder=folder)

    def _store(self, user: str, folder: str, flags, body: bytes) -> int:
        return MailStore(self.app.accounts.maildir_path(user)).deliver(body, folder=folder,
                                                                        flags=flags)

    async def _submit(self, envelope: Envelope, message: bytes) -> str:
        from mailyard.queue import Queue

        queue = self.app.component("queue", lambda app: Queue(app))
        return await queue.submit(envelope, message)


@dataclass(frozen=True)
class _UserOutcome:
    reply: Reply
    stored: tuple[tuple[str, str, int], ...] = ()
    forwarded: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _worse(current: Reply | None, new: Reply) -> Reply:
    """Combine the outcomes of several targets: temporary failure beats permanent beats ok
    (a 4xx makes the sender retry, which is the only safe answer if some copy failed)."""
    if current is None:
        return new
    rank = {4: 2, 5: 1, 2: 0}
    return new if rank.get(new.code // 100, 0) > rank.get(current.code // 100, 0) else current


def _orcpt_address(orcpt: str | None) -> str:
    if not orcpt:
        return ""
    kind, _, value = orcpt.partition(";")
    return value if kind.lower() == "rfc822" else ""


__all__ = [
    "DELIVERED",
    "QUOTA_FULL",
    "QUOTA_FULL_TEMP",
    "REJECTED",
    "STORE_FAILED",
    "USER_UNKNOWN",
    "DeliveryAgent",
    "DeliveryResult",
    "Target",
]
