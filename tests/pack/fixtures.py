"""Build resources for rule tests: compliant fixtures and their violations, by hand."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

from llmkit.policy import Resource, Rule, Stack, Violation, evaluate

PROVIDER = {"region": "eu-central-1", "defaultTags": {"tags": {}}}
ROOT = Path(__file__).resolve().parent.parent.parent


@cache
def _planned(stack: str) -> dict[str, Any]:
    from llmkit.plan import run_plan

    return run_plan(stack, ROOT).to_graph()


def plan_graph(stack: str) -> dict[str, Any]:
    """A fresh copy of the graph `llmkit plan STACK --json` writes (the real program, mock runtime)."""
    return copy.deepcopy(_planned(stack))


def res(
    type_: str,
    name: str = "r",
    *,
    id: Any = None,  # str | None; Any so that **props of any value type type-check
    provider: Any = None,  # dict | None
    components: Any = (),  # tuple[str, ...]: the component types the resource is nested in
    **props: Any,
) -> Resource:
    """A resource with the given camelCase props; its id is ``<name>-id`` like the offline plan's."""
    chain = "$".join((*components, type_))
    return Resource(
        type=type_,
        name=name,
        urn=f"urn:pulumi:test::llmkit::{chain}::{name}",
        props=props,
        id=id if id is not None else f"{name}-id",
        provider=PROVIDER if provider is None else provider,
    )


def run(rule: Rule, *resources: Resource, **settings: Any) -> list[Violation]:
    """The violations ``rule`` finds among ``resources`` (skipped unknowns are not violations)."""
    return evaluate(list(resources), [rule], {rule.name: settings} if settings else None).violations


def messages(rule: Rule, *resources: Resource, **settings: Any) -> list[tuple[str, str]]:
    return [(v.resource_name, v.message) for v in run(rule, *resources, **settings)]


def skipped(rule: Rule, *resources: Resource) -> list[tuple[str, str]]:
    return evaluate(list(resources), [rule]).skipped


__all__ = ["ROOT", "Stack", "messages", "plan_graph", "res", "run", "skipped"]
