"""Script storage layout, the per-user context (memories on disk) and the script chain."""

from __future__ import annotations

import os

import pytest

from mailyard.sieve import FileInto, Keep, SieveEnvelope, Vacation, compile_script, run, run_chain
from mailyard.sieve.storage import (
    ScriptStore,
    StorageError,
    active_script_name,
    active_script_text,
    default_before_script,
    include_loader,
)
from mailyard.sieve.usercontext import UserSieveContext

USER = "Alice@Example.Test"
MESSAGE = (b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: hi\r\n"
           b"Message-ID: <m1@example.net>\r\n\r\nhello\r\n")
ENVELOPE = SieveEnvelope(sender="bob@example.net", recipient="alice@example.test")


def test_layout_on_disk(tmp_path):
    store = ScriptStore(tmp_path, USER)
    store.put("main", "keep;\r\n")
    store.set_active("main")
    user_dir = tmp_path / "sieve" / "alice@example.test"
    assert (user_dir / "main.sieve").read_bytes() == b"keep;\r\n"
    assert (user_dir / ".active").read_text() == "main"
    assert active_script_text(tmp_path, "alice@example.test") == "keep;\r\n"
    assert active_script_name(tmp_path, USER) == "main"
    assert [p.name for p in user_dir.iterdir() if p.name.startswith(".tmp")] == []


def test_no_active_script(tmp_path):
    assert active_script_text(tmp_path, USER) is None
    store = ScriptStore(tmp_path, USER)
    store.put("a", "keep;")
    assert active_script_text(tmp_path, USER) is None
    store.set_active("a")
    store.set_active("")
    assert active_script_text(tmp_path, USER) is None


def test_active_file_pointing_nowhere(tmp_path):
    store = ScriptStore(tmp_path, USER)
    store.put("a", "keep;")
    store.set_active("a")
    os.unlink(store.dir / "a.sieve")
    assert active_script_text(tmp_path, USER) is None


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 200, "a\x00b", "tab\t",
                                  "back\\slash", "\u2028"])
def test_hostile_names_are_refused(tmp_path, name):
    with pytest.raises(StorageError):
        ScriptStore(tmp_path, USER).put(name, "keep;")
    assert not (tmp_path / "x.sieve").exists()


@pytest.mark.parametrize("user", ["../etc", "a/b@x", ".x@y", "global", ""])
def test_hostile_user_addresses_are_refused(tmp_path, user):
    with pytest.raises(StorageError):
        ScriptStore(tmp_path, user)
    assert active_script_text(tmp_path, user) is None


def test_unicode_names(tmp_path):
    store = ScriptStore(tmp_path, USER)
    store.put("Ferien \u00e4\u00f6\u00fc", "keep;")
    assert store.list() == [("Ferien \u00e4\u00f6\u00fc", False)]


def test_rename_keeps_the_active_mark(tmp_path):
    store = ScriptStore(tmp_path, USER)
    store.put("a", "keep;")
    store.set_active("a")
    store.rename("a", "b")
    assert store.list() == [("b", True)]
    with pytest.raises(StorageError) as info:
        store.rename("zzz", "c")
    assert info.value.code == "NONEXISTENT"


def test_quotas(tmp_path):
    store = ScriptStore(tmp_path, USER, max_scripts=2, max_script_size=10)
    store.put("a", "keep;")
    store.put("b", "keep;")
    with pytest.raises(StorageError) as info:
        store.put("c", "keep;")
    assert info.value.code == "QUOTA/MAXSCRIPTS"
    with pytest.raises(StorageError) as info:
        store.put("a", "discard; discard;")
    assert info.value.code == "QUOTA/MAXSIZE"


def test_include_loader(tmp_path):
    ScriptStore(tmp_path, USER).put("mine", "keep;")
    (tmp_path / "sieve" / "global").mkdir(parents=True)
    (tmp_path / "sieve" / "global" / "spam.sieve").write_text("discard;")
    load = include_loader(tmp_path, USER)
    assert load("mine", "personal") == "keep;"
    assert load("spam", "global") == "discard;"
    assert load("../global/spam", "personal") is None
    assert load("nope", "global") is None


def test_user_context_remembers_vacation_replies_on_disk(tmp_path):
    script = compile_script('require "vacation"; vacation :days 1 "away";')
    now = [1_000_000.0]

    def context():
        return UserSieveContext(tmp_path, "alice@example.test", clock=lambda: now[0])

    first = run(script, MESSAGE, ENVELOPE, context())
    assert [type(a) for a in first.actions] == [Vacation]
    # A new context (a new delivery, or a restarted server) reads the same memory.
    assert run(script, MESSAGE, ENVELOPE, context()).actions == []
    now[0] += 86400 + 1
    assert [type(a) for a in run(script, MESSAGE, ENVELOPE, context()).actions] == [Vacation]


def test_vacation_memory_is_untouched_by_a_failed_run(tmp_path):
    ctx = UserSieveContext(tmp_path, "alice@example.test")
    failing = compile_script('require ["vacation", "include"]; vacation "away"; '
                             'include "missing";')
    assert run(failing, MESSAGE, ENVELOPE, ctx).errors
    ok = compile_script('require "vacation"; vacation "away";')
    assert [type(a) for a in run(ok, MESSAGE, ENVELOPE, ctx).actions] == [Vacation]


def test_user_context_duplicate_tracking(tmp_path):
    script = compile_script('require ["duplicate", "fileinto"]; '
                            'if duplicate { fileinto "Dups"; }')
    ctx = UserSieveContext(tmp_path, "alice@example.test")
    assert run(script, MESSAGE, ENVELOPE, ctx).actions == []
    assert run(script, MESSAGE, ENVELOPE, ctx).actions == [FileInto("Dups")]


def test_user_context_mailbox_exists_and_includes(tmp_path):
    ScriptStore(tmp_path, "alice@example.test").put("lib", 'require "fileinto"; '
                                                           'fileinto "FromLib";')
    ctx = UserSieveContext(tmp_path, "alice@example.test",
                           mailbox_exists=lambda name: name in ("INBOX", "Lists"))
    script = compile_script('require ["mailbox", "fileinto", "include"];\n'
                            'if mailboxexists "Lists" { fileinto "Lists"; }\n'
                            'if mailboxexists "Nope" { fileinto "Nope"; }\n'
                            'include "lib";')
    assert run(script, MESSAGE, ENVELOPE, ctx).actions == [FileInto("Lists"),
                                                           FileInto("FromLib")]


def test_default_before_script_files_spam_and_stops_the_chain():
    before = compile_script(default_before_script(), name="global:before")
    user = compile_script('require "fileinto"; fileinto "Personal";')
    spam = b"X-Spam-Flag: YES\r\n" + MESSAGE
    result = run_chain([before, user], spam, ENVELOPE)
    assert result.actions == [FileInto("Junk", create=True)]
    assert result.implicit_keep is None
    result = run_chain([before, user], MESSAGE, ENVELOPE)
    assert result.actions == [FileInto("Personal")]


def test_chain_combines_edits_keep_and_errors():
    before = compile_script('require "editheader"; addheader "X-Before" "1";')
    user = compile_script('require "fileinto"; if exists "X-Before" { fileinto "Seen"; }')
    after = compile_script('require ["imap4flags"]; addflag "\\\\Seen";')
    result = run_chain([before, user, after], MESSAGE, ENVELOPE)
    assert result.actions == [FileInto("Seen")]
    assert result.implicit_keep is None
    assert result.message.startswith(b"X-Before: 1\r\n")
    broken = compile_script('require "include"; include "nothing";')
    result = run_chain([before, broken], MESSAGE, ENVELOPE)
    assert result.actions == [] and result.implicit_keep == Keep("INBOX") and result.errors
