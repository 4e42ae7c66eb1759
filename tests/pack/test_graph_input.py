"""`llmkit policy check` and a graph it cannot trust: exit 2 and one line naming the file, never a
traceback (exit 1 is the findings code); what a graph holds is printed as text, never as markup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmkit.cli import main
from llmkit.errors import ConfigError
from llmkit.policy import RuleFailed, evaluate, resources_from_graph
from policies.rules import load_rules
from tests.pack.fixtures import plan_graph

SCHEMA = "llmkit.plan/v1"
GOOD = {"urn": "urn:pulumi:s::p::aws:kms/key:Key::k", "type": "aws:kms/key:Key", "name": "k"}


def _graph(*entries: Any) -> str:
    return json.dumps({"schema": SCHEMA, "resources": list(entries)})


def check(tmp_path: Path, content: str | bytes) -> tuple[Result, Path]:
    path = tmp_path / "graph.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return CliRunner().invoke(main, ["policy", "check", str(path)]), path


def assert_usage_error(result: Result, path: Path, problem: str) -> None:
    # exit 2 from the CLI itself: an uncaught exception would be exit 1 with result.exception set.
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {path}: "), line
    assert problem in line
    assert "Traceback" not in result.output


MALFORMED: dict[str, tuple[str | bytes, str]] = {
    "not JSON": ("not json", "GRAPH: not JSON (JSONDecodeError"),
    "not UTF-8": (b'{"schema": "\xff"}', "GRAPH: not JSON (not UTF-8 text: invalid start byte at byte 12)"),
    "a JSON list": ("[1, 2]", "graph: not a JSON object (got 'a list'"),
    "a JSON string": ('"graph"', "graph: not a JSON object (got 'str'"),
    "another schema": ('{"schema": "other", "resources": []}', "graph.schema: not an llmkit plan graph"),
    "no resources": (json.dumps({"schema": SCHEMA}), "graph.resources: no resource list (got None"),
    "resources an object": (
        json.dumps({"schema": SCHEMA, "resources": {}}),
        "graph.resources: no resource list",
    ),
    "a resource that is a string": (_graph("a"), "resources[0]: a resource is not a JSON object"),
    "a resource without a name": (
        _graph({"urn": "u", "type": "aws:kms/key:Key"}),
        "resources[0].name: the resource has no name",
    ),
    "a resource without a urn": (
        _graph(GOOD, {"type": "t", "name": "n"}),
        "resources[1].urn: the resource has no urn",
    ),
    "a type that is a number": (
        _graph({**GOOD, "type": 7}),
        "resources[0].type: type has the wrong type (got 7",
    ),
    "a name that is a list": (_graph({**GOOD, "name": ["k"]}), "resources[0].name: name has the wrong type"),
    "an empty urn": (_graph({**GOOD, "urn": ""}), "resources[0].urn: empty urn or type"),
    "inputs that are a list": (
        _graph({**GOOD, "inputs": [1]}),
        "resources[0].inputs: inputs has the wrong type",
    ),
    "custom that is a string": (
        _graph({**GOOD, "custom": "yes"}),
        "resources[0].custom: custom has the wrong type",
    ),
    "an id that is true": (_graph({**GOOD, "id": True}), "resources[0].id: id has the wrong type (got True"),
    "dependencies that are not URNs": (
        _graph({**GOOD, "dependencies": ["u", 3]}),
        "resources[0].dependencies[1]: not a URN",
    ),
    "nesting a hundred thousand deep": ("[" * 100_000 + "]" * 100_000, "GRAPH: JSON nested too deeply"),
    "nesting past the bound": (
        _graph({**GOOD, "inputs": {"a": json.loads("[" * 80 + "]" * 80)}}),
        "GRAPH: JSON nested more than 64 levels deep",
    ),
    "a number that overflows": (
        _graph({**GOOD, "inputs": {"size": 1}}).replace("1}", "1e999}"),
        "out of range",
    ),
    "NaN": (_graph({**GOOD, "inputs": {"size": 1}}).replace("1}", "NaN}"), "NaN is not a number"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_graph_is_a_usage_error_naming_the_file(tmp_path: Path, case: str) -> None:
    content, problem = MALFORMED[case]
    result, path = check(tmp_path, content)
    assert_usage_error(result, path, problem)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_the_shape_check_names_the_source() -> None:
    with pytest.raises(ConfigError) as raised:
        resources_from_graph({"schema": SCHEMA, "resources": [{"type": "t"}]}, source="g.json")
    assert str(raised.value).startswith("g.json: resources[0].urn: the resource has no urn")


def test_inputs_a_rule_cannot_read_are_a_usage_error_naming_the_rule_and_resource(tmp_path: Path) -> None:
    g = plan_graph("prod")
    (provider,) = [e for e in g["resources"] if e["type"] == "pulumi:providers:aws"]
    provider["inputs"]["defaultTags"] = "{not json"  # the provider's inputs travel as JSON text
    with pytest.raises(RuleFailed) as raised:
        evaluate(resources_from_graph(g), load_rules())
    assert isinstance(raised.value.cause, ValueError)
    result, path = check(tmp_path, json.dumps(g))
    assert_usage_error(result, path, "cannot read them (got 'JSONDecodeError: Expecting property name")
    assert "rule aws-" in result.output


def test_names_and_messages_from_the_graph_are_text_not_markup(tmp_path: Path) -> None:
    g = plan_graph("prod")
    (key,) = [e for e in g["resources"] if e["name"] == "keys-data"]
    key["name"] = "[/bold]keys-\x1b]0;owned\x07data[red]"
    key["inputs"]["enableKeyRotation"] = False
    result, _ = check(tmp_path, json.dumps(g))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "[/bold]keys-\\x1b]0;owned\\x07data[red]" in result.output
    assert "\x1b" not in result.output


def test_a_graph_larger_than_the_bound_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkit.commands import policy as policy_command

    monkeypatch.setattr(policy_command, "MAX_GRAPH_BYTES", 64)
    result, path = check(tmp_path, _graph(GOOD, GOOD))
    assert_usage_error(result, path, "bytes is too large for a plan graph (at most 64)")
