"""`llmkit policy check GRAPH.json` and `llmkit policy catalogue`: the pack, for reviewers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from llmkit.commands import UserErrorGroup, make_console
from llmkit.errors import EXIT_FINDINGS, EXIT_OK, ConfigError
from llmkit.policy import Report, evaluate, load_rules, resources_from_graph

if TYPE_CHECKING:
    from rich.console import Console

POLICY_CONFIG_HELP = (
    "A JSON file of rule settings, {rule name: {setting: value}}: the same file "
    "`pulumi preview --policy-pack-config` takes. Defaults are the secure ones."
)


def load_policy_config(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            key="--policy-config", value=str(path), accepted="a readable JSON file", message=str(exc)
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            key="--policy-config",
            value=str(path),
            accepted="a JSON object {rule name: {setting: value}}",
            message="not a policy config",
        )
    return data


def print_report(console: Console, report: Report) -> None:
    """The violations table (rule, resource, message, severity) and a one-line verdict."""
    if report.violations:
        from rich.table import Table

        table = Table(title="policy violations")
        table.add_column("rule", no_wrap=True)  # rule names stay whole: reviewers grep for them
        for col in ("resource", "message", "severity", "enforcement"):
            table.add_column(col, overflow="fold")
        for v in sorted(
            report.violations, key=lambda v: (v.enforcement != "mandatory", v.rule, v.resource_name)
        ):
            table.add_row(
                v.rule,
                f"{v.resource_type.rsplit(':', 1)[-1]} {v.resource_name}",
                v.message,
                v.severity,
                v.enforcement,
            )
        console.print(table)
    mandatory = len(report.mandatory)
    advisory = len(report.violations) - mandatory
    skipped = f", {len(report.skipped)} checks skipped on unknown values" if report.skipped else ""
    verdict = "FAIL" if mandatory else "pass"
    console.print(
        f"policy: {verdict}: {len(report.rules)} rules, {mandatory} mandatory and {advisory} advisory "
        f"violations{skipped}"
    )


def exit_code(report: Report) -> int:
    return EXIT_FINDINGS if report.mandatory else EXIT_OK


@click.group(cls=UserErrorGroup)
def policy() -> None:
    """The policy pack (policies/): evaluate a plan graph, or write the rule catalogue.

    Exit codes: 0 ok (no mandatory rule violated; the catalogue written or up to date),
    1 findings (a mandatory rule violated; with `catalogue --check`, a catalogue out of date),
    2 usage or configuration error (a bad graph or settings file, an unknown rule or setting).
    """


@policy.command()
@click.argument("graph", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--policy-config", type=click.Path(dir_okay=False, exists=True, path_type=Path), help=POLICY_CONFIG_HELP
)
def check(graph: Path, policy_config: Path | None) -> None:
    """Evaluate every rule over GRAPH, a file written by `llmkit plan STACK --json GRAPH`.

    Exit 0 when no mandatory rule is violated, 1 when one is, 2 on a bad file.
    """
    try:
        data = json.loads(graph.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            key="GRAPH", value=str(graph), accepted="a JSON graph from llmkit plan --json", message=str(exc)
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            key="GRAPH",
            value=str(graph),
            accepted="a JSON graph from llmkit plan --json",
            message="not a JSON object",
        )
    report = evaluate(resources_from_graph(data), load_rules(), load_policy_config(policy_config))
    print_report(make_console(), report)
    sys.exit(exit_code(report))


@policy.command()
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Exit 1 if policies/README.md is out of date instead of writing it.",
)
def catalogue(check_only: bool) -> None:
    """Write policies/README.md, the catalogue of every rule, from the rules' metadata.

    Exit 0 when written (or, with --check, up to date), 1 with --check when it is out of date.
    """
    from llmkit.policy_catalogue import CATALOGUE_PATH, render_catalogue

    text = render_catalogue(load_rules())
    current = CATALOGUE_PATH.read_text(encoding="utf-8") if CATALOGUE_PATH.exists() else ""
    if check_only:
        if current != text:
            click.echo(f"{CATALOGUE_PATH} is out of date: run `llmkit policy catalogue`", err=True)
            sys.exit(EXIT_FINDINGS)
        click.echo(f"{CATALOGUE_PATH} is up to date")
        return
    CATALOGUE_PATH.write_text(text, encoding="utf-8")
    click.echo(f"wrote {CATALOGUE_PATH}")
