"""The stack configuration schema: real stack files load, every bad input names key, value and accepted."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import config as runtime_config

from llmkit.catalog import load_catalog
from llmkit.config import (
    LOG_RETENTION_DAYS,
    MISSING,
    TIERS,
    FirewallSection,
    StackConfig,
    duration_seconds,
    from_mapping,
    from_pulumi_runtime,
    load_stack,
    load_stack_file,
)
from llmkit.errors import ConfigError, ConfigErrors

ROOT = Path(__file__).resolve().parents[1]
STACKS = ("dev", "staging", "prod")
GOOD: dict[str, Any] = yaml.safe_load((ROOT / "stacks" / "Pulumi.staging.yaml").read_text())["config"]
DELETE = object()
RETENTION = "an integer >= 180 among CloudWatch Logs retention values: " + ", ".join(
    map(str, LOG_RETENTION_DAYS)
)
CERT_ARN = "arn:aws:acm:eu-central-1:123456789012:certificate/8c4e1b7a-2d3f-4a5b-b6c7-9e8f0a1b2c3d"
PEM = (ROOT / "stacks" / "certs" / "prod-clients-ca.pem").read_text()  # a real CA certificate


def changed(*edits: tuple[str, Any]) -> dict[str, Any]:
    """A copy of the good staging config with each (key path, value) set, or removed for DELETE."""
    raw = copy.deepcopy(GOOD)
    for path, value in edits:
        parts = [int(i) if i else name for name, i in re.findall(r"([^.\[]+)|\[(\d+)\]", path)]
        parent: Any = raw
        for part in parts[:-1]:
            parent = parent[part]
        if value is DELETE:
            del parent[parts[-1]]
        else:
            parent[parts[-1]] = value
    return raw


def errors_of(raw: dict[str, Any], **kwargs: Any) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        from_mapping(raw, source="test", **kwargs)
    text = str(caught.value)
    assert "Traceback" not in text and "errors.pydantic.dev" not in text
    assert text.startswith(f"test: {len(caught.value.errors)} configuration error(s):")
    return caught.value.errors


def only_error(raw: dict[str, Any], **kwargs: Any) -> ConfigError:
    errors = errors_of(raw, **kwargs)
    assert len(errors) == 1, "\n".join(str(e) for e in errors)
    return errors[0]


def assert_error(error: ConfigError, key: str, value: Any, message: str, accepted: str) -> None:
    assert (error.key, error.value, error.problem, error.accepted) == (key, value, message, accepted)
    assert error.source == "test"
    assert str(error) == f"test: {key}: {message} (got {value!r}; accepted: {accepted})"


# --- the stack files ---------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_file_loads(stack: str) -> None:
    config = load_stack(stack, ROOT)
    assert config.stack == stack
    assert config.region in config.allowed_regions
    assert config.tags["environment"] == stack
    assert config.endpoint.public is False
    assert config == load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml")


def test_stack_files_hold_what_each_environment_needs() -> None:
    dev, prod = load_stack("dev", ROOT), load_stack("prod", ROOT)
    assert (dev.network.az_count, dev.network.nat_gateways, dev.logging.retention_days) == (2, "one", 180)
    assert [(m.name, m.quantization, m.replicas.min, m.replicas.max) for m in prod.models] == [
        ("deepseek-r1:32b", "q4_K_M", 2, 6),
        ("deepseek-r1:70b", "q4_K_M", 1, 3),
    ]
    assert (prod.network.nat_gateways, prod.logging.retention_days) == ("per_az", 365)
    assert (prod.kms.rotation_period_days, prod.kms.deletion_window_days) == (365, 30)


def test_secure_defaults_fill_optional_keys() -> None:
    config = from_mapping(
        changed(
            ("llmkit:runtime", DELETE),
            ("llmkit:network.nat_gateways", DELETE),
            ("llmkit:endpoint.public", DELETE),
            ("llmkit:endpoint.mtls_ca_bundle", DELETE),
            ("llmkit:budget.alert_thresholds_percent", DELETE),
            ("llmkit:rate_limits", DELETE),
            ("llmkit:logging", DELETE),
            ("llmkit:kms", DELETE),
            ("llmkit:models[0].instance_type", "g6e.xlarge"),
        ),
        source="test",
    )
    assert (config.runtime, config.network.nat_gateways, config.endpoint.public) == (
        "ollama",
        "per_az",
        False,
    )
    assert config.endpoint.mtls_ca_bundle is None
    assert config.budget.alert_thresholds_percent == [80, 95]
    assert (config.rate_limits.requests_per_window, config.rate_limits.window_seconds) == (1000, 300)
    assert config.logging.retention_days == 180
    assert (config.kms.rotation_period_days, config.kms.deletion_window_days) == (365, 30)
    assert config.models[0].instance_type == "g6e.xlarge"
    assert config.stack is None
    assert config.firewall.network_firewall is False
    assert config.firewall.egress_allowed_domains == config.firewall.extra_ingress == []
    assert config.firewall.app_port == 8443


def test_the_config_is_frozen() -> None:
    config = load_stack("dev", ROOT)
    with pytest.raises(ValueError, match="frozen"):
        config.runtime = "vllm"  # type: ignore[misc]


# --- one bad input each ------------------------------------------------------------------------

CATALOG = load_catalog()
CIDR_ACCEPTED = "an IPv4 CIDR (/16../28) in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"


BAD_VALUES: dict[str, tuple[str, Any, str, str]] = {  # id: key path, bad value, message, accepted
    "unknown-nested-key": (
        "llmkit:network.nat",
        "one",
        "unknown key",
        "one of: az_count, vpc_cidr, nat_gateways, subnets",
    ),
    "unknown-key-in-list-item": (
        "llmkit:models[0].quantisation",
        "q4_K_M",
        "unknown key",
        "one of: name, quantization, context_length, concurrency, replicas, instance_type",
    ),
    "wrong-type-integer": (
        "llmkit:network.az_count",
        "three",
        "wrong type: expected an integer, got a string",
        "an integer 1..6",
    ),
    "wrong-type-section": (
        "llmkit:endpoint",
        ["10.0.0.0/8"],
        "wrong type: expected a mapping, got a list",
        "a mapping with keys: public, allowed_client_cidrs, tls_certificate_arn, mtls_ca_bundle, "
        "deletion_protection",
    ),
    "wrong-type-bool": (
        "llmkit:endpoint.public",
        "sometimes",
        "wrong type: expected true or false, got a string",
        "true (internet-facing) or false (internal)",
    ),
    "cidr-does-not-parse": (
        "llmkit:network.vpc_cidr",
        "10.30.0.0/33",
        "not an IPv4 CIDR ('33' is not a valid netmask)",
        CIDR_ACCEPTED,
    ),
    "cidr-host-bits": (
        "llmkit:network.vpc_cidr",
        "10.30.0.1/16",
        "not an IPv4 CIDR (10.30.0.1/16 has host bits set)",
        CIDR_ACCEPTED,
    ),
    "cidr-without-prefix": (
        "llmkit:network.vpc_cidr",
        "10.30.0.0",
        "not a CIDR: the /prefix length is missing",
        CIDR_ACCEPTED,
    ),
    "vpc-not-private": (
        "llmkit:network.vpc_cidr",
        "100.64.0.0/16",
        "not a private (RFC 1918) range",
        CIDR_ACCEPTED,
    ),
    "vpc-too-large": (
        "llmkit:network.vpc_cidr",
        "10.0.0.0/8",
        "/8 is not a block size AWS accepts",
        CIDR_ACCEPTED,
    ),
    "subnet-prefix-and-cidrs": (
        "llmkit:network.subnets.dmz",
        {"prefix": 24, "cidrs": ["10.30.250.0/24"]},
        "give exactly one of prefix and cidrs",
        "{prefix: <length>} or {cidrs: [<one CIDR per AZ>]}",
    ),
    "unknown-model": (
        "llmkit:models[0].name",
        "deepseek-r2:32b",
        "unknown model",
        "one of: " + ", ".join(CATALOG.models),
    ),
    "context-over-max": (
        "llmkit:models[0].context_length",
        CATALOG.models["deepseek-r1:32b"].max_context + 1,
        "over the maximum context of deepseek-r1:32b",
        f"an integer 1..{CATALOG.models['deepseek-r1:32b'].max_context}",
    ),
    "replicas-min-over-max": (
        "llmkit:models[0].replicas.min",
        3,
        "greater than max",
        "an integer 0..2 (replicas.max)",
    ),
    "unknown-instance-type": (
        "llmkit:models[0].instance_type",
        "g7.huge",
        "unknown instance type",
        "one of: " + ", ".join(CATALOG.instances),
    ),
    "unknown-runtime": (
        "llmkit:runtime",
        "llama.cpp",
        "unknown runtime",
        "one of: " + ", ".join(CATALOG.runtimes),
    ),
    "retention-90": ("llmkit:logging.retention_days", 90, "under the 180-day minimum", RETENTION),
    "retention-200": (
        "llmkit:logging.retention_days",
        200,
        "not a retention period CloudWatch Logs accepts",
        RETENTION,
    ),
    "bad-data-classification": (
        "llmkit:tags.data-classification",
        "top-secret",
        "unknown data classification",
        "one of: public, internal, confidential, restricted",
    ),
    "reserved-tag-key": (
        "llmkit:tags.aws:team",
        "x",
        "not a tag AWS accepts",
        "a key of 1..128 characters not starting with aws:, and a value of at most 256 characters",
    ),
    "arn-not-acm": (
        "llmkit:endpoint.tls_certificate_arn",
        "arn:aws:iam::123456789012:server-certificate/llm",
        "not an ACM certificate ARN",
        "an ACM certificate ARN: arn:aws:acm:<region>:<account>:certificate/<uuid>",
    ),
    "arn-other-region": (
        "llmkit:endpoint.tls_certificate_arn",
        CERT_ARN.replace("eu-central-1", "us-east-1"),
        "the certificate is in us-east-1, not in aws:region eu-central-1",
        "an ACM certificate ARN in eu-central-1",
    ),
    "world-open-internal-endpoint": (
        "llmkit:endpoint.allowed_client_cidrs[0]",
        "0.0.0.0/0",
        "0.0.0.0/0 opens an internal endpoint to every address",
        "the client networks' CIDRs; 0.0.0.0/0 only with llmkit:endpoint.public: true",
    ),
    "rate-under-waf-minimum": (
        "llmkit:rate_limits.requests_per_window",
        5,
        "must be greater than or equal to 10",
        "an integer 10..2000000000 (AWS WAF limits), per client IP",
    ),
    "rate-window": (
        "llmkit:rate_limits.window_seconds",
        30,
        "must be 60, 120, 300 or 600",
        "one of: 60, 120, 300, 600 (AWS WAF evaluation windows)",
    ),
    "thresholds-not-increasing": (
        "llmkit:budget.alert_thresholds_percent[1]",
        80,
        "not greater than the threshold before it (80)",
        "a list of integers 1..1000, strictly increasing: alerts on the actual spend",
    ),
    "bad-email": (
        "llmkit:budget.alert_emails[1]",
        "finops.example.com",
        "not an email address",
        "a list of at least one email address",
    ),
    "kms-deletion-window": (
        "llmkit:kms.deletion_window_days",
        31,
        "must be less than or equal to 30",
        "an integer 7..30",
    ),
    "bad-region-name": (
        "llmkit:allowed_regions[1]",
        "Frankfurt",
        "not an AWS region name",
        "a list of at least one AWS region name",
    ),
}


@pytest.mark.parametrize(("key", "value", "message", "accepted"), BAD_VALUES.values(), ids=BAD_VALUES)
def test_bad_value_names_key_value_and_accepted(key: str, value: Any, message: str, accepted: str) -> None:
    assert_error(only_error(changed((key, value))), key, value, message, accepted)


def test_unknown_top_level_llmkit_key() -> None:
    error = only_error({**GOOD, "llmkit:instance_count": 3})
    accepted = "one of: " + ", ".join(
        f"llmkit:{k}"
        for k in (
            "allowed_regions",
            "allow_world_open",
            "network",
            "runtime",
            "models",
            "endpoint",
            "rate_limits",
            "budget",
            "logging",
            "kms",
            "firewall",
            "fleet",
            "alarms",
            "secrets",
            "gateway",
            "tags",
        )
    )
    assert_error(error, "llmkit:instance_count", 3, "unknown key", accepted)


def test_region_under_llmkit_points_to_aws_region() -> None:
    error = only_error({**GOOD, "llmkit:region": "eu-central-1"})
    assert (error.key, error.problem) == ("llmkit:region", "unknown key; the region is read from aws:region")


def test_other_namespaces_are_passed_through() -> None:
    config = from_mapping({**GOOD, "aws:profile": "prod-admin", "pulumi:tags": {"a": "b"}}, source="test")
    assert config.region == "eu-central-1"


def test_keys_without_namespace_belong_to_the_project() -> None:
    raw = {k.removeprefix("llmkit:"): v for k, v in GOOD.items()}
    assert from_mapping(raw, source="test") == from_mapping(GOOD, source="test")


def test_region_outside_allowed_regions() -> None:
    assert_error(
        only_error(changed(("aws:region", "us-east-1"))),
        "aws:region",
        "us-east-1",
        "region is outside llmkit:allowed_regions (data residency)",
        "one of llmkit:allowed_regions: eu-central-1, eu-west-1",
    )


def test_world_open_client_cidr_is_allowed_on_a_public_endpoint_with_the_override() -> None:
    raw = changed(
        ("llmkit:endpoint.public", True),
        ("llmkit:endpoint.allowed_client_cidrs", ["0.0.0.0/0"]),
        ("llmkit:allow_world_open", ["endpoint.allowed_client_cidrs"]),
    )
    assert from_mapping(raw, source="test").endpoint.allowed_client_cidrs == [IPv4Network("0.0.0.0/0")]


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("aws:region", "an AWS region name such as eu-central-1"),
        (
            "llmkit:models",
            "a list of at least one model, each a mapping with keys: name, quantization, "
            "context_length, concurrency, replicas, instance_type",
        ),
        ("llmkit:network.subnets.data", "a mapping with keys: prefix, cidrs"),
        ("llmkit:budget.alert_emails", "a list of at least one email address"),
        (
            "llmkit:endpoint.tls_certificate_arn",
            "an ACM certificate ARN: arn:aws:acm:<region>:<account>:certificate/<uuid>",
        ),
    ],
)
def test_missing_required_key(key: str, accepted: str) -> None:
    assert_error(only_error(changed((key, DELETE))), key, MISSING, "missing required key", accepted)


@pytest.mark.parametrize("tag", ["owner", "environment", "data-classification"])
def test_missing_required_tag(tag: str) -> None:
    error = only_error(changed((f"llmkit:tags.{tag}", DELETE)))
    accepted = {
        "owner": "a non-empty string naming the owning team",
        "environment": "a non-empty string naming the environment (e.g. the stack name)",
        "data-classification": "one of: public, internal, confidential, restricted",
    }[tag]
    assert_error(error, f"llmkit:tags.{tag}", MISSING, "missing required tag", accepted)
    assert f"llmkit:tags.{tag}: missing required tag (got nothing; accepted: {accepted})" in str(error)


def test_quantization_not_served_by_the_runtime() -> None:
    assert "q4_K_M" not in CATALOG.runtimes["vllm"].quantizations
    error = only_error(changed(("llmkit:runtime", "vllm")))
    served = [
        q
        for q in CATALOG.models["deepseek-r1:32b"].quantizations
        if q in CATALOG.runtimes["vllm"].quantizations
    ]
    assert_error(
        error,
        "llmkit:models[0].quantization",
        "q4_K_M",
        "not served by runtime vllm",
        f"one of: {', '.join(served)} (published for deepseek-r1:32b and served by vllm)",
    )


def test_quantization_neither_published_nor_served() -> None:
    model, runtime = CATALOG.models["deepseek-r1:1.5b"], CATALOG.runtimes["ollama"]
    assert "fp8" not in model.quantizations and "fp8" not in runtime.quantizations
    error = only_error(
        changed(("llmkit:models[0].name", model.name), ("llmkit:models[0].quantization", "fp8"))
    )
    served = [q for q in model.quantizations if q in runtime.quantizations]
    assert_error(
        error,
        "llmkit:models[0].quantization",
        "fp8",
        "not published for deepseek-r1:1.5b and not served by runtime ollama",
        f"one of: {', '.join(served)} (published for deepseek-r1:1.5b and served by ollama)",
    )


# --- subnets -----------------------------------------------------------------------------------


def test_overlapping_explicit_subnets_name_both() -> None:
    error = only_error(
        changed(
            ("llmkit:network.subnets.app", {"cidrs": ["10.30.100.0/24", "10.30.104.0/24", "10.30.108.0/24"]}),
            (
                "llmkit:network.subnets.data",
                {"cidrs": ["10.30.200.0/24", "10.30.100.0/23", "10.30.202.0/24"]},
            ),
        )
    )
    assert_error(
        error,
        "llmkit:network.subnets.data.cidrs[1]",
        "10.30.100.0/23",
        "overlaps 10.30.100.0/24 at llmkit:network.subnets.app.cidrs[0]",
        "a subnet that overlaps no other subnet",
    )


def test_explicit_subnets_inside_the_vpc_one_per_az() -> None:
    errors = errors_of(
        changed(("llmkit:network.subnets.data", {"cidrs": ["10.30.200.0/24", "10.31.0.0/24"]}))
    )
    assert [(e.key, e.value, e.problem, e.accepted) for e in errors] == [
        (
            "llmkit:network.subnets.data.cidrs",
            ["10.30.200.0/24", "10.31.0.0/24"],
            "2 CIDRs for 3 AZs",
            "exactly 3 CIDRs, one per AZ (llmkit:network.az_count)",
        ),
        (
            "llmkit:network.subnets.data.cidrs[1]",
            "10.31.0.0/24",
            "outside the VPC 10.30.0.0/16",
            "a subnet of llmkit:network.vpc_cidr 10.30.0.0/16",
        ),
    ]


def test_subnets_that_do_not_fit() -> None:
    # /20 = 4 x /22: app takes three, model finds one; dmz still fits, data then does not
    model, data = errors_of(changed(("llmkit:network.vpc_cidr", "10.30.0.0/20")))
    accepted = "a longer prefix length or a larger llmkit:network.vpc_cidr"
    assert_error(
        model,
        "llmkit:network.subnets.model.prefix",
        22,
        "3 x /22 subnets do not fit: they need 3072 addresses in aligned /22 blocks, "
        "10.30.0.0/20 has 1024 free",
        accepted,
    )
    assert_error(
        data,
        "llmkit:network.subnets.data.prefix",
        24,
        "3 x /24 subnets do not fit: they need 768 addresses in aligned /24 blocks, "
        "10.30.0.0/20 has 256 free",
        accepted,
    )


def test_subnet_plan_is_one_subnet_per_az_inside_the_vpc_without_overlap() -> None:
    config = load_stack("prod", ROOT)
    plan = config.subnet_plan()
    assert list(plan) == [*TIERS, "nat", "firewall"]  # prod has the Network Firewall
    subnets = [s for tier in plan for s in plan[tier]]
    assert all(len(plan[tier]) == config.network.az_count for tier in plan)
    assert all(s.subnet_of(config.network.vpc_cidr) for s in subnets)
    assert not [(a, b) for i, a in enumerate(subnets) for b in subnets[i + 1 :] if a.overlaps(b)]
    assert [str(s) for s in plan["data"]] == ["10.40.200.0/24", "10.40.201.0/24", "10.40.202.0/24"]
    assert {s.prefixlen for s in plan["app"] + plan["model"]} == {22}
    assert {s.prefixlen for s in plan["dmz"]} == {24}
    assert {s.prefixlen for s in plan["nat"] + plan["firewall"]} == {28}


def test_subnet_plan_is_deterministic_and_largest_first() -> None:
    plans = [from_mapping(copy.deepcopy(GOOD), source="test").subnet_plan() for _ in range(3)]
    assert plans[0] == plans[1] == plans[2]
    assert {tier: [str(s) for s in subnets] for tier, subnets in plans[0].items()} == {
        "dmz": ["10.30.24.0/24", "10.30.25.0/24", "10.30.26.0/24"],
        "app": ["10.30.0.0/22", "10.30.4.0/22", "10.30.8.0/22"],
        "model": ["10.30.12.0/22", "10.30.16.0/22", "10.30.20.0/22"],
        "data": ["10.30.27.0/24", "10.30.28.0/24", "10.30.29.0/24"],
    }


def test_subnet_plan_carves_around_explicit_subnets() -> None:
    raw = changed(
        ("llmkit:network.subnets.data", {"cidrs": ["10.30.0.0/24", "10.30.5.0/24", "10.30.1.0/24"]})
    )
    plan = from_mapping(raw, source="test").subnet_plan()
    assert [str(s) for s in plan["app"]] == ["10.30.8.0/22", "10.30.12.0/22", "10.30.16.0/22"]
    assert [str(s) for s in plan["dmz"]] == ["10.30.2.0/24", "10.30.3.0/24", "10.30.4.0/24"]
    plan["app"].clear()  # a copy: the config itself cannot be changed
    assert len(from_mapping(raw, source="test").subnet_plan()["app"]) == 3


# --- how values arrive ---------------------------------------------------------------------------


def test_json_string_values_as_the_pulumi_runtime_delivers_them() -> None:
    as_runtime = {k: v if isinstance(v, str) else json.dumps(v) for k, v in GOOD.items()}
    assert isinstance(as_runtime["llmkit:network"], str)
    assert from_mapping(as_runtime, source="test") == from_mapping(GOOD, source="test")


def test_json_string_value_errors_show_the_parsed_value() -> None:
    raw = {**GOOD, "llmkit:logging": json.dumps({"retention_days": 90})}
    assert_error(only_error(raw), "llmkit:logging.retention_days", 90, "under the 180-day minimum", RETENTION)


@pytest.mark.parametrize("key", ["llmkit:budget", "llmkit:endpoint.tls_certificate_arn", "llmkit:tags.owner"])
def test_misplaced_secure_value_is_refused(key: str) -> None:
    error = only_error(changed((key, {"secure": "v1:Zm9vYmFy:c2VjcmV0"})))
    assert_error(
        error,
        key,
        "[secret]",
        "a Pulumi secret (secure:) on a key that is not secret; set it in plain text",
        "a plain value: this key is not a secret",
    )


def test_several_errors_are_reported_together() -> None:
    raw = changed(
        ("llmkit:network.vpc_cidr", "8.8.0.0/16"),
        ("llmkit:models[0].name", "deepseek-r9"),
        ("llmkit:logging.retention_days", 200),
        ("llmkit:tags.owner", DELETE),
        ("llmkit:colour", "blue"),
    )
    with pytest.raises(ConfigErrors) as caught:
        from_mapping(raw, source="stacks/Pulumi.staging.yaml")
    assert [e.key for e in caught.value.errors] == [
        "llmkit:colour",
        "llmkit:network.vpc_cidr",
        "llmkit:models[0].name",
        "llmkit:logging.retention_days",
        "llmkit:tags.owner",
    ]
    lines = str(caught.value).splitlines()
    assert lines[0] == "stacks/Pulumi.staging.yaml: 5 configuration error(s):"
    assert lines[2] == (
        "  - llmkit:network.vpc_cidr: not a private (RFC 1918) range (got '8.8.0.0/16'; accepted: "
        f"{CIDR_ACCEPTED})"
    )
    assert all(e.source == "stacks/Pulumi.staging.yaml" for e in caught.value.errors)


# --- files -------------------------------------------------------------------------------------


def write_stack(project: Path, name: str, text: str) -> Path:
    path = project / "stacks" / f"Pulumi.{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_unknown_stack_lists_the_stacks_that_exist() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_stack("qa", ROOT)
    error = caught.value.errors[0]
    assert (error.key, error.value, error.accepted) == ("stack", "qa", "one of: dev, prod, staging")
    assert error.problem == f"unknown stack: no {ROOT / 'stacks' / 'Pulumi.qa.yaml'}"


def test_missing_stack_file_names_the_file_and_the_stacks_beside_it(tmp_path: Path) -> None:
    write_stack(tmp_path, "dev", yaml.safe_dump({"config": GOOD}))
    missing = tmp_path / "stacks" / "Pulumi.qa.yaml"
    with pytest.raises(ConfigErrors) as caught:
        load_stack_file(missing)
    assert str(caught.value) == (
        f"{missing}: 1 configuration error(s):\n"
        "  - file: no such stack file (got 'Pulumi.qa.yaml'; accepted: one of: dev)"
    )


def test_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "dev", "config:\n  aws:region: [eu-central-1\n")
    with pytest.raises(ConfigErrors) as caught:
        load_stack_file(path)
    assert caught.value.source == str(path)
    assert caught.value.errors[0].problem.startswith("not YAML: ")
    assert "line 3" in caught.value.errors[0].problem


def test_file_without_a_config_mapping(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "dev", "encryptionsalt: v1:abc\n")
    with pytest.raises(ConfigErrors) as caught:
        load_stack_file(path)
    assert str(caught.value) == (
        f"{path}: 1 configuration error(s):\n"
        "  - config: the file has no top-level config: mapping "
        "(got None; accepted: a mapping of Pulumi config keys (aws:region, llmkit:...))"
    )


def test_misplaced_secure_value_in_a_stack_file(tmp_path: Path) -> None:
    text = (ROOT / "stacks" / "Pulumi.staging.yaml").read_text()
    text = text.replace("monthly_usd: 6000", "monthly_usd:\n      secure: v1:AAAABBBB:Q0NDRA==")
    path = write_stack(tmp_path, "staging", text)
    with pytest.raises(ConfigErrors) as caught:
        load_stack_file(path)
    assert [(e.key, e.source) for e in caught.value.errors] == [("llmkit:budget.monthly_usd", str(path))]
    assert "v1:AAAABBBB" not in str(caught.value)


def test_mtls_ca_bundle_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "clients-ca.pem").write_text(PEM)
    (tmp_path / "certs" / "empty.pem").write_text("not a certificate\n")
    config = {
        **GOOD,
        "llmkit:endpoint": {**GOOD["llmkit:endpoint"], "mtls_ca_bundle": "certs/clients-ca.pem"},
    }
    assert load_stack_file(write_stack(tmp_path, "ok", yaml.safe_dump({"config": config}))).stack == "ok"
    for bundle, problem in [
        ("certs/missing.pem", f"cannot read {tmp_path / 'certs/missing.pem'} (No such file or directory)"),
        ("certs/empty.pem", f"{tmp_path / 'certs/empty.pem'} holds no PEM certificate"),
        (str(tmp_path / "certs/clients-ca.pem"), "an absolute path; stacks must work from any checkout"),
    ]:
        endpoint = {**GOOD["llmkit:endpoint"], "mtls_ca_bundle": bundle}
        error = only_error({**GOOD, "llmkit:endpoint": endpoint}, project_dir=tmp_path)
        assert (error.key, error.value, error.problem) == ("llmkit:endpoint.mtls_ca_bundle", bundle, problem)


# --- inside a Pulumi program ---------------------------------------------------------------------


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return {}, []


@pytest.fixture
def pulumi_stack() -> Iterator[None]:
    pulumi.runtime.set_mocks(_Mocks(), project="llmkit", stack="staging", preview=True)
    yield
    runtime_config.set_all_config({}, [])


def test_from_pulumi_runtime(pulumi_stack: None, monkeypatch: pytest.MonkeyPatch) -> None:
    as_runtime = {k: v if isinstance(v, str) else json.dumps(v) for k, v in GOOD.items()}
    runtime_config.set_all_config({k: v for k, v in as_runtime.items() if k != "llmkit:tags"}, [])
    monkeypatch.setenv(
        "PULUMI_CONFIG", json.dumps({"llmkit:tags": as_runtime["llmkit:tags"], "llmkit:runtime": "vllm"})
    )
    config = from_pulumi_runtime(ROOT)
    assert config.stack == "staging"
    assert config.runtime == "ollama"  # CONFIG wins over the environment
    assert config.tags == GOOD["llmkit:tags"]
    assert isinstance(config, StackConfig)


def test_from_pulumi_runtime_refuses_a_secret_without_echoing_it(pulumi_stack: None) -> None:
    raw = {**GOOD, "llmkit:tags": json.dumps({**GOOD["llmkit:tags"], "owner": "s3cr3t-owner"})}
    runtime_config.set_all_config(raw, ["llmkit:tags"])
    with pytest.raises(ConfigErrors) as caught:
        from_pulumi_runtime(ROOT)
    assert caught.value.source == "stack staging"
    assert [(e.key, e.value) for e in caught.value.errors] == [("llmkit:tags", "[secret]")]
    assert "s3cr3t" not in str(caught.value)


# --- docs ----------------------------------------------------------------------------------------


def test_docs_describe_every_key() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    from pydantic import BaseModel

    def keys(model: type[BaseModel]) -> Iterator[str]:
        for name, field in model.model_fields.items():
            yield name
            kind = field.annotation
            for inner in (kind, *getattr(kind, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from keys(inner)

    missing = sorted(
        {k for k in keys(StackConfig) if k not in ("stack", "region")} - set(re.findall(r"`(\w+)", docs))
    )
    assert not missing


# --- llmkit:firewall ---------------------------------------------------------------------------

FW_PORT = "an integer 1..65535 other than 22 (SSH) and 3389 (RDP)"
FW_DOMAINS = (
    "a list of domains, each a lowercase DNS name of at least two labels such as registry.ollama.ai, "
    "or with a leading dot (.huggingface.co) for the domain and all its subdomains"
)
FW_WORLD = (
    "the client networks' CIDRs; 0.0.0.0/0 only for tier lb, port 443 with llmkit:endpoint.public: true"
)
NEVER_SSH_RDP = "SSH/RDP ingress is never opened: use SSM Session Manager"


def ingress(**changes: Any) -> dict[str, Any]:
    return {"tier": "lb", "port": 443, "cidrs": ["10.1.0.0/16"], "description": "partner VPN", **changes}


def test_stacks_firewall_sections() -> None:
    prod = load_stack("prod", ROOT).firewall
    assert prod.network_firewall is True  # app egress through the domain allow-list
    assert prod.egress_allowed_domains == [
        "registry.ollama.ai",
        ".huggingface.co",
        "deb.debian.org",
        "security.debian.org",
    ]
    assert not any("amazonaws.com" in d for d in prod.egress_allowed_domains)  # VPC endpoints serve AWS
    for stack in ("dev", "staging"):
        assert load_stack(stack, ROOT).firewall == FirewallSection()


def test_firewall_section_accepts_safe_values() -> None:
    firewall = {
        "network_firewall": True,
        "egress_allowed_domains": ["registry.ollama.ai", ".huggingface.co"],
        "extra_ingress": [
            ingress(),
            ingress(tier="app", port=9090, cidrs=["10.9.0.0/24"], description="metrics: prometheus (ops)"),
        ],
        "app_port": 9443,
    }
    egress = {"nat": {"prefix": 28}, "firewall": {"prefix": 28}}
    subnets = {**GOOD["llmkit:network"]["subnets"], **egress}
    config = from_mapping(
        changed(("llmkit:firewall", firewall), ("llmkit:network.subnets", subnets)), source="test"
    ).firewall
    assert config.app_port == 9443
    assert [(r.tier, r.port, r.cidrs) for r in config.extra_ingress] == [
        ("lb", 443, [IPv4Network("10.1.0.0/16")]),
        ("app", 9090, [IPv4Network("10.9.0.0/24")]),
    ]


FIREWALL_BAD: dict[
    str, tuple[dict[str, Any], str, Any, str, str]
] = {  # firewall, key, value, message, accepted
    "ssh": (
        {"extra_ingress": [ingress(port=22)]},
        "llmkit:firewall.extra_ingress[0].port",
        22,
        NEVER_SSH_RDP,
        FW_PORT,
    ),
    "rdp": (
        {"extra_ingress": [ingress(), ingress(tier="app", port=3389)]},
        "llmkit:firewall.extra_ingress[1].port",
        3389,
        NEVER_SSH_RDP,
        FW_PORT,
    ),
    "app-port-ssh": ({"app_port": 22}, "llmkit:firewall.app_port", 22, NEVER_SSH_RDP, FW_PORT),
    "app-port-range": (
        {"app_port": 70000},
        "llmkit:firewall.app_port",
        70000,
        "must be less than or equal to 65535",
        FW_PORT,
    ),
    "tier-model": (
        {"extra_ingress": [ingress(tier="model", port=11434)]},
        "llmkit:firewall.extra_ingress[0].tier",
        "model",
        "the model and data tiers admit only the tiers in front of them",
        "lb or app",
    ),
    "tier-data": (
        {"extra_ingress": [ingress(tier="data", port=5432)]},
        "llmkit:firewall.extra_ingress[0].tier",
        "data",
        "the model and data tiers admit only the tiers in front of them",
        "lb or app",
    ),
    "tier-unknown": (
        {"extra_ingress": [ingress(tier="dmz")]},
        "llmkit:firewall.extra_ingress[0].tier",
        "dmz",
        "unknown tier",
        "lb or app",
    ),
    "world-on-internal-endpoint": (
        {"extra_ingress": [ingress(cidrs=["10.1.0.0/16", "0.0.0.0/0"])]},
        "llmkit:firewall.extra_ingress[0].cidrs[1]",
        "0.0.0.0/0",
        "0.0.0.0/0 opens tier lb port 443 to every address",
        FW_WORLD,
    ),
    "world-on-app": (
        {"extra_ingress": [ingress(tier="app", port=8443, cidrs=["0.0.0.0/0"])]},
        "llmkit:firewall.extra_ingress[0].cidrs[0]",
        "0.0.0.0/0",
        "0.0.0.0/0 opens tier app port 8443 to every address",
        FW_WORLD,
    ),
    "bad-description": (
        {"extra_ingress": [ingress(description='say "hi"')]},
        "llmkit:firewall.extra_ingress[0].description",
        'say "hi"',
        "not a description AWS accepts for a security group rule",
        "why the rule exists: 1..255 characters of letters, digits, spaces and ._-:/()#,@[]+=&;{}!$*",
    ),
    "empty-allow-list": (
        {"network_firewall": True},
        "llmkit:firewall.egress_allowed_domains",
        [],
        "network_firewall: true with an empty allow-list would drop all egress",
        "at least one domain, each " + FW_DOMAINS.removeprefix("a list of domains, each "),
    ),
    "wildcard-domain": (
        {"egress_allowed_domains": ["registry.ollama.ai", "*.huggingface.co"]},
        "llmkit:firewall.egress_allowed_domains[1]",
        "*.huggingface.co",
        "a wildcard: write .huggingface.co for a domain and all its subdomains",
        FW_DOMAINS,
    ),
    "tld-domain": (
        {"egress_allowed_domains": [".com"]},
        "llmkit:firewall.egress_allowed_domains[0]",
        ".com",
        "not a DNS name",
        FW_DOMAINS,
    ),
    "url-domain": (
        {"egress_allowed_domains": ["https://registry.ollama.ai/"]},
        "llmkit:firewall.egress_allowed_domains[0]",
        "https://registry.ollama.ai/",
        "not a DNS name",
        FW_DOMAINS,
    ),
    "duplicate-domain": (
        {"egress_allowed_domains": ["deb.debian.org", "deb.debian.org"]},
        "llmkit:firewall.egress_allowed_domains[1]",
        "deb.debian.org",
        "listed twice",
        "each domain once",
    ),
    "unknown-key": (
        {"ssh": True},
        "llmkit:firewall.ssh",
        True,
        "unknown key",
        "one of: network_firewall, egress_allowed_domains, extra_ingress, app_port",
    ),
}


@pytest.mark.parametrize(
    ("firewall", "key", "value", "message", "accepted"), FIREWALL_BAD.values(), ids=FIREWALL_BAD
)
def test_firewall_refusals_name_key_value_and_accepted(
    firewall: dict[str, Any], key: str, value: Any, message: str, accepted: str
) -> None:
    assert_error(only_error(changed(("llmkit:firewall", firewall))), key, value, message, accepted)


def test_world_open_extra_ingress_only_on_lb_443_of_a_public_endpoint() -> None:
    world = {"extra_ingress": [ingress(cidrs=["0.0.0.0/0"])]}
    public = changed(
        ("llmkit:endpoint.public", True),
        ("llmkit:firewall", world),
        ("llmkit:allow_world_open", ["firewall.extra_ingress"]),
    )
    assert from_mapping(public, source="test").firewall.extra_ingress[0].cidrs == [IPv4Network("0.0.0.0/0")]
    on_80 = changed(
        ("llmkit:endpoint.public", True),
        ("llmkit:firewall", {"extra_ingress": [ingress(port=80, cidrs=["0.0.0.0/0"])]}),
    )
    assert_error(
        only_error(on_80),
        "llmkit:firewall.extra_ingress[0].cidrs[0]",
        "0.0.0.0/0",
        "0.0.0.0/0 opens tier lb port 80 to every address",
        FW_WORLD,
    )


# --- llmkit:gateway ----------------------------------------------------------------------------


def test_the_gateway_defaults_to_the_issue_role_matrix() -> None:
    gateway = from_mapping(GOOD, source="test").gateway
    assert gateway is not None
    assert set(gateway.aliases) == {"general", "default"}
    roles = gateway.roles
    assert set(roles) == {"dev-test", "production", "admin"}
    assert roles["dev-test"].routes == ["/v1/chat/completions", "/chat/completions"]
    assert duration_seconds(roles["dev-test"].key_ttl) == 7 * 86400
    assert roles["production"].routes == ["llm_api_routes"] and roles["production"].rotate_after == "7d"
    assert roles["admin"].admin_cidr_only and not roles["production"].admin_cidr_only
    assert gateway.log_retention_days == 180 and gateway.store_prompts is False
    assert gateway.database.backup_retention_days >= 7


def test_no_gateway_key_means_no_gateway() -> None:
    assert from_mapping(changed(("llmkit:gateway", DELETE)), source="test").gateway is None


def test_a_gateway_alias_must_name_a_configured_model() -> None:
    error = only_error(changed(("llmkit:gateway.aliases.general.model", "deepseek-r1:70b")))
    assert_error(
        error,
        "llmkit:gateway.aliases.general.model",
        "deepseek-r1:70b",
        "not a model of llmkit:models",
        "one of: deepseek-r1:32b",
    )


def test_fallbacks_and_role_models_must_name_aliases() -> None:
    errors = errors_of(
        changed(
            ("llmkit:gateway.aliases.default.fallbacks", ["general", "cheap"]),
            ("llmkit:gateway.roles", {"ci": {"routes": ["/v1/*"], "key_ttl": "1d", "models": ["reasoning"]}}),
        )
    )
    found = {(e.key, e.value, e.problem) for e in errors}
    assert found == {
        ("llmkit:gateway.aliases.default.fallbacks[1]", "cheap", "unknown alias"),
        ("llmkit:gateway.roles.ci.models[0]", "reasoning", "unknown alias"),
    }


@pytest.mark.parametrize(
    ("role", "key", "value", "problem"),
    [
        ({"routes": ["/v1/*"], "key_ttl": "7 days"}, "key_ttl", "7 days", "not a duration"),
        ({"routes": ["/v1/*"], "key_ttl": "400d"}, "key_ttl", "400d", "longer than 365d"),
        ({"routes": ["v1/chat"], "key_ttl": "1d"}, "routes[0]", "v1/chat", "not a route"),
        (
            {"routes": ["/v1/*"], "key_ttl": "7d", "rotate_after": "7d"},
            "rotate_after",
            "7d",
            "keys would expire (key_ttl 7d) before they are rotated",
        ),
        ({"routes": ["/v1/*"], "key_ttl": "1d", "rpm_limit": 0}, "rpm_limit", 0, None),
    ],
)
def test_bad_gateway_roles_are_named(role: dict[str, Any], key: str, value: Any, problem: str | None) -> None:
    error = only_error(changed(("llmkit:gateway.roles", {"ci": role})))
    assert error.key == f"llmkit:gateway.roles.ci.{key}"
    assert error.value == value
    if problem is not None:
        assert error.problem == problem
