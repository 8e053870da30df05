"""The `mailyard` command.

Every subcommand takes `-c FILE` (before or after the subcommand name); output is for people,
`--json` is for programs. Subcommands live one group per module and are registered below.
"""

from __future__ import annotations

import importlib

import click

from mailyard import __version__
from mailyard.cli.common import CliState, _set_config


class _LazyGroup(click.Group):
    """A group whose heavier subcommands are imported only when run or listed (the server's
    start-up does not pay for the queue, spam and scan commands' imports)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module_name, _, attribute = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module_name), attribute), name)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, lazy={
    "queue": "mailyard.queue.cli:queue", "sieve": "mailyard.sieve.cli:sieve",
    "spam": "mailyard.spam.cli:spam", "scan": "mailyard.antivirus.scan_cmd:scan"},
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-c", "--config", "config_path", metavar="FILE", expose_value=False,
              callback=_set_config, is_eager=True,
              help="Config file (default ./mailyard.toml if present, else built-in defaults "
                   "with data under ./var).")
@click.version_option(__version__, prog_name="mailyard")
@click.pass_context
def main(ctx: click.Context) -> None:
    """mailyard — a complete mail server: SMTP in and out, spam and virus filtering,
    Sieve delivery into Maildir, IMAP and POP3.

    \b
    Start here:
      mailyard serve                         run every service (see [listen])
      mailyard domain add example.test       accept mail for a domain
      printf 'pw\\n' | mailyard user add alice@example.test --password-stdin
      mailyard config example > mailyard.toml   a documented config to edit
    """
    ctx.ensure_object(CliState)


def _register() -> None:
    from mailyard.cli import accounts_cmd, config_cmd, dkim_cmd, quarantine_cmd, serve_cmd

    main.add_command(serve_cmd.serve)
    main.add_command(config_cmd.config)
    main.add_command(dkim_cmd.dkim)
    main.add_command(dkim_cmd.dns_records)
    main.add_command(quarantine_cmd.quarantine)
    for command in accounts_cmd.COMMANDS:
        main.add_command(command)


_register()
