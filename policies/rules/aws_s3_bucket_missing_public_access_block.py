"""Every S3 bucket has a public access block with all four flags on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Stack
from policies.support import BUCKET_PAB, BUCKETS, truthy

FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    blocks = stack.of_type(*BUCKET_PAB)
    for block in blocks:
        off = [flag for flag in FLAGS if not truthy(block.get(flag, default=False))]
        if off:
            yield block, f"public access block leaves off: {', '.join(off)}"
    for bucket in stack.of_type(*BUCKETS):
        if not any(stack.refers_to(block.get("bucket"), bucket) for block in blocks):
            yield (
                bucket,
                "bucket has no public access block (aws.s3.BucketPublicAccessBlock with all four flags)",
            )


RULE = Rule(
    name="aws-s3-bucket-missing-public-access-block",
    description="Every S3 bucket has a public access block with all four flags on.",
    why="Without it one ACL or bucket policy statement can publish model weights or logs to the internet.",
    severity="critical",
    remediation="Give the bucket an aws.s3.BucketPublicAccessBlock with blockPublicAcls, blockPublicPolicy, "
    "ignorePublicAcls and restrictPublicBuckets true (SecureBucket does).",
    frameworks=("CIS AWS Foundations 2.1.4", "AWS FSBP S3.8", "HIPAA 164.312(a)(1)", "GDPR Art. 32(1)(b)"),
    check_stack=check,
)
