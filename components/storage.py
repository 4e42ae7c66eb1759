"""S3 buckets hardened by default, and the log bucket for ALB, S3 access and CloudTrail logs.

:class:`SecureBucket` is an S3 bucket with, unless the arguments say otherwise:

- default encryption SSE-KMS with the given customer-managed key and an S3 bucket key;
- all four public access block flags on;
- object ownership ``BucketOwnerEnforced`` (ACLs off);
- a bucket policy that denies every request without TLS (``aws:SecureTransport`` false) or with
  TLS older than 1.2, plus the caller's statements;
- versioning on, noncurrent versions expired after ``noncurrent_days``, incomplete multipart
  uploads aborted after 7 days, current versions expired after ``expire_days`` when given;
- server access logging to ``access_log_bucket`` when given;
- Pulumi's auto-generated name, or ``bucket_name`` when the bucket must be named before it exists
  (e.g. the model store: a VPC endpoint policy created before it names it).

SSE-S3 (AES256) instead of SSE-KMS is an explicit exception: it needs ``sse_s3_reason``.

:class:`LogBucket` is the one bucket that takes that exception, and why: **Application Load
Balancer access logs can only be delivered to buckets encrypted with SSE-S3** (ELB does not
support SSE-KMS for access logs). The bucket is tagged ``llmkit:sse-exception = alb-access-logs``
so that the policy pack's SSE-KMS rule can exempt exactly this bucket, with this reason.

The log bucket is also the CloudTrail destination when ``cloudtrail_trail_name`` is given: its
policy then lets ``cloudtrail.amazonaws.com`` read the bucket ACL and write objects under
``cloudtrail/AWSLogs/<account>/``, both only on behalf of that one trail (``aws:SourceArn``), and
writes only with ``x-amz-acl = bucket-owner-full-control``. The SSE-S3 default does not weaken
CloudTrail's files: the trail encrypts every log file itself with SSE-KMS under the ``logs`` key
(the trail's ``kms_key_id``), and a request's explicit encryption overrides the bucket default.
So the bucket's one SSE exception stays scoped to the ALB logs, which cannot be KMS-encrypted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component

# Where log producers write inside the log bucket.
ALB_LOG_PREFIX = "alb"
S3_ACCESS_LOG_PREFIX = "s3/"
CLOUDTRAIL_PREFIX = "cloudtrail"
CLOUDTRAIL_SERVICE = "cloudtrail.amazonaws.com"
SSE_EXCEPTION_TAG = "llmkit:sse-exception"
ALB_SSE_EXCEPTION = "alb-access-logs"
ABORT_MULTIPART_DAYS = 7
_ALB_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")

Statements = list[dict[str, Any]] | pulumi.Output[list[dict[str, Any]]]
PolicyStatements = Statements | Callable[[pulumi.Output[str]], Statements]

# CloudTrail trail names: 3-128 letters, digits, '.', '_' or '-', starting and ending with a letter
# or digit, no '._-' next to each other (docs.aws.amazon.com/awscloudtrail/latest/APIReference).
_TRAIL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|[._-](?![._-])){1,126}[A-Za-z0-9]")


@dataclass
class SecureBucketArgs:
    """Arguments of :class:`SecureBucket`.

    ``extra_policy_statements`` are IAM policy statements (plain dicts; values may be Outputs; or
    an Output of the whole list), or a function from the bucket ARN to such statements when they
    must name the bucket.
    ``access_log_prefix`` "" means ``s3/<component name>/``, the prefix the log bucket admits.
    ``bucket_name`` None means Pulumi's auto-name; an explicit (globally unique) name is for buckets
    that other resources must name before the bucket exists.
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
    bucket_name: pulumi.Input[str] | None = None

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
            bucket=args.bucket_name,
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
        statements = pulumi.Output.all(
            pulumi.Output.from_input(tls_deny_statements(self.arn)),
            pulumi.Output.from_input(extra(self.arn) if callable(extra) else extra),
        )
        self.policy = aws.s3.BucketPolicy(
            self.child_name("policy"),
            bucket=bucket,
            policy=statements.apply(
                lambda v: json.dumps({"Version": "2012-10-17", "Statement": [*v[0], *v[1]]})
            ),
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

        self.register_outputs(self._outputs())

    def _outputs(self) -> dict[str, Any]:
        """What the component registers as its outputs; subclasses add theirs."""
        return {"bucket_name": self.bucket_name, "arn": self.arn}


class LogBucket(SecureBucket):
    """The log bucket: ALB access logs under ``alb/``, S3 server access logs under ``s3/`` and,
    with ``cloudtrail_trail_name``, that trail's log files under ``cloudtrail/``.

    SSE-S3, not SSE-KMS: ALB access logs can only be written to SSE-S3 buckets. This is the
    project's one documented SSE-KMS exemption; the bucket carries the tag
    ``llmkit:sse-exception = alb-access-logs`` for the policy pack. CloudTrail's files are not
    covered by the exemption: the trail encrypts them with SSE-KMS under the ``logs`` key itself
    (give the trail ``kms_key_id=keys.logs.arn``). Objects (and noncurrent versions after
    ``noncurrent_days``) expire after ``retention_days``, CloudTrail's included. The bucket does
    not log its own access (that would log into itself).

    CloudTrail may read the bucket ACL and write ``cloudtrail/AWSLogs/<account>/*`` only for the
    trail ``arn:<partition>:cloudtrail:<region>:<account>:trail/<cloudtrail_trail_name>``
    (``aws:SourceArn``; the trail lives in ``region``, the stack's region), and writes only with
    ``s3:x-amz-acl = bucket-owner-full-control``. The name is passed rather than the trail's ARN
    because the trail needs this policy in place before it can be created.

    Give the ALB ``access_logs={"bucket": log.bucket_name, "prefix": ALB_LOG_PREFIX, "enabled": True}``,
    other buckets ``SecureBucketArgs(access_log_bucket=log.bucket_name)`` and the trail
    ``s3_bucket_name=log.bucket_name, s3_key_prefix=CLOUDTRAIL_PREFIX, name=<cloudtrail_trail_name>``
    with ``depends_on=[log.policy]``.
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
        cloudtrail_trail_name: str | None = None,
        alb_log_prefixes: Sequence[str] = (ALB_LOG_PREFIX,),
    ) -> None:
        if not alb_log_prefixes or any(not _ALB_PREFIX.fullmatch(p) for p in alb_log_prefixes):
            raise ValueError(
                f"LogBucket: alb_log_prefixes {list(alb_log_prefixes)!r} must be at least one prefix of "
                "letters, digits, '-' and '_' (no slashes; ELB adds /AWSLogs/<account>/)"
            )
        if cloudtrail_trail_name is not None and not _TRAIL_NAME.fullmatch(cloudtrail_trail_name):
            raise ValueError(
                f"LogBucket: cloudtrail_trail_name {cloudtrail_trail_name!r} is not a CloudTrail trail name "
                "(3-128 letters, digits, '.', '_' or '-'; starting and ending with a letter or digit; "
                "no two of '._-' in a row)"
            )
        self.region = region
        self.cloudtrail_trail_name = cloudtrail_trail_name

        def statements(arn: pulumi.Output[str]) -> list[dict[str, Any]]:
            # Called by SecureBucket.__init__ once the component exists, so invokes can parent to it.
            invoke_opts = pulumi.InvokeOutputOptions(parent=self)
            account_id = aws.get_caller_identity_output(opts=invoke_opts).account_id
            elb_account = aws.elb.get_service_account_output(region=region, opts=invoke_opts)
            # Each load balancer logs under its own prefix (the edge ALB, the model tier's ALB).
            alb_prefixes = [
                pulumi.Output.concat(arn, f"/{p}/AWSLogs/", account_id, "/*") for p in alb_log_prefixes
            ]
            alb_objects: Any = alb_prefixes[0] if len(alb_prefixes) == 1 else alb_prefixes
            statements: list[dict[str, Any]] = [
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
            if cloudtrail_trail_name is not None:
                partition = aws.get_partition_output(opts=invoke_opts).partition
                trail_region: pulumi.Input[str] = (
                    region if region is not None else aws.get_region_output(opts=invoke_opts).region
                )
                trail_arn = pulumi.Output.concat(
                    "arn:",
                    partition,
                    ":cloudtrail:",
                    trail_region,
                    ":",
                    account_id,
                    f":trail/{cloudtrail_trail_name}",
                )
                trail_objects = pulumi.Output.concat(arn, f"/{CLOUDTRAIL_PREFIX}/AWSLogs/", account_id, "/*")
                statements += [
                    {
                        "Sid": "CloudTrailAclCheck",
                        "Effect": "Allow",
                        "Principal": {"Service": CLOUDTRAIL_SERVICE},
                        "Action": "s3:GetBucketAcl",
                        "Resource": arn,
                        "Condition": {"StringEquals": {"aws:SourceArn": trail_arn}},
                    },
                    {
                        "Sid": "CloudTrailWrite",
                        "Effect": "Allow",
                        "Principal": {"Service": CLOUDTRAIL_SERVICE},
                        "Action": "s3:PutObject",
                        "Resource": trail_objects,
                        "Condition": {
                            "StringEquals": {
                                "s3:x-amz-acl": "bucket-owner-full-control",
                                "aws:SourceArn": trail_arn,
                            }
                        },
                    },
                ]
            return statements

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
