"""`newsletter dkim keygen` and `newsletter dns check`: the keys that sign our mail and the DNS
behind them."""

from __future__ import annotations

import os
from pathlib import Path

import click

from newsletter.cli.common import CliError, reports_errors, settings_from
from newsletter.delivery.dkim_keys import KEY_TYPES, DkimKey, dkim_domain, generate_key, private_pem
from newsletter.delivery.dnscheck import check_dns, make_resolver


@click.group("dkim")
def dkim_group() -> None:
    """DKIM keys: the service signs every mail it sends with them."""


@dkim_group.command("keygen")
@click.option(
    "--selector",
    required=True,
    help="The selector the key is published under (<selector>._domainkey.<domain>).",
)
@click.option(
    "--type",
    "kind",
    type=click.Choice(KEY_TYPES),
    default="ed25519",
    show_default=True,
    help="ed25519 (RFC 8463, short) or rsa (2048 bits, read by every receiver).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the private key (default dkim/<selector>.pem).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@click.pass_context
@reports_errors
def keygen(ctx: click.Context, selector: str, kind: str, out: str | None, force: bool) -> None:
    """Write a new private key (mode 0600) and print the DNS TXT record to publish."""
    settings = settings_from(ctx)
    path = Path(out or f"dkim/{selector}.pem")
    if path.exists() and not force:
        raise CliError(
            f"{path} already exists",
            hint="Pass --force to replace it (mail signed with the old key then fails until DNS has the new"
            " record), or choose another --selector.",
        )
    key = DkimKey(selector, generate_key(kind))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key.private))
    os.chmod(path, 0o600)
    domain = dkim_domain(settings)
    click.echo(f"Private key ({kind}) written to {path} (mode 0600).")
    click.echo(f"\nPublish this TXT record at {selector}._domainkey.{domain}:\n")
    record = key.txt_record()
    # A zone file's TXT string holds at most 255 octets: a 2048-bit key's record is given as several strings.
    strings = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    click.echo(f"{selector}._domainkey.{domain}. 3600 IN TXT {strings}")
    click.echo(
        f'\nThen set mail.dkim_selector = "{selector}" and mail.dkim_key_file = "{path}"'
        " and run 'newsletter dns check'."
    )


@click.group("dns")
def dns_group() -> None:
    """The DNS records receivers check: SPF, DKIM, DMARC, MX."""


@dns_group.command("check")
@click.option(
    "--relay",
    "relays",
    multiple=True,
    help="IP address of the server that hands our mail out (repeatable); SPF must pass it.",
)
@click.option(
    "--nameserver",
    default=None,
    help="Ask this server (host[:port]) instead of mail.dns_server / the system resolver.",
)
@click.pass_context
@reports_errors
def dns_check(ctx: click.Context, relays: tuple[str, ...], nameserver: str | None) -> None:
    """Look up SPF, the DKIM key of each selector, DMARC and the bounce domain's MX; one line each
    with the fix.

    Exits 1 when a record is missing or wrong.
    """
    settings = settings_from(ctx)
    resolver = make_resolver(nameserver if nameserver is not None else settings.mail.dns_server)
    findings = check_dns(settings, resolver, relays)
    for finding in findings:
        click.echo(finding.render())
    failed = sum(f.status == "fail" for f in findings)
    if failed:
        raise CliError(
            f"{failed} DNS problem(s) above",
            hint="Publish the records named above; DNS changes can take the record's TTL to be seen.",
        )
