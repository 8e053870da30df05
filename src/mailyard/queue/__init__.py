"""The durable queue: spool, scheduler, routing, delivery clients and bounces.

    queue = app.component("queue", Queue)
    incoming = await queue.receive(envelope)
    incoming.write(chunk)            # many times
    queue_id = await incoming.commit()   # durable (fsynced, group commit) on return

Modules: `service` (the Queue and its scheduler: theory of operation), `incoming`
(reception, queue files made ahead), `spool` (layout, recovery, migration), `spoolfile`
(the queue file format), `commit` (group commit), `records` (typed state), `routing`
(pure: stage, hops, back-off), `hops` (running a hop, alias expansion, DKIM),
`lmtp_client` and `filter_client` (ours, on the `mailyard.smtp` codec, pipelined),
`smtp_out` (aiosmtplib: MX lookup, remote delivery, connection reuse), `dsn` (RFC 3464
reports), `cli` (`mailyard queue`).
"""

from mailyard.queue.service import Incoming, Queue

__all__ = ["Incoming", "Queue"]
