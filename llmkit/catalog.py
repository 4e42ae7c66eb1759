"""Model, quantization, GPU and instance catalogs, loaded from the reviewed data files.

The YAML files in ``llmkit/data`` are the only source of these numbers; everything else
(sizing, config validation, components, playbooks, policies, docs) imports them from here.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from llmkit.errors import ConfigError

#: The runtime a model is served with when config or the command line names none.
DEFAULT_RUNTIME = "ollama"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantization(_Frozen):
    name: str
    bits_per_weight: float = Field(gt=0)
    min_compute_capability: str | None = None
    source: str

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8


class Mla(_Frozen):
    kv_lora_rank: PositiveInt
    qk_rope_head_dim: PositiveInt


class Moe(_Frozen):
    routed_experts: PositiveInt
    shared_experts: int = Field(ge=0)
    experts_per_token: PositiveInt
    moe_intermediate_size: PositiveInt
    dense_layers: int = Field(ge=0)


class Model(_Frozen):
    name: str
    display_name: str
    family: str
    params: PositiveInt
    active_params: PositiveInt
    layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    attention_heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    vocab_size: PositiveInt
    attention: Literal["gqa", "mla"]
    mla: Mla | None = None
    moe: Moe | None = None
    max_context: PositiveInt
    ollama_tag: str
    hf_repo: str
    licence: str
    quantizations: tuple[str, ...]
    source: str

    @model_validator(mode="after")
    def _consistent(self) -> Model:
        if (self.attention == "mla") != (self.mla is not None):
            raise ValueError(f"{self.name}: 'mla' block is required exactly when attention is mla")
        if self.active_params > self.params:
            raise ValueError(f"{self.name}: active_params exceeds params")
        if self.moe is None and self.active_params != self.params:
            raise ValueError(f"{self.name}: a dense model has active_params == params")
        return self

    @property
    def is_moe(self) -> bool:
        return self.moe is not None


def _cc(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Gpu(_Frozen):
    name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    marketing_memory_gb: PositiveInt
    memory_mib: PositiveInt
    bandwidth_gbs: PositiveInt
    bf16_tflops: float | None
    fp16_tflops: float
    source: str

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    def supports(self, quant: Quantization) -> bool:
        """Whether this GPU has kernels for the quantization (by CUDA compute capability)."""
        need = quant.min_compute_capability
        return need is None or _cc(self.compute_capability) >= _cc(need)


class InstanceType(_Frozen):
    name: str
    gpu: Gpu
    gpu_count: PositiveInt
    vcpu: PositiveInt
    memory_gib: PositiveInt
    price_usd_hour: float = Field(gt=0)
    price_unverified: bool = False

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


#: The methods a route of a runtime's allow-list may take: inference and reading, nothing else.
RouteMethod = Literal["GET", "HEAD", "POST"]
_ROUTE_PATH = re.compile(
    r"/(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*(?:/[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)*)?"
)


class Runtime(_Frozen):
    name: str
    port: PositiveInt
    quantizations: tuple[str, ...]
    kv_cache_bytes: PositiveInt
    batch_tokens: PositiveInt
    per_gpu_overhead_mib: PositiveInt
    source: str
    #: The API allow-list (exact path: methods) the proxy and the TLS terminators let through.
    routes: dict[str, tuple[RouteMethod, ...]]
    routes_source: str

    @model_validator(mode="after")
    def _plain_routes(self) -> Runtime:
        if not self.routes:
            raise ValueError(f"{self.name}: routes is empty")
        for path, methods in self.routes.items():
            if not _ROUTE_PATH.fullmatch(path):
                raise ValueError(f"{self.name}: route {path!r} is not a plain absolute path")
            if not methods or len(set(methods)) != len(methods):
                raise ValueError(f"{self.name}: route {path} lists no methods, or one twice")
        return self

    @property
    def per_gpu_overhead_bytes(self) -> int:
        return self.per_gpu_overhead_mib * 1024 * 1024


class Pricing(_Frozen):
    """Where and when the instance prices were recorded: every figure shown names its region."""

    region: str
    recorded: str
    source: str
    note: str = ""

    @property
    def label(self) -> str:
        """What a price figure is, e.g. ``us-east-1 on-demand``."""
        return f"{self.region} on-demand"

    def describe(self, usd_per_hour: float, hours_per_month: int | None = None) -> str:
        """A price as a user sees it, always with its region: ``$1.86/h (us-east-1 on-demand)``.

        With ``hours_per_month``: ``$1.86/h, $1,359/month at 730 h (us-east-1 on-demand)``.
        """
        text = f"${usd_per_hour:,.2f}/h"
        if hours_per_month:
            text += f", ${usd_per_hour * hours_per_month:,.0f}/month at {hours_per_month} h"
        return f"{text} ({self.label})"


#: Ollama's default tag: ``ollama pull NAME`` fetches ``NAME:latest``.
OLLAMA_DEFAULT_TAG = "latest"


class OllamaLatest(_Frozen):
    """Which catalog entry Ollama's ``NAME:latest`` is, for one library name (reviewed data)."""

    name: str
    model: str | None  # None: NAME:latest is none of the catalog's entries
    source: str
    note: str = ""


class Catalog(_Frozen):
    quantizations: dict[str, Quantization]
    models: dict[str, Model]
    gpus: dict[str, Gpu]
    instances: dict[str, InstanceType]
    runtimes: dict[str, Runtime]
    pricing: Pricing
    ollama_latest: dict[str, OllamaLatest]

    def resolve_model(self, name: str, key: str = "model") -> tuple[Model, str]:
        """The catalog model a user means by ``name``, and how a name without a tag was read.

        The one place a model name is looked up (``llmkit size``, ``llmkit:models``, the
        gateway's aliases). Names are Ollama tags (``deepseek-r1:32b``); a name without a tag,
        or with Ollama's default tag (``deepseek-v3``, ``deepseek-v3:latest``), is the entry
        that ``ollama pull NAME`` fetches when the catalog records it (``ollama_latest`` in
        ``models.yaml``), else the only catalog entry of that name. Anything else is a
        :class:`ConfigError` under ``key`` that lists the matching tags (exit 2). The second
        value is empty when ``name`` is a catalog name, else it says how it was resolved.
        """
        if name in self.models:
            return self.models[name], ""
        base, _, tag = name.partition(":")
        tags = [m for m in self.models if m.partition(":")[0] == base]
        if base and tag in ("", OLLAMA_DEFAULT_TAG):
            latest = self.ollama_latest.get(base)
            if latest is not None and latest.model is not None:
                return self.models[latest.model], (
                    f"{name} is {latest.model}: what `ollama pull {base}` fetches "
                    f"({base}:{OLLAMA_DEFAULT_TAG})"
                )
            if len(tags) == 1:
                return self.models[tags[0]], f"{name} is {tags[0]}: the only {base} model in the catalog"
            if tags:
                why = (
                    f"Ollama's default {base}:{OLLAMA_DEFAULT_TAG} is none of them"
                    if latest is not None
                    else f"the catalog does not record which one {base}:{OLLAMA_DEFAULT_TAG} is"
                )
                raise ConfigError(
                    key=key,
                    value=name,
                    accepted="one of: " + ", ".join(tags),
                    message=f"ambiguous: {len(tags)} catalog models are named {base}, and {why}; "
                    "give the tag",
                )
        raise ConfigError(
            key=key, value=name, accepted="one of: " + ", ".join(tags or self.models), message="unknown model"
        )

    def model(self, name: str, key: str = "model") -> Model:
        """:meth:`resolve_model`'s model."""
        return self.resolve_model(name, key)[0]

    def quantization(self, name: str) -> Quantization:
        try:
            return self.quantizations[name]
        except KeyError:
            raise ConfigError(
                key="quantization",
                value=name,
                accepted=", ".join(self.quantizations),
                message="unknown quantization",
            ) from None

    def runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise ConfigError(
                key="runtime", value=name, accepted=", ".join(self.runtimes), message="unknown runtime"
            ) from None

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instances[name]
        except KeyError:
            raise ConfigError(
                key="instance_type",
                value=name,
                accepted=", ".join(self.instances),
                message="unknown instance type",
            ) from None


def _read(name: str) -> dict:
    text = resources.files("llmkit.data").joinpath(name).read_text(encoding="utf-8")
    # libyaml's loader (in PyYAML's wheels) parses the catalog 8x faster than the pure-Python one.
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict):
        raise ValueError(f"llmkit/data/{name}: expected a mapping at the top level")
    return data


@cache
def load_catalog() -> Catalog:
    """Load and validate both data files once per process."""
    models_doc = _read("models.yaml")
    gpus_doc = _read("gpus.yaml")
    runtimes_doc = _read("runtimes.yaml")
    quants = {n: Quantization(name=n, **v) for n, v in models_doc["quantizations"].items()}
    models = {n: Model(name=n, **v) for n, v in models_doc["models"].items()}
    for m in models.values():
        unknown = set(m.quantizations) - set(quants)
        if unknown:
            raise ValueError(f"llmkit/data/models.yaml: {m.name} lists unknown quantizations {unknown}")
    gpus = {n: Gpu(name=n, **v) for n, v in gpus_doc["gpus"].items()}
    instances = {}
    for n, v in gpus_doc["instances"].items():
        gpu_name = v["gpu"]
        if gpu_name not in gpus:
            raise ValueError(f"llmkit/data/gpus.yaml: {n} names unknown gpu {gpu_name!r}")
        instances[n] = InstanceType(name=n, **{**v, "gpu": gpus[gpu_name]})
    ollama_latest = {n: OllamaLatest(name=n, **v) for n, v in models_doc["ollama_latest"].items()}
    for entry in ollama_latest.values():
        if ":" in entry.name or (entry.model is not None and not entry.model.startswith(f"{entry.name}:")):
            raise ValueError(f"llmkit/data/models.yaml: ollama_latest.{entry.name}: not a name without a tag")
        if entry.model is not None and entry.model not in models:
            raise ValueError(
                f"llmkit/data/models.yaml: ollama_latest.{entry.name} names unknown model {entry.model!r}"
            )
    unrecorded = sorted({m.partition(":")[0] for m in models} - set(ollama_latest))
    if unrecorded:
        raise ValueError(f"llmkit/data/models.yaml: ollama_latest does not record {', '.join(unrecorded)}")
    runtimes = {n: Runtime(name=n, **v) for n, v in runtimes_doc["runtimes"].items()}
    for r in runtimes.values():
        unknown = set(r.quantizations) - set(quants)
        if unknown:
            raise ValueError(f"llmkit/data/runtimes.yaml: {r.name} lists unknown quantizations {unknown}")
    return Catalog(
        quantizations=quants,
        models=models,
        gpus=gpus,
        instances=instances,
        runtimes=runtimes,
        pricing=Pricing(**gpus_doc["pricing"]),
        ollama_latest=ollama_latest,
    )
