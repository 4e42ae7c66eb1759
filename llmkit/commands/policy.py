"""`llmkit policy check GRAPH.json` and `llmkit policy catalogue`: the pack, for reviewers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from llmkit.commands import UserErrorGroup, make_console
from llmkit.errors import EXIT_FINDINGS, EXIT_OK, ConfigError
from llmkit.policy import Report, Rule, RuleFailed, evaluate, resources_from_graph

if TYPE_CHECKING:
    from rich.console import Console

#: A plan graph of a large stack is a few MB; a file far larger is not one (and is not read).
MAX_GRAPH_BYTES = 256 * 1024 * 1024

POLICY_CONFIG_HELP = (
    "A JSON file of rule settings, {rule name: {setting: value}}: the same file "
    "`pulumi preview --policy-pack-config` takes. Defaults are the secure ones."
)


def load_rules() -> list[Rule]:
    """The pack's rules, from ``policies/rules/`` beside the llmkit package.

    The engine (:mod:`llmkit.policy`) never imports the rules (they import it): the commands that
    run it load them here and pass them in.
    """
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from policies.rules import load_rules as pack_rules

    return pack_rules()


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
    """The violations table (rule, resource, message, severity) and a one-line verdict.

    Names and messages carry text from the graph: they are printed as plain text (no rich markup)
    with terminal control characters shown as escapes.
    """
    if report.violations:
        from rich.table import Table
        from rich.text import Text

        from llmkit.untrusted import printable

        table = Table(title="policy violations")
        table.add_column("rule", no_wrap=True)  # rule names stay whole: reviewers grep for them
        for col in ("resource", "message", "severity", "enforcement"):
            table.add_column(col, overflow="fold")
        for v in sorted(
            report.violations, key=lambda v: (v.enforcement != "mandatory", v.rule, v.resource_name)
        ):
            where = "the stack" if v.of_stack else f"{v.resource_type.rsplit(':', 1)[-1]} {v.resource_name}"
            cells = (v.rule, where, v.message, v.severity, v.enforcement)
            table.add_row(*(Text(printable(cell)) for cell in cells))
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

    Exit 0 when no mandatory rule is violated, 1 when one is (an empty graph lacks what every
    stack must have), 2 on a bad file: not JSON, not a graph, or resources of the wrong shape.
    """
    source = str(graph)
    data = read_graph(graph)
    resources = resources_from_graph(data, source=source)
    settings = load_policy_config(policy_config)
    try:
        report = evaluate(resources, load_rules(), settings)
    except RuleFailed as exc:
        raise ConfigError(
            key=f"resource {exc.urn}" if exc.urn else "resources",
            value=f"{type(exc.cause).__name__}: {exc.cause}",
            accepted="the inputs `llmkit plan --json` writes for each resource type",
            message=f"rule {exc.rule} cannot read them",
            source=source,
        ) from None
    print_report(make_console(), report)
    sys.exit(exit_code(report))


def read_graph(path: Path) -> Any:
    """The JSON in ``path``, within :mod:`llmkit.untrusted`'s bounds (nesting, numbers); a
    :class:`ConfigError` naming the file when it is too large, unreadable or not such JSON."""
    from llmkit.untrusted import parse_json

    accepted = "a JSON graph from llmkit plan --json"

    def bad(problem: str) -> ConfigError:
        return ConfigError(key="GRAPH", value=path.name, accepted=accepted, message=problem, source=str(path))

    try:
        size = path.stat().st_size
        if size > MAX_GRAPH_BYTES:
            raise bad(f"{size} bytes is too large for a plan graph (at most {MAX_GRAPH_BYTES})")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"not JSON (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise bad(f"not readable ({exc.strerror or exc})") from None

    def refused(message: str) -> ConfigError:
        return bad(message.removeprefix("GRAPH: "))

    return parse_json(text, "GRAPH", error=refused, not_json="not JSON")


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
