"""S3 buckets hardened by default, and the log bucket for ALB and S3 access logs.

:class:`SecureBucket` is an S3 bucket with, unless the arguments say otherwise:

- default encryption SSE-KMS with the given customer-managed key and an S3 bucket key;
- all four public access block flags on;
- object ownership ``BucketOwnerEnforced`` (ACLs off);
- a bucket policy that denies every request without TLS (``aws:SecureTransport`` false) or with
  TLS older than 1.2, plus the caller's statements;
- versioning on, noncurrent versions expired after ``noncurrent_days``, incomplete multipart
  uploads aborted after 7 days, current versions expired after ``expire_days`` when given;
- server access logging to ``access_log_bucket`` when given.

SSE-S3 (AES256) instead of SSE-KMS is an explicit exception: it needs ``sse_s3_reason``.

:class:`LogBucket` is the one bucket that takes that exception, and why: **Application Load
Balancer access logs can only be delivered to buckets encrypted with SSE-S3** (ELB does not
support SSE-KMS for access logs). The bucket is tagged ``llmkit:sse-exception = alb-access-logs``
so that the policy pack's SSE-KMS rule can exempt exactly this bucket, with this reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component

# Where log producers write inside the log bucket.
ALB_LOG_PREFIX = "alb"
S3_ACCESS_LOG_PREFIX = "s3/"
CLOUDTRAIL_PREFIX = "cloudtrail"
SSE_EXCEPTION_TAG = "llmkit:sse-exception"
ALB_SSE_EXCEPTION = "alb-access-logs"
ABORT_MULTIPART_DAYS = 7

PolicyStatements = list[dict[str, Any]] | Callable[[pulumi.Output[str]], list[dict[str, Any]]]


@dataclass
class SecureBucketArgs:
    """Arguments of :class:`SecureBucket`.

    ``extra_policy_statements`` are IAM policy statements (plain dicts; values may be Outputs),
    or a function from the bucket ARN to such statements when they must name the bucket.
    ``access_log_prefix`` "" means ``s3/<component name>/``, the prefix the log bucket admits.
    """

    kms_key_arn: pulumi.Input[str] | None
    sse_s3_reason: str | None = None
    versioning: bool = True
    expire_days: int | None = None
    noncurrent_days: int = 30
    access_log_bucket: pulumi.Input[str] | None = None
    access_log_prefix: str = ""
    extra_policy_statements: PolicyStatements = field(default_factory=list)
    force_destroy: bool = False
    tags: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kms_key_arn is None and not (self.sse_s3_reason or "").strip():
            raise ValueError(
                "SecureBucketArgs: kms_key_arn is None, which means SSE-S3 instead of SSE-KMS; "
                "that is only allowed with sse_s3_reason set to why SSE-KMS cannot be used "
                "(e.g. ALB access logs). Pass kms_key_arn=<a customer-managed KMS key ARN> or sse_s3_reason."
            )
        if self.kms_key_arn is not None and self.sse_s3_reason:
            raise ValueError("SecureBucketArgs: sse_s3_reason is only meaningful with kms_key_arn=None")
        if self.expire_days is not None and self.expire_days < 1:
            raise ValueError(f"SecureBucketArgs: expire_days must be >= 1 or None, got {self.expire_days}")
        if self.noncurrent_days < 1:
            raise ValueError(f"SecureBucketArgs: noncurrent_days must be >= 1, got {self.noncurrent_days}")


def tls_deny_statements(arn: pulumi.Input[str]) -> list[dict[str, Any]]:
    """Deny any request to the bucket or its objects without TLS, or with TLS < 1.2."""
    resources = [arn, pulumi.Output.concat(arn, "/*")]
    return [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "DenyOutdatedTls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
    ]


class SecureBucket(Component):
    """An S3 bucket, hardened by default (see the module doc)."""

    TYPE = "llmkit:aws:SecureBucket"

    def __init__(self, name: str, args: SecureBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.args = args
        self.bucket = aws.s3.Bucket(
            self.child_name("bucket"),
            force_destroy=args.force_destroy,
            tags=dict(args.tags),
            opts=self.child_opts(),
        )
        # The bucket's id is its name; unlike `bucket.bucket` it is known in the offline plan too.
        self.bucket_name: pulumi.Output[str] = self.bucket.id
        self.arn: pulumi.Output[str] = self.bucket.arn
        bucket = self.bucket.id

        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            self.child_name("public-access-block"),
            bucket=bucket,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self.child_opts(),
        )
        self.ownership_controls = aws.s3.BucketOwnershipControls(
            self.child_name("ownership"),
            bucket=bucket,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=self.child_opts(),
        )
        if args.kms_key_arn is not None:
            default: dict[str, Any] = {"sse_algorithm": "aws:kms", "kms_master_key_id": args.kms_key_arn}
            encryption_rule: dict[str, Any] = {
                "apply_server_side_encryption_by_default": default,
                "bucket_key_enabled": True,
            }
        else:
            encryption_rule = {"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            self.child_name("encryption"),
            bucket=bucket,
            rules=[encryption_rule],  # type: ignore[list-item]
            opts=self.child_opts(),
        )
        self.versioning: aws.s3.BucketVersioning | None = None
        if args.versioning:
            self.versioning = aws.s3.BucketVersioning(
                self.child_name("versioning"),
                bucket=bucket,
                versioning_configuration={"status": "Enabled"},
                opts=self.child_opts(),
            )

        rules: list[dict[str, Any]] = [
            {
                "id": "abort-incomplete-multipart-uploads",
                "status": "Enabled",
                "filter": {},
                "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_MULTIPART_DAYS},
            }
        ]
        if args.versioning:
            rules.append(
                {
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_days},
                }
            )
        if args.expire_days is not None:
            rules.append(
                {
                    "id": "expire-current-versions",
                    "status": "Enabled",
                    "filter": {},
                    "expiration": {"days": args.expire_days},
                }
            )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            self.child_name("lifecycle"),
            bucket=bucket,
            rules=rules,  # type: ignore[arg-type]
            # A lifecycle rule on noncurrent versions needs versioning configured first.
            opts=self.child_opts(depends_on=[r for r in (self.versioning,) if r is not None]),
        )

        extra = args.extra_policy_statements
        statements = [*tls_deny_statements(self.arn), *(extra(self.arn) if callable(extra) else extra)]
        self.policy = aws.s3.BucketPolicy(
            self.child_name("policy"),
            bucket=bucket,
            policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements}),
            # S3 refuses concurrent configuration changes of one bucket; and with the public access
            # block in place first, a policy that would make the bucket public is refused.
            opts=self.child_opts(depends_on=[self.public_access_block, self.ownership_controls]),
        )

        self.logging: aws.s3.BucketLogging | None = None
        if args.access_log_bucket is not None:
            self.logging = aws.s3.BucketLogging(
                self.child_name("logging"),
                bucket=bucket,
                target_bucket=args.access_log_bucket,
                target_prefix=args.access_log_prefix or f"{S3_ACCESS_LOG_PREFIX}{name}/",
                opts=self.child_opts(),
            )

        self.register_outputs({"bucket_name": self.bucket_name, "arn": self.arn})


class LogBucket(SecureBucket):
    """The log bucket: ALB access logs under ``alb/`` and S3 server access logs under ``s3/``.

    SSE-S3, not SSE-KMS: ALB access logs can only be written to SSE-S3 buckets. This is the
    project's one documented SSE-KMS exemption; the bucket carries the tag
    ``llmkit:sse-exception = alb-access-logs`` for the policy pack. Objects (and noncurrent
    versions after ``noncurrent_days``) expire after ``retention_days``. The bucket does not log its
    own access (that would log into itself).

    Give the ALB ``access_logs={"bucket": log.bucket_name, "prefix": ALB_LOG_PREFIX, "enabled": True}``
    and other buckets ``SecureBucketArgs(access_log_bucket=log.bucket_name)``.
    """

    TYPE = "llmkit:aws:LogBucket"

    def __init__(
        self,
        name: str,
        retention_days: int,
        region: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
        *,
        noncurrent_days: int = 30,
        force_destroy: bool = False,
        tags: Mapping[str, pulumi.Input[str]] | None = None,
    ) -> None:
        self.region = region

        def statements(arn: pulumi.Output[str]) -> list[dict[str, Any]]:
            # Called by SecureBucket.__init__ once the component exists, so invokes can parent to it.
            invoke_opts = pulumi.InvokeOutputOptions(parent=self)
            account_id = aws.get_caller_identity_output(opts=invoke_opts).account_id
            elb_account = aws.elb.get_service_account_output(region=region, opts=invoke_opts)
            alb_objects = pulumi.Output.concat(arn, f"/{ALB_LOG_PREFIX}/AWSLogs/", account_id, "/*")
            return [
                {
                    "Sid": "AlbLogDeliveryRegionalAccount",
                    "Effect": "Allow",
                    "Principal": {"AWS": elb_account.arn},
                    "Action": "s3:PutObject",
                    "Resource": alb_objects,
                },
                {
                    "Sid": "AlbLogDeliveryService",
                    "Effect": "Allow",
                    "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": alb_objects,
                },
                {
                    "Sid": "S3ServerAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": pulumi.Output.concat(arn, f"/{S3_ACCESS_LOG_PREFIX}*"),
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
            ]

        super().__init__(
            name,
            SecureBucketArgs(
                kms_key_arn=None,
                sse_s3_reason="ALB access logs can only be delivered to SSE-S3 encrypted buckets",
                versioning=True,
                expire_days=retention_days,
                noncurrent_days=noncurrent_days,
                extra_policy_statements=statements,
                force_destroy=force_destroy,
                tags={**(tags or {}), SSE_EXCEPTION_TAG: ALB_SSE_EXCEPTION},
            ),
            opts,
        )
