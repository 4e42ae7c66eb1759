"""SecureBucket and LogBucket: S3 buckets hardened by default."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from components.storage import CLOUDTRAIL_PREFIX, LogBucket, SecureBucket, SecureBucketArgs
from llmkit.plan import ELB_LOG_ACCOUNTS, MOCK_ACCOUNT_ID
from tests.conftest import Recorded

KEY_ARN = f"arn:aws:kms:eu-central-1:{MOCK_ACCOUNT_ID}:key/0b5c1a9e-1111-2222-3333-444455556666"


def _policy(rec: Recorded, name: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = json.loads(rec.named(f"{name}-policy").inputs["policy"])["Statement"]
    return statements


@pytest.fixture
def models(run_pulumi: Callable[..., Recorded]) -> Recorded:
    return run_pulumi(
        lambda: SecureBucket(
            "models",
            SecureBucketArgs(
                kms_key_arn=KEY_ARN,
                access_log_bucket="llmkit-logs-bucket",
                extra_policy_statements=[
                    {
                        "Sid": "ReadThroughEndpoint",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": "*",
                        "Condition": {
                            "StringNotEquals": {"aws:SourceVpce": pulumi.Output.from_input("vpce-1")}
                        },
                    }
                ],
                tags={"owner": "ml-platform"},
            ),
        )
    )


def test_sse_kms_with_bucket_key_and_the_given_key(models: Recorded) -> None:
    rules = models.named("models-encryption").inputs["rules"]
    assert rules == [
        {
            "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": KEY_ARN},
            "bucketKeyEnabled": True,
        }
    ]
    assert models.named("models-encryption").inputs["bucket"] == "models-bucket-id"


def test_public_access_blocked_and_acls_off(models: Recorded) -> None:
    block = models.named("models-public-access-block").inputs
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[flag] is True, flag
    ownership = models.named("models-ownership").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_policy_denies_requests_without_tls_on_bucket_and_objects(models: Recorded) -> None:
    statements = _policy(models, "models")
    arn = f"arn:aws:s3:eu-central-1:{MOCK_ACCOUNT_ID}:models-bucket"  # the mock's ARN of the bucket
    deny = next(s for s in statements if s.get("Sid") == "DenyInsecureTransport")
    assert deny["Effect"] == "Deny"
    assert deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [arn, f"{arn}/*"]
    old_tls = next(s for s in statements if s.get("Sid") == "DenyOutdatedTls")
    assert old_tls["Condition"] == {"NumericLessThan": {"s3:TlsVersion": "1.2"}}
    extra = next(s for s in statements if s.get("Sid") == "ReadThroughEndpoint")
    assert extra["Condition"]["StringNotEquals"] == {"aws:SourceVpce": "vpce-1"}  # an Output resolved
    assert not any(s["Effect"] == "Allow" and s["Principal"] == "*" for s in statements)


def test_versioning_lifecycle_and_logging(models: Recorded) -> None:
    assert models.named("models-versioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    rules = {r["id"]: r for r in models.named("models-lifecycle").inputs["rules"]}
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert rules["expire-noncurrent-versions"]["status"] == "Enabled"
    assert rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"] == {
        "daysAfterInitiation": 7
    }
    assert "expire-current-versions" not in rules  # no expire_days given
    logging = models.named("models-logging").inputs
    assert logging["bucket"] == "models-bucket-id"
    assert logging["targetBucket"] == "llmkit-logs-bucket"
    assert logging["targetPrefix"] == "s3/models/"


def test_bucket_is_private_and_tagged(models: Recorded) -> None:
    bucket = models.named("models-bucket").inputs
    assert bucket["forceDestroy"] is False
    assert bucket["tags"] == {"owner": "ml-platform"}
    assert "acl" not in bucket


def test_every_child_is_parented_to_its_component(run_pulumi: Callable[..., Recorded]) -> None:
    def program() -> None:
        log = LogBucket("logs", 365, "eu-central-1")
        SecureBucket(
            "models",
            SecureBucketArgs(kms_key_arn=KEY_ARN, access_log_bucket=log.bucket_name, expire_days=90),
        )

    rec = run_pulumi(program)
    for component, kind in (("logs", "llmkit:aws:LogBucket"), ("models", "llmkit:aws:SecureBucket")):
        parent = rec.named(component)
        assert parent.type == kind
        children = [r for r in rec.resources if r.name.startswith(f"{component}-")]
        assert len(children) == (8 if component == "models" else 7)  # the log bucket logs nowhere
        for child in children:
            assert child.parent == parent.urn, child.name
    assert rec.named("models-logging").inputs["targetBucket"] == "logs-bucket-id"
    rules = {r["id"]: r for r in rec.named("models-lifecycle").inputs["rules"]}
    assert rules["expire-current-versions"]["expiration"] == {"days": 90}


def test_policy_waits_for_public_access_block(models: Recorded) -> None:
    policy = models.named("models-policy")
    assert models.named("models-public-access-block").urn in policy.dependencies


def test_sse_s3_without_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="sse_s3_reason") as error:
        SecureBucketArgs(kms_key_arn=None)
    assert "kms_key_arn" in str(error.value)
    with pytest.raises(ValueError, match="sse_s3_reason"):
        SecureBucketArgs(kms_key_arn=None, sse_s3_reason="  ")


def test_sse_s3_with_reason(run_pulumi: Callable[..., Recorded]) -> None:
    rec = run_pulumi(
        lambda: SecureBucket("plain", SecureBucketArgs(kms_key_arn=None, sse_s3_reason="a tool needs SSE-S3"))
    )
    rules = rec.named("plain-encryption").inputs["rules"]
    assert rules == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"kms_key_arn": KEY_ARN, "sse_s3_reason": "why"}, "sse_s3_reason"),
        ({"kms_key_arn": KEY_ARN, "expire_days": 0}, "expire_days"),
        ({"kms_key_arn": KEY_ARN, "noncurrent_days": 0}, "noncurrent_days"),
    ],
)
def test_bad_args_are_refused(overrides: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SecureBucketArgs(**overrides)


def test_versioning_off_has_no_noncurrent_rule(run_pulumi: Callable[..., Recorded]) -> None:
    rec = run_pulumi(lambda: SecureBucket("scratch", SecureBucketArgs(kms_key_arn=KEY_ARN, versioning=False)))
    assert not rec.of_type("aws:s3/bucketVersioning:BucketVersioning")
    rules = {r["id"] for r in rec.named("scratch-lifecycle").inputs["rules"]}
    assert rules == {"abort-incomplete-multipart-uploads"}
    assert not rec.of_type("aws:s3/bucketLogging:BucketLogging")


def test_extra_statements_may_name_the_bucket(run_pulumi: Callable[..., Recorded]) -> None:
    def statements(arn: pulumi.Output[str]) -> list[dict[str, Any]]:
        return [
            {
                "Sid": "Mine",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:root"},
                "Action": "s3:GetObject",
                "Resource": pulumi.Output.concat(arn, "/x/*"),
            }
        ]

    rec = run_pulumi(
        lambda: SecureBucket("b", SecureBucketArgs(kms_key_arn=KEY_ARN, extra_policy_statements=statements))
    )
    mine = next(s for s in _policy(rec, "b") if s.get("Sid") == "Mine")
    assert mine["Resource"] == f"arn:aws:s3:eu-central-1:{MOCK_ACCOUNT_ID}:b-bucket/x/*"


@pytest.fixture
def logs(run_pulumi: Callable[..., Recorded]) -> Recorded:
    return run_pulumi(
        lambda: LogBucket("logs", 365, "eu-central-1", tags={"owner": "sec"}), region="eu-central-1"
    )


def test_log_bucket_is_sse_s3_with_documented_exception(logs: Recorded) -> None:
    rules = logs.named("logs-encryption").inputs["rules"]
    assert rules == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]
    assert logs.named("logs-bucket").inputs["tags"] == {
        "owner": "sec",
        "llmkit:sse-exception": "alb-access-logs",
    }
    lifecycle = {r["id"]: r for r in logs.named("logs-lifecycle").inputs["rules"]}
    assert lifecycle["expire-current-versions"]["expiration"] == {"days": 365}
    assert logs.named("logs-versioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    block = logs.named("logs-public-access-block").inputs
    assert all(
        block[f] is True
        for f in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )


def test_log_bucket_policy_admits_log_delivery(logs: Recorded) -> None:
    statements = _policy(logs, "logs")
    arn = f"arn:aws:s3:eu-central-1:{MOCK_ACCOUNT_ID}:logs-bucket"
    alb_objects = f"{arn}/alb/AWSLogs/{MOCK_ACCOUNT_ID}/*"
    assert ELB_LOG_ACCOUNTS["eu-central-1"] == "054676820928"
    elb = next(s for s in statements if s["Principal"] == {"AWS": "arn:aws:iam::054676820928:root"})
    assert (elb["Effect"], elb["Action"], elb["Resource"]) == ("Allow", "s3:PutObject", alb_objects)
    service = next(
        s
        for s in statements
        if s["Principal"] == {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
    )
    assert (service["Effect"], service["Action"], service["Resource"]) == (
        "Allow",
        "s3:PutObject",
        alb_objects,
    )
    s3 = next(s for s in statements if s["Principal"] == {"Service": "logging.s3.amazonaws.com"})
    assert (s3["Action"], s3["Resource"]) == ("s3:PutObject", f"{arn}/s3/*")
    assert s3["Condition"] == {"StringEquals": {"aws:SourceAccount": MOCK_ACCOUNT_ID}}
    deny = next(s for s in statements if s.get("Sid") == "DenyInsecureTransport")
    assert deny["Resource"] == [arn, f"{arn}/*"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allows) == 3 and all(s["Action"] == "s3:PutObject" for s in allows)


# --- the log bucket as CloudTrail's destination --------------------------------------------------

TRAIL = "llmkit-test-trail"


@pytest.fixture
def trail_logs(run_pulumi: Callable[..., Recorded]) -> Recorded:
    return run_pulumi(
        lambda: LogBucket("logs", 365, "eu-central-1", cloudtrail_trail_name=TRAIL), region="eu-central-1"
    )


def test_log_bucket_admits_exactly_one_trail(trail_logs: Recorded) -> None:
    statements = _policy(trail_logs, "logs")
    arn = f"arn:aws:s3:eu-central-1:{MOCK_ACCOUNT_ID}:logs-bucket"
    trail_arn = f"arn:aws:cloudtrail:eu-central-1:{MOCK_ACCOUNT_ID}:trail/{TRAIL}"
    trail = [s for s in statements if s["Principal"] == {"Service": "cloudtrail.amazonaws.com"}]
    assert len(trail) == 2
    acl = next(s for s in trail if s["Action"] == "s3:GetBucketAcl")
    assert (acl["Effect"], acl["Resource"]) == ("Allow", arn)  # the bucket, not its objects
    assert acl["Condition"] == {"StringEquals": {"aws:SourceArn": trail_arn}}
    write = next(s for s in trail if s["Action"] == "s3:PutObject")
    assert write["Effect"] == "Allow"
    assert write["Resource"] == f"{arn}/{CLOUDTRAIL_PREFIX}/AWSLogs/{MOCK_ACCOUNT_ID}/*"
    assert write["Condition"] == {
        "StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control", "aws:SourceArn": trail_arn}
    }


def test_log_bucket_with_trail_keeps_alb_and_access_log_delivery(
    trail_logs: Recorded, logs: Recorded
) -> None:
    with_trail = _policy(trail_logs, "logs")
    without = _policy(logs, "logs")
    # Every statement of the plain log bucket is still there, unchanged; the trail only adds two.
    assert [s for s in with_trail if s["Principal"] != {"Service": "cloudtrail.amazonaws.com"}] == without
    assert len(with_trail) == len(without) + 2
    # CloudTrail encrypts its files with the logs key itself: the bucket default stays SSE-S3.
    rules = trail_logs.named("logs-encryption").inputs["rules"]
    assert rules == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]


def test_log_bucket_without_trail_admits_no_cloudtrail(logs: Recorded) -> None:
    assert not any("cloudtrail" in json.dumps(s) for s in _policy(logs, "logs"))


def test_trail_arn_uses_the_provider_region_when_none_is_given(run_pulumi: Callable[..., Recorded]) -> None:
    rec = run_pulumi(lambda: LogBucket("logs", 30, cloudtrail_trail_name="t-1"), region="eu-west-1")
    write = next(s for s in _policy(rec, "logs") if s.get("Sid") == "CloudTrailWrite")
    trail_arn = f"arn:aws:cloudtrail:eu-west-1:{MOCK_ACCOUNT_ID}:trail/t-1"
    assert write["Condition"]["StringEquals"]["aws:SourceArn"] == trail_arn


@pytest.mark.parametrize(
    "name", ["", "ab", "-trail", "trail-", "my trail", "a..b", "a_-b", "x" * 129, "arn:aws:x"]
)
def test_bad_trail_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cloudtrail_trail_name"):
        LogBucket("logs", 30, "eu-central-1", cloudtrail_trail_name=name)


def test_bucket_name_is_pulumis_unless_given(run_pulumi: Callable[..., Recorded]) -> None:
    def program() -> None:
        SecureBucket("named", SecureBucketArgs(kms_key_arn=KEY_ARN, bucket_name="llmkit-dev-x-1"))
        SecureBucket("auto", SecureBucketArgs(kms_key_arn=KEY_ARN))

    rec = run_pulumi(program)
    assert rec.named("named-bucket").inputs["bucket"] == "llmkit-dev-x-1"
    assert rec.named("named-encryption").inputs["bucket"] == "named-bucket-id"
    assert "bucket" not in rec.named("auto-bucket").inputs  # auto-named by Pulumi


def test_extra_statements_may_be_an_output_of_a_list(run_pulumi: Callable[..., Recorded]) -> None:
    def statements(arn: pulumi.Output[str]) -> pulumi.Output[list[dict[str, Any]]]:
        return pulumi.Output.all(arn, pulumi.Output.from_input("vpce-9")).apply(
            lambda v: [
                {
                    "Sid": "Resolved",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"{v[0]}/*",
                    "Condition": {"StringNotEquals": {"aws:SourceVpce": v[1]}},
                }
            ]
        )

    rec = run_pulumi(
        lambda: SecureBucket("o", SecureBucketArgs(kms_key_arn=KEY_ARN, extra_policy_statements=statements))
    )
    policy = _policy(rec, "o")
    assert [s["Sid"] for s in policy] == ["DenyInsecureTransport", "DenyOutdatedTls", "Resolved"]
    assert policy[2]["Resource"] == f"arn:aws:s3:eu-central-1:{MOCK_ACCOUNT_ID}:o-bucket/*"
    assert policy[2]["Condition"] == {"StringNotEquals": {"aws:SourceVpce": "vpce-9"}}


def test_each_load_balancer_delivers_under_its_own_prefix(run_pulumi: Callable[..., Recorded]) -> None:
    rec = run_pulumi(
        lambda: LogBucket("logs", 365, "eu-central-1", alb_log_prefixes=("alb", "model-alb")),
        region="eu-central-1",
    )
    statements = {s["Sid"]: s for s in _policy(rec, "logs")}
    arn = f"arn:aws:s3:eu-central-1:{MOCK_ACCOUNT_ID}:logs-bucket"
    expected = [f"{arn}/{p}/AWSLogs/{MOCK_ACCOUNT_ID}/*" for p in ("alb", "model-alb")]
    assert statements["AlbLogDeliveryRegionalAccount"]["Resource"] == expected
    assert statements["AlbLogDeliveryService"]["Resource"] == expected


@pytest.mark.parametrize("prefixes", [(), ("alb/x",), ("",), ("a b",)])
def test_bad_alb_log_prefixes_are_refused(prefixes: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="alb_log_prefixes"):
        LogBucket("logs", 30, "eu-central-1", alb_log_prefixes=prefixes)
