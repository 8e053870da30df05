"""Accounts: users, aliases, catch-all, plus-addressing, IDN, Dovecot passwd-file import."""

from __future__ import annotations

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from passlib.hash import sha256_crypt, sha512_crypt

from mailyard.accounts import AccountError, AccountStore, AddressError, normalize_address
from mailyard.accounts.passwords import verify_password


@pytest.fixture
def store(tmp_path):
    s = AccountStore(tmp_path / "accounts.sqlite3", tmp_path, ["config.test"])
    yield s
    s.close()


def test_user_add_and_authenticate(store):
    store.add_user("Alice@Example.TEST", "correct horse")
    assert store.authenticate("alice@example.test", "correct horse") == "alice@example.test"
    assert store.authenticate("ALICE@example.test", "correct horse") == "alice@example.test"
    assert store.authenticate("alice@example.test", "wrong") is None
    assert store.authenticate("nobody@example.test", "correct horse") is None
    assert store.authenticate("not an address", "x") is None
    assert store.is_local_domain("EXAMPLE.test")


def test_duplicate_user_refused(store):
    store.add_user("bob@example.test", "pw")
    with pytest.raises(AccountError, match="already exists"):
        store.add_user("BOB@example.test", "pw2")


def test_plus_in_user_name_refused(store):
    with pytest.raises(AccountError, match="sub-address"):
        store.add_user("a+b@example.test", "pw")


def test_resolution_order(store):
    store.add_user("alice@example.test", "pw")
    store.add_user("bob@example.test", "pw")
    store.add_alias("team@example.test", ["alice@example.test", "bob@example.test",
                                          "carol@remote.test"])
    assert store.resolve("team@example.test") == ["alice@example.test", "bob@example.test",
                                                  "carol@remote.test"]
    assert store.resolve("alice+news@example.test") == ["alice@example.test"]
    assert store.resolve("team+x@example.test") == store.resolve("team@example.test")
    assert store.resolve('"alice"@example.test') == ["alice@example.test"]
    assert store.resolve("zed@example.test") == []
    store.add_alias("@example.test", "bob@example.test")
    assert store.resolve("zed@example.test") == ["bob@example.test"]
    assert store.resolve("alice@example.test") == ["alice@example.test"]
    assert store.resolve("x@remote.test") == []


def test_alias_loops_terminate(store):
    store.add_domain("example.test")
    store.add_alias("a@example.test", "b@example.test")
    store.add_alias("b@example.test", "a@example.test")
    assert store.resolve("a@example.test") == []


def test_alias_needs_local_source_domain(store):
    with pytest.raises(AccountError, match="not a local domain"):
        store.add_alias("x@elsewhere.test", "y@example.test")


def test_idn_domains_stored_as_a_labels(store):
    store.add_user("jürgen@bücher.example", "pw")
    assert store.is_local_domain("xn--bcher-kva.example")
    assert store.is_local_domain("BÜCHER.example")
    assert store.resolve("jürgen@xn--bcher-kva.example") == ["jürgen@xn--bcher-kva.example"]


def test_config_domains_are_local(store):
    assert store.is_local_domain("config.test")
    assert {d["domain"] for d in store.list_domains()} == {"config.test"}


@pytest.mark.parametrize("bad", ["", "nodomain", "@example.test", "a@", "a@b..c",
                                 "a@[127.0.0.1]", "a b@example.test", "a@example.test.",
                                 "a@-bad.test", "x" * 65 + "@example.test"])
def test_bad_addresses(bad):
    with pytest.raises(AddressError):
        normalize_address(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_address_fuzz_only_address_errors(text):
    try:
        normalize_address(text)
    except AddressError:
        pass


def test_resolve_never_raises_on_garbage(store):
    store.add_domain("example.test")
    for junk in ["", "@", "a@@example.test", "a@example.test@remote.test", "\x00@example.test",
                 "user%other@example.test", "@a:b@example.test"]:
        assert store.resolve(junk) == []


def test_domain_remove_guards_users(store):
    store.add_user("alice@example.test", "pw")
    with pytest.raises(AccountError, match="still has 1 user"):
        store.remove_domain("example.test")
    store.remove_domain("example.test", force=True)
    assert not store.is_local_domain("example.test")


def test_quota_and_maildir_path(store, tmp_path):
    store.add_user("q@example.test", "pw", quota_bytes=1 << 20)
    assert store.get_user("q@example.test").quota_bytes == 1 << 20
    assert store.maildir_path("q@example.test") == tmp_path / "mail" / "example.test" / "q" \
        / "Maildir"


# -- Dovecot import ----------------------------------------------------------------------

def _dovecot_hashes():
    """Each scheme as Dovecot writes it (doveadm pw -s SCHEME)."""
    out = {
        "plain": "{PLAIN}plainpw",
        "sha512": "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("sha512pw"),
        "sha256": "{SHA256-CRYPT}" + sha256_crypt.using(rounds=5000).hash("sha256pw"),
        "blf": "{BLF-CRYPT}" + bcrypt.hashpw(b"blfpw", bcrypt.gensalt(5)).decode()
        .replace("$2b$", "$2y$", 1),
    }
    from argon2 import PasswordHasher

    out["argon"] = "{ARGON2ID}" + PasswordHasher(time_cost=1, memory_cost=8192).hash("argonpw")
    return out


def test_dovecot_passwd_file_import(store, tmp_path):
    hashes = _dovecot_hashes()
    passwd = tmp_path / "users"
    passwd.write_text(
        "# Dovecot passwd-file\n"
        f"plain@example.test:{hashes['plain']}:1000:1000::/home/plain::\n"
        f"sha512@example.test:{hashes['sha512']}:1000:1000::/home/x::"
        "userdb_quota_rule=*:storage=100M\n"
        f"sha256@example.test:{hashes['sha256']}::::\n"
        f"blf:{hashes['blf']}\n"
        f"argon@example.test:{hashes['argon']}\n"
        "broken-line-without-hash\n"
        "weird@example.test:{MD4}abcdef\n")
    imported, problems = store.import_passwd_file(passwd, default_domain="example.test")
    assert sorted(imported) == ["argon@example.test", "blf@example.test",
                                "plain@example.test", "sha256@example.test",
                                "sha512@example.test"]
    assert len(problems) == 2 and all(str(passwd) in p for p in problems)
    assert "unsupported password scheme {MD4}" in problems[1]
    for user, pw in [("plain", "plainpw"), ("sha512", "sha512pw"), ("sha256", "sha256pw"),
                     ("blf", "blfpw"), ("argon", "argonpw")]:
        assert store.authenticate(f"{user}@example.test", pw) == f"{user}@example.test", user
        assert store.authenticate(f"{user}@example.test", pw + "x") is None
    assert store.get_user("sha512@example.test").quota_bytes == 100 << 20


def test_weak_hash_upgraded_after_login(store, tmp_path):
    passwd = tmp_path / "users"
    passwd.write_text("p@example.test:{PLAIN}pw\n")
    store.import_passwd_file(passwd)
    assert store.authenticate("p@example.test", "pw")
    stored = store._q("SELECT password FROM users WHERE address='p@example.test'")[0][0]
    assert stored.startswith("{ARGON2ID}$argon2id$")
    assert store.authenticate("p@example.test", "pw")


def test_verify_unknown_scheme_is_false():
    assert not verify_password("{NOPE}x", "x")
    assert not verify_password("garbage", "x")
    assert not verify_password("{SHA512-CRYPT}$6$broken", "x")
