"""Where each configured model runs: the sizing decision for every `llmkit:models` entry.

The Pulumi program and `llmkit plan` both call :func:`place_models`, so the instance type
that the fleet launches is the one the plan reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmkit.config import ModelSpec, StackConfig
from llmkit.errors import ConfigError, ConfigErrors
from llmkit.sizing import Choice, NothingFits, SizingResult, size


@dataclass(frozen=True)
class Placement:
    index: int
    spec: ModelSpec
    sizing: SizingResult
    choice: Choice

    @property
    def key(self) -> str:
        return f"llmkit:models[{self.index}]"

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
            "fallbacks": [c.instance_type for c in self.sizing.choices[1:4]],
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
            placements.append(Placement(i, spec, result, result.best))
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
