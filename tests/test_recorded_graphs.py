"""The dev, staging and prod graphs are the recorded ones: a refactoring that is not meant to change
a resource (its name, URN, type, parent, dependencies or any input) or an output is caught here.

After an intended change, re-record and review the diff of ``tests/fixtures/graphs/``::

    LLMKIT_RECORD_GRAPHS=1 uv run --frozen pytest tests/test_recorded_graphs.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from llmkit.plan import run_plan

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "tests" / "fixtures" / "graphs"
STACKS = ("dev", "staging", "prod")
RECORD = os.environ.get("LLMKIT_RECORD_GRAPHS") == "1"
#: What stands for the project directory in recorded strings (a path differs per checkout).
PROJECT = "$PROJECT"


def _normalised(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace(root, PROJECT)
    if isinstance(value, list):
        return [_normalised(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _normalised(v, root) for k, v in value.items()}
    return value


def canonical_graph(stack: str) -> dict[str, Any]:
    """The stack's offline graph in a form that is the same on every run and checkout: resources
    keyed (and so sorted) by URN, dependencies sorted, the project directory replaced. The graph
    holds no timestamps or durations; mock ids and ARNs are derived from names."""
    graph = _normalised(run_plan(stack, ROOT).to_graph(), str(ROOT))
    resources: dict[str, Any] = {}
    for resource in graph["resources"]:
        urn = resource.pop("urn")
        assert urn not in resources, f"two resources share the URN {urn}"
        resource["dependencies"] = sorted(resource["dependencies"])
        resources[urn] = resource
    return {
        "schema": graph["schema"],
        "project": graph["project"],
        "stack": graph["stack"],
        "resources": resources,
        "outputs": graph["outputs"],
    }


def dumps(graph: dict[str, Any]) -> str:
    return json.dumps(graph, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 300 else text[:300] + "..."


def differences(recorded: dict[str, Any], planned: dict[str, Any]) -> list[str]:
    """One line per resource added or removed, per field or input changed, per output changed."""
    found: list[str] = []
    for key in ("schema", "project", "stack"):
        if recorded[key] != planned[key]:
            found.append(f"{key}: recorded {recorded[key]!r}, planned {planned[key]!r}")
    old, new = recorded["resources"], planned["resources"]
    found += [f"resource removed: {urn}" for urn in sorted(old.keys() - new.keys())]
    found += [f"resource added: {urn}" for urn in sorted(new.keys() - old.keys())]
    for urn in sorted(old.keys() & new.keys()):
        before, after = old[urn], new[urn]
        for field in sorted(before.keys() | after.keys()):
            if field == "inputs":
                continue
            if before.get(field) != after.get(field):
                found.append(
                    f"{urn}: {field} recorded {_short(before.get(field))}, planned {_short(after.get(field))}"
                )
        ins, outs = before.get("inputs", {}), after.get("inputs", {})
        for key in sorted(ins.keys() | outs.keys()):
            if ins.get(key, "<absent>") != outs.get(key, "<absent>"):
                found.append(
                    f"{urn}: input {key!r} recorded {_short(ins.get(key, '<absent>'))}, "
                    f"planned {_short(outs.get(key, '<absent>'))}"
                )
    o_old, o_new = recorded["outputs"], planned["outputs"]
    for key in sorted(o_old.keys() | o_new.keys()):
        if o_old.get(key, "<absent>") != o_new.get(key, "<absent>"):
            found.append(
                f"output {key!r}: recorded {_short(o_old.get(key, '<absent>'))}, "
                f"planned {_short(o_new.get(key, '<absent>'))}"
            )
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_graph_is_the_recorded_one(stack: str) -> None:
    path = GRAPHS / f"{stack}.json"
    planned = canonical_graph(stack)
    if RECORD:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(planned), encoding="utf-8")
        return
    assert path.is_file(), f"no recorded graph {path}; record it with LLMKIT_RECORD_GRAPHS=1"
    recorded = json.loads(path.read_text(encoding="utf-8"))
    changed = differences(recorded, planned)
    assert not changed, (
        f"the {stack} graph differs from {path.relative_to(ROOT)} "
        f"(if intended, re-record with LLMKIT_RECORD_GRAPHS=1 and review the diff):\n  "
        + "\n  ".join(changed[:60])
        + (f"\n  ... and {len(changed) - 60} more" if len(changed) > 60 else "")
    )


def test_a_changed_input_is_named() -> None:
    """The comparison names the resource and the input, not only that something differs."""
    urn = "urn:pulumi:dev::llmkit::aws:ec2/vpc:Vpc::net-vpc"
    base = {"schema": "s", "project": "p", "stack": "dev", "outputs": {"a": 1}}
    old = {**base, "resources": {urn: {"type": "t", "inputs": {"cidrBlock": "10.0.0.0/16"}}}}
    new = {**base, "resources": {urn: {"type": "t", "inputs": {"cidrBlock": "10.1.0.0/16"}}}}
    assert differences(old, new) == [
        f'{urn}: input \'cidrBlock\' recorded "10.0.0.0/16", planned "10.1.0.0/16"'
    ]
    assert differences(old, {**old, "resources": {}}) == [f"resource removed: {urn}"]
