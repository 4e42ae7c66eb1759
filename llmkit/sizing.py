"""How much GPU memory a model needs, and the cheapest instance type that holds it.

Every number comes from the catalogs (``llmkit/data``); the formula is documented term by
term in ``docs/sizing.md`` and the tests check it to the byte. In short, for a model,
quantization, runtime, context length and number of concurrent sequences:

* weights    = ceil(params x bits_per_weight / 8)                       (all experts of a MoE)
* KV cache   = kv_bytes_per_token x context_length x concurrency, where
  kv_bytes_per_token = 2 x layers x kv_heads x head_dim x kv_cache_bytes            (GQA)
                     = layers x (kv_lora_rank + qk_rope_head_dim) x kv_cache_bytes  (MLA)
* activations = tokens x (hidden_size x 4 + mlp_width x 2) x 2 + concurrency x vocab_size x 4,
  tokens = min(context_length x concurrency, runtime.batch_tokens),
  mlp_width = intermediate_size (dense) or moe_intermediate_size x experts_per_token (MoE)
* overhead   = runtime.per_gpu_overhead_mib MiB on every GPU used

On an instance with tensor-parallel degree ``tp`` each GPU needs
``ceil((weights + KV cache + activations) / tp) + overhead`` bytes, which must not exceed
``floor(GPU memory x (1 - headroom))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from llmkit.catalog import DEFAULT_RUNTIME, Catalog, InstanceType, Model, Quantization, Runtime, load_catalog
from llmkit.errors import EXIT_FINDINGS, ConfigError, LlmkitError

MIB = 1024**2
GIB = 1024**3
HOURS_PER_MONTH = 730
TENSOR_PARALLEL_DEGREES = (1, 2, 4, 8)
DEFAULT_HEADROOM = 0.10
MAX_HEADROOM = 0.9
#: Activations are bf16: 2 bytes per value.
ACTIVATION_BYTES = 2
#: Logits are kept in fp32: 4 bytes per value.
LOGIT_BYTES = 4


# --------------------------------------------------------------------------- the terms


def _exact(value: float) -> Fraction:
    """A catalog or user number as written in decimal (0.1 is 1/10, 4.89 is 489/100)."""
    return Fraction(str(value))


def weights_bytes(model: Model, quant: Quantization) -> int:
    """params x bits_per_weight / 8, rounded up to whole bytes. MoE: every expert is resident."""
    return math.ceil(model.params * _exact(quant.bits_per_weight) / 8)


def kv_bytes_per_token(model: Model, runtime: Runtime) -> int:
    """Bytes of KV cache one token adds, over all layers.

    GQA: K and V, each ``kv_heads x head_dim`` values per layer. MLA (DeepSeek V3/R1): the
    compressed latent, ``kv_lora_rank + qk_rope_head_dim`` values per layer, as cached by
    runtimes that implement MLA (vLLM, SGLang); runtimes without MLA cache more.
    """
    if model.mla is not None:
        return model.layers * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * runtime.kv_cache_bytes
    return 2 * model.layers * model.kv_heads * model.head_dim * runtime.kv_cache_bytes


def mlp_width(model: Model) -> int:
    """Width of the MLP activations per token: the dense MLP, or the routed experts a token uses."""
    if model.moe is not None:
        return model.moe.moe_intermediate_size * model.moe.experts_per_token
    return model.intermediate_size


def activation_tokens(context_length: int, concurrency: int, batch_tokens: int) -> int:
    """Tokens in the largest forward pass: the runtime processes at most batch_tokens at once."""
    return min(context_length * concurrency, batch_tokens)


def activation_bytes(model: Model, tokens: int, concurrency: int) -> int:
    """Workspace of one forward pass of ``tokens`` tokens plus fp32 logits of the last tokens."""
    workspace = tokens * (model.hidden_size * 4 + mlp_width(model) * 2) * ACTIVATION_BYTES
    logits = concurrency * model.vocab_size * LOGIT_BYTES
    return workspace + logits


def allowed_tensor_parallel(model: Model, gpu_count: int) -> list[int]:
    """TP degrees from {1, 2, 4, 8} up to gpu_count that split the attention (and GQA KV) heads."""
    heads = [model.attention_heads] if model.attention == "mla" else [model.attention_heads, model.kv_heads]
    return [tp for tp in TENSOR_PARALLEL_DEGREES if tp <= gpu_count and all(h % tp == 0 for h in heads)]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MemoryBreakdown:
    """The memory terms, in bytes. Overhead is per GPU; the rest is split by tensor parallelism."""

    weights_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_token: int
    activation_bytes: int
    per_gpu_overhead_bytes: int

    def total_bytes(self, gpus: int = 1) -> int:
        """Everything, over ``gpus`` GPUs (each pays the fixed overhead)."""
        return (
            self.weights_bytes
            + self.kv_cache_bytes
            + self.activation_bytes
            + self.per_gpu_overhead_bytes * gpus
        )

    def per_gpu_bytes(self, tensor_parallel: int) -> int:
        """What each of ``tensor_parallel`` GPUs needs: its share, rounded up, plus the overhead."""
        shared = self.weights_bytes + self.kv_cache_bytes + self.activation_bytes
        return -(-shared // tensor_parallel) + self.per_gpu_overhead_bytes

    def to_dict(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "activation_bytes": self.activation_bytes,
            "per_gpu_overhead_bytes": self.per_gpu_overhead_bytes,
            "total_bytes_one_gpu": self.total_bytes(1),
        }


@dataclass(frozen=True)
class Choice:
    """An instance type that holds the model, with the smallest TP degree that fits."""

    instance_type: str
    gpu: str
    gpu_count: int
    tensor_parallel: int
    per_gpu_need_bytes: int
    per_gpu_capacity_bytes: int  # GPU memory less the headroom
    utilisation: float  # need / raw GPU memory
    price_usd_hour: float
    price_unverified: bool = False

    @property
    def price_usd_month(self) -> float:
        return self.price_usd_hour * HOURS_PER_MONTH

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "tensor_parallel": self.tensor_parallel,
            "per_gpu_need_bytes": self.per_gpu_need_bytes,
            "per_gpu_capacity_bytes": self.per_gpu_capacity_bytes,
            "utilisation": round(self.utilisation, 4),
            "price_usd_hour": self.price_usd_hour,
            "price_usd_month": round(self.price_usd_month, 2),
            "price_unverified": self.price_unverified,
        }


class NothingFits(LlmkitError):
    """No instance type holds the model as asked: a finding (exit 1), not a usage error."""

    exit_code = EXIT_FINDINGS

    def __init__(self, result: SizingResult) -> None:
        self.result = result
        super().__init__(result.explain_nothing_fits())


@dataclass(frozen=True)
class SizingResult:
    model: str
    quantization: str
    runtime: str
    context_length: int
    concurrency: int
    headroom: float
    breakdown: MemoryBreakdown
    choices: list[Choice]  # fitting only, cheapest first
    rejected: list[tuple[str, str]]  # (instance_type, reason)
    instance_type: str | None = None  # the override, if any
    advice: list[str] = field(default_factory=list)  # what to change when nothing fits

    @property
    def fits(self) -> bool:
        return bool(self.choices)

    @property
    def best(self) -> Choice:
        if not self.choices:
            raise NothingFits(self)
        return self.choices[0]

    def explain_nothing_fits(self) -> str:
        where = f"instance type {self.instance_type}" if self.instance_type else "any catalog instance type"
        lines = [
            f"{self.model} {self.quantization} on {self.runtime} at context {self.context_length} "
            f"x {self.concurrency} concurrent sequence(s) does not fit {where}."
        ]
        lines += self.advice
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        pricing = load_catalog().pricing
        return {
            "model": self.model,
            "quantization": self.quantization,
            "runtime": self.runtime,
            "context_length": self.context_length,
            "concurrency": self.concurrency,
            "headroom": self.headroom,
            "instance_type": self.instance_type,
            "breakdown": self.breakdown.to_dict(),
            "fits": self.fits,
            "best": self.choices[0].to_dict() if self.choices else None,
            "choices": [c.to_dict() for c in self.choices],
            "rejected": [{"instance_type": name, "reason": reason} for name, reason in self.rejected],
            "nothing_fits": None if self.choices else self.explain_nothing_fits(),
            "pricing": {
                "region": pricing.region,
                "recorded": pricing.recorded,
                "source": pricing.source,
                "note": pricing.note,
                "hours_per_month": HOURS_PER_MONTH,
            },
        }


# --------------------------------------------------------------------------- the engine


def memory_breakdown(
    model: Model,
    quant: Quantization,
    runtime: Runtime,
    context_length: int,
    concurrency: int,
    batch_tokens: int | None = None,
) -> MemoryBreakdown:
    """The memory terms for validated inputs; ``batch_tokens`` overrides the runtime's."""
    per_token = kv_bytes_per_token(model, runtime)
    tokens = activation_tokens(
        context_length, concurrency, runtime.batch_tokens if batch_tokens is None else batch_tokens
    )
    return MemoryBreakdown(
        weights_bytes=weights_bytes(model, quant),
        kv_cache_bytes=per_token * context_length * concurrency,
        kv_bytes_per_token=per_token,
        activation_bytes=activation_bytes(model, tokens, concurrency),
        per_gpu_overhead_bytes=runtime.per_gpu_overhead_bytes,
    )


def gpu_capacity_bytes(instance: InstanceType, headroom: float) -> int:
    """Usable memory of one GPU: floor(memory x (1 - headroom))."""
    return math.floor(instance.gpu.memory_bytes * (1 - _exact(headroom)))


def _gib(n: int | float) -> str:
    return f"{n / GIB:,.2f} GiB"


def _try_instance(
    model: Model, quant: Quantization, breakdown: MemoryBreakdown, instance: InstanceType, headroom: float
) -> tuple[Choice | None, str]:
    """The smallest fitting TP degree on one instance type, or why there is none."""
    if not instance.gpu.supports(quant):
        return None, (
            f"{instance.gpu.name} (compute capability {instance.gpu.compute_capability}) has no "
            f"{quant.name} kernels (needs {quant.min_compute_capability}+)"
        )
    capacity = gpu_capacity_bytes(instance, headroom)
    degrees = allowed_tensor_parallel(model, instance.gpu_count)
    fitting = next((tp for tp in degrees if breakdown.per_gpu_bytes(tp) <= capacity), None)
    reasons: list[str] = []
    if fitting is None:
        widest = degrees[-1]
        reasons.append(
            f"needs {_gib(breakdown.per_gpu_bytes(widest))} per GPU at tp={widest} "
            f"(of {instance.gpu_count} x {instance.gpu.name}), capacity {_gib(capacity)}"
        )
        unusable = [tp for tp in TENSOR_PARALLEL_DEGREES if widest < tp <= instance.gpu_count]
        if unusable:
            heads = (
                f"{model.attention_heads} attention heads"
                if model.attention == "mla"
                else f"{model.attention_heads} attention / {model.kv_heads} KV heads"
            )
            reasons.append(f"tp={','.join(map(str, unusable))} cannot split {heads}")
    host_ram = instance.memory_gib * GIB
    if breakdown.weights_bytes > host_ram:
        reasons.append(
            f"weights {_gib(breakdown.weights_bytes)} exceed host RAM "
            f"{instance.memory_gib} GiB (needed to load)"
        )
    if reasons or fitting is None:
        return None, "; ".join(reasons)
    need = breakdown.per_gpu_bytes(fitting)
    return (
        Choice(
            instance_type=instance.name,
            gpu=instance.gpu.name,
            gpu_count=instance.gpu_count,
            tensor_parallel=fitting,
            per_gpu_need_bytes=need,
            per_gpu_capacity_bytes=capacity,
            utilisation=need / instance.gpu.memory_bytes,
            price_usd_hour=instance.price_usd_hour,
            price_unverified=instance.price_unverified,
        ),
        "",
    )


def _fit(
    model: Model,
    quant: Quantization,
    breakdown: MemoryBreakdown,
    instances: Iterable[InstanceType],
    headroom: float,
) -> tuple[list[Choice], list[tuple[str, str]]]:
    choices: list[Choice] = []
    rejected: list[tuple[str, str]] = []
    for instance in instances:
        choice, reason = _try_instance(model, quant, breakdown, instance, headroom)
        if choice is None:
            rejected.append((instance.name, reason))
        else:
            choices.append(choice)
    choices.sort(key=lambda c: (c.price_usd_hour, c.gpu_count, c.instance_type))
    return choices, rejected


def _largest_fitting(lo: int, hi: int, fits: Any) -> int | None:
    """The largest n in [lo, hi] with fits(n), for a predicate that is monotone (true, then false)."""
    if hi < lo or not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _advice(
    catalog: Catalog,
    model: Model,
    quant: Quantization,
    runtime: Runtime,
    context_length: int,
    concurrency: int,
    headroom: float,
    breakdown: MemoryBreakdown,
    instances: Sequence[InstanceType],
) -> list[str]:
    """Why nothing fits, with the numbers, and what would fit instead."""
    lines: list[str] = []
    largest = max(instances, key=lambda i: (i.gpu.memory_mib, i.gpu_count))
    widest = allowed_tensor_parallel(model, largest.gpu_count)[-1]
    lines.append(
        f"It needs {_gib(breakdown.total_bytes(1))} on one GPU "
        f"(weights {_gib(breakdown.weights_bytes)}, KV cache {_gib(breakdown.kv_cache_bytes)}, "
        f"activations {_gib(breakdown.activation_bytes)}, "
        f"overhead {_gib(breakdown.per_gpu_overhead_bytes)}), "
        f"and {_gib(breakdown.per_gpu_bytes(widest))} per GPU split over tp={widest}; "
        f"the largest GPU ({largest.gpu.name}, {largest.gpu.memory_mib} MiB) holds "
        f"{_gib(gpu_capacity_bytes(largest, headroom))} after {float(headroom):.0%} headroom."
    )
    ram_blocked = [i for i in instances if breakdown.weights_bytes > i.memory_gib * GIB]
    if ram_blocked and len(ram_blocked) == len(instances):
        lines.append(
            f"The weights ({_gib(breakdown.weights_bytes)}) also exceed the host RAM of every candidate."
        )

    def fits_with(ctx: int, conc: int) -> bool:
        b = memory_breakdown(model, quant, runtime, ctx, conc)
        return any(_try_instance(model, quant, b, i, headroom)[0] is not None for i in instances)

    lines.append("To fit, change one of:")
    smaller = [
        catalog.quantizations[q]
        for q in model.quantizations
        if catalog.quantizations[q].bits_per_weight < quant.bits_per_weight
    ]
    smaller.sort(key=lambda q: -q.bits_per_weight)
    if smaller:
        parts = []
        for q in smaller:
            servers = [r.name for r in catalog.runtimes.values() if q.name in r.quantizations]
            verdict = "no runtime serves it"
            if servers:
                serving = runtime if runtime.name in servers else catalog.runtimes[servers[0]]
                b = memory_breakdown(model, q, serving, context_length, concurrency)
                fitted = _fit(model, q, b, instances, headroom)[0]
                verdict = (
                    f"fits {fitted[0].instance_type} on {serving.name}" if fitted else "still does not fit"
                )
            parts.append(f"{q.name} ({q.bits_per_weight:g} bits, served by {', '.join(servers)}: {verdict})")
        lines.append(f"  - a lower quantization: {'; '.join(parts)}")
    else:
        lines.append(f"  - a lower quantization: none is published for {model.name} below {quant.name}")
    max_ctx = _largest_fitting(1, context_length - 1, lambda c: fits_with(c, concurrency))
    lines.append(
        f"  - a shorter context: at most {max_ctx} tokens fit with {concurrency} concurrent sequence(s)"
        if max_ctx
        else "  - a shorter context: not enough on its own "
        f"(even 1 token does not fit at concurrency {concurrency})"
    )
    max_conc = _largest_fitting(1, concurrency - 1, lambda n: fits_with(context_length, n))
    lines.append(
        f"  - fewer concurrent sequences: at most {max_conc} fit at context {context_length}"
        if max_conc
        else "  - fewer concurrent sequences: not enough on its own"
    )
    return lines


def _validate_int(key: str, value: Any, lo: int, hi: int | None, accepted: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise ConfigError(key=key, value=value, accepted=accepted, message="out of range")
    return value


def size(
    model: str,
    quantization: str,
    context_length: int,
    concurrency: int,
    runtime: str = DEFAULT_RUNTIME,
    headroom: float = DEFAULT_HEADROOM,
    instance_type: str | None = None,
) -> SizingResult:
    """Size ``model`` and rank the instance types that hold it (``choices == []`` when none does)."""
    catalog = load_catalog()
    m = catalog.model(model)
    q = catalog.quantization(quantization)
    if q.name not in m.quantizations:
        raise ConfigError(
            key="quantization",
            value=quantization,
            accepted=", ".join(m.quantizations),
            message=f"not published for {m.name}",
        )
    r = catalog.runtime(runtime)
    if q.name not in r.quantizations:
        servers = [x.name for x in catalog.runtimes.values() if q.name in x.quantizations]
        served = [x for x in m.quantizations if x in r.quantizations]
        raise ConfigError(
            key="quantization",
            value=quantization,
            accepted=f"{', '.join(served) or 'none'} on {r.name}; {q.name} is served by {', '.join(servers)}",
            message=f"runtime {r.name} does not serve {q.name}",
        )
    _validate_int("context_length", context_length, 1, m.max_context, f"1..{m.max_context} for {m.name}")
    _validate_int("concurrency", concurrency, 1, None, "an integer >= 1")
    if (
        isinstance(headroom, bool)
        or not isinstance(headroom, int | float)
        or not 0 <= headroom < MAX_HEADROOM
    ):
        raise ConfigError(
            key="headroom", value=headroom, accepted=f"0 <= headroom < {MAX_HEADROOM}", message="out of range"
        )
    instances = [catalog.instance(instance_type)] if instance_type else list(catalog.instances.values())

    breakdown = memory_breakdown(m, q, r, context_length, concurrency)
    choices, rejected = _fit(m, q, breakdown, instances, headroom)
    advice = (
        []
        if choices
        else _advice(catalog, m, q, r, context_length, concurrency, headroom, breakdown, instances)
    )
    return SizingResult(
        model=m.name,
        quantization=q.name,
        runtime=r.name,
        context_length=context_length,
        concurrency=concurrency,
        headroom=headroom,
        breakdown=breakdown,
        choices=choices,
        rejected=rejected,
        instance_type=instance_type,
        advice=advice,
    )


__all__ = [
    "DEFAULT_HEADROOM",
    "HOURS_PER_MONTH",
    "Choice",
    "MemoryBreakdown",
    "NothingFits",
    "SizingResult",
    "activation_bytes",
    "activation_tokens",
    "allowed_tensor_parallel",
    "gpu_capacity_bytes",
    "kv_bytes_per_token",
    "memory_breakdown",
    "mlp_width",
    "size",
    "weights_bytes",
]
