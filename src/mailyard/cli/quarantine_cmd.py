"""`mailyard quarantine list|show|release|delete`."""

from __future__ import annotations

import time

import click

from mailyard.cli.common import config_option, emit_json, fail, json_option, pass_settings


def _quarantine(settings):
    from mailyard.filter.quarantine import Quarantine

    return Quarantine(settings.data_path)


@click.group()
def quarantine() -> None:
    """Messages the content filter kept out of mailboxes (viruses, banned attachments,
    spam above the kill level)."""


@quarantine.command("list")
@config_option
@json_option
@pass_settings
def quarantine_list(settings, as_json: bool) -> None:
    """List quarantined messages, oldest first."""
    from dataclasses import asdict

    entries = _quarantine(settings).list()
    if as_json:
        emit_json([asdict(e) for e in entries])
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.time))
        click.echo(f"{e.id}  {when}  {e.reason:<7} {e.detail}  from {e.sender or '<>'} "
                   f"to {', '.join(e.recipients)}  {e.subject!r}")
    if not entries:
        click.echo("quarantine is empty")


@quarantine.command("show")
@config_option
@click.argument("qid")
@click.option("--raw", is_flag=True, help="Print the message itself.")
@json_option
@pass_settings
def quarantine_show(settings, qid: str, raw: bool, as_json: bool) -> None:
    """Show why QID was quarantined (and the message with --raw)."""
    from dataclasses import asdict

    try:
        entry, envelope, message = _quarantine(settings).get(qid)
    except KeyError:
        fail(f"no such quarantine entry: {qid} (see `mailyard quarantine list`)")
    if raw:
        click.echo(message.decode("utf-8", "replace"), nl=False)
        return
    if as_json:
        emit_json(asdict(entry))
        return
    for key, value in asdict(entry).items():
        click.echo(f"{key}: {', '.join(value) if isinstance(value, tuple) else value}")


@quarantine.command("release")
@config_option
@click.argument("qid")
@pass_settings
def quarantine_release(settings, qid: str) -> None:
    """Deliver QID to its recipients after all (through the reinjection port, unscanned)."""
    import asyncio
    from dataclasses import replace

    from mailyard.filter.service import ReinjectError, reinject

    q = _quarantine(settings)
    try:
        entry, envelope, message = q.get(qid)
    except KeyError:
        fail(f"no such quarantine entry: {qid} (see `mailyard quarantine list`)")
    try:
        asyncio.run(reinject(settings, replace(envelope, skip_scan=True), message))
    except ReinjectError as exc:
        fail(f"release failed, {qid} stays in quarantine: {exc} (is mailyard running?)")
    q.delete(qid)
    click.echo(f"released {qid} to {', '.join(entry.recipients)}")


@quarantine.command("delete")
@config_option
@click.argument("qid")
@pass_settings
def quarantine_delete(settings, qid: str) -> None:
    """Delete QID for good."""
    try:
        _quarantine(settings).delete(qid)
    except KeyError:
        fail(f"no such quarantine entry: {qid}")
    click.echo(f"deleted {qid}")
