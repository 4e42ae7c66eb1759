"""AuditTrail: the multi-region trail, its CloudWatch Logs copy and the app log groups."""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import pytest

from components.audit import AuditTrail, AuditTrailArgs, trail_name
from components.keys import KmsKeys, KmsKeysArgs
from components.storage import CLOUDTRAIL_PREFIX, LogBucket
from llmkit.config import StackConfig, load_stack
from llmkit.plan import MOCK_ACCOUNT_ID
from tests.conftest import ROOT, Recorded

TRAIL = "aws:cloudtrail/trail:Trail"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
LOGS_KEY = f"arn:aws:kms:eu-central-1:{MOCK_ACCOUNT_ID}:key/logs"
BUCKET = "llmkit-prod-logs"

RunPulumi = Callable[..., Recorded]


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return load_stack("prod", ROOT)


@pytest.fixture
def audit(run_pulumi: RunPulumi, prod: StackConfig) -> Recorded:
    return run_pulumi(
        lambda: AuditTrail("audit", AuditTrailArgs.from_config(prod, LOGS_KEY, BUCKET)), stack="prod"
    )


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_trail_is_multi_region_validated_and_kms_encrypted(audit: Recorded) -> None:
    (trail,) = audit.of_type(TRAIL)
    inputs = trail.inputs
    assert inputs["name"] == "llmkit-prod" == trail_name("prod")
    assert inputs["isMultiRegionTrail"] is True
    assert inputs["includeGlobalServiceEvents"] is True
    assert inputs["enableLogFileValidation"] is True
    assert inputs["enableLogging"] is True
    assert inputs["kmsKeyId"] == LOGS_KEY
    assert inputs["s3BucketName"] == BUCKET
    assert inputs["s3KeyPrefix"] == CLOUDTRAIL_PREFIX == "cloudtrail"
    assert inputs.get("isOrganizationTrail") in (None, False)


def test_trail_records_every_management_event_read_and_write(audit: Recorded) -> None:
    (trail,) = audit.of_type(TRAIL)
    assert trail.inputs["eventSelectors"] == [{"includeManagementEvents": True, "readWriteType": "All"}]
    assert "excludeManagementEventSources" not in trail.inputs["eventSelectors"][0]


def test_trail_delivers_to_its_encrypted_log_group_through_its_role(audit: Recorded) -> None:
    (trail,) = audit.of_type(TRAIL)
    group = audit.named("audit-cloudtrail-logs")
    group_arn = f"arn:aws:cloudwatch:eu-central-1:{MOCK_ACCOUNT_ID}:audit-cloudtrail-logs"  # the mock ARN
    assert group.inputs["name"] == "/llmkit/prod/cloudtrail"
    assert trail.inputs["cloudWatchLogsGroupArn"] == f"{group_arn}:*"
    role_arn = f"arn:aws:iam:eu-central-1:{MOCK_ACCOUNT_ID}:audit-trail-logs-role"
    assert trail.inputs["cloudWatchLogsRoleArn"] == role_arn


def test_trail_log_role_is_least_privilege(audit: Recorded) -> None:
    (role,) = audit.of_type(ROLE)
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    (policy,) = audit.of_type(ROLE_POLICY)
    assert policy.inputs["role"] == "audit-trail-logs-role-id"
    statements = json.loads(policy.inputs["policy"])["Statement"]
    group_arn = f"arn:aws:cloudwatch:eu-central-1:{MOCK_ACCOUNT_ID}:audit-cloudtrail-logs"
    actions = sorted(a for s in statements for a in _actions(s))
    assert actions == ["logs:CreateLogStream", "logs:PutLogEvents"]
    for statement in statements:
        assert statement["Effect"] == "Allow"
        # Only CloudTrail's own streams of the one group: no other group, no wildcard group.
        assert statement["Resource"] == f"{group_arn}:log-stream:{MOCK_ACCOUNT_ID}_CloudTrail_*"


def test_app_log_groups_are_encrypted_and_kept_for_the_configured_days(audit: Recorded) -> None:
    groups = {g.inputs["name"]: g.inputs for g in audit.of_type(LOG_GROUP)}
    assert sorted(groups) == ["/llmkit/prod/cloudtrail", "/llmkit/prod/model-server", "/llmkit/prod/proxy"]
    for name, inputs in groups.items():
        assert inputs["kmsKeyId"] == LOGS_KEY, name
        assert inputs["retentionInDays"] == 365, name  # prod's llmkit:logging.retention_days


def test_log_groups_are_exposed_by_role(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    seen: dict[str, Any] = {}

    def program() -> None:
        audit = AuditTrail("audit", AuditTrailArgs.from_config(prod, LOGS_KEY, BUCKET))
        seen.update(audit.log_groups)

    rec = run_pulumi(program, stack="prod")
    assert sorted(seen) == ["model-server", "proxy"]
    assert rec.named("audit").type == "llmkit:aws:AuditTrail"
    for role in seen:
        assert rec.named(f"audit-{role}-logs").inputs["name"] == f"/llmkit/prod/{role}"


def test_retention_follows_config(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    cfg = prod.model_copy(update={"logging": prod.logging.model_copy(update={"retention_days": 731})})
    rec = run_pulumi(
        lambda: AuditTrail("audit", AuditTrailArgs.from_config(cfg, LOGS_KEY, BUCKET)), stack="prod"
    )
    assert {g.inputs["retentionInDays"] for g in rec.of_type(LOG_GROUP)} == {731}


def test_children_are_parented_and_tagged(audit: Recorded, prod: StackConfig) -> None:
    parent = audit.named("audit")
    children = [r for r in audit.resources if r.name.startswith("audit-")]
    assert len(children) == 6  # 3 log groups, role, role policy, trail
    for child in children:
        assert child.parent == parent.urn, child.name
    (trail,) = audit.of_type(TRAIL)
    assert trail.inputs["tags"] == dict(prod.tags)


def test_trail_waits_for_the_bucket_policy_and_its_role_policy(
    run_pulumi: RunPulumi, prod: StackConfig
) -> None:
    def program() -> None:
        log = LogBucket("logs", 365, "eu-central-1", cloudtrail_trail_name=trail_name("prod"))
        args = AuditTrailArgs.from_config(prod, LOGS_KEY, log.bucket_name, log_bucket_policy=log.policy)
        AuditTrail("audit", args)

    rec = run_pulumi(program, stack="prod", region="eu-central-1")
    (trail,) = rec.of_type(TRAIL)
    assert rec.named("logs-policy").urn in trail.dependencies
    assert rec.named("audit-trail-logs-write").urn in trail.dependencies
    assert trail.inputs["s3BucketName"] == "logs-bucket-id"


def test_trail_arn_matches_the_bucket_policy_and_the_logs_key_policy(
    run_pulumi: RunPulumi, prod: StackConfig
) -> None:
    """The trail's real ARN (from its name) is the one the bucket and the key admit."""

    def program() -> None:
        keys = KmsKeys("keys", KmsKeysArgs.from_config(prod))
        log = LogBucket("logs", 365, prod.region, cloudtrail_trail_name=trail_name("prod"))
        AuditTrail(
            "audit",
            AuditTrailArgs.from_config(prod, keys.logs.arn, log.bucket_name, log_bucket_policy=log.policy),
        )

    rec = run_pulumi(program, stack="prod", region=prod.region)
    (trail,) = rec.of_type(TRAIL)
    arn = f"arn:aws:cloudtrail:{prod.region}:{MOCK_ACCOUNT_ID}:trail/{trail.inputs['name']}"
    assert trail.inputs["kmsKeyId"] == f"arn:aws:kms:{prod.region}:{MOCK_ACCOUNT_ID}:keys-logs"

    bucket = json.loads(rec.named("logs-policy").inputs["policy"])["Statement"]
    for sid in ("CloudTrailAclCheck", "CloudTrailWrite"):
        statement = next(s for s in bucket if s.get("Sid") == sid)
        assert statement["Condition"]["StringEquals"]["aws:SourceArn"] == arn, sid
    write = next(s for s in bucket if s.get("Sid") == "CloudTrailWrite")
    assert write["Resource"].endswith(f"/{CLOUDTRAIL_PREFIX}/AWSLogs/{MOCK_ACCOUNT_ID}/*")

    key = json.loads(rec.named("keys-logs").inputs["policy"])["Statement"]
    encrypt = next(s for s in key if s["Sid"] == "CloudTrailEncryptLogs")
    like = encrypt["Condition"]["StringLike"]
    assert fnmatchcase(arn, like["kms:EncryptionContext:aws:cloudtrail:arn"])
    assert fnmatchcase(arn, like["aws:SourceArn"])
    describe = next(s for s in key if s["Sid"] == "CloudTrailDescribeKey")
    assert fnmatchcase(arn, describe["Condition"]["StringLike"]["aws:SourceArn"])
    # and a trail homed in another region would not be admitted: the check is not vacuous
    elsewhere = arn.replace(f":{prod.region}:", ":us-east-1:")
    assert not fnmatchcase(elsewhere, like["aws:SourceArn"])


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"retention_days": 90}, "retention_days"),
        ({"retention_days": 200}, "retention_days"),
        ({"stack": "x" * 130}, "trail name"),
        ({"name": "bad..name"}, "trail name"),
        ({"name": "ab"}, "trail name"),
    ],
)
def test_bad_args_are_refused(prod: StackConfig, overrides: dict[str, Any], word: str) -> None:
    args = AuditTrailArgs.from_config(prod, LOGS_KEY, BUCKET, **overrides)
    with pytest.raises(ValueError, match=word):
        AuditTrail("audit", args)
