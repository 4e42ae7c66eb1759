"""`llmkit plan STACK`: run the Pulumi program offline and summarise (or dump) its graph."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.table import Table

from llmkit.commands import exit_without_collecting, make_console
from llmkit.commands.policy import (
    POLICY_CONFIG_HELP,
    exit_code,
    load_policy_config,
    load_rules,
    print_report,
)
from llmkit.plan import OnRegister, find_project_dir, run_plan, summarise, write_graph
from llmkit.policy import evaluate, resources_from_graph

REGION_RULE = "aws-provider-region-enforce-allowlist"


def on_a_terminal() -> bool:
    """Whether a person is watching: stdout and stderr both a terminal (not a pipe, a file or CI)."""
    return sys.stdout.isatty() and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class _Registered:
    """The progress line: how many resources the program has registered so far."""

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.count = 0

    def __call__(self, count: int) -> None:
        self.count = count  # rendered by the status line's own refresh, a few times a second

    def __rich__(self) -> str:
        return f"planning {self.stack}: {self.count} resource{'' if self.count == 1 else 's'} registered"


@contextmanager
def progress(stack: str, shown: bool) -> Iterator[OnRegister | None]:
    """A transient status line on stderr while the program runs, when ``shown``; else nothing."""
    if not shown:
        yield None
        return
    from rich.console import Console

    registered = _Registered(stack)
    with Console(stderr=True, highlight=False).status(registered):
        yield registered


@click.command()
@click.argument("stack")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the full resource graph (type, name, parent, inputs; secrets redacted) to FILE.",
    metavar="FILE",
)
@click.option(
    "--policy-only",
    is_flag=True,
    help="Print only the policy violations (no resources, sizing or outputs).",
)
@click.option(
    "--policy-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help=POLICY_CONFIG_HELP,
    metavar="FILE",
)
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The Pulumi project (default: the directory holding Pulumi.yaml, from the current one up).",
)
def plan(
    stack: str,
    json_path: Path | None,
    policy_only: bool,
    policy_config: Path | None,
    project_dir: Path | None,
) -> None:
    """Plan STACK offline: no cloud account, no Pulumi CLI.

    Validates stacks/Pulumi.STACK.yaml, runs the Pulumi program on Pulumi's mock runtime,
    prints resources per component, the sizing decisions and the outputs, and evaluates the
    policy pack (policies/) over the planned graph. Exit 1 when a mandatory rule is violated.
    On a terminal, a status line counts the resources registered while the program runs.
    """
    settings = load_policy_config(policy_config)  # a bad file stops before planning
    exit_without_collecting()  # after a plan the heap is ~200 MB: 1 s of shutdown collections
    with progress(stack, on_a_terminal()) as on_register:
        result = run_plan(stack, find_project_dir(project_dir), on_register=on_register)
    # Data residency: unless the settings file says otherwise, the stack's own allow-list.
    residency = settings.setdefault(REGION_RULE, {})
    residency.setdefault("allowed_regions", list(result.config.allowed_regions))
    report = evaluate(resources_from_graph(result.to_graph()), load_rules(), settings)
    console = make_console()
    if json_path is not None:
        write_graph(result, json_path)
    if policy_only:
        print_report(console, report)
        sys.exit(exit_code(report))
    summary = summarise(result)

    components = Table(
        title=f"stack {stack} in {summary['region']}", caption=f"{summary['resources']} resources in all"
    )
    components.add_column("component")
    components.add_column("resources", justify="right")
    for name, count in summary["components"].items():
        components.add_row(name, str(count))
    console.print(components)

    sizing = Table(title="sizing decisions")
    for col in ("model", "quant", "context", "conc.", "instance", "GPUs", "need/GPU", "cap/GPU", "replicas"):
        sizing.add_column(col)
    for s in summary["sizing"]:
        sizing.add_row(
            s["model"],
            s["quantization"],
            str(s["context_length"]),
            str(s["concurrency"]),
            s["instance_type"],
            s["gpus"],
            f"{s['per_gpu_need_gib']:.2f} GiB",
            f"{s['per_gpu_capacity_gib']:.2f} GiB",
            f"{s['replicas']['min']}..{s['replicas']['max']}",
        )
    console.print(sizing)

    outputs = Table(title="outputs")
    outputs.add_column("name")
    outputs.add_column("value", overflow="fold")
    for name, value in summary["outputs"].items():
        if isinstance(value, list):
            outputs.add_row(name, "\n".join(_compact(v) for v in value))
        else:
            outputs.add_row(name, value if isinstance(value, str) else _compact(value))
    console.print(outputs)

    if json_path is not None:
        console.print(f"graph: {len(result.resources)} resources written to {json_path}")
    console.print(f"planned in {summary['seconds']} s ({summary['cpu_seconds']} s CPU)")
    print_report(console, report)
    sys.exit(exit_code(report))


def _compact(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
