"""`llmkit pki init|issue|status DIR`: the internal CA and host certificates the playbooks deploy.

The layout, the key handling and the git guard are explained in :mod:`llmkit.pki`.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import click
from rich.table import Table

from llmkit import pki as lib
from llmkit.commands import UserErrorGroup, make_console
from llmkit.errors import EXIT_FINDINGS, EXIT_OK

_DIR = click.Path(file_okay=False, path_type=Path)
_KEY_TYPE = click.option(
    "--key-type",
    type=click.Choice(lib.KEY_TYPES),
    default="p256",
    show_default=True,
    help="ECDSA P-256, or Ed25519 (not every TLS client accepts it).",
)


@click.group(cls=UserErrorGroup)
def pki() -> None:
    """A private CA and the hosts' certificates (DIR/ca.crt, DIR/<NAME>.crt|.key).

    Keep DIR out of any repository: init writes DIR/.gitignore (*), and every command that writes
    a key refuses when git would not ignore it. Exit codes: 0 ok, 1 findings, 2 usage error.
    """


@pki.command()
@click.argument("directory", type=_DIR)
@_KEY_TYPE
@click.option(
    "--days", type=int, default=lib.DEFAULT_CA_DAYS, show_default=True, help="Validity of the CA certificate."
)
@click.option("--common-name", default=lib.DEFAULT_CA_COMMON_NAME, show_default=True, help="The CA's name.")
def init(directory: Path, key_type: str, days: int, common_name: str) -> None:
    """Create a CA in DIRECTORY (refused if one is there).

    DIRECTORY is created 0700; an existing one of yours is tightened to 0700, one owned by another
    user (or holding another user's files) is refused.
    """
    before = stat.S_IMODE(directory.stat().st_mode) if directory.is_dir() else None
    ca = lib.init_ca(directory, key_type=key_type, days=days, common_name=common_name)
    if before is not None and before & 0o077:
        click.echo(f"{directory} was mode {before:04o}: tightened to {lib.DIR_MODE:04o}")
    click.echo(
        f"CA created: {directory / lib.CA_CERT} (key {directory / lib.CA_KEY}, mode 0600), "
        f"valid until {ca.cert.not_valid_after_utc:%Y-%m-%d}"
    )


@pki.command()
@click.argument("directory", type=_DIR)
@click.argument("name")
@click.option("--server", is_flag=True, help="Extended key usage serverAuth.")
@click.option("--client", is_flag=True, help="Extended key usage clientAuth (both flags: both usages).")
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="DNS:NAME|IP:ADDR",
    help="A subject alternative name besides NAME itself (repeatable).",
)
@click.option(
    "--days", type=int, default=lib.DEFAULT_LEAF_DAYS, show_default=True, help="Validity of the certificate."
)
@_KEY_TYPE
@click.option("--force", is_flag=True, help="Replace an existing NAME.crt/NAME.key (renewal).")
def issue(
    directory: Path,
    name: str,
    server: bool,
    client: bool,
    sans: tuple[str, ...],
    days: int,
    key_type: str,
    force: bool,
) -> None:
    """Issue DIRECTORY/NAME.crt and NAME.key; NAME is the inventory host name."""
    issued = lib.issue(
        directory, name, server=server, client=client, sans=sans, days=days, key_type=key_type, force=force
    )
    click.echo(
        f"issued {issued.cert_path} ({lib.kind_of(issued.cert)}; {', '.join(lib.sans_of(issued.cert))}), "
        f"key {issued.key_path} (mode 0600), valid until {issued.cert.not_valid_after_utc:%Y-%m-%d}"
    )


@pki.command()
@click.argument("directory", type=_DIR)
@click.option(
    "--warn-days",
    type=click.IntRange(min=0),
    default=lib.DEFAULT_WARN_DAYS,
    show_default=True,
    help="Exit 1 when a certificate expires within this many days.",
)
def status(directory: Path, warn_days: int) -> None:
    """Every certificate in DIRECTORY; exit 1 if one is expired, expiring or otherwise wrong."""
    rows = lib.inspect(directory, warn_days=warn_days)
    table = Table(title=f"certificates in {directory}")
    table.add_column("name", no_wrap=True)
    table.add_column("kind")
    table.add_column("SANs", overflow="fold")
    table.add_column("not after (UTC)", no_wrap=True)
    table.add_column("days left", justify="right")
    table.add_column("status", overflow="fold")
    for row in rows:
        table.add_row(
            row.name,
            row.kind,
            ", ".join(row.sans) or "-",
            f"{row.not_after:%Y-%m-%d %H:%M}" if row.not_after else "-",
            str(row.days_left) if row.days_left is not None else "-",
            "ok" if row.ok else f"[red]{'; '.join(row.problems)}[/]",
        )
    console = make_console()
    console.print(table)
    bad = [r for r in rows if not r.ok]
    if bad:
        console.print(f"{len(bad)} of {len(rows)} certificate(s) need attention")
        sys.exit(EXIT_FINDINGS)
    console.print(f"{len(rows)} certificate(s) ok (none expires within {warn_days} days)")
    sys.exit(EXIT_OK)
