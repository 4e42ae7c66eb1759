"""Shared fixtures: run Pulumi code on the same recording mock runtime as `llmkit plan`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmkit.config import StackConfig, load_stack
from llmkit.plan import PlannedResource, record

ROOT = Path(__file__).resolve().parent.parent


class Recorded:
    """What a program registered: look resources up by type and name, read their inputs."""

    def __init__(self, resources: list[PlannedResource], outputs: dict[str, Any]) -> None:
        self.resources = resources
        self.outputs = outputs

    def of_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> PlannedResource:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]

    def by_urn(self, urn: str) -> PlannedResource:
        return next(r for r in self.resources if r.urn == urn)


@pytest.fixture
def run_pulumi() -> Callable[..., Recorded]:
    """``run_pulumi(lambda: Component(...))`` -> Recorded; a fresh mock runtime per call."""

    def run(program: Callable[[], Any], **kwargs: Any) -> Recorded:
        return Recorded(*record(program, **kwargs))

    return run


@pytest.fixture(params=["dev", "staging", "prod"])
def stack_config(request: pytest.FixtureRequest) -> StackConfig:
    """Each real stack's validated config."""
    return load_stack(request.param, ROOT)
