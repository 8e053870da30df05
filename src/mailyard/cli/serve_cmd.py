"""`mailyard serve`."""

from __future__ import annotations

import click

from mailyard.cli.common import config_option, fail, pass_settings
from mailyard.config import ConfigError
from mailyard.server.services import SERVICES


@click.command()
@config_option
@click.option("--only", metavar="SERVICE,...",
              help="Run only these services (e.g. --only filter or --only smtp,lmtp).")
@pass_settings
def serve(settings, only: str | None) -> None:
    """Run mailyard: every service enabled under [listen] in one process.

    SIGTERM or Ctrl-C drains open sessions (up to server.shutdown_timeout seconds) and exits;
    SIGHUP reloads the config and the accounts.
    """
    from mailyard import log

    selected = None
    if only:
        selected = {s.strip() for s in only.split(",") if s.strip()}
        unknown = selected - set(SERVICES)
        if unknown:
            fail(f"--only: unknown service {', '.join(sorted(unknown))} "
                 f"(known: {', '.join(SERVICES)})", 2)
    log.setup(settings.server.log_level)
    from mailyard.server import pool

    if pool.enabled_pool_services(settings, selected):
        # The pool's fork server imports the scanning code and preloads (a signature
        # database) while this process imports asyncio and the services and binds.
        pool.start_fork_server(settings, selected)
    from mailyard.server.app import run

    try:
        run(settings, selected)
    except ConfigError as exc:
        fail(str(exc), 2)
