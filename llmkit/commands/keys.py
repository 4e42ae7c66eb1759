"""`llmkit keys issue|list|revoke|rotate`: the gateway's virtual keys, through LiteLLM's key API.

A key's limits (models, routes, expiry, budget, rpm/tpm) come from its role in the stack's
``llmkit:gateway.roles`` (:func:`llmkit.gateway.key_request`), never from the command line. The
HTTP client, the master key's sources and the rotation are explained in
:mod:`llmkit.gateway_client`.

Output: a new key is printed once, alone on stdout (or written to a 0600 file); everything else
goes to stderr. Exit codes: 0 ok, 1 the gateway (or the way to it) failed, 2 usage or
configuration error found before any request.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from llmkit import pki
from llmkit.commands import UserErrorGroup, make_console
from llmkit.config import Gateway, load_stack, load_stack_file, read_yaml
from llmkit.errors import EXIT_FINDINGS, ConfigError, ConfigErrors, LlmkitError
from llmkit.gateway import MASTER_KEY_ENV, key_request
from llmkit.gateway_client import (
    ALIAS_PATTERN,
    URL_ENV,
    GatewayClient,
    KeyRecord,
    NewKey,
    check_alias,
    check_token,
    grace_to_seconds,
    parse_url,
    resolve_master_key,
    rotate,
    tls_context,
)
from llmkit.plan import find_project_dir
from llmkit.untrusted import printable

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)


def _gateway_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--url, TLS and the master key's source: what every subcommand needs to reach the gateway."""
    options = [
        click.option(
            "--url",
            envvar=URL_ENV,
            metavar="URL",
            help=f"The gateway's base URL, https://HOST[:PORT] (default: ${URL_ENV}).",
        ),
        click.option(
            "--ca", type=_FILE, metavar="FILE", help="The CA that signed the gateway's certificate (PEM)."
        ),
        click.option(
            "--server-name",
            metavar="NAME",
            help="Verify the certificate for NAME instead of the URL's host (a tunnel, a port-forward).",
        ),
        click.option("--cert", type=_FILE, metavar="FILE", help="A client certificate, for mutual TLS."),
        click.option(
            "--key",
            "client_key",
            type=_FILE,
            metavar="FILE",
            help="The client certificate's private key (default: in --cert).",
        ),
        click.option(
            "--master-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help=f"The master key in a file of mode 0600 (alone, or an env file's {MASTER_KEY_ENV}= line).",
        ),
        click.option(
            "--master-key-secret",
            metavar="ARN|NAME",
            help="Read the master key from AWS Secrets Manager (llmkit/STACK/gateway/master-key). "
            f"Default source: ${MASTER_KEY_ENV}.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=1, max=600),
            default=30.0,
            show_default=True,
            help="Seconds to wait for each answer.",
        ),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def _config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the roles come from: a stack, or a file holding llmkit:gateway."""
    options = [
        click.option("--stack", metavar="STACK", help="Take the roles from stacks/Pulumi.STACK.yaml."),
        click.option(
            "--gateway-config",
            type=_FILE,
            metavar="FILE",
            help="Take the roles from FILE: a Pulumi stack file, or YAML holding the llmkit:gateway mapping.",
        ),
        click.option(
            "--project-dir",
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            help="The Pulumi project, for --stack (default: the directory holding Pulumi.yaml).",
        ),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


def _client(
    *,
    url: str | None,
    ca: Path | None,
    server_name: str | None,
    cert: Path | None,
    client_key: Path | None,
    master_key_file: Path | None,
    master_key_secret: str | None,
    timeout: float,
) -> GatewayClient:
    endpoint = parse_url(url)
    if endpoint.scheme == "http" and (ca or cert or server_name):
        raise ConfigError(
            key="--url", value=url, accepted="an https:// URL", message="--ca/--cert/--server-name need https"
        )
    context = tls_context(ca=ca, cert=cert, key=client_key)
    master_key = resolve_master_key(file=master_key_file, secret=master_key_secret)
    return GatewayClient(endpoint, master_key, context=context, server_name=server_name, timeout=timeout)


def _gateway_section(path: Path) -> Gateway:
    """llmkit:gateway from FILE: a Pulumi stack file, ``{llmkit:gateway: {...}}`` or the mapping itself."""
    try:
        document = read_yaml(path)  # within the limits on size and aliases
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            key="--gateway-config", value=str(path), accepted="a YAML file", message=problem
        ) from None
    if isinstance(document, dict) and "config" in document:
        config = load_stack_file(path)
        if config.gateway is None:
            raise ConfigError(
                key="llmkit:gateway",
                value=None,
                accepted="a llmkit:gateway section",
                message="the stack has no gateway",
                source=str(path),
            )
        return config.gateway
    if isinstance(document, dict) and "llmkit:gateway" in document:
        document = document["llmkit:gateway"]
    if not isinstance(document, dict):
        raise ConfigError(
            key="--gateway-config",
            value=str(path),
            accepted="a mapping: the llmkit:gateway section (aliases, roles, ...)",
            message="not a mapping",
        )
    try:
        return Gateway.model_validate(document)
    except ValidationError as exc:
        errors = [
            ConfigError(
                key="llmkit:gateway" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]),
                value=e.get("input"),
                accepted="see docs/configuration.md",
                message=e["msg"],
            )
            for e in exc.errors()
        ]
        raise ConfigErrors(errors, source=str(path)) from None


def _load_gateway(stack: str | None, gateway_config: Path | None, project_dir: Path | None) -> Gateway:
    if (stack is None) == (gateway_config is None):
        raise ConfigError(
            key="--stack",
            value=stack,
            accepted="exactly one of --stack STACK or --gateway-config FILE",
            message="the roles' limits come from the stack's llmkit:gateway",
        )
    if gateway_config is not None:
        return _gateway_section(gateway_config)
    assert stack is not None
    config = load_stack(stack, find_project_dir(project_dir))
    if config.gateway is None:
        raise ConfigError(
            key="llmkit:gateway",
            value=None,
            accepted="a stack with a llmkit:gateway section",
            message=f"stack {stack} has no gateway",
        )
    return config.gateway


def _emit(new: NewKey, output: Path | None) -> None:
    """The secret, once: alone on stdout, or in a new 0600 file."""
    if output is None:
        click.echo(new.secret)
        return
    if not output.parent.is_dir():
        raise ConfigError(
            key="--output",
            value=str(output),
            accepted="a file in an existing directory",
            message="no such directory",
        )
    pki.ensure_not_tracked(output.parent, [output.name])
    pki.write_file(output, (new.secret + "\n").encode("ascii"), 0o600, replace=True)


def _when(value: dt.datetime | None) -> str:
    return f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M}" if value else "never"


def _describe(record: KeyRecord) -> str:
    """One line about a key; what the gateway said is shown as text (:func:`printable`)."""
    return printable(
        f"role {record.role or '-'}, models {', '.join(record.models) or 'all'}, "
        f"expires {_when(record.expires)} UTC, token {record.token[:12]}…"
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.group(cls=UserErrorGroup)
def keys() -> None:
    """The gateway's virtual keys: issue, list, revoke and rotate them (LiteLLM's /key API).

    A role's limits come from the stack's llmkit:gateway.roles. The gateway is --url (or
    $LLMKIT_GATEWAY_URL); the master key comes from $LITELLM_MASTER_KEY, --master-key-file (mode
    0600) or --master-key-secret (AWS Secrets Manager), never from the command line. The management
    API answers only from llmkit:gateway.admin_cidrs. Exit codes: 0 ok, 1 gateway error, 2 usage
    or configuration error.
    """


@keys.command()
@click.argument("role")
@click.option("--alias", required=True, help="The key's unique name (what revoke and rotate take).")
@click.option("--owner", help="Who the key is for (kept in its metadata).")
@click.option("--output", type=_OUT, metavar="FILE", help="Write the key to FILE (mode 0600), not stdout.")
@_config_options
@_gateway_options
def issue(
    role: str,
    alias: str,
    owner: str | None,
    output: Path | None,
    stack: str | None,
    gateway_config: Path | None,
    project_dir: Path | None,
    **gateway: Any,
) -> None:
    """Issue a key of ROLE; print it once on stdout (everything else goes to stderr)."""
    check_alias(alias)
    body = key_request(_load_gateway(stack, gateway_config, project_dir), role, alias=alias, owner=owner)
    client = _client(**gateway)
    new = client.generate(body)
    _emit(new, output)
    where = f" -> {output} (mode 0600)" if output else ""
    click.echo(f"issued {alias!r}{where}: {_describe(new.record)}; it is shown only once", err=True)


def _state(record: KeyRecord, now: dt.datetime) -> str:
    if record.expired(now):
        return "expired"
    if record.retired:
        return "retiring (rotated)"
    if record.is_due(now):
        return "due for rotation"
    return "ok"


def _spend(record: KeyRecord) -> str:
    budget = f"{record.max_budget:.2f}" if record.max_budget is not None else "-"
    return f"{record.spend:.2f}/{budget}"


@keys.command(name="list")
@click.option("--role", help="Only keys of this role.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON records (with each key's hash), not a table."
)
@_gateway_options
def list_keys(role: str | None, as_json: bool, **gateway: Any) -> None:
    """List the gateway's keys: alias, role, models, expiry, spend/budget, rpm (never a key)."""
    client = _client(**gateway)
    records = [r for r in client.list_keys() if role is None or r.role == role]
    records.sort(key=lambda r: (r.role or "~", r.alias or "~"))
    if as_json:
        click.echo(json.dumps([r.public() for r in records], indent=2))
        return
    now = _now()
    title = f"keys at {client.endpoint.url}" + (f" (role {role})" if role else "")
    table = Table(title=Text(printable(title)))
    table.add_column("alias", no_wrap=True)
    for name in ("role", "models", "expires (UTC)", "spend/budget $", "rpm", "state"):
        table.add_column(name, overflow="fold")
    for record in records:
        cells = (
            record.alias or f"({record.token[:12]}…)",
            record.role or "-",
            ", ".join(record.models) or "all",
            _when(record.expires),
            _spend(record),
            str(record.rpm_limit) if record.rpm_limit is not None else "-",
            _state(record, now),
        )
        # what the gateway says is text: no rich markup, no terminal escapes
        table.add_row(*(Text(printable(cell)) for cell in cells))
    console = make_console()
    console.print(table)
    console.print(f"{len(records)} key(s)")


@keys.command()
@click.argument("alias", required=False)
@click.option("--token", help="Revoke the key with this hash instead (`llmkit keys list --json`).")
@_gateway_options
def revoke(alias: str | None, token: str | None, **gateway: Any) -> None:
    """Revoke (delete) the key ALIAS, or the key whose hash is --token."""
    if (alias is None) == (token is None):
        raise ConfigError(
            key="ALIAS", value=alias, accepted="exactly one of ALIAS or --token HASH", message="which key?"
        )
    if token is not None:
        check_token(token)
    client = _client(**gateway)
    record = client.find(alias) if alias is not None else client.info(token or "")
    client.delete([record.token])
    click.echo(f"revoked {record.alias or '(no alias)'!r}: {_describe(record)}", err=True)


@keys.command(name="rotate")
@click.argument("alias", required=False)
@click.option("--due", is_flag=True, help="Rotate every key whose rotate_after_seconds has passed.")
@click.option("--role", help="With --due: only keys of this role.")
@click.option(
    "--grace",
    default="0",
    show_default=True,
    metavar="0|DURATION",
    help="Keep the old key valid this long (30m, 12h, 1d) so clients can switch; 0: revoke it at once.",
)
@click.option("--dry-run", is_flag=True, help="With --due: only list the keys that are due.")
@click.option(
    "--output", type=_OUT, metavar="FILE", help="Write the new key to FILE (mode 0600), not stdout."
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    metavar="DIR",
    help="With --due: write each new key to DIR/ALIAS.key (mode 0600), not stdout.",
)
@_config_options
@_gateway_options
def rotate_keys(
    alias: str | None,
    due: bool,
    role: str | None,
    grace: str,
    dry_run: bool,
    output: Path | None,
    output_dir: Path | None,
    stack: str | None,
    gateway_config: Path | None,
    project_dir: Path | None,
    **gateway: Any,
) -> None:
    """Replace the key ALIAS by a new one of the same role and alias (or every --due key).

    The new key is printed once on stdout (with --due: one `ALIAS<TAB>KEY` line per key). The old
    one is revoked at once, or after --grace. The limits are the role's in the stack today.
    """
    if (alias is None) == (not due):
        raise ConfigError(
            key="ALIAS", value=alias, accepted="exactly one of ALIAS or --due", message="which key?"
        )
    if due and output is not None:
        raise ConfigError(
            key="--output",
            value=str(output),
            accepted="--output-dir DIR with --due",
            message="one file, many keys",
        )
    if not due and (output_dir is not None or dry_run or role is not None):
        raise ConfigError(
            key="--due",
            value=False,
            accepted="--due",
            message="--output-dir, --dry-run and --role go with --due",
        )
    grace_to_seconds(grace)
    if alias is not None:
        check_alias(alias)
    gateway_section = _load_gateway(stack, gateway_config, project_dir)
    client = _client(**gateway)
    now = _now()
    if alias is not None:
        old = client.find(alias)
        _rotate_one(client, gateway_section, old, grace=grace, now=now, emit=lambda new: _emit(new, output))
        return
    candidates = [r for r in client.list_keys() if role is None or r.role == role]
    todo = [r for r in candidates if r.is_due(now) and not r.expired(now)]
    click.echo(f"{len(todo)} of {len(candidates)} key(s) due for rotation", err=True)
    failed = 0
    for old in sorted(todo, key=lambda r: r.alias or ""):
        if old.alias is None or old.role is None:
            click.echo(
                f"skipped {printable(old.token[:12])}…: not issued by `llmkit keys` (no alias or role)",
                err=True,
            )
            continue
        if not ALIAS_PATTERN.fullmatch(old.alias):  # it becomes a file name or a line of output
            click.echo(f"skipped {old.alias!r}: not an alias `llmkit keys` issues", err=True)
            continue
        if dry_run:
            click.echo(f"due: {old.alias!r} ({_describe(old)}, due since {_when(old.due_at)} UTC)", err=True)
            continue

        def emit(new: NewKey, name: str = old.alias) -> None:
            if output_dir is not None:
                _emit(new, output_dir / f"{name.replace('/', '_')}.key")
            else:
                click.echo(f"{name}\t{new.secret}")

        try:
            _rotate_one(client, gateway_section, old, grace=grace, now=now, emit=emit)
        except LlmkitError as exc:
            failed += 1
            click.echo(f"error: {old.alias!r}: {exc}", err=True)
    if failed:
        click.echo(f"{failed} rotation(s) failed", err=True)
        sys.exit(EXIT_FINDINGS)


def _rotate_one(
    client: GatewayClient,
    gateway: Gateway,
    old: KeyRecord,
    *,
    grace: str,
    now: dt.datetime,
    emit: Callable[[NewKey], None],
) -> None:
    if old.role is None:
        raise LlmkitError(
            f"key {old.alias!r} has no llmkit_role in its metadata: not issued by `llmkit keys`"
        )
    if old.retired:
        raise LlmkitError(f"key {old.alias!r} was already rotated; rotate the key that now has its alias")
    body = key_request(gateway, old.role, alias=old.alias, owner=old.owner)
    done = rotate(client, old, body, grace=grace, now=now, on_issued=emit)
    fate = (
        "revoked"
        if done.old_deleted
        else f"renamed {done.retired_alias!r}, valid until {_when(done.old_expires)} UTC"
    )
    click.echo(f"rotated {old.alias!r}: new key {_describe(done.new.record)}; old key {fate}", err=True)
