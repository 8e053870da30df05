"""The durable queue: spool, scheduler, routing, delivery clients and bounces.

    queue = app.component("queue", Queue)
    incoming = await queue.receive(envelope)
    incoming.write(chunk)            # many times
    queue_id = await incoming.commit()   # durable (fsynced, group commit) on return

See `service` for the theory of operation and `spool` for the on-disk format.
"""

from mailyard.queue.service import Incoming, Queue

__all__ = ["Incoming", "Queue"]
