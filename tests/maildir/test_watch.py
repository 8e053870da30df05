"""In-process change notification (what IMAP IDLE waits on)."""

import asyncio

from mailyard.maildir import MailStore


async def test_watch_wakes_on_delivery_from_a_thread(tmp_path):
    store = MailStore(tmp_path / "Maildir")
    folder = store.open("INBOX")
    with folder.watch() as w:
        assert await w.wait(timeout=0.01) is False
        waiter = asyncio.ensure_future(w.wait())
        await asyncio.to_thread(store.deliver, b"Subject: x\r\n\r\nx\r\n")
        assert await waiter is True
        assert folder.refresh().new == (1,)
        folder.store_flags([1], ["\\Seen"])
        assert w.changed() is True
        assert w.changed() is False


async def test_watch_is_per_folder(tmp_path):
    store = MailStore(tmp_path / "Maildir")
    folder = store.open("Junk")
    with folder.watch() as w:
        await asyncio.to_thread(store.deliver, b"Subject: x\r\n\r\nx\r\n")
        assert w.changed() is False
        await asyncio.to_thread(store.deliver, b"Subject: x\r\n\r\nx\r\n", "Junk")
        assert await w.wait(timeout=5) is True
