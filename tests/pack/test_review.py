"""The pack as reviewers use it: our stacks pass, `llmkit plan` and `llmkit policy` report and exit."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.plan import run_plan
from llmkit.policy import evaluate, resources_from_graph
from llmkit.policy_catalogue import CATALOGUE_PATH, render_catalogue
from policies.rules import load_rules

ROOT = Path(__file__).resolve().parent.parent.parent
STACKS = ["dev", "staging", "prod"]


@cache
def graph(stack: str) -> dict[str, Any]:
    return run_plan(stack, ROOT).to_graph()


def _mutated(stack: str, name: str, **inputs: Any) -> dict[str, Any]:
    g = copy.deepcopy(graph(stack))
    (entry,) = [e for e in g["resources"] if e["name"] == name]
    entry["inputs"].update(inputs)
    return g


@pytest.mark.parametrize("stack", STACKS)
def test_our_stacks_pass_every_mandatory_rule(stack: str) -> None:
    report = evaluate(resources_from_graph(graph(stack)), load_rules())
    assert [v.to_dict() for v in report.mandatory] == []
    assert len(report.rules) == len(load_rules())


def test_catalogue_is_up_to_date() -> None:
    assert CATALOGUE_PATH.read_text(encoding="utf-8") == render_catalogue(load_rules()), (
        "policies/README.md is out of date: run `uv run llmkit policy catalogue`"
    )


def test_catalogue_lists_every_rule_with_its_metadata() -> None:
    text = render_catalogue(load_rules())
    for rule in load_rules():
        assert f"### `{rule.name}`" in text
        assert rule.remediation in text
        assert all(f in text for f in rule.frameworks)


def test_policy_check_passes_a_clean_graph(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph("prod")))
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "policy: pass" in result.output


def test_policy_check_fails_a_graph_with_a_mandatory_violation(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(_mutated("prod", "keys-data", enableKeyRotation=False)))
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 1, result.output
    assert "aws-kms-key-enable-rotation" in result.output
    assert "keys-data" in result.output
    assert "policy: FAIL" in result.output


def test_policy_config_changes_the_verdict(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(_mutated("prod", "keys-data", rotationPeriodInDays=730)))
    assert CliRunner().invoke(main, ["policy", "check", str(path)]).exit_code == 1
    settings = tmp_path / "policy.json"
    settings.write_text(json.dumps({"aws-kms-key-enable-rotation": {"max_rotation_period_days": 730}}))
    result = CliRunner().invoke(main, ["policy", "check", str(path), "--policy-config", str(settings)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "GRAPH"),
        ('{"schema": "other", "resources": []}', "not an llmkit plan graph"),
    ],
)
def test_a_bad_graph_file_is_a_usage_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "graph.json"
    path.write_text(content)
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"aws-no-such-rule-here-missing-x": {}}, "settings for rules that do not exist"),
        ({"aws-kms-key-enable-rotation": {"max_days": 1}}, "unknown policy setting"),
    ],
)
def test_a_bad_policy_config_is_a_usage_error(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph("dev")))
    config = tmp_path / "policy.json"
    config.write_text(json.dumps(settings))
    result = CliRunner().invoke(main, ["policy", "check", str(path), "--policy-config", str(config)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_plan_policy_only_prints_the_verdict_and_exits_by_it() -> None:
    result = CliRunner().invoke(main, ["plan", "dev", "--policy-only", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("policy: pass")
    assert "sizing decisions" not in result.output


def test_catalogue_check_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "catalogue", "--check"])
    assert result.exit_code == 0, result.output


def test_plan_checks_residency_against_the_stacks_own_allow_list(tmp_path: Path) -> None:
    # prod allows eu-central-1 and eu-west-1; a pack-wide setting that omits its region fails it.
    settings = tmp_path / "policy.json"
    settings.write_text(
        json.dumps({"aws-provider-region-enforce-allowlist": {"allowed_regions": ["eu-west-1"]}})
    )
    args = ["plan", "prod", "--policy-only", "--project-dir", str(ROOT)]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--policy-config", str(settings)])
    assert result.exit_code == 1, result.output
    assert "aws-provider-region-enforce-allowlist" in result.output
