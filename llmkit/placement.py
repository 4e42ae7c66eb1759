"""Where each configured model runs: the sizing decision for every `llmkit:models` entry.

The Pulumi program and `llmkit plan` both call :func:`place_models`, so the instance type
that the fleet launches is the one the plan reports, and :attr:`Placement.instance_types` is
the one list of instance types that the plan's ``models`` output, the Auto Scaling group's
overrides and the hosts' data (the inventory) all show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmkit.catalog import load_catalog
from llmkit.config import ModelSpec, StackConfig
from llmkit.errors import ConfigError, ConfigErrors
from llmkit.sizing import Choice, NothingFits, SizingResult, size

#: The sized instance type plus at most this many fallbacks from the sizing's other fitting
#: choices, cheapest first. An Auto Scaling group takes at most 20 overrides.
MAX_FALLBACKS = 4


@dataclass(frozen=True)
class Placement:
    index: int
    spec: ModelSpec
    sizing: SizingResult
    choice: Choice
    # The stack's region: where the instances run (the catalog's prices may be another's).
    region: str | None = None

    @property
    def key(self) -> str:
        return f"llmkit:models[{self.index}]"

    @property
    def instance_types(self) -> list[str]:
        """The sized instance type first, then up to :data:`MAX_FALLBACKS` more fitting types, cheapest first.

        ``sizing.choices`` holds only types the model fits on, each with its own tensor-parallel
        degree. A pinned ``instance_type`` is the only choice, so it has no fallbacks.
        """
        first = self.choice.instance_type
        rest = [c.instance_type for c in self.sizing.choices if c.instance_type != first]
        return [first, *rest[:MAX_FALLBACKS]]

    @property
    def fallbacks(self) -> list[str]:
        return self.instance_types[1:]

    def price(self) -> dict[str, Any]:
        """The sized type's on-demand price, with the region and date the figure is for."""
        pricing = load_catalog().pricing
        price: dict[str, Any] = {
            "usd_per_hour": self.choice.price_usd_hour,
            "text": pricing.describe(self.choice.price_usd_hour),
            "region": pricing.region,
            "recorded": pricing.recorded,
        }
        if self.choice.price_unverified:
            price["unverified"] = True
        if self.region and self.region != pricing.region:
            price["note"] = f"a {pricing.region} price, not one for {self.region}, where this stack runs"
        return price

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "quantization": self.spec.quantization,
            "context_length": self.spec.context_length,
            "concurrency": self.spec.concurrency,
            "instance_type": self.choice.instance_type,
            "gpus": f"{self.choice.tensor_parallel} x {self.choice.gpu}",
            "tensor_parallel": self.choice.tensor_parallel,
            "per_gpu_need_gib": round(self.choice.per_gpu_need_bytes / 2**30, 2),
            "per_gpu_capacity_gib": round(self.choice.per_gpu_capacity_bytes / 2**30, 2),
            "fallbacks": self.fallbacks,
            "price": self.price(),
            "replicas": {"min": self.spec.replicas.min, "max": self.spec.replicas.max},
        }


def place_models(cfg: StackConfig, source: str | None = None) -> list[Placement]:
    """Size every configured model; a model that fits nowhere is a config error naming it."""
    placements: list[Placement] = []
    errors: list[ConfigError] = []
    for i, spec in enumerate(cfg.models):
        result = size(
            spec.name,
            spec.quantization,
            spec.context_length,
            spec.concurrency,
            runtime=cfg.runtime,
            instance_type=spec.instance_type,
        )
        try:
            placements.append(Placement(i, spec, result, result.best, region=cfg.region))
        except NothingFits as exc:
            errors.append(
                ConfigError(
                    key=f"llmkit:models[{i}]",
                    value=spec.name,
                    accepted="a model, quantization, context and concurrency that fit one instance type",
                    message=str(exc),
                )
            )
    if errors:
        raise ConfigErrors(errors, source=source or (f"stack {cfg.stack}" if cfg.stack else None))
    return placements
