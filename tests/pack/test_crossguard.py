"""The rules as CrossGuard policies: what `pulumi preview --policy-pack policies` runs."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from llmkit.crossguard import plain, policies, policy_for
from llmkit.policy import UNKNOWN
from policies.rules import load_rules
from policies.rules.aws_kms_key_enable_rotation import RULE as ROTATION
from policies.rules.aws_s3_bucket_missing_public_access_block import RULE as PAB
from tests.pack.fixtures import plan_graph

KEY = "aws:kms/key:Key"
OPTS = PolicyResourceOptions(
    protect=False,
    ignore_changes=[],
    delete_before_replace=None,
    aliases=[],
    custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
    additional_secret_outputs=[],
)


def _validate_resource(policy: Any, props: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(
        KEY,
        unknown_checking_proxy(props),
        "urn:pulumi:s::p::aws:kms/key:Key::k",
        "k",
        OPTS,
        None,
        config or {},
    )
    result = policy.validate(args, lambda message, urn=None: found.append(message))
    assert result is None
    return found


def test_every_rule_becomes_a_policy_with_its_metadata() -> None:
    rules = load_rules()
    built = policies(rules)
    assert [p.name for p in built] == [r.name for r in rules]
    for rule, policy in zip(rules, built, strict=True):
        kind = ResourceValidationPolicy if rule.check is not None else StackValidationPolicy
        assert isinstance(policy, kind)
        assert policy.enforcement_level == EnforcementLevel(rule.enforcement)
        assert policy.severity is not None and policy.severity.value == rule.severity
        assert policy.remediation_steps == rule.remediation
        assert policy.tags == list(rule.frameworks)
        if rule.settings:
            assert policy.config_schema is not None
            assert {k: v["default"] for k, v in policy.config_schema.properties.items()} == {
                k: s.default for k, s in rule.settings.items()
            }


def test_resource_policy_reports_violations_and_honours_config() -> None:
    policy = policy_for(ROTATION)
    assert _validate_resource(policy, {"enableKeyRotation": True}) == []
    assert _validate_resource(policy, {"enableKeyRotation": False}) == [
        "key rotation is off: set enableKeyRotation: true"
    ]
    long = {"enableKeyRotation": True, "rotationPeriodInDays": 730}
    assert _validate_resource(policy, long) == ["rotation period 730 days is over the allowed 365"]
    assert _validate_resource(policy, long, {"max_rotation_period_days": 730}) == []


def test_unknown_values_at_preview_skip_the_rule_without_crashing() -> None:
    policy = policy_for(ROTATION)
    assert _validate_resource(policy, {"enableKeyRotation": UNKNOWN_BOOLEAN_VALUE}) == []


def test_plain_turns_proxied_unknowns_into_markers() -> None:
    proxied = unknown_checking_proxy({"a": [1, UNKNOWN_BOOLEAN_VALUE], "b": {"c": UNKNOWN_BOOLEAN_VALUE}})
    assert plain(proxied) == {"a": [1, UNKNOWN], "b": {"c": UNKNOWN}}


def _policy_resource(type_: str, name: str, props: dict[str, Any]) -> PolicyResource:
    urn = f"urn:pulumi:s::p::{type_}::{name}"
    return PolicyResource(type_, unknown_checking_proxy(props), urn, name, OPTS, None, None, [], {})


@pytest.mark.parametrize("with_block", [True, False])
def test_stack_policy_links_resources_by_id(with_block: bool) -> None:
    bucket = _policy_resource("aws:s3/bucketV2:BucketV2", "b", {"id": "b-123", "bucket": "b-123"})
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    block = _policy_resource(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "pab",
        {"bucket": "b-123", **dict.fromkeys(flags, True)},
    )
    found: list[tuple[str, str | None]] = []
    args = StackValidationArgs([bucket, block] if with_block else [bucket], {})
    policy_for(PAB).validate(args, lambda message, urn=None: found.append((message, urn)))
    assert found == (
        []
        if with_block
        else [
            (
                "b: bucket has no public access block (aws.s3.BucketPublicAccessBlock with all four flags)",
                bucket.urn,
            )
        ]
    )


# --- stack policies over a whole stack, as `pulumi preview --policy-pack policies` runs them ------

EXISTENCE = [
    rule for rule in load_rules() if "-stack-missing-" in rule.name
]  # trail, flow logs, budget, keys, the edge's WAF


def _stack_props(graph: dict[str, Any], preview: bool) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each graph entry with the properties CrossGuard would see: its inputs, ID and ARN (outputs).
    ``preview``: the first preview of the stack, when every ID and ARN, and every input that names
    one, is unknown (the engine's unknown-string sentinel)."""
    from llmkit.policy import resources_from_graph

    entries = graph["resources"]
    refs = {e["id"] for e in entries if e.get("id")} | {e["arn"] for e in entries if e.get("arn")}

    def unknown_refs(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: unknown_refs(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unknown_refs(v) for v in value]
        return UNKNOWN_STRING_VALUE if isinstance(value, str) and value in refs else value

    out = []
    for entry, resource in zip(entries, resources_from_graph(graph), strict=True):
        props = dict(resource.props)
        if preview:
            props = unknown_refs({k: v for k, v in props.items() if k != "arn"})
        elif resource.id:
            props["id"] = resource.id
        out.append((entry, props))
    return out


def _stack_resources(graph: dict[str, Any], preview: bool = False) -> list[PolicyResource]:
    """The graph's resources as CrossGuard hands them to a stack policy: props behind the proxy that
    raises on unknowns, the provider, the dependencies as resources."""
    entries = graph["resources"]
    providers = {
        e["urn"] + "::" + str(e.get("id")): PolicyProviderResource(
            e["type"], unknown_checking_proxy(e.get("inputs") or {}), e["urn"], e["name"]
        )
        for e in entries
        if e["type"].startswith("pulumi:providers:")
    }
    by_urn: dict[str, PolicyResource] = {}
    for entry, props in _stack_props(graph, preview):
        by_urn[entry["urn"]] = PolicyResource(
            entry["type"],
            unknown_checking_proxy(props),
            entry["urn"],
            entry["name"],
            OPTS,
            providers.get(entry.get("provider") or ""),
            None,
            [],
            {},
        )
    for entry in entries:
        by_urn[entry["urn"]].dependencies.extend(by_urn[d] for d in entry["dependencies"] if d in by_urn)
    return list(by_urn.values())


def _analyze_stack(graph: dict[str, Any], preview: bool = False) -> list[tuple[str, str, str, str]]:
    """What pulumi-policy's analyzer server answers the engine's AnalyzeStack call with, for the
    existence policies: (policy, message, URN, enforcement) per diagnostic. The request is built as
    the engine builds it: properties as a protobuf Struct (unknowns as the sentinel strings),
    providers, dependencies as URNs."""
    from google.protobuf import struct_pb2
    from pulumi.runtime import proto
    from pulumi_policy.policy import _PolicyAnalyzerServicer

    def struct(values: dict[str, Any]) -> struct_pb2.Struct:
        message = struct_pb2.Struct()
        message.update(values)
        return message

    entries = graph["resources"]
    providers = {
        e["urn"] + "::" + str(e.get("id")): proto.AnalyzerProviderResource(
            type=e["type"], properties=struct(e.get("inputs") or {}), urn=e["urn"], name=e["name"]
        )
        for e in entries
        if e["type"].startswith("pulumi:providers:")
    }
    request = proto.AnalyzeStackRequest(
        resources=[
            proto.AnalyzerResource(
                type=entry["type"],
                properties=struct(props),
                urn=entry["urn"],
                name=entry["name"],
                parent=entry.get("parent") or "",
                dependencies=entry["dependencies"],
                **({"provider": providers[entry["provider"]]} if entry.get("provider") in providers else {}),
            )
            for entry, props in _stack_props(graph, preview)
        ]
    )
    servicer = _PolicyAnalyzerServicer("llmkit", "0.0.1", policies(EXISTENCE), EnforcementLevel.ADVISORY)
    response = servicer.AnalyzeStack(request, None)
    levels = {proto.MANDATORY: "mandatory", proto.ADVISORY: "advisory"}
    return [(d.policyName, d.message, d.urn, levels[d.enforcementLevel]) for d in response.diagnostics]


def _validate_stack(rule: Any, resources: list[PolicyResource]) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    policy = policy_for(rule)
    assert isinstance(policy, StackValidationPolicy)

    def report(message: str, urn: str | None = None) -> None:
        found.append((message, urn))

    policy.validate(StackValidationArgs(resources, {}), report)
    return found


def _prod_without(*names: str) -> dict[str, Any]:
    graph = plan_graph("prod")
    graph["resources"] = [e for e in graph["resources"] if e["name"] not in names]
    return graph


def test_the_existence_rules_are_crossguard_stack_policies() -> None:
    assert sorted(r.name for r in EXISTENCE) == [
        "aws-budgets-stack-missing-budget",
        "aws-cloudtrail-stack-missing-trail",
        "aws-ec2-stack-missing-flowlog",
        "aws-kms-stack-missing-keys",
        "aws-wafv2-stack-missing-edge-association",
    ]
    assert all(isinstance(policy_for(rule), StackValidationPolicy) for rule in EXISTENCE)


@pytest.mark.parametrize("preview", [False, True], ids=["update", "first preview"])
def test_the_prod_stack_passes_the_existence_policies(preview: bool) -> None:
    resources = _stack_resources(plan_graph("prod"), preview=preview)
    for rule in EXISTENCE:
        assert _validate_stack(rule, resources) == [], rule.name


@pytest.mark.parametrize("preview", [False, True], ids=["update", "first preview"])
def test_a_missing_trail_is_a_violation_of_the_stack_with_no_urn(preview: bool) -> None:
    (trail,) = [r for r in EXISTENCE if r.name == "aws-cloudtrail-stack-missing-trail"]
    resources = _stack_resources(_prod_without("audit-trail"), preview=preview)
    assert _validate_stack(trail, resources) == [
        (
            "the stack has no CloudTrail trail (aws.cloudtrail.Trail): no record of who changed the "
            "deployment, its keys or its network",
            None,
        )
    ]


@pytest.mark.parametrize("preview", [False, True], ids=["update", "first preview"])
def test_a_missing_edge_waf_is_reported_on_the_edge_load_balancer(preview: bool) -> None:
    (waf,) = [r for r in EXISTENCE if r.name == "aws-wafv2-stack-missing-edge-association"]
    resources = _stack_resources(_prod_without("edge-waf-alb"), preview=preview)
    (alb,) = [r for r in resources if r.name == "edge-alb"]
    assert _validate_stack(waf, resources) == [
        (
            "edge-alb: the internal edge load balancer has no AWS WAF web ACL of the stack (an "
            "aws.wafv2.WebAclAssociation whose resourceArn names it)",
            alb.urn,
        )
    ]


def test_an_empty_stack_violates_every_existence_policy_but_the_edge_one() -> None:
    found = {rule.name: _validate_stack(rule, []) for rule in EXISTENCE}
    assert {name: len(v) for name, v in found.items()} == {
        "aws-budgets-stack-missing-budget": 1,
        "aws-cloudtrail-stack-missing-trail": 1,
        "aws-ec2-stack-missing-flowlog": 1,
        "aws-kms-stack-missing-keys": 3,
        "aws-wafv2-stack-missing-edge-association": 0,  # no edge, nothing to protect
    }
    assert all(urn is None for v in found.values() for _, urn in v)


@pytest.mark.parametrize("preview", [False, True], ids=["update", "first preview"])
def test_the_analyzer_server_passes_prod_and_reports_what_is_missing(preview: bool) -> None:
    assert _analyze_stack(plan_graph("prod"), preview=preview) == []
    found = _analyze_stack(_prod_without("audit-trail", "keys-logs"), preview=preview)
    assert sorted((name, urn, level) for name, _, urn, level in found) == [
        ("aws-cloudtrail-stack-missing-trail", "", "mandatory"),
        ("aws-kms-stack-missing-keys", "", "mandatory"),
    ]
    # CrossGuard prefixes the policy's description to the message it shows.
    assert all(message.endswith(("its network", "CloudTrail")) for _, message, _, _ in found), found


def test_the_analyzer_server_fails_an_empty_stack() -> None:
    found = _analyze_stack({"schema": "llmkit.plan/v1", "resources": []})
    assert sorted(name for name, *_ in found) == [
        "aws-budgets-stack-missing-budget",
        "aws-cloudtrail-stack-missing-trail",
        "aws-ec2-stack-missing-flowlog",
        "aws-kms-stack-missing-keys",
        "aws-kms-stack-missing-keys",
        "aws-kms-stack-missing-keys",
    ]
    assert {(urn, level) for _, _, urn, level in found} == {("", "mandatory")}
