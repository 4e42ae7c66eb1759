"""`llmkit plan STACK`: run the Pulumi program offline and summarise (or dump) its graph."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from llmkit.commands import make_console
from llmkit.plan import find_project_dir, run_plan, summarise, write_graph


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
    "--project-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The Pulumi project (default: the directory holding Pulumi.yaml, from the current one up).",
)
def plan(stack: str, json_path: Path | None, project_dir: Path | None) -> None:
    """Plan STACK offline: no cloud account, no Pulumi CLI.

    Validates stacks/Pulumi.STACK.yaml, runs the Pulumi program on Pulumi's mock runtime,
    and prints resources per component, the sizing decisions and the outputs.
    """
    result = run_plan(stack, find_project_dir(project_dir))
    summary = summarise(result)
    console = make_console()

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
        write_graph(result, json_path)
        console.print(f"graph: {len(result.resources)} resources written to {json_path}")
    console.print(f"planned in {summary['seconds']} s")


def _compact(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
