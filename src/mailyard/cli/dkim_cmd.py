"""`mailyard dkim generate|activate|record` and `mailyard dns-records DOMAIN`."""

from __future__ import annotations

import click

from mailyard.cli.common import config_option, emit_json, fail, json_option, pass_settings


def _txt_zone(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 octets each."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
    return " ".join(f'"{c}"' for c in chunks)


@click.group()
def dkim() -> None:
    """DKIM keys for signing mail from local domains."""


@dkim.command("generate")
@config_option
@click.argument("domain")
@click.option("--selector", help="Selector name (default: myYYYYMM); a new one rotates keys.")
@click.option("--bits", default=2048, show_default=True, type=click.IntRange(1024, 4096))
@click.option("--no-activate", is_flag=True, help="Create the key without signing with it "
              "yet (publish the record first, then `mailyard dkim activate`).")
@pass_settings
def dkim_generate(settings, domain: str, selector: str | None, bits: int,
                  no_activate: bool) -> None:
    """Create a DKIM key for DOMAIN and print the DNS TXT record to publish."""
    from mailyard.senderauth.dkim_sign import DkimKeyError, generate

    try:
        sel, record = generate(settings.data_path, domain, selector, bits,
                               activate=not no_activate)
    except (DkimKeyError, ValueError) as exc:
        fail(str(exc))
    click.echo(f"{sel}._domainkey.{domain}. IN TXT {_txt_zone(record)}")


@dkim.command("activate")
@config_option
@click.argument("domain")
@click.argument("selector")
@pass_settings
def dkim_activate(settings, domain: str, selector: str) -> None:
    """Sign DOMAIN's mail with SELECTOR from now on."""
    from mailyard.senderauth.dkim_sign import DkimKeyError, activate

    try:
        activate(settings.data_path, domain, selector)
    except DkimKeyError as exc:
        fail(str(exc))
    click.echo(f"{domain} now signs with selector {selector}")


@click.command("dns-records")
@config_option
@click.argument("domain")
@json_option
@pass_settings
def dns_records(settings, domain: str, as_json: bool) -> None:
    """Print the MX, SPF, DKIM and DMARC records DOMAIN must publish."""
    from mailyard.senderauth.dkim_sign import DkimKeyError, record_for

    host = settings.server.hostname
    records = [
        (f"{domain}.", "MX", f"10 {host}."),
        (f"{domain}.", "TXT", f"v=spf1 mx a:{host} -all"),
        (f"_dmarc.{domain}.", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"),
    ]
    note = None
    try:
        selector, record = record_for(settings.data_path, domain)
        records.insert(2, (f"{selector}._domainkey.{domain}.", "TXT", record))
    except DkimKeyError as exc:
        note = str(exc)
    if as_json:
        emit_json({"records": [{"name": n, "type": t, "value": v} for n, t, v in records],
                   "note": note})
        return
    for name, rtype, value in records:
        shown = _txt_zone(value) if rtype == "TXT" else value
        click.echo(f"{name} IN {rtype} {shown}")
    if note:
        click.echo(f"; {note}", err=True)
