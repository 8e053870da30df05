"""`mailyard config example|check`."""

from __future__ import annotations

import click

from mailyard.cli.common import config_option, pass_settings


@click.group()
def config() -> None:
    """Write a documented example config, or check one."""


@config.command()
def example() -> None:
    """Print a config file documenting every key with its default."""
    from mailyard.config import render_example

    click.echo(render_example())


@config.command()
@config_option
@pass_settings
def check(settings) -> None:
    """Load the config and report problems (exit 2 with the file, key and reason)."""
    click.echo(f"{settings.source or '<defaults>'}: OK (data_dir {settings.server.data_dir})")
