"""`Queue`: the process's queue — reception into the spool, the scheduler, delivery.

Theory of operation. Listeners call `receive(envelope)`, stream the message into the
returned `Incoming`, and `commit()` it; the commit returns once the entry is durable (see
`spool`, group commit) and the entry joins the scheduler. The scheduler keeps every entry
in memory (the spool is the truth; memory is rebuilt from it at start) and a heap of
next-attempt times. A due entry is attempted:

1. its pending recipients are routed (`routing.plan`): the filter hop for unscanned mail;
   else LMTP for local recipients (after alias expansion) and SMTP per remote domain;
2. each hop returns one `Reply` per recipient: 2xx → delivered, 5xx → failed, 4xx →
   still pending;
3. failed recipients are reported to the sender in one DSN (submitted — durably — before
   the state that says "reported" is written, so a crash can duplicate a DSN, never lose
   it); pending ones older than `max_lifetime` fail too; a delay warning goes out once
   after `delay_warning`;
4. the new state is persisted (per recipient: a delivered recipient is never retried), or
   the entry is removed when nobody is pending; otherwise it is rescheduled with
   exponential back-off.

The `mailyard queue` CLI changes the spool directly and leaves a request in control/;
the scheduler looks there every `control_poll` seconds (flush = everything due now;
changed = re-read hold markers and deletions).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import time
from collections.abc import Callable

from mailyard.envelope import Envelope
from mailyard.log import event, get_logger
from mailyard.queue import dsn
from mailyard.queue.commit import GroupCommitter
from mailyard.queue.hops import Deliverer, expand_aliases
from mailyard.queue.incoming import Incoming, Stock
from mailyard.queue.records import DELIVERED, FAILED, QueueEntry, RecipientState, Reply
from mailyard.queue.routing import FINAL, plan, retry_delay
from mailyard.queue.spool import Spool

log = get_logger("queue")

EXPIRED = "4.4.7"        # RFC 3463: delivery time expired
FRESH_LIMIT = 32 * 1024 * 1024


class Queue:
    """The durable queue of one mailyard process (`app.component("queue", Queue)`)."""

    def __init__(self, app):
        self.app = app
        self.settings = app.settings
        self.config = app.settings.queue
        self.spool = Spool(app.data_path / "queue")
        self.spool.ensure()
        self.committer = GroupCommitter(group=self.config.group_commit)
        self.stock = Stock(self.spool)
        self.entries: dict[str, QueueEntry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._inflight: set[str] = set()
        self._started: asyncio.Future | None = None
        self._wakeup: asyncio.Event | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._dsn_sent: dict[str, list[float]] = {}
        # The bytes of messages just committed, until their first attempt: that attempt
        # then reads no file (bounded by FRESH_LIMIT; the spool stays the truth).
        self._fresh: dict[str, bytes] = {}
        self._fresh_bytes = 0
        self.deliverer = Deliverer(self)
        self.owner = False              # True once this process holds the spool lock
        # Set in an accepting worker process (mta.worker): tells the scheduling process
        # about each commit at once; False when that failed (then control/new is used).
        self.announce: Callable[[QueueEntry, bytes | None], bool] | None = None
        self._removing: set[str] = set()    # delivered, queue file not yet unlinked
        self._lock_fd: int | None = None
        self.idle = asyncio.Event()     # set whenever nothing is due or in flight (tests)

    # -- configuration read at use, so a reload takes effect ---------------------------------
    @property
    def filter_address(self) -> str:
        return self.settings.filter_next_hop()

    @property
    def hostname(self) -> str:
        return self.settings.server.hostname

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the spool and start the scheduler (idempotent; first use calls it)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._recover())
        # Everyone waits for recovery: it empties tmp/, where new messages are written.
        await asyncio.shield(self._started)

    async def _recover(self) -> None:
        self._wakeup = asyncio.Event()
        self._semaphore = asyncio.Semaphore(self.config.max_concurrent)
        self.app.on_shutdown(self.stop)
        self.app.on_reload(self._reload)
        # One scheduler per spool: with `serve --only` several processes may share a data
        # dir. The one holding the lock recovers and delivers; the others only add entries
        # and ask it (control/new) to pick them up.
        self._lock_fd = await asyncio.to_thread(self.spool.try_lock)
        self.owner = self._lock_fd is not None
        if not self.owner:
            event(log, "queue scheduled by another process; adding entries only",
                  spool=str(self.spool.root))
            return
        for entry in await asyncio.to_thread(self.spool.recover):
            self._admit(entry)
        event(log, "queue started", entries=len(self.entries), spool=str(self.spool.root))
        self.app.spawn(self._scheduler(), "queue-scheduler")

    def _reload(self, settings) -> None:
        self.settings = settings
        self.config = settings.queue

    async def stop(self) -> None:
        self._stopping = True        # no new attempts; commits still work while draining
        # Let attempts in flight finish and record their results first: cancelling one
        # between the next hop's 250 and the state write delivers it again after a restart
        # (regression: test_reinject_reuses_connection_and_survives_server_restart).
        if self._tasks:
            grace = max(1.0, min(5.0, self.settings.server.shutdown_timeout - 2.0))
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        self.deliverer.close()
        await self.committer.close()
        await self.stock.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    close = stop

    # -- the API for listeners and internal senders ------------------------------------------
    async def receive(self, envelope: Envelope) -> Incoming:
        await self.start()
        # A queue file made ahead (its directory entry already durable); a burst larger
        # than the stock creates its own, off the event loop (creation can wait on the
        # file system journal).
        reserved = self.stock.take() or await asyncio.to_thread(self.spool.create_file)
        return Incoming(self, envelope, reserved)

    async def submit(self, envelope: Envelope, message: bytes) -> str:
        """Queue a message we generated (bounce, redirect, vacation reply); durable on return."""
        incoming = await self.receive(envelope)
        try:
            incoming.write(message)
            return await incoming.commit()
        except BaseException:
            incoming.abort()
            raise

    def flush(self) -> None:
        """Make every entry that is not on hold due now."""
        now = time.time()
        for entry in self.entries.values():
            if not entry.held and entry.queue_id not in self._inflight:
                entry.next_attempt = now
                self._push(entry)
        self._wake()

    # -- scheduling ----------------------------------------------------------------------------
    def _admit(self, entry: QueueEntry, message: bytes | None = None) -> None:
        if not self.owner:
            # The scheduling process loads it from the spool: told directly by an accepting
            # worker's channel, else through control/ (read every control_poll seconds).
            if self.announce is None or not self.announce(entry, message):
                self.spool.notify("new")
            return
        if message is not None and self._fresh_bytes + len(message) <= FRESH_LIMIT:
            self._fresh[entry.queue_id] = message
            self._fresh_bytes += len(message)
        self.entries[entry.queue_id] = entry
        if not entry.held:
            self._push(entry)
            self._wake()

    def admit_announced(self, queue_id: str, record: bytes | None = None,
                        message: bytes | None = None) -> None:
        """Another process of ours committed `queue_id` (see `mta.workers`): schedule it.

        `record` is the envelope record it wrote into the queue file and `message` the
        message (when small): the same bytes as on disk, so the file need not be read back
        (as for a message committed here). Without them the entry is loaded from its file.
        """
        if not self.owner:
            self.spool.notify("new")
            return
        if queue_id in self.entries or queue_id in self._removing:
            return
        if record is not None:
            entry = QueueEntry.from_json(record)
            if message is not None and len(message) != entry.size:
                message = None
        else:
            entry = self.spool.load(queue_id)
        if entry is not None:
            self._admit(entry, message)

    def adopt_orphans(self) -> int:
        """After an accepting process died: schedule the entries it committed but did not
        announce; discard the files it left unfinished (its stock, a message it was
        receiving). Files another live process still holds are left alone. Returns the
        number of entries adopted."""
        if not self.owner:
            self.spool.notify("new")
            return 0
        adopted, unused = 0, []
        for queue_id in self.spool.new_ids(set(self.entries) | self._removing):
            entry = self.spool.recover_one(queue_id, unused)
            if entry is not None:
                self._admit(entry)
                adopted += 1
        if adopted or unused:
            event(log, "took over the entries of a stopped accepting process",
                  adopted=adopted, discarded_unused=len(unused))
        return adopted

    def _push(self, entry: QueueEntry) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (entry.next_attempt, self._seq, entry.queue_id))

    def _wake(self) -> None:
        self.idle.clear()
        if self._wakeup is not None:
            self._wakeup.set()

    async def _scheduler(self) -> None:
        assert self._wakeup is not None
        # Recovered entries wait until every listener of this process is bound: their next
        # hop is often our own LMTP or filter listener (regression: a restart deferred them
        # for a full retry interval on "connection refused").
        ready = getattr(self.app, "ready", None)
        if ready is not None:
            await ready.wait()
        next_poll = 0.0
        while True:
            now = time.time()
            if now >= next_poll:
                try:
                    self._check_control()
                except OSError as exc:       # the spool must not stop the scheduler
                    event(log, "control check failed", error=repr(exc))
                self.deliverer.connections.sweep()
                next_poll = now + self.config.control_poll
            # At most max_concurrent attempts in flight; the rest stay in the heap (a
            # restart with 100k due entries must not make 100k tasks).
            while self._heap and self._heap[0][0] <= now and not self._stopping \
                    and len(self._inflight) < self.config.max_concurrent:
                due, _, queue_id = heapq.heappop(self._heap)
                entry = self.entries.get(queue_id)
                if entry is None or entry.held or queue_id in self._inflight \
                        or entry.next_attempt != due:
                    continue            # a stale heap slot
                self._inflight.add(queue_id)
                task = asyncio.ensure_future(self._attempt(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not self._inflight and not (self._heap and self._heap[0][0] <= now):
                self.idle.set()
            timeout = next_poll - now
            if self._heap and len(self._inflight) < self.config.max_concurrent:
                timeout = min(timeout, max(self._heap[0][0] - now, 0.0))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(timeout, 0.001))
            self._wakeup.clear()

    def _check_control(self) -> None:
        requests = self.spool.take_requests()
        if "changed" in requests:
            for queue_id, entry in list(self.entries.items()):
                if queue_id in self._inflight:
                    continue
                if not self.spool.exists(queue_id):
                    del self.entries[queue_id]
                    self._forget_fresh(queue_id)
                    event(log, "removed by operator", queue_id=queue_id)
                    continue
                held = self.spool.hold_path(queue_id).exists()
                if entry.held and not held:
                    entry.held = False
                    entry.next_attempt = time.time()
                    self._push(entry)
                entry.held = held
        if "new" in requests:
            for queue_id in self.spool.new_ids(set(self.entries)):
                entry = self.spool.load(queue_id)
                if entry is not None:
                    self._admit(entry)
        if "flush" in requests:
            event(log, "flush requested", entries=len(self.entries))
            self.flush()

    async def _attempt(self, entry: QueueEntry) -> None:
        assert self._semaphore is not None
        try:
            async with self._semaphore:
                await self._deliver(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:           # a bug must not lose the message: retry later
            log.exception("delivery attempt of %s failed", entry.queue_id)
            entry.last_error = f"internal error: {exc!r}"[:300]
            entry.next_attempt = time.time() + retry_delay(
                max(entry.attempts, 1), self.config.retry_initial, self.config.retry_max)
        finally:
            self._forget_fresh(entry.queue_id)
            self._inflight.discard(entry.queue_id)
            if entry.queue_id in self.entries and not entry.held:
                self._push(entry)
            self._wake()

    # -- one delivery attempt -------------------------------------------------------------------
    async def _deliver(self, entry: QueueEntry) -> None:
        queue_id = entry.queue_id
        # A message committed by this process a moment ago is neither held nor deleted
        # (the CLI's requests are read with the spool's `changed` marker): two stats saved.
        if queue_id in self._fresh:
            pass
        elif self.spool.hold_path(queue_id).exists():
            entry.held = True
            return
        elif not self.spool.exists(queue_id):
            # Deleted by an operator; a state write that raced the deletion may have left
            # an ID.st alone (start-up would discard it too).
            self.spool.state_path(queue_id).unlink(missing_ok=True)
            self.entries.pop(queue_id, None)
            return
        now = time.time()
        entry.attempts += 1
        failed: list[RecipientState] = []
        if entry.stage == FINAL:
            failed = expand_aliases(entry, self.app.accounts)
        pending = entry.pending()
        by_address = {r.address: r for r in pending}
        hops = plan(entry.stage, by_address, self._is_local_domain, self.filter_address,
                    self.config.lmtp_next_hop or self.settings.listen.lmtp)
        outcomes = await asyncio.gather(*(self.deliverer.run(hop, entry, by_address)
                                          for hop in hops))
        succeeded: list[tuple[RecipientState, str]] = []
        for hop, (replies, success_action) in zip(hops, outcomes):
            for address, reply in replies.items():
                rcpt = by_address[address]
                rcpt.attempts += 1
                rcpt.reply = reply
                if reply.success:
                    rcpt.status = DELIVERED
                    if success_action:
                        succeeded.append((rcpt, success_action))
                elif reply.permanent:
                    rcpt.status = FAILED
                    failed.append(rcpt)
                entry.last_error = "" if reply.success else reply.line()[:300]
            event(log, "delivery", queue_id=queue_id, hop=hop.kind, to=hop.destination,
                  results=",".join(f"{a}={r.code}" for a, r in replies.items()))
        still = entry.pending()
        delayed: list[RecipientState] = []
        age = now - entry.created
        if still and age >= self.config.max_lifetime:
            for rcpt in still:
                last = rcpt.reply.line() if rcpt.reply else "no delivery attempt succeeded"
                rcpt.reply = Reply(code=451, enhanced=EXPIRED,
                                   text=f"delivery time expired; last error: {last}",
                                   remote="")
                rcpt.status = FAILED
                failed.append(rcpt)
            still = []
        elif still:
            entry.next_attempt = time.time() + retry_delay(
                entry.attempts, self.config.retry_initial, self.config.retry_max)
            if self.config.delay_warning and age >= self.config.delay_warning \
                    and not entry.delay_warned:
                entry.delay_warned = True
                delayed = still
        # Reports first (durable), then the state that says they were made.
        await self._report(entry, failed, dsn.FAILED)
        await self._report(entry, delayed, dsn.DELAYED,
                           will_retry_until=entry.created + self.config.max_lifetime)
        for action in (dsn.DELIVERED, dsn.RELAYED):
            await self._report(entry, [r for r, a in succeeded if a == action], action)
        if not still:
            # Not made durable (no directory fsync, nobody waits): the removals of delivered
            # entries were half the journal traffic competing with the commits clients wait
            # for. A crash before the journal commits it delivers the entry again (the
            # at-least-once promise allows that, rarely); every earlier step is durable.
            self._removing.add(queue_id)
            self.spool.remove_soon(queue_id, self._removing.discard)
            self.entries.pop(queue_id, None)
            event(log, "done", queue_id=queue_id,
                  delivered=sum(r.status == DELIVERED for r in entry.recipients),
                  failed=sum(r.status == FAILED for r in entry.recipients))
        elif self.spool.exists(queue_id):          # not deleted by an operator meanwhile
            await self.committer.run(self.spool.state_job(entry))
            event(log, "deferred", queue_id=queue_id, pending=len(still),
                  retry_in=round(entry.next_attempt - time.time()), error=entry.last_error)
        else:
            self.entries.pop(queue_id, None)

    def _forget_fresh(self, queue_id: str) -> None:
        message = self._fresh.pop(queue_id, None)
        if message is not None:
            self._fresh_bytes -= len(message)

    async def message_bytes(self, entry: QueueEntry) -> bytes:
        """The message of `entry`: from memory while fresh, else from its queue file."""
        message = self._fresh.get(entry.queue_id)
        if message is not None:
            return message
        return await asyncio.to_thread(self.spool.read_message, entry.queue_id, entry.size)

    def _is_local_domain(self, domain: str) -> bool:
        return self.app.accounts.is_local_domain(domain)

    def _dsn_allowed(self, sender: str) -> bool:
        """At most `dsn_per_hour` DSNs to one sender per hour (backscatter and bounce
        storms stay bounded; the count lives in memory and restarts with the process)."""
        now = time.time()
        key = sender.lower()
        recent = [t for t in self._dsn_sent.get(key, ()) if now - t < 3600]
        if len(recent) >= self.config.dsn_per_hour:
            self._dsn_sent[key] = recent
            return False
        recent.append(now)
        self._dsn_sent[key] = recent
        if len(self._dsn_sent) > 10000:            # forget senders quiet for an hour
            self._dsn_sent = {k: v for k, v in self._dsn_sent.items()
                              if v and now - v[-1] < 3600}
        return True

    async def _report(self, entry: QueueEntry, recipients: list[RecipientState], action: str,
                      will_retry_until: float | None = None) -> None:
        """Send the sender one DSN about `recipients`, as far as they asked for it."""
        if not recipients:
            return
        kind = {dsn.FAILED: "FAILURE", dsn.DELAYED: "DELAY"}.get(action, "SUCCESS")
        wanted = [r for r in recipients if r.wants(kind)]
        if not wanted:
            return
        if entry.envelope.sender == "":
            # RFC 3461 §6.2 / RFC 5321 §6.1: never bounce a bounce.
            event(log, "not reporting to the null sender", queue_id=entry.queue_id,
                  action=action, recipients=len(wanted))
            return
        if not self._dsn_allowed(entry.envelope.sender):
            event(log, "dsn rate limit reached; not reporting", queue_id=entry.queue_id,
                  action=action, to=f"<{entry.envelope.sender}>")
            return
        message = await self.message_bytes(entry)
        now = time.time()
        report = dsn.build_dsn(
            entry.envelope, message,
            [dsn.ReportedRecipient(r, action, will_retry_until) for r in wanted],
            hostname=self.hostname, arrival=entry.envelope.received_at or entry.created,
            queue_id=entry.queue_id, now=now)
        dsn_id = await self.submit(dsn.dsn_envelope(entry.envelope, now), report)
        event(log, "dsn sent", queue_id=entry.queue_id, dsn_id=dsn_id, action=action,
              to=f"<{entry.envelope.sender}>", recipients=len(wanted))
