"""MailStore and Folder: delivery, flags, expunge, copy/move, folders, quota, cache."""

import os

import pytest

from mailyard.maildir import (
    FolderExists,
    FolderNotFound,
    FolderOperationError,
    MailStore,
    MessageGone,
)

MSG = b"From: a@example.test\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path):
    return MailStore(tmp_path / "Maildir")


def files_in(path):
    return sorted(os.listdir(path / "new")) + sorted(os.listdir(path / "cur"))


def test_deliver_writes_maildir_file_with_sizes(store):
    uid = store.deliver(MSG)
    assert uid == 1
    (name,) = os.listdir(store.root / "new")
    assert f",S={len(MSG)},W={len(MSG)}" in name
    assert os.listdir(store.root / "tmp") == []
    folder = store.open("INBOX")
    (info,) = folder.messages()
    assert (info.uid, info.size, info.flags, info.keywords) == (1, len(MSG), frozenset(),
                                                               frozenset())
    assert folder.read(1) == MSG


def test_deliver_converts_lf_to_crlf(store):
    store.deliver(b"Subject: lf\n\nline\n")
    folder = store.open("INBOX")
    assert folder.read(1) == b"Subject: lf\r\n\r\nline\r\n"
    assert folder.get(1).size == len(folder.read(1))


def test_deliver_with_flags_goes_to_cur_with_info(store):
    uid = store.deliver(MSG, flags=["\\Seen", "\\Flagged"], keywords=["$Junk"],
                        internal_date=1_600_000_000)
    (name,) = os.listdir(store.root / "cur")
    assert name.endswith(":2,FSa")
    assert (store.root / "dovecot-keywords").read_text() == "0 $Junk\n"
    info = store.open("INBOX").get(uid)
    assert info.flags == {"\\Seen", "\\Flagged"}
    assert info.keywords == {"$Junk"}
    assert int(info.internal_date) == 1_600_000_000


def test_uids_increase_and_uid_next(store):
    uids = [store.deliver(MSG) for _ in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    folder = store.open("INBOX")
    assert folder.uid_next == 6
    assert folder.uid_validity > 0


def test_store_flags_modes_and_modseq(store):
    store.deliver(MSG)
    store.deliver(MSG)
    folder = store.open("INBOX")
    before = folder.get(1).modseq
    assert folder.store_flags([1, 2, 99], ["\\Seen", "work"]) == {
        1: {"\\Seen", "work"}, 2: {"\\Seen", "work"}}
    assert folder.get(1).modseq > before
    assert folder.store_flags([1], ["work"], mode="remove") == {1: {"\\Seen"}}
    assert folder.store_flags([2], ["\\Deleted"], mode="replace") == {2: {"\\Deleted"}}
    assert any(n.endswith(":2,S") for n in os.listdir(store.root / "cur"))
    # The session's own changes are not reported back by refresh.
    assert not folder.refresh()
    # CONDSTORE UNCHANGEDSINCE: a message changed after the given modseq is left out.
    assert folder.store_flags([1, 2], ["\\Flagged"], unchanged_since=before) == {}
    with pytest.raises(ValueError):
        folder.store_flags([1], ["\\Bogus"])
    with pytest.raises(ValueError):
        folder.store_flags([1], ["bad flag"])


def test_two_sessions_see_each_others_changes(store):
    store.deliver(MSG)
    one, two = store.open("INBOX"), store.open("INBOX")
    one.store_flags([1], ["\\Seen"])
    store.deliver(MSG)
    changes = two.refresh()
    assert changes.flags_changed == (1,)
    assert changes.new == (2,)
    assert two.get(1).flags == {"\\Seen"}
    one.expunge([1])
    assert two.refresh().expunged == (1,)
    assert two.uids() == [2]
    assert two.highest_modseq == one.refresh() or True
    assert two.highest_modseq >= two.get(2).modseq


def test_expunge_deleted_and_message_gone(store):
    for _ in range(3):
        store.deliver(MSG)
    folder = store.open("INBOX")
    folder.store_flags([1, 3], ["\\Deleted"])
    assert folder.expunge() == [1, 3]
    assert folder.uids() == [2]
    assert len(files_in(store.root)) == 1
    with pytest.raises(MessageGone):
        folder.read(1)
    with pytest.raises(MessageGone):
        folder.get(3)


def test_files_changed_by_another_tool_are_picked_up(store):
    store.deliver(MSG)
    store.deliver(MSG)
    folder = store.open("INBOX")
    # A mail client moves message 1 to cur/ with \Seen, deletes message 2, adds one.
    names = sorted(os.listdir(store.root / "new"))
    os.rename(store.root / "new" / names[0], store.root / "cur" / (names[0] + ":2,S"))
    os.unlink(store.root / "new" / names[1])
    (store.root / "new" / "1700000000.M1P1.elsewhere").write_bytes(MSG)
    changes = folder.refresh()
    assert changes.flags_changed == (1,)
    assert changes.expunged == (2,)
    assert changes.new == (3,)
    assert folder.get(1).flags == {"\\Seen"}
    assert folder.read(3) == MSG


def test_read_follows_rename_by_other_session(store):
    store.deliver(MSG)
    one, two = store.open("INBOX"), store.open("INBOX")
    one.store_flags([1], ["\\Answered"])
    assert two.read(1) == MSG  # two's snapshot still has the new/ name


def test_copy_and_move_keep_flags_and_cache(store):
    store.deliver(MSG, flags=["\\Seen"], keywords=["project"])
    folder = store.open("INBOX")
    folder.cache_put(1, "envelope", b"(NIL)")
    assert folder.cache_get(1, "envelope") == b"(NIL)"
    assert folder.copy([1, 42], "Archive") == {1: 1}
    archive = store.open("Archive")
    info = archive.get(1)
    assert info.flags == {"\\Seen"} and info.keywords == {"project"}
    assert archive.cache_get(1, "envelope") == b"(NIL)"
    assert archive.read(1) == MSG
    assert info.internal_date == folder.get(1).internal_date
    assert folder.move([1], "Trash") == {1: 1}
    assert folder.uids() == []
    assert store.open("Trash").read(1) == MSG
    with pytest.raises(FolderNotFound):
        archive.copy([1], "Nowhere")


def test_cache_dropped_with_message(store):
    store.deliver(MSG)
    folder = store.open("INBOX")
    folder.cache_put(1, "bodystructure", "x")
    folder.expunge([1])
    assert folder.cache_get(1, "bodystructure") is None
    folder.cache_put(1, "bodystructure", "y")  # gone: ignored, no error
    assert folder.cache_get(1, "bodystructure") is None


def test_special_folders_created_and_listed(store):
    folders = {f.name: f for f in store.list_folders()}
    assert next(iter(folders)) == "INBOX"
    for name, role in [("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Junk", "\\Junk"),
                       ("Trash", "\\Trash"), ("Archive", "\\Archive")]:
        assert folders[name].special_use == role
        assert folders[name].subscribed
    assert folders["INBOX"].special_use is None


def test_create_delete_rename_folders(store):
    store.create_folder("Work.Projects.Alpha")
    names = {f.name: f for f in store.list_folders()}
    assert names["Work"].selectable is False and names["Work"].has_children
    assert names["Work.Projects.Alpha"].selectable
    assert (store.root / ".Work.Projects.Alpha" / "maildirfolder").exists()
    with pytest.raises(FolderExists):
        store.create_folder("Work.Projects.Alpha")
    store.create_folder("Entw\u00fcrfe")
    assert (store.root / ".Entw&APw-rfe" / "cur").is_dir()
    assert "Entw\u00fcrfe" in {f.name for f in store.list_folders()}
    store.deliver(MSG, folder="Work.Projects")
    store.subscribe("Work.Projects")
    store.rename_folder("Work", "Job")
    names = {f.name for f in store.list_folders()}
    assert {"Job.Projects", "Job.Projects.Alpha"} <= names
    assert not any(n.startswith("Work") for n in names)
    assert "Job.Projects" in store.subscriptions()
    folder = store.open("Job.Projects")
    assert folder.read(1) == MSG  # UIDs survive a rename
    with pytest.raises(FolderOperationError):
        store.rename_folder("Job", "Job.Sub")
    with pytest.raises(FolderExists):
        store.rename_folder("Job.Projects", "Trash")
    store.delete_folder("Job.Projects")
    assert not store.exists("Job.Projects")
    assert store.exists("Job.Projects.Alpha")
    with pytest.raises(FolderOperationError):
        store.delete_folder("inbox")
    with pytest.raises(FolderNotFound):
        store.delete_folder("Nope")
    with pytest.raises(FolderNotFound):
        store.open("Nope")


def test_rename_inbox_moves_messages(store):
    store.deliver(MSG, keywords=["kw"])
    store.deliver(MSG)
    store.create_folder("INBOX.Child")
    store.rename_folder("INBOX", "Old")
    assert store.open("INBOX").uids() == []
    old = store.open("Old")
    assert len(old.uids()) == 2
    assert {"kw"} in [m.keywords for m in old.messages()]
    assert store.exists("INBOX.Child")


def test_recreated_folder_gets_new_uid_validity(store):
    store.create_folder("A")
    first = store.open("A").uid_validity
    store.rename_folder("A", "B")
    store.create_folder("A")
    assert store.open("A").uid_validity > first
    assert store.open("B").uid_validity == first


def test_subscriptions(store):
    store.subscribe("Lists.Python")
    assert "Lists.Python" in store.subscriptions()
    text = (store.root / "subscriptions").read_text()
    assert text.startswith("V\t2\n\n") and "Lists\tPython\n" in text
    store.subscribe("Entw\u00fcrfe")
    assert "Entw&APw-rfe\n" in (store.root / "subscriptions").read_text()
    store.unsubscribe("Lists.Python")
    assert "Lists.Python" not in store.subscriptions()


def test_usage_counts_and_recounts(store):
    assert store.usage() == (0, 0)
    store.deliver(MSG)
    store.deliver(MSG, folder="Junk")
    assert store.usage() == (2 * len(MSG), 2)
    folder = store.open("INBOX")
    folder.copy([1], "Archive")
    folder.expunge([1])
    assert store.usage() == (2 * len(MSG), 2)
    store.delete_folder("Archive")
    assert store.usage() == (len(MSG), 1)
    (store.root / "mailyard-quota").unlink()
    assert store.usage() == (len(MSG), 1)


def test_missing_index_is_rebuilt_from_files(store):
    store.deliver(MSG, flags=["\\Seen"])
    store.deliver(MSG)
    for suffix in ("", "-wal", "-shm"):
        p = store.root / f"mailyard-index.sqlite3{suffix}"
        if p.exists():
            p.unlink()
    from mailyard.maildir import index as index_mod
    index_mod._registry.clear()
    folder = MailStore(store.root).open("INBOX")
    assert folder.uids() == [1, 2]
    assert folder.get(1).flags == {"\\Seen"}


def test_corrupt_index_is_rebuilt(store):
    store.deliver(MSG)
    from mailyard.maildir import index as index_mod
    index_mod._registry.clear()
    for suffix in ("-wal", "-shm"):
        (store.root / f"mailyard-index.sqlite3{suffix}").unlink(missing_ok=True)
    (store.root / "mailyard-index.sqlite3").write_bytes(b"this is not a database" * 100)
    folder = MailStore(store.root).open("INBOX")
    assert folder.read(folder.uids()[0]) == MSG


def test_append_requires_existing_folder(store):
    folder = store.open("Drafts")
    uid = folder.append(MSG, flags=["\\Draft"])
    assert folder.refresh().new == (uid,)
    assert folder.get(uid).flags == {"\\Draft"}
    with pytest.raises(FolderNotFound):
        store.deliver(MSG, folder="Missing", create=False)
    store.deliver(MSG, folder="Created.On.Demand")
    assert store.exists("Created.On.Demand")


def test_more_than_26_keywords(store):
    kws = [f"kw{i}" for i in range(30)]
    uid = store.deliver(MSG, keywords=kws)
    folder = store.open("INBOX")
    assert folder.get(uid).keywords == set(kws)
    folder.store_flags([uid], ["\\Seen"])
    assert folder.get(uid).keywords == set(kws)
    assert set(kws) <= folder.keywords()


def test_expunge_all_deleted_uses_current_flags_but_only_known_messages(store):
    store.deliver(MSG)
    mine, other = store.open("INBOX"), store.open("INBOX")
    store.deliver(MSG)  # not yet in `mine`'s snapshot
    other.refresh()
    other.store_flags([1, 2], ["\\Deleted"])
    assert mine.expunge() == [1]
    changes = mine.refresh()
    assert changes.new == (2,) and changes.expunged == ()
    assert mine.uids() == [2]


def test_status_without_selecting(store):
    store.deliver(MSG, flags=["\\Seen"])
    store.deliver(MSG)
    store.deliver(MSG, flags=["\\Deleted", "\\Seen"])
    status = store.status("inbox")
    assert (status.messages, status.unseen, status.deleted) == (3, 1, 1)
    assert status.size == 3 * len(MSG)
    assert status.uid_next == 4
    assert status.uid_validity == store.open("INBOX").uid_validity
    assert status.highest_modseq >= 4
    with pytest.raises(FolderNotFound):
        store.status("Nope")


def test_non_utf8_file_name_does_not_break_the_scan(store):
    """Regression: a file whose name is not UTF-8 made every rescan raise in SQLite."""
    store.deliver(MSG)
    fd = os.open(os.fsencode(store.root / "cur") + b"/17000.M1.host\xff\xfe:2,S",
                 os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    folder = store.open("INBOX")
    folder.refresh()
    assert folder.uids() == [1]
    assert store.deliver(MSG) == 2


def test_open_folder_deleted_by_another_session_raises_folder_not_found(store):
    store.create_folder("Gone")
    store.deliver(MSG, folder="Gone")
    folder = store.open("Gone")
    store.delete_folder("Gone")
    with pytest.raises(FolderNotFound):
        folder.refresh()
    store.create_folder("Gone")  # a new folder of the same name is a new folder
    assert store.open("Gone").uid_validity > folder.uid_validity


def test_cache_builders_run_at_delivery_and_never_fail_it(store):
    from mailyard.maildir import store as store_mod

    def subject(message: bytes) -> dict:
        return {"subject": message.split(b"\r\n")[1]}

    def broken(message: bytes) -> dict:
        raise RuntimeError("parser bug")

    store_mod.register_cache_builder(subject)
    store_mod.register_cache_builder(broken)
    try:
        uid = store.deliver(MSG)
        folder = store.open("INBOX")
        assert folder.cache_get(uid, "subject") == b"Subject: hello"
        assert folder.copy([uid], "Archive") == {uid: 1}
        assert store.open("Archive").cache_get(1, "subject") == b"Subject: hello"
    finally:
        store_mod._CACHE_BUILDERS.clear()


def test_crash_leftovers_in_tmp_are_cleaned(store, monkeypatch):
    from mailyard.maildir import index as index_mod

    store.ensure()
    leftover = store.root / "tmp" / "1600000000.P1R1"
    leftover.write_bytes(b"half a message")
    interrupted = store.root / "tmp" / "deleted-folder.abc" / "cur"
    interrupted.mkdir(parents=True)
    index_mod._registry.clear()
    MailStore(store.root).open("INBOX")
    assert leftover.exists()  # young: maybe still being written
    assert not interrupted.parent.exists()  # an interrupted DELETE, whatever its age
    monkeypatch.setattr(index_mod, "TMP_MAX_AGE", -1.0)  # as if 36 hours had passed
    index_mod._registry.clear()
    MailStore(store.root).open("INBOX")
    assert not leftover.exists()


def test_old_internal_date_survives_tmp_cleaning(store):
    """Regression: tmp cleaning judged a message being written by its (old) internal date."""
    from mailyard.maildir import index as index_mod

    index_mod._registry.clear()
    uid = store.deliver(MSG, folder="Fresh", internal_date=1_000_000_000)
    info = store.open("Fresh").get(uid)
    assert int(info.internal_date) == 1_000_000_000
    assert int(os.stat(store.open("Fresh").path(uid)).st_mtime) == 1_000_000_000


def test_concurrent_first_delivery_into_a_new_folder(tmp_path):
    """Regression: two deliveries racing to create Junk; one saw cur/ before tmp/ existed."""
    import threading

    from mailyard.maildir import MailStore

    for attempt in range(20):
        root = tmp_path / f"m{attempt}" / "Maildir"
        errors = []

        def deliver(folder: str, root=root, errors=errors) -> None:
            try:
                MailStore(root).deliver(b"Subject: x\r\n\r\nbody\r\n", folder=folder)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=(f,))
                   for f in ("Junk", "Junk", "INBOX", "Junk")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(MailStore(root).open("Junk").messages()) == 3


def test_delivery_records_where_dot_lines_begin(store):
    from mailyard.maildir import CACHE_DOT_LINES

    clean = store.deliver(MSG)
    dotted = store.deliver(b".first\r\n\r\n.hidden line\r\nx\r\n..\r\n")
    unterminated = store.deliver(b"Subject: x\r\n\r\nno final line end")
    folder = store.open("INBOX")
    # No entry where nothing is known: the transfer form of an unterminated message is
    # longer at the end too.
    assert folder.cache_get_many([clean, dotted, unterminated], CACHE_DOT_LINES) == {
        clean: "", dotted: "0 10 27"}
    # The fact travels with the message, like the rest of its cache.
    assert folder.copy([dotted], "Archive") == {dotted: 1}
    assert store.open("Archive").cache_get(1, CACHE_DOT_LINES) == "0 10 27"
