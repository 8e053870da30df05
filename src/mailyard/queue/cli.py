"""`mailyard queue list|show|flush|delete|hold|release` — the operator's view of the spool.

The CLI works on the spool directory directly (no connection to the server needed, so it
works while the server is down). Changes that a running server must notice are signalled
through files in data_dir/queue/control/: `flush` (retry everything now) and `changed`
(re-read hold markers and deletions). The scheduler checks for them every
`[queue] control_poll` seconds (default 1) and removes them once acted on.
"""

from __future__ import annotations

import datetime

import click

from mailyard.cli.common import config_option, emit_json, fail, json_option, pass_settings


def _spool(settings):
    from mailyard.queue.spool import Spool

    spool = Spool(settings.data_path / "queue")
    spool.ensure()
    return spool


def _when(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _check_id(queue_id: str) -> str:
    from mailyard.queue.spool import valid_queue_id

    queue_id = queue_id.strip().upper()
    if not valid_queue_id(queue_id):
        fail(f"{queue_id!r} is not a queue id (see `mailyard queue list`)")
    return queue_id


@click.group("queue")
def queue() -> None:
    """The mail queue: messages waiting for the filter or for delivery.

    \b
      mailyard queue list            what is waiting, and why
      mailyard queue show ID         one message's envelope and per-recipient status
      mailyard queue flush           ask the running server to retry everything now
      mailyard queue hold ID         stop delivery attempts for a message
      mailyard queue release ID      resume them (and try at once)
      mailyard queue delete ID       remove a message without delivering or bouncing it
    """


@queue.command("list")
@config_option
@json_option
@pass_settings
def list_cmd(settings, as_json: bool) -> None:
    """List queued messages, oldest first."""
    entries = list(_spool(settings).entries())
    if as_json:
        emit_json([e.summary() for e in entries])
        return
    if not entries:
        click.echo("The queue is empty.")
        return
    for e in entries:
        pending = [r for r in e.recipients if r.status == "pending"]
        flags = " (held)" if e.held else ""
        click.echo(f"{e.queue_id}  {e.size:>9}  {_when(e.created)}  "
                   f"<{e.envelope.sender}>{flags}")
        for r in pending:
            click.echo(f"    {r.address}")
        if e.last_error:
            click.echo(f"    ({e.last_error})")
    click.echo(f"-- {len(entries)} message(s), "
               f"{sum(e.size for e in entries)} bytes")


@queue.command("show")
@click.argument("queue_id")
@click.option("--message", "show_message", is_flag=True, help="Print the message itself.")
@config_option
@json_option
@pass_settings
def show_cmd(settings, queue_id: str, show_message: bool, as_json: bool) -> None:
    """Show one message's envelope and per-recipient delivery status."""
    spool = _spool(settings)
    queue_id = _check_id(queue_id)
    entry = spool.load(queue_id) if spool.exists(queue_id) else None
    if entry is None:
        fail(f"no message {queue_id} in the queue")
    if show_message:
        click.echo(spool.read_message(queue_id, entry.size).decode("utf-8", "replace"), nl=False)
        return
    summary = entry.summary()
    env = entry.envelope
    summary.update(client_ip=env.client_ip, client_helo=env.client_helo,
                   auth_user=env.auth_user, dsn_ret=env.dsn_ret, dsn_envid=env.dsn_envid,
                   delay_warned=entry.delay_warned)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"Queue ID:     {entry.queue_id}{'  (held)' if entry.held else ''}")
    click.echo(f"Sender:       <{env.sender}>")
    click.echo(f"Received:     {_when(entry.created)} via {env.received_via}"
               + (f" from {env.client_ip}" if env.client_ip else ""))
    click.echo(f"Size:         {entry.size} bytes")
    click.echo(f"Stage:        {entry.stage}")
    click.echo(f"Attempts:     {entry.attempts}, next {_when(entry.next_attempt)}")
    for r in entry.recipients:
        reply = f"  {r.reply.line()}" if r.reply else ""
        click.echo(f"  {r.status:<9} {r.address}{reply}")


@queue.command("flush")
@config_option
@json_option
@pass_settings
def flush_cmd(settings, as_json: bool) -> None:
    """Ask the running server to retry every message that is not on hold, now."""
    spool = _spool(settings)
    spool.notify("flush")
    if as_json:
        emit_json({"flush": "requested"})
    else:
        click.echo(f"flush requested; a running server acts on it within "
                   f"{settings.queue.control_poll:g} s")


def _single(verb: str, doc: str):
    @queue.command(verb, help=doc)
    @click.argument("queue_id")
    @config_option
    @json_option
    @pass_settings
    def command(settings, queue_id: str, as_json: bool) -> None:
        spool = _spool(settings)
        queue_id = _check_id(queue_id)
        if verb == "delete":
            ok = spool.delete(queue_id)
        else:
            ok = spool.set_hold(queue_id, verb == "hold")
        if not ok:
            fail(f"no message {queue_id} in the queue")
        past = {"delete": "deleted", "hold": "held", "release": "released"}[verb]
        if as_json:
            emit_json({"queue_id": queue_id, "action": past})
        else:
            click.echo(f"{queue_id}: {past}")

    command.__name__ = f"{verb}_cmd"
    return command


_single("delete", "Remove a message from the queue without delivering or bouncing it.")
_single("hold", "Stop delivery attempts for a message until it is released.")
_single("release", "Resume delivery of a held message (it is tried at once).")
