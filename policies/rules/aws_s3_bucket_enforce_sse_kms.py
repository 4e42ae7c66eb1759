"""Every S3 bucket encrypts new objects by default with SSE-KMS under a customer-managed key.

Default encryption comes from a separate configuration resource
(``aws.s3.BucketServerSideEncryptionConfiguration``, either type token, linked by its ``bucket``) or
from the deprecated inline form on the bucket itself (``serverSideEncryptionConfiguration`` of
``aws.s3.Bucket``, ``serverSideEncryptionConfigurations`` of ``aws.s3.BucketV2``). A problem is
reported on the resource that configures it: a separate configuration's algorithm or key on that
resource, an inline one, a bad exception tag or a missing configuration on the bucket. So each
problem appears once.

Accepted: ``aws:kms`` or ``aws:kms:dsse`` with a ``kmsMasterKeyId`` that is not an AWS managed key
alias (``alias/aws/s3``): without a key, or with the AWS managed one, S3 uses the ``aws/s3`` key,
whose key policy the account cannot restrict.

One exception, by tag: ``llmkit:sse-exception = alb-access-logs`` lets a bucket use SSE-S3
(``AES256``), because Elastic Load Balancing delivers access logs only to SSE-S3 buckets
(``LogBucket`` is that bucket). Any other tag value is a violation that names the accepted values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Stack, as_list, known
from policies.support import BUCKET_SSE, BUCKETS

EXCEPTION_TAG = "llmkit:sse-exception"
# The accepted exception values, and the algorithms each one allows besides SSE-KMS.
EXCEPTIONS: Mapping[str, tuple[str, ...]] = {"alb-access-logs": ("AES256",)}
KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")


def _aws_managed(key: str) -> bool:
    """An AWS managed key alias (``alias/aws/s3``, also as an alias ARN)."""
    return key.startswith("alias/aws/") or ":alias/aws/" in key


def _accepted(extra: tuple[str, ...]) -> str:
    text = "aws:kms or aws:kms:dsse with a customer-managed kmsMasterKeyId"
    if extra:
        return f"{text}, or {' or '.join(extra)} (llmkit:sse-exception)"
    return f"{text}; AES256 only for a bucket tagged {EXCEPTION_TAG}=alb-access-logs"


def _defaults(config: Any) -> list[Mapping[str, Any]]:
    """The ``applyServerSideEncryptionByDefault`` blocks of one configuration, in any of its shapes."""
    config = known(config)
    if not isinstance(config, Mapping):
        return []
    found: list[Mapping[str, Any]] = []
    for rule in [*as_list(config.get("rule")), *as_list(config.get("rules"))]:
        rule = known(rule)
        if not isinstance(rule, Mapping):
            continue
        for key in ("applyServerSideEncryptionByDefault", "applyServerSideEncryptionByDefaults"):
            found.extend(d for d in as_list(rule.get(key)) if isinstance(known(d), Mapping))
    return found


def _problems(defaults: list[Mapping[str, Any]], extra: tuple[str, ...]) -> Iterator[str]:
    if not defaults:
        yield f"encryption configuration sets no default encryption (accepted: {_accepted(extra)})"
    for block in defaults:
        algorithm = known(block.get("sseAlgorithm"))
        if algorithm in KMS_ALGORITHMS:
            key = known(block.get("kmsMasterKeyId"))
            if not key:
                yield (
                    f"sseAlgorithm {algorithm} without a kmsMasterKeyId uses the AWS managed key aws/s3: "
                    "name a customer-managed KMS key"
                )
            elif _aws_managed(str(key)):
                yield f"kmsMasterKeyId {key} is an AWS managed key: name a customer-managed KMS key"
        elif algorithm not in extra:
            yield f"sseAlgorithm {algorithm} is not SSE-KMS (accepted: {_accepted(extra)})"


def _exception(bucket: Resource) -> tuple[tuple[str, ...], str | None]:
    """The extra algorithms the bucket's exception tag allows, and the tag's problem if any."""
    value = bucket.tags().get(EXCEPTION_TAG)
    if value is None:
        return (), None
    if value in EXCEPTIONS:
        return EXCEPTIONS[value], None
    return (), f"tag {EXCEPTION_TAG}={value} is not an accepted exception (one of: {', '.join(EXCEPTIONS)})"


def _inline(bucket: Resource) -> list[Any] | None:
    configs = [
        *as_list(bucket.get("serverSideEncryptionConfiguration")),
        *as_list(bucket.get("serverSideEncryptionConfigurations")),
    ]
    return configs or None


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    buckets = stack.of_type(*BUCKETS)
    configurations = stack.of_type(*BUCKET_SSE)
    owners = {
        c.urn: next((b for b in buckets if stack.refers_to(c.get("bucket"), b)), None) for c in configurations
    }
    for bucket in buckets:
        extra, tag_problem = _exception(bucket)
        if tag_problem:
            yield bucket, tag_problem
        separate = [c for c in configurations if owners[c.urn] is bucket]
        inline = _inline(bucket)
        if inline is None and not separate:
            yield (
                bucket,
                (
                    "bucket has no default encryption configuration (S3 falls back to SSE-S3): "
                    f"add an aws.s3.BucketServerSideEncryptionConfiguration with {_accepted(extra)}"
                ),
            )
        for block in inline or []:
            for problem in _problems(_defaults(block), extra):
                yield bucket, problem
        for configuration in separate:
            for problem in _problems(_defaults({"rules": configuration.get("rules")}), extra):
                yield configuration, problem
    for configuration in configurations:
        if owners[configuration.urn] is None:  # a bucket outside this stack: no exception applies
            for problem in _problems(_defaults({"rules": configuration.get("rules")}), ()):
                yield configuration, problem


RULE = Rule(
    name="aws-s3-bucket-enforce-sse-kms",
    description="Every S3 bucket encrypts by default with SSE-KMS (aws:kms or aws:kms:dsse) under a "
    "customer-managed KMS key; SSE-S3 only for a bucket tagged llmkit:sse-exception=alb-access-logs.",
    why="With SSE-S3 or the AWS managed aws/s3 key anyone with s3:GetObject reads model weights and logs; "
    "a customer-managed key adds a key policy, a second permission to decrypt, and a CloudTrail record of "
    "every use.",
    severity="high",
    remediation="Give the bucket an aws.s3.BucketServerSideEncryptionConfiguration with sseAlgorithm aws:kms "
    "and kmsMasterKeyId a customer-managed key (SecureBucket does, with the KmsKeys data key); only the ALB "
    "access log bucket (LogBucket) takes the tagged SSE-S3 exception.",
    frameworks=(
        "AWS Security Hub S3.17",
        "NIST SP 800-53 Rev. 5 SC-28(1)",
        "HIPAA 164.312(a)(2)(iv)",
        "GDPR Art. 32(1)(a)",
    ),
    check_stack=check,
)
