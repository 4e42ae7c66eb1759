"""The rules as CrossGuard policies: what `pulumi preview --policy-pack policies` runs."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, unknown_checking_proxy

from llmkit.crossguard import plain, policies, policy_for
from llmkit.policy import UNKNOWN, load_rules
from policies.rules.aws_kms_key_enable_rotation import RULE as ROTATION
from policies.rules.aws_s3_bucket_missing_public_access_block import RULE as PAB

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
