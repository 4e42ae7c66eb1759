"""`llmkit size MODEL`: the memory a model needs, term by term, and the instance types that hold it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from llmkit.catalog import DEFAULT_RUNTIME, load_catalog
from llmkit.commands import exit_without_collecting, make_console
from llmkit.errors import EXIT_FINDINGS
from llmkit.sizing import (
    ACTIVATION_BYTES,
    DEFAULT_HEADROOM,
    GIB,
    HOURS_PER_MONTH,
    LOGIT_BYTES,
    MIB,
    SizingResult,
    activation_tokens,
    mlp_width,
)
from llmkit.sizing import size as size_model

if TYPE_CHECKING:
    from rich.table import Table


def _b(n: int) -> str:
    return f"{n:,} B"


def _gib(n: int) -> str:
    return f"{n / GIB:,.2f} GiB"


def _arithmetic(result: SizingResult) -> list[str]:
    """The formula with this case's numbers, one term at a time."""
    catalog = load_catalog()
    m = catalog.models[result.model]
    q = catalog.quantizations[result.quantization]
    r = catalog.runtimes[result.runtime]
    b = result.breakdown
    ctx, conc = result.context_length, result.concurrency
    lines = [
        f"[bold]{m.name}[/] ({m.display_name}), {q.name}, runtime {r.name}, "
        f"context {ctx:,} x {conc} concurrent sequence(s), headroom {result.headroom:.0%}",
        "",
        f"[bold]weights[/]      {m.params:,} params x {q.bits_per_weight:g} bits / 8 "
        f"= {_b(b.weights_bytes)} ({_gib(b.weights_bytes)})"
        + ("  (MoE: all experts resident)" if m.is_moe else ""),
    ]
    if m.mla is not None:
        lines.append(
            f"[bold]KV cache[/]     {m.layers} layers x ({m.mla.kv_lora_rank} kv_lora_rank + "
            f"{m.mla.qk_rope_head_dim} qk_rope_head_dim) x {r.kv_cache_bytes} B "
            f"= {_b(b.kv_bytes_per_token)} per token  (MLA latent cache)"
        )
    else:
        lines.append(
            f"[bold]KV cache[/]     {m.layers} layers x {m.kv_heads} kv_heads x {m.head_dim} head_dim "
            f"x 2 (K,V) x {r.kv_cache_bytes} B = {_b(b.kv_bytes_per_token)} per token"
        )
    lines.append(
        f"             x {ctx:,} context x {conc} sequence(s) "
        f"= {_b(b.kv_cache_bytes)} ({_gib(b.kv_cache_bytes)})"
    )
    tokens = activation_tokens(ctx, conc, r.batch_tokens)
    width = mlp_width(m)
    width_text = (
        f"{m.moe.moe_intermediate_size} x {m.moe.experts_per_token} experts"
        if m.moe is not None
        else f"{width}"
    )
    workspace = tokens * (m.hidden_size * 4 + width * 2) * ACTIVATION_BYTES
    logits = conc * m.vocab_size * LOGIT_BYTES
    lines += [
        f"[bold]activations[/]  min({ctx:,} x {conc}, batch {r.batch_tokens:,}) = {tokens:,} tokens "
        f"x ({m.hidden_size} hidden x 4 + {width_text} x 2) x {ACTIVATION_BYTES} B = {_b(workspace)}",
        f"             + logits {conc} x {m.vocab_size:,} vocab x {LOGIT_BYTES} B = {_b(logits)}",
        f"             = {_b(b.activation_bytes)} ({_gib(b.activation_bytes)})",
        f"[bold]overhead[/]     {r.per_gpu_overhead_mib} MiB x {MIB:,} B "
        f"= {_b(b.per_gpu_overhead_bytes)} per GPU",
        f"[bold]total[/]        on one GPU: {_b(b.total_bytes(1))} ({_gib(b.total_bytes(1))})",
        "             per GPU at tensor-parallel degree tp: "
        "(weights + KV cache + activations) / tp + overhead",
    ]
    return lines


def _choices_table(result: SizingResult, top: int) -> Table:
    from rich.table import Table  # imported when a table is printed: not for --json, not for --help

    pricing = load_catalog().pricing
    table = Table(
        title=f"cheapest instance types that fit: {min(top, len(result.choices))} of {len(result.choices)}"
    )
    prices = (f"$/h {pricing.region}", f"$/month {pricing.region}")
    for col in ("#", "instance", "GPU x count", "TP", "need / capacity per GPU", "util.", *prices):
        table.add_column(col, justify="right" if col in ("#", "TP", "util.", *prices) else "left")
    for rank, c in enumerate(result.choices[:top], start=1):
        mark = "*" if c.price_unverified else ""
        table.add_row(
            str(rank),
            c.instance_type,
            f"{c.gpu} x {c.gpu_count}",
            str(c.tensor_parallel),
            f"{_gib(c.per_gpu_need_bytes)} / {_gib(c.per_gpu_capacity_bytes)}",
            f"{c.utilisation:.0%}",
            f"{c.price_usd_hour:,.2f}{mark}",
            f"{c.price_usd_month:,.0f}{mark}",
        )
    return table


@click.command()
@click.argument("model")
@click.option("--quant", "quantization", default="q4_K_M", show_default=True, help="Quantization.")
@click.option(
    "--context", "context_length", type=int, default=8192, show_default=True, help="Context length."
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Concurrent sequences, each with a full context.",
)
@click.option("--runtime", default=DEFAULT_RUNTIME, show_default=True, help="Serving runtime (ollama, vllm).")
@click.option(
    "--headroom",
    type=float,
    default=DEFAULT_HEADROOM,
    show_default=True,
    help="Fraction of each GPU's memory kept free.",
)
@click.option("--instance-type", default=None, help="Consider only this instance type.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Choices to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON only.")
@click.pass_context
def size(
    ctx: click.Context,
    model: str,
    quantization: str,
    context_length: int,
    concurrency: int,
    runtime: str,
    headroom: float,
    instance_type: str | None,
    top: int,
    as_json: bool,
) -> None:
    """Size MODEL: weights, KV cache, activations and overhead, and the cheapest instances that hold it.

    MODEL is a catalog name (an Ollama tag such as deepseek-r1:32b); a name without a tag
    (deepseek-v3) means what `ollama pull` would fetch, or the only catalog entry of that name,
    and is refused with the matching tags otherwise. Exits 0 when something fits, 1 when
    nothing does (the arithmetic and what to change are printed), 2 on bad input.
    """
    exit_without_collecting()
    result = size_model(
        model,
        quantization,
        context_length=context_length,
        concurrency=concurrency,
        runtime=runtime,
        headroom=headroom,
        instance_type=instance_type,
    )
    if as_json:
        import json

        click.echo(json.dumps(result.to_dict(), indent=2))
        if not result.fits:
            ctx.exit(EXIT_FINDINGS)
        return

    console = make_console()
    if result.model != model:
        console.print(load_catalog().resolve_model(model)[1], markup=False)
    for line in _arithmetic(result):
        console.print(line)
    console.print()
    if not result.fits:
        console.print("[bold red]nothing fits[/]")
        console.print(result.explain_nothing_fits(), markup=False)
        if instance_type is not None:
            for name, reason in result.rejected:
                console.print(f"{name}: {reason}", markup=False)
        ctx.exit(EXIT_FINDINGS)

    console.print(_choices_table(result, top))
    best = result.best
    pricing = load_catalog().pricing
    console.print(
        f"best: [bold]{best.instance_type}[/] ({best.gpu} x {best.gpu_count}, tp={best.tensor_parallel}), "
        f"{pricing.describe(best.price_usd_hour, HOURS_PER_MONTH)}"
    )
    console.print(
        f"prices: on-demand Linux, {pricing.region}, recorded {pricing.recorded} ({pricing.source}); "
        "a stack in another region pays that region's prices",
        markup=False,
    )
    if pricing.note:
        console.print(f"note: {pricing.note}", markup=False)
    if any(c.price_unverified for c in result.choices[:top]):
        console.print("* price unverified (see the note)", markup=False)
