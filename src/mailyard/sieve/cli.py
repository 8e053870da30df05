"""`mailyard sieve ...`: try a script on a message without delivering anything."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailyard.cli.common import config_option, emit_json, fail, json_option, pass_settings
from mailyard.sieve import (
    Discard,
    Keep,
    Redirect,
    Reject,
    SieveCompileError,
    SieveContext,
    SieveEnvelope,
    Vacation,
    compile_script,
    run,
)
from mailyard.sieve.message import SieveMessage


class DirectoryContext(SieveContext):
    """Includes come from two directories of NAME.sieve files (`--personal-dir`,
    `--global-dir`); everything else is the in-memory default."""

    def __init__(self, personal: Path | None, global_: Path | None, **kwargs):
        super().__init__(**kwargs)
        self.dirs = {"personal": personal, "global": global_}

    def load_include(self, name: str, location: str) -> str | None:
        base = self.dirs.get(location)
        if base is None or "/" in name or name.startswith("."):
            return None
        path = base / f"{name}.sieve"
        if not path.is_file():
            path = base / name
        try:
            return path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None


def action_json(action) -> dict:
    """The documented JSON shape of one action (`mailyard sieve test --json`)."""
    if isinstance(action, Keep):
        return {"action": "store", "mailbox": action.mailbox, "flags": list(action.flags),
                "create": action.create, "copy": action.copy}
    if isinstance(action, Redirect):
        return {"action": "redirect", "address": action.address, "copy": action.copy}
    if isinstance(action, Discard):
        return {"action": "discard"}
    if isinstance(action, Reject):
        return {"action": "reject", "reason": action.reason}
    if isinstance(action, Vacation):
        return {"action": "vacation", "seconds": action.seconds, "subject": action.subject,
                "from": action.from_, "reason": action.reason}
    raise TypeError(action)


def describe(action) -> str:
    if isinstance(action, Keep):
        what = "keep in" if action.mailbox == "INBOX" and type(action) is Keep else "file into"
        extra = [f"flags: {' '.join(action.flags)}"] if action.flags else []
        extra += ["create"] if action.create else []
        extra += ["copy"] if action.copy else []
        return f"{what} {action.mailbox}" + (f" ({', '.join(extra)})" if extra else "")
    if isinstance(action, Redirect):
        return f"redirect to {action.address}" + (" (copy)" if action.copy else "")
    if isinstance(action, Discard):
        return "discard"
    if isinstance(action, Reject):
        return ("ereject: " if action.extended else "reject: ") + action.reason.strip()
    if isinstance(action, Vacation):
        return (f"vacation reply to {action.to} every {action.seconds}s, subject "
                f"{action.subject!r}: {action.reason.strip()[:60]!r}")
    return repr(action)


def _default_envelope(message: bytes) -> tuple[str, str]:
    parsed = SieveMessage(message)
    sender = ""
    for header in ("Return-Path", "From"):
        addrs = parsed.addresses(header)
        if addrs and addrs[0]:
            sender = addrs[0][0]
            break
    recipient = ""
    for header in ("Delivered-To", "To"):
        addrs = parsed.addresses(header)
        if addrs and addrs[0]:
            recipient = addrs[0][0]
            break
    return sender, recipient


@click.group()
def sieve() -> None:
    """Sieve filters: try scripts on messages."""


@sieve.command("test")
@click.argument("script_path", metavar="SCRIPT", type=click.Path(dir_okay=False))
@click.argument("message_path", metavar="MESSAGE", type=click.Path(dir_okay=False))
@click.option("--from", "sender", metavar="ADDR", help="Envelope sender (default: the "
              "message's Return-Path or From).")
@click.option("--to", "recipient", metavar="ADDR", help="Envelope recipient (default: the "
              "message's Delivered-To or To).")
@click.option("--personal-dir", type=click.Path(file_okay=False), help="Where "
              "`include :personal` finds NAME.sieve (default: the script's directory).")
@click.option("--global-dir", type=click.Path(file_okay=False),
              help="Where `include :global` finds NAME.sieve.")
@json_option
def test_command(script_path: str, message_path: str, sender: str | None,
                 recipient: str | None, personal_dir: str | None, global_dir: str | None,
                 as_json: bool) -> None:
    """Print the actions SCRIPT would take on MESSAGE (nothing is delivered or sent).

    Exit status: 0 ok, 1 compile or runtime error (the message would be kept in INBOX),
    2 unreadable files.
    """
    try:
        text = Path(script_path).read_bytes().decode("utf-8")
        message = Path(message_path).read_bytes()
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"mailyard: {exc}", err=True)
        sys.exit(2)
    default_sender, default_recipient = _default_envelope(message)
    envelope = SieveEnvelope(sender=default_sender if sender is None else sender,
                             recipient=default_recipient if recipient is None else recipient)
    context = DirectoryContext(Path(personal_dir) if personal_dir else
                               Path(script_path).resolve().parent,
                               Path(global_dir) if global_dir else None,
                               user_addresses=(envelope.recipient,))
    fallback = {"mailbox": "INBOX", "flags": []}
    try:
        script = compile_script(text, name=Path(script_path).stem)
    except SieveCompileError as exc:
        if as_json:
            emit_json({"result": "compile_error", "actions": [], "implicit_keep": fallback,
                       "errors": [str(exc)]})
        else:
            click.echo(f"{script_path}: {exc}", err=True)
        sys.exit(1)
    result = run(script, message, envelope, context)
    keep = result.implicit_keep
    if as_json:
        emit_json({"result": result.status,
                   "actions": [action_json(a) for a in result.actions],
                   "implicit_keep": None if keep is None else
                   {"mailbox": keep.mailbox, "flags": list(keep.flags)},
                   "errors": list(result.errors)})
    else:
        for error in result.errors:
            click.echo(f"runtime error: {error}")
        click.echo("actions:" if result.actions else "actions: none")
        for action in result.actions:
            click.echo(f"  * {describe(action)}")
        if keep is not None:
            flags = f" (flags: {' '.join(keep.flags)})" if keep.flags else ""
            click.echo(f"implicit keep: {keep.mailbox}{flags}")
    sys.exit(1 if result.errors else 0)


# -- operator commands: scripts in data_dir without a ManageSieve client -------------------

def _user_store(settings, user: str):
    from mailyard.sieve.storage import ScriptStore, StorageError

    try:
        return ScriptStore(settings.data_path, user, max_scripts=settings.sieve.max_scripts,
                           max_script_size=settings.sieve.max_script_size)
    except StorageError as exc:
        fail(exc.message)


@sieve.command("check")
@click.argument("script_path", metavar="SCRIPT", type=click.Path(dir_okay=False))
def check_command(script_path: str) -> None:
    """Compile SCRIPT; print `ok` or the error with its line and column (exit 1)."""
    try:
        text = Path(script_path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(str(exc), 2)
    try:
        compile_script(text, name=Path(script_path).stem)
    except SieveCompileError as exc:
        fail(f"{script_path}: {exc}", 1)
    click.echo("ok")


@sieve.command("put")
@config_option
@click.argument("user")
@click.argument("name")
@click.argument("script_path", metavar="SCRIPT", type=click.Path(dir_okay=False))
@click.option("--activate", is_flag=True, help="Make it the user's active script.")
@pass_settings
def put_command(settings, user: str, name: str, script_path: str, activate: bool) -> None:
    """Store SCRIPT as the user's script NAME (compiled first, like ManageSieve PUTSCRIPT)."""
    from mailyard.sieve.storage import StorageError

    store = _user_store(settings, user)
    try:
        text = Path(script_path).read_bytes().decode("utf-8")
        compile_script(text, name=name)
        store.put(name, text)
        if activate:
            store.set_active(name)
    except (OSError, UnicodeDecodeError) as exc:
        fail(str(exc), 2)
    except SieveCompileError as exc:
        fail(f"{script_path}: {exc}")
    except StorageError as exc:
        fail(exc.message)


@sieve.command("activate")
@config_option
@click.argument("user")
@click.argument("name")
@pass_settings
def activate_command(settings, user: str, name: str) -> None:
    """Make NAME the user's active script ("" deactivates)."""
    from mailyard.sieve.storage import StorageError

    try:
        _user_store(settings, user).set_active(name)
    except StorageError as exc:
        fail(exc.message)


@sieve.command("list")
@config_option
@click.argument("user")
@json_option
@pass_settings
def list_command(settings, user: str, as_json: bool) -> None:
    """The user's scripts; the active one is marked."""
    scripts = _user_store(settings, user).list()
    if as_json:
        emit_json([{"name": name, "active": active} for name, active in scripts])
        return
    for name, active in scripts:
        click.echo(f"{name}{'  (active)' if active else ''}")
