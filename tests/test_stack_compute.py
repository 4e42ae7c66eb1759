"""The whole program, per real stack: compute, storage, audit, secrets and budgets as planned.

These tests read the graph that `llmkit plan` records for the real stack files, so they check
the composition in `__main__.py` (which component gets which other component's outputs), not
just each component on its own.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.fleet import asg_name, inventory_group
from components.metrics import DIMENSION
from llmkit.catalog import load_catalog
from llmkit.config import REQUIRED_TAGS, load_stack
from llmkit.placement import MAX_FALLBACKS, place_models
from llmkit.plan import Plan, PlannedResource, run_plan
from llmkit.store_layout import model_slug

ROOT = Path(__file__).resolve().parent.parent
STACKS = ["dev", "staging", "prod"]
COMPONENTS = {
    "KmsKeys",
    "LogBucket",
    "AuditTrail",
    "Network",
    "Firewall",
    "PrivateEndpoints",
    "SecureBucket",
    "ReverseProxy",
    "GpuFleet",
    "ModelStore",
    "Secrets",
    "Budget",
    "Alarms",
}
GROUP = "aws:autoscaling/group:Group"


@cache
def plan_of(stack: str) -> Plan:
    return run_plan(stack, ROOT)


def of_type(plan: Plan, token: str) -> list[PlannedResource]:
    return [r for r in plan.resources if r.type == token]


def named(plan: Plan, name: str) -> PlannedResource:
    (found,) = [r for r in plan.resources if r.name == name]
    return found


def group_types(group: PlannedResource) -> list[str]:
    overrides = group.inputs["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
    return [o["instanceType"] for o in overrides]


@pytest.mark.parametrize("stack", STACKS)
def test_every_component_is_in_the_graph(stack: str) -> None:
    plan = plan_of(stack)
    found = {r.type.removeprefix("llmkit:aws:") for r in plan.resources if r.type.startswith("llmkit:")}
    # The gateway only where the stack has llmkit:gateway (staging and prod, not dev).
    assert found == COMPONENTS | ({"Gateway"} if plan.config.gateway is not None else set())


@pytest.mark.parametrize("stack", STACKS)
def test_no_resource_lacks_the_required_tags(stack: str) -> None:
    plan = plan_of(stack)
    (provider,) = of_type(plan, "pulumi:providers:aws")
    raw = provider.inputs["defaultTags"]  # a provider's inputs travel as JSON strings
    default_tags = (json.loads(raw) if isinstance(raw, str) else raw)["tags"]
    assert set(REQUIRED_TAGS) <= set(default_tags)
    assert default_tags == dict(plan.config.tags)
    # Every AWS resource goes through that provider, which stamps the tags on everything taggable.
    aws_resources = [r for r in plan.resources if r.custom and r.type.startswith("aws:")]
    assert aws_resources
    for r in aws_resources:
        assert r.provider is not None and r.provider.startswith(provider.urn), r.name
    # Default tags do not reach what Auto Scaling launches: the groups propagate them, the
    # launch templates tag instances, volumes and interfaces.
    for group in of_type(plan, GROUP):
        tags = {t["key"]: t["value"] for t in group.inputs["tags"] if t["propagateAtLaunch"]}
        assert {k: tags.get(k) for k in REQUIRED_TAGS} == {k: default_tags[k] for k in REQUIRED_TAGS}
    for template in of_type(plan, "aws:ec2/launchTemplate:LaunchTemplate"):
        for spec in template.inputs["tagSpecifications"]:
            assert {k: spec["tags"].get(k) for k in REQUIRED_TAGS} == {
                k: default_tags[k] for k in REQUIRED_TAGS
            }


@pytest.mark.parametrize("stack", STACKS)
def test_sizing_decides_each_groups_instance_types(stack: str) -> None:
    plan = plan_of(stack)
    groups = {g.inputs["name"]: g for g in of_type(plan, GROUP)}
    assert len(groups) == len(plan.config.models)
    for placement in place_models(plan.config):
        slug = placement.spec.name.replace(":", "-")
        group = groups[f"llmkit-{stack}-{slug}"]
        types = group_types(group)
        assert types[0] == placement.choice.instance_type
        fitting = [c.instance_type for c in placement.sizing.choices]
        assert types == fitting[: len(types)]  # the fallbacks fit too, cheapest first
        replicas = placement.spec.replicas
        assert (group.inputs["minSize"], group.inputs["maxSize"], group.inputs["desiredCapacity"]) == (
            replicas.min,
            replicas.max,
            replicas.start,
        )


def test_the_models_output_shows_the_instance_types_the_groups_and_the_inventory_get() -> None:
    """One list, from one place: the plan's `models` output, the ASG overrides, the host data."""
    plan = plan_of("prod")
    groups = {g.inputs["name"]: g for g in of_type(plan, GROUP)}
    inventory = plan.outputs["inventory"]
    summaries = plan.outputs["models"]
    assert [m["model"] for m in summaries] == [m.name for m in plan.config.models]
    for summary in summaries:
        slug = model_slug(summary["model"])
        shown = [summary["instance_type"], *summary["fallbacks"]]
        assert group_types(groups[asg_name("prod", slug)]) == shown
        data = inventory[inventory_group(slug)]["data"]
        assert data["instance_type"] == summary["instance_type"]
        assert data["instance_types"] == shown
        assert set(data["tensor_parallel_by_instance_type"]) == set(shown)
    # prod's models fit more types than the cap, so the cap itself is what is compared.
    assert {len(m["fallbacks"]) for m in summaries} == {MAX_FALLBACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_the_models_output_names_the_region_of_each_price(stack: str) -> None:
    plan = plan_of(stack)
    pricing = load_catalog().pricing
    for summary, placement in zip(plan.outputs["models"], plan.placements, strict=True):
        price = summary["price"]
        assert price["usd_per_hour"] == placement.choice.price_usd_hour
        assert price["region"] == pricing.region
        assert price["text"].endswith(f"/h ({pricing.region} on-demand)")
        if plan.config.region != pricing.region:
            assert plan.config.region in price["note"] and pricing.region in price["note"]
        else:
            assert "note" not in price


def _plan_with(tmp_path: Path, edit: dict[str, Any]) -> Plan:
    """Plan prod from a copy of the project whose stack file has `edit` applied to llmkit:models[1]."""
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    stack_file = tmp_path / "stacks" / "Pulumi.prod.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"]["llmkit:models"][1].update(edit)
    doc["config"].pop("llmkit:gateway", None)  # its aliases name the stack's own models
    stack_file.write_text(yaml.safe_dump(doc))
    return run_plan("prod", tmp_path)


@pytest.mark.parametrize(
    "edit",
    [{"context_length": 131072, "concurrency": 1}, {"name": "deepseek-r1:14b", "context_length": 8192}],
)
def test_changing_the_model_or_context_changes_the_instance_types(
    tmp_path: Path, edit: dict[str, Any]
) -> None:
    before = {g.inputs["name"]: group_types(g) for g in of_type(plan_of("prod"), GROUP)}
    after_plan = _plan_with(tmp_path, edit)
    after = {g.inputs["name"]: group_types(g) for g in of_type(after_plan, GROUP)}
    slug = str(edit.get("name", "deepseek-r1:70b")).replace(":", "-")
    changed = after[f"llmkit-prod-{slug}"]
    assert changed[0] == after_plan.placements[1].choice.instance_type
    assert changed != before["llmkit-prod-deepseek-r1-70b"]
    assert after["llmkit-prod-deepseek-r1-32b"] == before["llmkit-prod-deepseek-r1-32b"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_model_tier_is_reached_only_through_its_internal_load_balancer(stack: str) -> None:
    plan = plan_of(stack)
    balancers = {r.name: r for r in of_type(plan, "aws:lb/loadBalancer:LoadBalancer")}
    models_lb = balancers["fleet-alb"]
    assert models_lb.inputs["internal"] is True
    assert models_lb.inputs["subnets"] == [f"net-model-{i}-id" for i in range(plan.config.network.az_count)]
    assert models_lb.inputs["securityGroups"] == ["fw-models_lb-id"]
    listener = next(
        r
        for r in of_type(plan, "aws:lb/listener:Listener")
        if r.inputs["loadBalancerArn"].endswith("fleet-alb")
    )
    assert listener.inputs["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    # The public edge forwards only to the app tier's target group, never to a model target.
    edge_targets = [r for r in of_type(plan, "aws:lb/targetGroup:TargetGroup") if r.name.startswith("edge-")]
    assert [t.inputs["port"] for t in edge_targets] == [plan.config.firewall.app_port]
    for group in of_type(plan, GROUP):
        assert group.inputs["vpcZoneIdentifiers"] == models_lb.inputs["subnets"]
        # Each group registers with its own target group of the model load balancer, nothing else.
        assert [arn.rsplit(":", 1)[1] for arn in group.inputs["targetGroupArns"]] == [
            "fleet-tg-" + group.inputs["name"].removeprefix(f"llmkit-{stack}-")
        ]


def test_prod_wires_keys_store_endpoint_and_fleet_together() -> None:
    plan = plan_of("prod")
    # The groups launch with the stack's own Auto Scaling role, which the data key admits.
    (role,) = of_type(plan, "aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert role.inputs["awsServiceName"] == "autoscaling.amazonaws.com"
    role_arn = f"arn:aws:iam:eu-central-1:123456789012:{role.name}"
    for group in of_type(plan, GROUP):
        assert group.inputs["serviceLinkedRoleArn"] == role_arn
    data_policy = json.loads(named(plan, "keys-data").inputs["policy"])
    principals = [s["Principal"].get("AWS") for s in data_policy["Statement"]]
    assert [role_arn] in principals or role_arn in principals
    # The S3 gateway endpoint carries the policy that names the model store.
    gateway = next(
        r
        for r in of_type(plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs["vpcEndpointType"] == "Gateway"
    )
    endpoint_policy = json.loads(gateway.inputs["policy"])
    resources = json.dumps(endpoint_policy)
    assert "arn:aws:s3:::llmkit-prod-models-123456789012-eu-central-1" in resources
    # The model store admits the fleet's roles, through that endpoint.
    store_policy = named(plan, "models-policy").inputs["policy"]
    for r in of_type(plan, "aws:iam/role:Role"):
        if r.name.startswith("fleet-role-"):
            assert f"arn:aws:iam:eu-central-1:123456789012:{r.name}" in store_policy
    assert "vpce-" in store_policy or "vpce-s3-id" in store_policy
    # CloudTrail writes to the log bucket the trail's policy statements name.
    (trail,) = of_type(plan, "aws:cloudtrail/trail:Trail")
    assert trail.inputs["name"] == "llmkit-prod"
    assert trail.inputs["isMultiRegionTrail"] is True
    assert trail.inputs["enableLogFileValidation"] is True
    assert "trail/llmkit-prod" in named(plan, "logs-policy").inputs["policy"]


def test_prod_exports_what_operators_and_playbooks_need() -> None:
    outputs = plan_of("prod").outputs
    assert outputs["endpoint_url"].startswith("https://")
    assert set(outputs["asg_names"]) == {"deepseek-r1-32b", "deepseek-r1-70b"}
    assert set(outputs["key_arns"]) == {"data", "logs", "secrets"}
    assert outputs["model_bucket"]
    inventory = outputs["inventory"]
    assert set(inventory) == {"model_deepseek_r1_32b", "model_deepseek_r1_70b"}
    data = inventory["model_deepseek_r1_70b"]["data"]
    assert data["mirror"].startswith("s3://llmkit-prod-models-")
    assert data["metrics"]["dimension"] == DIMENSION
    assert data["models"][0]["name"] == "deepseek-r1:70b"


def test_alarms_watch_both_balancers_and_every_group() -> None:
    plan = plan_of("prod")
    alarms = {r.inputs["name"]: r for r in of_type(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")}
    for label in ("edge", "models"):
        assert f"llmkit-prod-{label}-p99-latency" in alarms
        assert f"llmkit-prod-{label}-5xx-rate" in alarms
    for slug in ("deepseek-r1-32b", "deepseek-r1-70b"):
        assert f"llmkit-prod-{slug}-gpu-low" in alarms
        assert f"llmkit-prod-{slug}-gpu-high" in alarms
        assert f"llmkit-prod-{slug}-unhealthy-targets" in alarms
    topic = "arn:aws:sns:eu-central-1:123456789012:budget-topic"
    assert all(a.inputs["alarmActions"] == [topic] for a in alarms.values())
    assert (
        load_stack("prod", ROOT).alarms.p99_latency_seconds
        == alarms["llmkit-prod-edge-p99-latency"].inputs["threshold"]
    )
