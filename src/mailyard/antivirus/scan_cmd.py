"""`mailyard scan`: clamscan's command line, on the built-in engine.

Output and exit codes follow clamscan so scripts written for it keep working:
`PATH: OK`, `PATH: NAME FOUND` (one line per name with --allmatch), a summary unless
--no-summary; exit 0 when everything is clean, 1 when something was found, 2 on an error
(an unreadable path wins over a find, as in clamscan).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from mailyard.cli.common import CliState, config_option


def _yes_no(ctx, param, value):
    if value is None:
        return True
    if value.lower() in ("yes", "y", "true", "1"):
        return True
    if value.lower() in ("no", "n", "false", "0"):
        return False
    raise click.BadParameter("must be yes or no")


@click.command("scan", context_settings={"ignore_unknown_options": False})
@config_option
@click.option("--db", "-d", "--database", "databases", multiple=True, metavar="DIR",
              help="Signature database directory or file (repeatable; default "
                   "[antivirus] databases).")
@click.option("-r", "--recursive", is_flag=True, help="Scan directories recursively.")
@click.option("-z", "--allmatch", is_flag=True, help="Keep scanning after a match; "
              "report every signature that matches.")
@click.option("--scan-archive", default=None, metavar="yes|no", callback=_yes_no,
              help="Look inside archives (default yes).")
@click.option("--scan-mail", default=None, metavar="yes|no", callback=_yes_no,
              help="Look inside mail messages (default yes).")
@click.option("--no-summary", is_flag=True, help="Do not print the scan summary.")
@click.option("-i", "--infected", is_flag=True, help="Only print infected files.")
@click.argument("paths", nargs=-1, required=True)
def scan(databases, recursive, allmatch, scan_archive, scan_mail, no_summary, infected,
         paths):
    """Scan files for viruses, like clamscan (PATH - reads standard input)."""
    from mailyard.antivirus.engine import (
        ENGINE_VERSION,
        ScanOptions,
        VirusEngine,
        cache_dir_for,
        limits_from_settings,
    )

    settings = click.get_current_context().ensure_object(CliState).settings
    database = list(databases) or settings.antivirus.databases or None
    started = time.time()
    try:
        # A configured server's data_dir holds the compiled-signature cache; reuse it.
        cache = cache_dir_for(settings) if settings.data_path.is_dir() else None
        engine = VirusEngine(database, limits_from_settings(settings), cache_dir=cache)
    except (FileNotFoundError, OSError) as exc:
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(2)
    for problem in engine.errors:
        click.echo(f"WARNING: {problem}", err=True)
    options = ScanOptions(allmatch=allmatch, scan_archives=scan_archive, scan_mail=scan_mail)
    counts = {"files": 0, "dirs": 0, "infected": 0, "bytes": 0, "errors": 0}

    def report(label: str, data: bytes) -> None:
        counts["files"] += 1
        counts["bytes"] += len(data)
        verdict = engine.scan_bytes(data, label, options)
        if verdict.infected:
            counts["infected"] += 1
            for name in (verdict.names if allmatch else verdict.names[:1]):
                click.echo(f"{label}: {name} FOUND")
        elif not infected:
            click.echo(f"{label}: OK")

    def scan_file(path: Path, label: str) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            counts["errors"] += 1
            click.echo(f"{label}: {exc.strerror or exc}", err=True)
            click.echo(f"WARNING: {label}: Can't access file", err=True)
            return
        report(label, data)

    def scan_dir(path: Path, label: str) -> None:
        counts["dirs"] += 1
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            counts["errors"] += 1
            click.echo(f"{label}: {exc.strerror or exc}", err=True)
            return
        for entry in entries:
            child = f"{label.rstrip('/')}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    scan_dir(Path(entry.path), child)
            elif entry.is_file():
                scan_file(Path(entry.path), child)

    for label in paths:
        if label == "-":
            report("stdin", sys.stdin.buffer.read())
            continue
        path = Path(label)
        if path.is_dir():
            scan_dir(path, label)
        elif path.is_file():
            scan_file(path, label)
        elif path.exists():  # a FIFO or device: reading it could block forever
            counts["errors"] += 1
            click.echo(f"WARNING: {label}: Not supported file type", err=True)
        else:
            counts["errors"] += 1
            click.echo(f"{label}: No such file or directory", err=True)
            click.echo(f"WARNING: {label}: Can't access file", err=True)
    if not no_summary:
        elapsed = time.time() - started
        megabytes = counts["bytes"] / (1024 * 1024)
        click.echo("\n----------- SCAN SUMMARY -----------")
        click.echo(f"Known viruses: {engine.signature_count}")
        click.echo(f"Engine version: {ENGINE_VERSION}")
        click.echo(f"Scanned directories: {counts['dirs']}")
        click.echo(f"Scanned files: {counts['files']}")
        click.echo(f"Infected files: {counts['infected']}")
        if counts["errors"]:
            click.echo(f"Total errors: {counts['errors']}")
        click.echo(f"Data scanned: {megabytes:.2f} MB")
        click.echo(f"Time: {elapsed:.3f} sec ({int(elapsed) // 60} m {int(elapsed) % 60} s)")
    if counts["errors"]:
        sys.exit(2)
    sys.exit(1 if counts["infected"] else 0)
