"""Audit and governance rules: CloudTrail, CloudWatch log groups, Secrets Manager, regions and tags."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from llmkit.policy import UNKNOWN, Resource
from policies.rules.aws_cloudtrail_trail_configure_integrity import RULE as TRAIL_RULE
from policies.rules.aws_cloudwatch_loggroup_configure_retention import RULE as RETENTION
from policies.rules.aws_cloudwatch_loggroup_enforce_kms import RULE as LOG_KMS
from policies.rules.aws_provider_region_enforce_allowlist import EU_REGIONS
from policies.rules.aws_provider_region_enforce_allowlist import RULE as REGIONS
from policies.rules.aws_secretsmanager_secret_enforce_kms import RULE as SECRET_KMS
from policies.rules.aws_secretsmanager_secret_missing_rotation import RULE as ROTATION
from policies.rules.aws_tagging_resource_missing_required_tags import RULE as TAGS
from policies.rules.aws_tagging_resource_missing_required_tags import taggable
from tests.pack.fixtures import messages, res, skipped

TRAIL = "aws:cloudtrail/trail:Trail"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_ROTATION = "aws:secretsmanager/secretRotation:SecretRotation"
PROVIDER = "pulumi:providers:aws"
VPC = "aws:ec2/vpc:Vpc"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ASG = "aws:autoscaling/group:Group"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EU = ", ".join(EU_REGIONS)


# --- aws-cloudtrail-trail-configure-integrity -------------------------------------------------------


def test_multi_region_validated_encrypted_trail_passes() -> None:
    trail = res(TRAIL, "t", isMultiRegionTrail=True, enableLogFileValidation=True, kmsKeyId=KEY_ARN)
    assert messages(TRAIL_RULE, trail) == []
    as_strings = res(TRAIL, "t", isMultiRegionTrail="true", enableLogFileValidation="true", kmsKeyId=KEY_ARN)
    assert messages(TRAIL_RULE, as_strings) == []


def test_trail_with_defaults_fails_once_per_missing_property() -> None:
    assert messages(TRAIL_RULE, res(TRAIL, "t")) == [
        (
            "t",
            "isMultiRegionTrail is not set (false): set it to true so API calls in every region are recorded",
        ),
        (
            "t",
            "enableLogFileValidation is not set (false): set it to true so altered or deleted log files are "
            "detected",
        ),
        ("t", "kmsKeyId is not set: log files are only SSE-S3 encrypted; set a customer-managed KMS key ARN"),
    ]


def test_each_trail_property_is_checked_on_its_own() -> None:
    good = {"isMultiRegionTrail": True, "enableLogFileValidation": True, "kmsKeyId": KEY_ARN}
    assert messages(TRAIL_RULE, res(TRAIL, "t", **{**good, "isMultiRegionTrail": False})) == [
        ("t", "isMultiRegionTrail is false: set it to true so API calls in every region are recorded")
    ]
    assert messages(TRAIL_RULE, res(TRAIL, "t", **{**good, "enableLogFileValidation": "false"})) == [
        (
            "t",
            "enableLogFileValidation is 'false': set it to true so altered or deleted log files are detected",
        )
    ]
    assert messages(TRAIL_RULE, res(TRAIL, "t", **{**good, "kmsKeyId": ""})) == [
        ("t", "kmsKeyId is not set: log files are only SSE-S3 encrypted; set a customer-managed KMS key ARN")
    ]


def test_unknown_trail_key_is_skipped() -> None:
    trail = res(TRAIL, "t", isMultiRegionTrail=True, enableLogFileValidation=True, kmsKeyId=UNKNOWN)
    assert messages(TRAIL_RULE, trail) == []
    assert skipped(TRAIL_RULE, trail) == [(TRAIL_RULE.name, trail.urn)]


# --- aws-cloudwatch-loggroup-enforce-kms ------------------------------------------------------------


def test_log_group_with_a_key_passes() -> None:
    assert messages(LOG_KMS, res(LOG_GROUP, "g", kmsKeyId=KEY_ARN, retentionInDays=365)) == []


def test_log_group_without_a_key_fails() -> None:
    expected = [
        ("g", "kmsKeyId is not set: events are encrypted only with a CloudWatch-owned key; set a KMS key ARN")
    ]
    assert messages(LOG_KMS, res(LOG_GROUP, "g", retentionInDays=365)) == expected
    assert messages(LOG_KMS, res(LOG_GROUP, "g", kmsKeyId="")) == expected


def test_unknown_log_group_key_is_skipped() -> None:
    group = res(LOG_GROUP, "g", kmsKeyId=UNKNOWN)
    assert messages(LOG_KMS, group) == []
    assert skipped(LOG_KMS, group) == [(LOG_KMS.name, group.urn)]


# --- aws-cloudwatch-loggroup-configure-retention ----------------------------------------------------


def test_retention_at_or_above_the_minimum_passes() -> None:
    assert messages(RETENTION, res(LOG_GROUP, "g", retentionInDays=180)) == []
    assert messages(RETENTION, res(LOG_GROUP, "g", retentionInDays=3653)) == []


def test_short_retention_fails() -> None:
    assert messages(RETENTION, res(LOG_GROUP, "g", retentionInDays=30)) == [
        ("g", "retentionInDays 30 is below the minimum of 180 days")
    ]


def test_never_expire_is_a_violation() -> None:
    expected = [
        (
            "g",
            "retentionInDays is not set: events never expire; set a retention of at least 180 days "
            "(CloudWatch accepts 1..3653 from a fixed list)",
        )
    ]
    assert messages(RETENTION, res(LOG_GROUP, "g")) == expected
    assert messages(RETENTION, res(LOG_GROUP, "g", retentionInDays=0)) == expected


def test_min_retention_setting_changes_the_outcome() -> None:
    assert messages(RETENTION, res(LOG_GROUP, "g", retentionInDays=30), min_retention_days=30) == []
    assert messages(RETENTION, res(LOG_GROUP, "g", retentionInDays=365), min_retention_days=400) == [
        ("g", "retentionInDays 365 is below the minimum of 400 days")
    ]


def test_unknown_retention_is_skipped() -> None:
    group = res(LOG_GROUP, "g", retentionInDays=UNKNOWN)
    assert messages(RETENTION, group) == []
    assert skipped(RETENTION, group) == [(RETENTION.name, group.urn)]


# --- aws-secretsmanager-secret-enforce-kms ----------------------------------------------------------


def test_secret_with_a_customer_managed_key_passes() -> None:
    secret = res(SECRET, "s", kmsKeyId=KEY_ARN, replicas=[{"region": "eu-west-1", "kmsKeyId": "alias/mine"}])
    assert messages(SECRET_KMS, secret) == []


def test_secret_without_a_key_fails() -> None:
    assert messages(SECRET_KMS, res(SECRET, "s")) == [
        (
            "s",
            "kmsKeyId is not set, so the AWS managed key alias/aws/secretsmanager encrypts it: "
            "set a customer-managed KMS key ARN (not alias/aws/secretsmanager)",
        )
    ]


@pytest.mark.parametrize(
    "key", ["alias/aws/secretsmanager", "arn:aws:kms:eu-central-1:123456789012:alias/aws/secretsmanager"]
)
def test_secret_with_the_aws_managed_key_fails(key: str) -> None:
    assert messages(SECRET_KMS, res(SECRET, "s", kmsKeyId=key)) == [
        (
            "s",
            f"kmsKeyId {key} is an AWS managed key: set a customer-managed KMS key ARN "
            "(not alias/aws/secretsmanager)",
        )
    ]


def test_replica_without_a_customer_managed_key_fails() -> None:
    secret = res(SECRET, "s", kmsKeyId=KEY_ARN, replicas=[{"region": "eu-west-1"}])
    assert messages(SECRET_KMS, secret) == [
        (
            "s",
            "replica in eu-west-1: kmsKeyId is not set, so the AWS managed key alias/aws/secretsmanager "
            "encrypts it: set a customer-managed KMS key of that region",
        )
    ]


def test_unknown_secret_key_is_skipped() -> None:
    secret = res(SECRET, "s", kmsKeyId=UNKNOWN)
    assert messages(SECRET_KMS, secret) == []
    assert skipped(SECRET_KMS, secret) == [(SECRET_KMS.name, secret.urn)]


# --- aws-secretsmanager-secret-missing-rotation -----------------------------------------------------

NO_ROTATION = (
    "secret has no rotation: add an aws.secretsmanager.SecretRotation with "
    "rotationRules.automaticallyAfterDays <= 90 or a scheduleExpression "
    "(or tag it llmkit:rotation=disabled if rotating it breaks what it protects)"
)


def named(resource: Resource, name: str) -> Resource:
    """``resource`` with a ``name`` property (res() takes name as the logical name)."""
    return replace(resource, props={**resource.props, "name": name})


def secret(logical: str = "s", **props: Any) -> Resource:
    return named(res(SECRET, logical, kmsKeyId=KEY_ARN, **props), f"app/{logical}")


def rotation(secret_id: str, **rules: Any) -> Resource:
    schedule = rules or {"automaticallyAfterDays": 30}
    return res(SECRET_ROTATION, "rot", secretId=secret_id, rotationRules=schedule)


@pytest.mark.parametrize(
    "secret_id",
    [
        "s-id",  # the secret's id (what the offline plan and a real stack hand to secretId)
        "app/s",  # its name
        "arn:aws:secretsmanager:eu-central-1:123456789012:secret:app/s-AbC123",  # a real ARN
        "arn:aws:secretsmanager:eu-central-1:123456789012:s",  # the offline plan's mocked ARN
    ],
)
def test_secret_with_a_rotation_passes(secret_id: str) -> None:
    assert messages(ROTATION, secret(), rotation(secret_id)) == []


def test_schedule_expression_counts_as_rotation() -> None:
    assert messages(ROTATION, secret(), rotation("s-id", scheduleExpression="rate(30 days)")) == []
    assert messages(ROTATION, secret(), rotation("s-id", scheduleExpression="cron(0 4 1 * ? *)")) == []


def test_secret_without_rotation_fails() -> None:
    other = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:app/other-AbC123"
    assert messages(ROTATION, secret()) == [("s", NO_ROTATION)]
    assert messages(ROTATION, secret(), rotation(other)) == [("s", NO_ROTATION)]


def test_rotation_too_rare_fails_on_the_rotation() -> None:
    assert messages(ROTATION, secret(), rotation("s-id", automaticallyAfterDays=120)) == [
        ("rot", "rotationRules.automaticallyAfterDays 120 is over the allowed 90")
    ]
    assert messages(ROTATION, secret(), rotation("s-id", scheduleExpression="rate(120 days)")) == [
        ("rot", "scheduleExpression rate(120 days) rotates less often than every 90 days")
    ]


def test_rotation_without_a_schedule_or_disabled_fails() -> None:
    empty = res(SECRET_ROTATION, "rot", secretId="s-id", rotationRules={})
    assert messages(ROTATION, secret(), empty) == [
        ("rot", "rotationRules sets neither automaticallyAfterDays nor scheduleExpression")
    ]
    off = res(
        SECRET_ROTATION,
        "rot",
        secretId="s-id",
        rotationEnabled=False,
        rotationRules={"scheduleExpression": "rate(1 day)"},
    )
    assert messages(ROTATION, secret(), off) == [
        ("rot", "rotationEnabled is false: automatic rotation is off")
    ]


def test_max_rotation_days_setting_changes_the_outcome() -> None:
    rare = rotation("s-id", automaticallyAfterDays=120)
    assert messages(ROTATION, secret(), rare, max_rotation_days=180) == []
    assert messages(ROTATION, secret(), rotation("s-id", automaticallyAfterDays=30), max_rotation_days=7) == [
        ("rot", "rotationRules.automaticallyAfterDays 30 is over the allowed 7")
    ]


def test_the_salt_key_exception_is_compliant_only_with_its_exact_tag() -> None:
    assert messages(ROTATION, secret(tags={"llmkit:rotation": "disabled"})) == []
    assert messages(ROTATION, secret(tags={"llmkit:rotation": "off"})) == [("s", NO_ROTATION)]


def test_the_exception_tag_from_provider_default_tags_does_not_count() -> None:
    provider = {"region": "eu-central-1", "defaultTags": {"tags": {"llmkit:rotation": "disabled"}}}
    plain = named(res(SECRET, "s", provider=provider), "app/s")
    assert messages(ROTATION, plain) == [("s", NO_ROTATION)]


def test_unknown_secret_id_skips_the_rule() -> None:
    assert messages(ROTATION, secret(), rotation(UNKNOWN)) == []
    assert skipped(ROTATION, secret(), rotation(UNKNOWN)) == [(ROTATION.name, "(stack)")]


# --- aws-provider-region-enforce-allowlist ----------------------------------------------------------

US = {"region": "us-east-1", "defaultTags": {"tags": {}}}


def test_eu_provider_and_resources_pass() -> None:
    assert messages(REGIONS, res(PROVIDER, "aws", region="eu-central-1"), res(VPC, "v")) == []
    assert messages(REGIONS, res(VPC, "v", region="eu-north-1")) == []


def test_provider_outside_the_allowlist_fails_with_its_resources() -> None:
    found = messages(REGIONS, res(PROVIDER, "us", region="us-east-1"), res(VPC, "v", provider=US))
    assert found == [
        ("us", f"provider region us-east-1 is outside the allowed regions (one of: {EU})"),
        ("v", f"region us-east-1 (its provider's region) is outside the allowed regions (one of: {EU})"),
    ]


def test_resource_region_override_outside_the_allowlist_fails() -> None:
    assert messages(REGIONS, res(VPC, "v", region="us-west-2")) == [
        ("v", f"region us-west-2 (its region property) is outside the allowed regions (one of: {EU})")
    ]


def test_provider_and_resource_without_a_region_fail() -> None:
    found = messages(REGIONS, res(PROVIDER, "aws"), res(VPC, "v", provider={}))
    assert found == [
        (
            "aws",
            "provider sets no region (it would come from AWS_REGION or the profile): "
            f"set region (one of: {EU})",
        ),
        (
            "v",
            "region unknown: neither a region property nor a provider region; set the provider's region "
            f"(one of: {EU})",
        ),
    ]


def test_global_services_are_out_of_scope_but_route53_resolver_is_not() -> None:
    dns = res("aws:route53/record:Record", "dns", provider={})
    assert messages(REGIONS, res(ROLE, "r", provider=US), dns) == []
    resolver = res("aws:route53/resolverEndpoint:ResolverEndpoint", "e", provider=US)
    assert messages(REGIONS, resolver) == [
        ("e", f"region us-east-1 (its provider's region) is outside the allowed regions (one of: {EU})")
    ]


def test_allowed_regions_setting_changes_the_outcome() -> None:
    stack = (res(PROVIDER, "us", region="us-east-1"), res(VPC, "v", provider=US))
    assert messages(REGIONS, *stack, allowed_regions=["us-east-1"]) == []
    assert messages(REGIONS, res(VPC, "v"), allowed_regions=["eu-west-1"]) == [
        (
            "v",
            "region eu-central-1 (its provider's region) is outside the allowed regions (one of: eu-west-1)",
        )
    ]


def test_the_default_allowlist_is_exactly_the_eu_regions() -> None:
    assert REGIONS.settings["allowed_regions"].default == [
        "eu-central-1",
        "eu-central-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
    ]


def test_unknown_region_skips_the_rule() -> None:
    vpc = res(VPC, "v", region=UNKNOWN)
    assert messages(REGIONS, vpc) == []
    assert skipped(REGIONS, vpc) == [(REGIONS.name, "(stack)")]


# --- aws-tagging-resource-missing-required-tags -----------------------------------------------------

REQUIRED = {"owner": "platform-team", "environment": "prod", "data-classification": "confidential"}
TAGGED = {"region": "eu-central-1", "defaultTags": {"tags": REQUIRED}}
UNTAGGED = {"region": "eu-central-1", "defaultTags": {"tags": {}}}
NEED = "need non-empty owner, environment, data-classification"
PROVIDER_DEFAULTS = "set them in the provider's defaultTags or the resource's tags"


def asg_tags(tags: dict[str, str], propagate: bool = True) -> list[dict[str, Any]]:
    return [{"key": k, "value": v, "propagateAtLaunch": propagate} for k, v in tags.items()]


def specs(*kinds: str, tags: dict[str, str] = REQUIRED) -> list[dict[str, Any]]:
    return [{"resourceType": kind, "tags": tags} for kind in kinds]


def test_taggable_follows_the_pulumi_aws_class() -> None:
    assert taggable(VPC) is True
    assert taggable("aws:lambda/function:Function") is True  # module lambda -> pulumi_aws.lambda_
    assert taggable(ROLE_POLICY) is False
    assert taggable("aws:nosuchservice/thing:Thing") is None


def test_default_tags_satisfy_ordinary_resources() -> None:
    assert messages(TAGS, res(VPC, "v", provider=TAGGED), res(ROLE, "r", provider=TAGGED)) == []
    as_json_text = {
        "region": "eu-central-1",
        "defaultTags": '{"tags": {"owner": "a", "environment": "b", "data-classification": "internal"}}',
    }
    assert messages(TAGS, res(VPC, "v", provider=as_json_text)) == []


def test_own_tags_count_too() -> None:
    assert messages(TAGS, res(VPC, "v", provider=UNTAGGED, tags=REQUIRED)) == []


def test_missing_and_empty_tags_fail() -> None:
    assert messages(TAGS, res(VPC, "v", provider=UNTAGGED, tags={"owner": "me"})) == [
        ("v", f"required tags missing environment, data-classification ({NEED}: {PROVIDER_DEFAULTS})")
    ]
    blank = res(VPC, "v", provider=TAGGED, tags={"owner": " "})
    assert messages(TAGS, blank) == [("v", f"required tags empty owner ({NEED}: {PROVIDER_DEFAULTS})")]


def test_untaggable_resources_are_out_of_scope() -> None:
    assert messages(TAGS, res(ROLE_POLICY, "p", provider=UNTAGGED), res(PROVIDER, "aws", provider={})) == []


def test_unknown_types_are_judged_only_when_they_carry_tags() -> None:
    assert messages(TAGS, res("aws:nosuchservice/thing:Thing", "x", provider=UNTAGGED)) == []
    odd = res("aws:nosuchservice/thing:Thing", "x", provider=UNTAGGED, tags={"owner": "me"})
    assert messages(TAGS, odd) == [
        ("x", f"required tags missing environment, data-classification ({NEED}: {PROVIDER_DEFAULTS})")
    ]


def test_autoscaling_group_propagating_the_tags_passes() -> None:
    assert messages(TAGS, res(ASG, "g", provider=UNTAGGED, tags=asg_tags({**REQUIRED, "Name": "x"}))) == []


def test_autoscaling_group_relying_on_default_tags_fails() -> None:
    assert messages(TAGS, res(ASG, "g", provider=TAGGED)) == [
        (
            "g",
            "Auto Scaling group tags missing owner, environment, data-classification: provider default tags "
            "do not apply to Auto Scaling groups; add each as {key, value, propagateAtLaunch: true} to tags",
        )
    ]
    blank = res(ASG, "g", provider=TAGGED, tags=asg_tags({**REQUIRED, "owner": ""}))
    assert messages(TAGS, blank) == [
        (
            "g",
            "Auto Scaling group tags empty owner: provider default tags do not apply to Auto Scaling groups; "
            "add each as {key, value, propagateAtLaunch: true} to tags",
        )
    ]


def test_autoscaling_group_tags_not_propagated_fail() -> None:
    tags = asg_tags({"owner": "me"}) + asg_tags({"environment": "p", "data-classification": "c"}, False)
    assert messages(TAGS, res(ASG, "g", provider=TAGGED, tags=tags)) == [
        (
            "g",
            "Auto Scaling group tags environment, data-classification have propagateAtLaunch false: the "
            "group's instances do not get them; set propagateAtLaunch: true",
        )
    ]
    as_strings = [{**t, "propagateAtLaunch": "true"} for t in asg_tags(REQUIRED)]
    assert messages(TAGS, res(ASG, "g", provider=UNTAGGED, tags=as_strings)) == []


def test_launch_template_tagging_instances_and_volumes_passes() -> None:
    template = res(LAUNCH_TEMPLATE, "lt", provider=TAGGED, tagSpecifications=specs("instance", "volume"))
    assert messages(TAGS, template) == []


def test_launch_template_without_tag_specifications_fails_per_launched_kind() -> None:
    template = res(LAUNCH_TEMPLATE, "lt", provider=TAGGED, tagSpecifications=specs("instance"))
    assert messages(TAGS, template) == [
        (
            "lt",
            "tagSpecifications for resourceType volume missing owner, environment, data-classification: "
            "provider default tags do not reach launched volumes; tag them in a tagSpecifications entry "
            "for volume",
        )
    ]
    partial = specs("instance", tags={"owner": "me", "environment": "", "data-classification": "c"})
    template = res(LAUNCH_TEMPLATE, "lt", provider=TAGGED, tagSpecifications=[*partial, *specs("volume")])
    assert messages(TAGS, template) == [
        (
            "lt",
            "tagSpecifications for resourceType instance empty environment: provider default tags do not "
            "reach launched instances; tag them in a tagSpecifications entry for instance",
        )
    ]


def test_required_tags_setting_changes_the_outcome() -> None:
    vpc = res(VPC, "v", provider=UNTAGGED, tags={"owner": "me"})
    assert messages(TAGS, vpc, required_tags=["owner"]) == []
    assert messages(TAGS, res(VPC, "v", provider=TAGGED), required_tags=["owner", "cost-center"]) == [
        ("v", f"required tags missing cost-center (need non-empty owner, cost-center: {PROVIDER_DEFAULTS})")
    ]


def test_unknown_tags_skip_only_when_a_required_one_is_unknown() -> None:
    computed_name = res(VPC, "v", provider=TAGGED, tags={"Name": UNKNOWN})
    assert messages(TAGS, computed_name) == []
    assert skipped(TAGS, computed_name) == []
    unknown_owner = res(VPC, "v", provider=UNTAGGED, tags={**REQUIRED, "owner": UNKNOWN})
    assert messages(TAGS, unknown_owner) == []
    assert skipped(TAGS, unknown_owner) == [(TAGS.name, "(stack)")]
