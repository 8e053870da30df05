"""`mailyard domain|user|alias` — manage who mailyard receives mail for."""

from __future__ import annotations

import sys

import click

from mailyard.cli.common import config_option, emit_json, fail, json_option, pass_settings


def _store(settings):
    from mailyard.accounts import AccountStore

    return AccountStore.open(settings)


def _guard(func):
    """Turn account errors into `mailyard: reason` and exit 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from mailyard.accounts import AccountError, AddressError

        try:
            return func(*args, **kwargs)
        except (AccountError, AddressError) as exc:
            fail(str(exc))

    return wrapper


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            fail("--password-stdin: read an empty password from standard input")
        return password
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _human(size: int) -> str:
    if not size:
        return "unlimited"
    for unit, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= m and size % m == 0:
            return f"{size // m}{unit}"
    return str(size)


# -- domain ------------------------------------------------------------------------------
@click.group()
def domain() -> None:
    """Local domains: mail for them is delivered here (users, aliases, catch-alls)."""


@domain.command("add")
@config_option
@click.argument("name")
@pass_settings
@_guard
def domain_add(settings, name: str) -> None:
    """Accept mail for NAME (IDN names are stored in their A-label form)."""
    click.echo(f"added domain {_store(settings).add_domain(name)}")


@domain.command("remove")
@config_option
@click.argument("name")
@click.option("--force", is_flag=True, help="Also remove its users and aliases (mail stays on "
              "disk).")
@pass_settings
@_guard
def domain_remove(settings, name: str, force: bool) -> None:
    """Stop accepting mail for NAME."""
    _store(settings).remove_domain(name, force=force)
    click.echo(f"removed domain {name}")


@domain.command("list")
@config_option
@json_option
@pass_settings
def domain_list(settings, as_json: bool) -> None:
    """List local domains (from the database and from [server] domains)."""
    rows = _store(settings).list_domains()
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['domain']}\t{r['users']} user(s)\t({r['source']})")


# -- user --------------------------------------------------------------------------------
@click.group()
def user() -> None:
    """Mailbox users: addresses with a password, a Maildir and a quota."""


@user.command("add")
@config_option
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line "
              "of standard input (for scripts): printf 'pw\\n' | mailyard user add ...")
@click.option("--quota", default="0", metavar="SIZE", help="Mailbox quota like 500M or 2G "
              "(0 = unlimited).")
@pass_settings
@_guard
def user_add(settings, address: str, password_stdin: bool, quota: str) -> None:
    """Create the user ADDRESS (its domain becomes local if it was not)."""
    from mailyard.accounts import parse_size

    try:
        quota_bytes = parse_size(quota)
    except ValueError as exc:
        fail(f"--quota: {exc}", 2)
    password = _read_password(password_stdin)
    created = _store(settings).add_user(address, password, quota_bytes=quota_bytes)
    click.echo(f"added user {created.address}")


@user.command("passwd")
@config_option
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@pass_settings
@_guard
def user_passwd(settings, address: str, password_stdin: bool) -> None:
    """Set a new password for ADDRESS."""
    _store(settings).set_password(address, _read_password(password_stdin))
    click.echo(f"password changed for {address}")


@user.command("quota")
@config_option
@click.argument("address")
@click.argument("size")
@pass_settings
@_guard
def user_quota(settings, address: str, size: str) -> None:
    """Set the quota of ADDRESS to SIZE (like 500M; 0 = unlimited)."""
    from mailyard.accounts import parse_size

    try:
        quota_bytes = parse_size(size)
    except ValueError as exc:
        fail(str(exc), 2)
    _store(settings).set_quota(address, quota_bytes)
    click.echo(f"quota of {address} is {_human(quota_bytes)}")


@user.command("remove")
@config_option
@click.argument("address")
@pass_settings
@_guard
def user_remove(settings, address: str) -> None:
    """Remove the user ADDRESS (its Maildir stays on disk)."""
    _store(settings).remove_user(address)
    click.echo(f"removed user {address}")


@user.command("list")
@config_option
@json_option
@click.option("--domain", "domain_name", help="Only users of this domain.")
@pass_settings
@_guard
def user_list(settings, as_json: bool, domain_name: str | None) -> None:
    """List users."""
    store = _store(settings)
    users = store.list_users(domain_name)
    if as_json:
        emit_json([{"address": u.address, "domain": u.domain, "quota_bytes": u.quota_bytes,
                    "enabled": u.enabled, "maildir": str(store.maildir_path(u.address))}
                   for u in users])
        return
    for u in users:
        click.echo(f"{u.address}\tquota {_human(u.quota_bytes)}"
                   + ("" if u.enabled else "\tdisabled"))


@user.command("import")
@config_option
@click.argument("passwd_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--domain", "default_domain", help="Domain for entries without one.")
@click.option("--replace", is_flag=True, help="Replace users that already exist.")
@json_option
@pass_settings
@_guard
def user_import(settings, passwd_file: str, default_domain: str | None, replace: bool,
                as_json: bool) -> None:
    """Import a Dovecot passwd-file as it is ({SHA512-CRYPT}, {SHA256-CRYPT},
    {BLF-CRYPT}, {ARGON2ID}, {PLAIN}); passwords keep working and are upgraded to
    argon2id at the next login."""
    imported, problems = _store(settings).import_passwd_file(passwd_file, default_domain,
                                                             replace)
    if as_json:
        emit_json({"imported": imported, "problems": problems})
    else:
        for p in problems:
            click.echo(p, err=True)
        click.echo(f"imported {len(imported)} user(s), {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


# -- alias -------------------------------------------------------------------------------
@click.group()
def alias() -> None:
    """Aliases: SOURCE delivers to one or more TARGETs; @domain is a catch-all."""


@alias.command("add")
@config_option
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@pass_settings
@_guard
def alias_add(settings, source: str, targets: tuple[str, ...]) -> None:
    """Make SOURCE (an address, or @domain for a catch-all) deliver to TARGETS."""
    for a in _store(settings).add_alias(source, list(targets)):
        click.echo(f"added alias {a.source} -> {a.target}")


@alias.command("remove")
@config_option
@click.argument("source")
@click.argument("target", required=False)
@pass_settings
@_guard
def alias_remove(settings, source: str, target: str | None) -> None:
    """Remove SOURCE → TARGET (or every target of SOURCE)."""
    n = _store(settings).remove_alias(source, target)
    click.echo(f"removed {n} alias(es)")


@alias.command("list")
@config_option
@json_option
@pass_settings
def alias_list(settings, as_json: bool) -> None:
    """List aliases."""
    rows = _store(settings).list_aliases()
    if as_json:
        emit_json([{"source": a.source, "target": a.target} for a in rows])
        return
    for a in rows:
        click.echo(f"{a.source} -> {a.target}")


COMMANDS = [domain, user, alias]
