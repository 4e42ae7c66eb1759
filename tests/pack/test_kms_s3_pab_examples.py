"""The two example rules: a resource rule (KMS rotation) and a stack rule (bucket access blocks)."""

from __future__ import annotations

from llmkit.policy import UNKNOWN
from policies.rules.aws_kms_key_enable_rotation import RULE as ROTATION
from policies.rules.aws_s3_bucket_missing_public_access_block import RULE as PAB
from tests.pack.fixtures import messages, res, skipped

KEY = "aws:kms/key:Key"
BUCKET = "aws:s3/bucketV2:BucketV2"
BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ALL_ON = dict.fromkeys(
    ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True
)


def test_rotating_key_passes() -> None:
    assert messages(ROTATION, res(KEY, enableKeyRotation=True, rotationPeriodInDays=365)) == []


def test_key_without_rotation_fails() -> None:
    assert messages(ROTATION, res(KEY, "k")) == [("k", "key rotation is off: set enableKeyRotation: true")]
    assert messages(ROTATION, res(KEY, "k", enableKeyRotation=False)) != []


def test_rotation_period_over_the_setting_fails() -> None:
    key = res(KEY, "k", enableKeyRotation=True, rotationPeriodInDays=730)
    assert messages(ROTATION, key) == [("k", "rotation period 730 days is over the allowed 365")]
    assert messages(ROTATION, key, max_rotation_period_days=730) == []


def test_asymmetric_keys_are_out_of_scope() -> None:
    assert messages(ROTATION, res(KEY, customerMasterKeySpec="RSA_2048")) == []


def test_unknown_rotation_is_skipped_not_judged() -> None:
    key = res(KEY, "k", enableKeyRotation=UNKNOWN)
    assert messages(ROTATION, key) == []
    assert skipped(ROTATION, key) == [(ROTATION.name, key.urn)]


def test_bucket_with_a_full_block_passes() -> None:
    assert messages(PAB, res(BUCKET, "b"), res(BLOCK, "pab", bucket="b-id", **ALL_ON)) == []


def test_bucket_without_a_block_fails() -> None:
    found = messages(PAB, res(BUCKET, "b"), res(BUCKET, "c"), res(BLOCK, "pab", bucket="c-id", **ALL_ON))
    assert found == [
        ("b", "bucket has no public access block (aws.s3.BucketPublicAccessBlock with all four flags)")
    ]


def test_a_block_with_a_flag_off_fails() -> None:
    block = res(BLOCK, "pab", bucket="b-id", **{**ALL_ON, "restrictPublicBuckets": False})
    assert messages(PAB, res(BUCKET, "b"), block) == [
        ("pab", "public access block leaves off: restrictPublicBuckets")
    ]
