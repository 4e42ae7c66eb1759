"""`llmkit policy`: its help names the exit codes; a check needs no Pulumi and no pulumi-aws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.commands.policy import policy
from tests.test_cli_lazy import heavy, loaded_by


def _graph(**bucket_inputs: Any) -> dict[str, Any]:
    """A small graph as `llmkit plan --json` writes it: a provider and a bucket."""
    provider_urn = "urn:pulumi:dev::llmkit::pulumi:providers:aws::default"
    provider: dict[str, Any] = {
        "urn": provider_urn,
        "id": "provider-id",
        "arn": None,
        "type": "pulumi:providers:aws",
        "name": "default",
        "parent": None,
        "custom": True,
        "provider": None,
        "dependencies": [],
        "inputs": {"region": "eu-central-1"},
    }
    bucket: dict[str, Any] = {
        "urn": "urn:pulumi:dev::llmkit::aws:s3/bucket:Bucket::logs",
        "id": "logs-id",
        "arn": "arn:aws:s3:::logs",
        "type": "aws:s3/bucket:Bucket",
        "name": "logs",
        "parent": None,
        "custom": True,
        "provider": f"{provider_urn}::provider-id",
        "dependencies": [],
        "inputs": bucket_inputs,
    }
    return {"schema": "llmkit.plan/v1", "project": "llmkit", "stack": "dev", "resources": [provider, bucket]}


def test_group_help_names_the_exit_codes() -> None:
    result = CliRunner().invoke(main, ["policy", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Exit codes: 0 ok" in text
    assert "1 findings" in text
    assert "2 usage or configuration error" in text


def test_check_imports_neither_pulumi_nor_the_aws_provider(tmp_path: Path) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(_graph(tags={"owner": "x"})))
    loaded = loaded_by(["policy", "check", str(graph)])
    assert "policies.rules.aws_tagging_resource_missing_required_tags" in loaded  # the rule ran
    assert not heavy(loaded) - {m for m in loaded if m.split(".")[0] in ("pydantic", "rich")}


def test_check_reports_an_untagged_bucket_without_the_provider(tmp_path: Path) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(_graph()))
    result = CliRunner().invoke(main, ["policy", "check", str(graph)], terminal_width=200)
    assert "aws-tagging-resource-missing-required-tags" in result.output
    assert result.exit_code in (0, 1)  # the exit follows the rule's enforcement, checked in tests/pack


def test_an_unreadable_graph_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text("{}")

    def unreadable(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", unreadable)  # as root, chmod 0 would not stop a read
    result = CliRunner().invoke(main, ["policy", "check", str(graph)])
    assert result.exit_code == 2
    assert "GRAPH" in result.output
    assert "Traceback" not in result.output


def test_a_user_error_is_one_line_also_when_the_group_runs_alone(tmp_path: Path) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"schema": "something else"}))
    result = CliRunner().invoke(policy, ["check", str(graph)])
    assert result.exit_code == 2
    assert "not an llmkit plan graph" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
