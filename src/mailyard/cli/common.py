"""Helpers every `mailyard` subcommand uses: -c/--config, --json, loading settings."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from mailyard.config import ConfigError, Settings, find_config_file, load


class CliState:
    """What the group-level options decided; subcommands may override -c."""

    def __init__(self) -> None:
        self.config_path: str | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load(find_config_file(self.config_path))
            except ConfigError as exc:
                click.echo(f"mailyard: {exc}", err=True)
                sys.exit(2)
        return self._settings


def _set_config(ctx: click.Context, _param: Any, value: str | None) -> str | None:
    if value:
        ctx.ensure_object(CliState).config_path = value
    return value


def config_option(func: Callable) -> Callable:
    """`-c FILE` on a subcommand (the same as on the `mailyard` group)."""
    return click.option("-c", "--config", "config_path", metavar="FILE", expose_value=False,
                        callback=_set_config, is_eager=True,
                        help="Config file (default ./mailyard.toml, else built-in defaults).")(func)


def json_option(func: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True,
                        help="Machine-readable output (JSON) for programs.")(func)


def pass_settings(func: Callable) -> Callable:
    """Inject `settings` (loaded once, exit 2 with a one-line message when bad)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = click.get_current_context().ensure_object(CliState)
        return func(state.settings, *args, **kwargs)

    return wrapper


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=False))


def fail(message: str, code: int = 1) -> None:
    """Print `mailyard: message` to stderr and exit with `code`."""
    click.echo(f"mailyard: {message}", err=True)
    sys.exit(code)
