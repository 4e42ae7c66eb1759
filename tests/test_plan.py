"""`llmkit plan`: the real program on Pulumi's mock runtime, with the real stack files."""

from __future__ import annotations

import gc
import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.errors import ConfigErrors, LlmkitError
from llmkit.plan import MOCK_ACCOUNT_ID, REDACTED, UNKNOWN_VALUE, record, redact, run_plan

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_plans_offline(stack: str) -> None:
    plan = run_plan(stack, ROOT)
    types = [r.type for r in plan.resources]
    assert "pulumi:providers:aws" in types
    provider = next(r for r in plan.resources if r.type == "pulumi:providers:aws")
    assert provider.inputs["region"] == plan.config.region
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    for required in ("owner", "environment", "data-classification"):
        assert tags[required] == plan.config.tags[required]
    # The program's sizing export is the same decision the plan reports.
    assert [m["instance_type"] for m in plan.outputs["models"]] == [
        p.choice.instance_type for p in plan.placements
    ]
    assert len(plan.placements) == len(plan.config.models)


def test_graph_holds_every_registered_resource(tmp_path: Path) -> None:
    out = tmp_path / "graph.json"
    result = CliRunner().invoke(main, ["plan", "prod", "--json", str(out), "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    graph = json.loads(out.read_text())
    assert graph["schema"] == "llmkit.plan/v1"
    assert graph["stack"] == "prod"
    plan = run_plan("prod", ROOT)
    assert sorted(r["urn"] for r in graph["resources"]) == sorted(r.urn for r in plan.resources)
    for r in graph["resources"]:
        assert set(r) == {
            "urn",
            "id",
            "arn",
            "type",
            "name",
            "parent",
            "custom",
            "provider",
            "dependencies",
            "inputs",
        }
    assert "sizing decisions" in result.output
    assert "deepseek-r1:70b" in result.output


def _project(tmp_path: Path, program: str, extra_config: dict[str, object]) -> Path:
    """A throwaway project: the real dev stack file, plus extra keys, and a given program."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "stacks").mkdir()
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    doc["config"].update(extra_config)
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "__main__.py").write_text(textwrap.dedent(program))
    return tmp_path


def test_secrets_never_reach_the_graph(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        """
        import pulumi
        import pulumi_aws as aws

        token = pulumi.Config("app").require_secret("token")
        aws.ssm.Parameter("p1", type="SecureString", value=pulumi.Output.secret("hunter2-plaintext"))
        aws.ssm.Parameter("p2", type="SecureString", value=token)
        # The provider schema marks a parameter's value secret even when given in clear.
        aws.ssm.Parameter("p3", type="String", value="schema-secret", description="visible")
        pulumi.export("token", token)
        pulumi.export("plain", "shown")
        """,
        {"app:token": {"secure": "v1:ciphertext-that-cannot-be-decrypted-offline"}},
    )
    out = tmp_path / "graph.json"
    result = CliRunner().invoke(main, ["plan", "dev", "--json", str(out), "--project-dir", str(project)])
    # The toy program's parameters carry no required tags: the policy pack fails it (exit 1), and
    # its violations table must not leak the secrets either (checked below with the output).
    assert result.exit_code == 1, result.output
    assert "aws-tagging-resource-missing-required-tags" in result.output
    text = out.read_text()
    graph = json.loads(text)
    values = {r["name"]: r["inputs"]["value"] for r in graph["resources"] if r["name"].startswith("p")}
    assert values == {"p1": REDACTED, "p2": REDACTED, "p3": REDACTED}
    p3 = next(r for r in graph["resources"] if r["name"] == "p3")
    assert p3["inputs"]["description"] == "visible"
    assert graph["outputs"] == {"token": REDACTED, "plain": "shown"}
    assert "hunter2-plaintext" not in text + result.output
    assert "schema-secret" not in text + result.output
    assert "offline-placeholder" not in text + result.output
    assert "ciphertext" not in text + result.output


def test_parent_chain_of_components_is_recorded(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        """
        import pulumi
        import pulumi_aws as aws
        from components.base import Component

        class Outer(Component):
            TYPE = "llmkit:test:Outer"
            def __init__(self, name):
                super().__init__(name)
                self.inner = Inner(self.child_name("inner"), pulumi.ResourceOptions(parent=self))
                self.register_outputs({})

        class Inner(Component):
            TYPE = "llmkit:test:Inner"
            def __init__(self, name, opts=None):
                super().__init__(name, opts)
                self.log = aws.cloudwatch.LogGroup(self.child_name("log"), opts=self.child_opts())
                self.register_outputs({})

        Outer("edge")
        """,
        {},
    )
    (project / "components").symlink_to(ROOT / "components")
    plan = run_plan("dev", project)
    by_name = {r.name: r for r in plan.resources}
    assert by_name["edge-inner-log"].parent == by_name["edge-inner"].urn
    assert by_name["edge-inner"].parent == by_name["edge"].urn
    assert plan.resources_per_component() == {"llmkit:test:Outer edge": 1}


def test_invoke_without_offline_answer_is_a_clear_error(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        """
        import pulumi_aws as aws
        aws.ec2.get_vpc(default=True)
        """,
        {},
    )
    with pytest.raises(Exception, match=r"no answer for the invoke 'aws:ec2/getVpc:getVpc'"):
        run_plan("dev", project)


def test_bad_config_stops_before_anything_is_planned(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "raise SystemExit('the program must not run on bad config')\n",
        {"llmkit:logging": {"retention_days": 30}},
    )
    with pytest.raises(ConfigErrors, match=r"llmkit:logging\.retention_days"):
        run_plan("dev", project)
    out = tmp_path / "graph.json"
    result = CliRunner().invoke(main, ["plan", "dev", "--json", str(out), "--project-dir", str(project)])
    assert result.exit_code == 2
    assert "llmkit:logging.retention_days" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_unknown_stack_names_the_ones_that_exist() -> None:
    result = CliRunner().invoke(main, ["plan", "qa", "--project-dir", str(ROOT)])
    assert result.exit_code == 2
    assert "qa" in result.output and "dev" in result.output and "prod" in result.output
    assert "Traceback" not in result.output


def test_model_that_fits_nowhere_is_a_config_error(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    models = doc["config"]["llmkit:models"]
    models[0].update({"name": "deepseek-r1:671b", "quantization": "bf16", "context_length": 131072})
    project = _project(tmp_path, "raise SystemExit('must not run')\n", {"llmkit:models": models})
    with pytest.raises(LlmkitError, match=r"llmkit:models\[0\]"):
        run_plan("dev", project)


def test_redact_handles_every_wire_sentinel() -> None:
    sig = "4dabf18193072939515e22adb298388d"
    raw = {
        "a": {sig: "1b47061264138c4ac30d75fd1eb44270", "value": "s3cret"},
        "b": [1.0, 2.5, "04da6b54-80e4-46f7-96ec-b56ff0331ba9"],
        "c": {sig: "5cf8f73096256a8f31e491e813e4eb8e", "urn": "urn:pulumi:x"},
        "d": {sig: "d0e6a833031e9bbcd3f4e8bde6ca49a4", "value": "v", "secret": True},
        "e": {sig: "d0e6a833031e9bbcd3f4e8bde6ca49a4", "value": {"n": 3.0}},
    }
    assert redact(raw) == {
        "a": REDACTED,
        "b": [1, 2.5, UNKNOWN_VALUE],
        "c": {"$ref": "urn:pulumi:x"},
        "d": REDACTED,
        "e": {"n": 3},
    }


def test_the_garbage_collector_is_paused_only_while_a_program_is_recorded() -> None:
    collecting: list[bool] = []

    def program() -> None:
        import pulumi_aws as aws

        collecting.append(gc.isenabled())
        aws.sns.Topic("alerts")

    assert gc.isenabled()
    resources, _ = record(program, region="eu-west-1")
    assert collecting == [False]
    assert gc.isenabled()
    # The ARN the mock gave the resource is recorded as it gave it.
    topic = next(r for r in resources if r.type == "aws:sns/topic:Topic")
    assert topic.arn == f"arn:aws:sns:eu-west-1:{MOCK_ACCOUNT_ID}:alerts"
    gc.disable()
    try:
        record(program)
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
