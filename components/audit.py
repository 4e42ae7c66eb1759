"""The audit trail and the stack's application log groups.

:class:`AuditTrail` creates:

- a **multi-region CloudTrail trail** named ``llmkit-<stack>`` (:func:`trail_name`) with global
  service events (IAM, STS, CloudFront...), **log file integrity validation** (signed hourly digest
  files), and every management event, **read and write** (``read_write_type = All``): reads matter
  for an audit, e.g. who called ``secretsmanager:GetSecretValue`` on the gateway's keys or
  ``kms:Decrypt``. Log files go to the log bucket under ``cloudtrail/`` (``CLOUDTRAIL_PREFIX`` of
  components/storage.py), each one encrypted by CloudTrail itself with SSE-KMS under the **logs**
  key (``kms_key_id``), whatever the bucket's default encryption.
- a copy of the events in a CloudWatch Logs group ``/llmkit/<stack>/cloudtrail`` for search and
  metric filters, and the IAM role CloudTrail assumes to write there. The role may only
  ``logs:CreateLogStream`` and ``logs:PutLogEvents``, only on that group's CloudTrail streams
  (``<account>_CloudTrail_<region>``, one per region of the multi-region trail). Its trust policy
  names the CloudTrail service without ``aws:SourceArn``/``aws:SourceAccount`` conditions: CloudTrail
  documents that this role does not support them (confused-deputy conditions there would break
  delivery); the permissions are what is scoped.
- the application log groups ``/llmkit/<stack>/model-server`` and ``/llmkit/<stack>/proxy``
  (:attr:`AuditTrail.log_groups`), for the model hosts and the reverse proxy / gateway.

Every log group is encrypted with the **logs** KMS key and keeps events for
``llmkit:logging.retention_days`` (the config schema refuses fewer than 180 days).

Why the trail name is fixed rather than auto-named: the log bucket's policy (LogBucket's
``cloudtrail_trail_name``) lets CloudTrail write only on behalf of this one trail
(``aws:SourceArn`` = ``arn:<partition>:cloudtrail:<region>:<account>:trail/<name>``), and that policy
must exist before the trail can be created. Pass the same :func:`trail_name` to both. The logs key's
policy (components/keys.py) lets CloudTrail encrypt for trails of this account homed in the stack's
region, which this trail is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component
from components.storage import _TRAIL_NAME, CLOUDTRAIL_PREFIX, CLOUDTRAIL_SERVICE
from llmkit.config import LOG_RETENTION_DAYS, StackConfig

# The application log groups, by role: /llmkit/<stack>/<role>.
APP_LOG_GROUPS = ("model-server", "proxy")
TRAIL_LOG_GROUP = "cloudtrail"


def trail_name(stack: str) -> str:
    """The trail's name; give the same to ``LogBucket(cloudtrail_trail_name=...)``."""
    return f"llmkit-{stack}"


def log_group_name(stack: str, role: str) -> str:
    return f"/llmkit/{stack}/{role}"


def trail_log_role_policy(log_group_arn: str, *, account_id: str) -> dict[str, Any]:
    """What CloudTrail may do with its role: write its own streams in the one log group."""
    streams = f"{log_group_arn}:log-stream:{account_id}_CloudTrail_*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CloudTrailCreateLogStream",
                "Effect": "Allow",
                "Action": "logs:CreateLogStream",
                "Resource": streams,
            },
            {
                "Sid": "CloudTrailPutLogEvents",
                "Effect": "Allow",
                "Action": "logs:PutLogEvents",
                "Resource": streams,
            },
        ],
    }


TRAIL_ASSUME_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": CLOUDTRAIL_SERVICE},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


@dataclass
class AuditTrailArgs:
    """What :class:`AuditTrail` needs; :meth:`from_config` reads it from a stack's config.

    ``log_bucket_policy`` is the log bucket's policy resource (``LogBucket.policy``): the trail
    waits for it, since CloudTrail checks at creation that it may write to the bucket.
    """

    stack: str
    # The logs key (KmsKeys.logs.arn): trail log files and every log group.
    logs_key_arn: pulumi.Input[str]
    # The log bucket (LogBucket.bucket_name), built with cloudtrail_trail_name=trail_name(stack).
    log_bucket_name: pulumi.Input[str]
    retention_days: int
    log_bucket_policy: pulumi.Resource | None = None
    # None: trail_name(stack).
    name: str | None = None
    # None: the account of the caller (aws.get_caller_identity).
    account_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        logs_key_arn: pulumi.Input[str],
        log_bucket_name: pulumi.Input[str],
        **overrides: Any,
    ) -> AuditTrailArgs:
        values: dict[str, Any] = {
            "stack": cfg.stack or pulumi.get_stack(),
            "logs_key_arn": logs_key_arn,
            "log_bucket_name": log_bucket_name,
            "retention_days": cfg.logging.retention_days,
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})

    @property
    def trail_name(self) -> str:
        return self.name if self.name is not None else trail_name(self.stack)

    def validate(self) -> None:
        """Raise ValueError for args that would make a trail that cannot deploy or keeps too little."""
        if not _TRAIL_NAME.fullmatch(self.trail_name):
            raise ValueError(
                f"AuditTrailArgs: trail name {self.trail_name!r} (from stack {self.stack!r}) is not a "
                "CloudTrail trail name: 3-128 letters, digits, '.', '_' or '-', starting and ending with a "
                "letter or digit, no two of '._-' in a row"
            )
        if self.retention_days not in LOG_RETENTION_DAYS:  # 180 days and up only
            raise ValueError(
                f"AuditTrailArgs.retention_days must be a CloudWatch Logs retention of at least "
                f"{LOG_RETENTION_DAYS[0]} days ({', '.join(map(str, LOG_RETENTION_DAYS))}), "
                f"got {self.retention_days}"
            )


class AuditTrail(Component):
    """The multi-region trail, its CloudWatch Logs copy and the app log groups (see the module doc)."""

    TYPE = "llmkit:aws:AuditTrail"

    def __init__(self, name: str, args: AuditTrailArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        super().__init__(name, opts)
        account_id: pulumi.Input[str] = self.account_id(args.account_id)
        tags = dict(args.tags)

        def log_group(role: str) -> aws.cloudwatch.LogGroup:
            return aws.cloudwatch.LogGroup(
                self.child_name(f"{role}-logs"),
                name=log_group_name(args.stack, role),
                kms_key_id=args.logs_key_arn,
                retention_in_days=args.retention_days,
                tags={**tags, "llmkit:log-role": role},
                opts=self.child_opts(),
            )

        self.log_groups: dict[str, aws.cloudwatch.LogGroup] = {
            role: log_group(role) for role in APP_LOG_GROUPS
        }
        self.trail_log_group = log_group(TRAIL_LOG_GROUP)

        self.trail_log_role = aws.iam.Role(
            self.child_name("trail-logs-role"),
            description=f"Lets CloudTrail deliver the {args.trail_name} events to its log group",
            assume_role_policy=TRAIL_ASSUME_ROLE_POLICY,
            tags=tags,
            opts=self.child_opts(),
        )
        self.trail_log_policy = aws.iam.RolePolicy(
            self.child_name("trail-logs-write"),
            role=self.trail_log_role.id,
            policy=pulumi.Output.all(self.trail_log_group.arn, account_id).apply(
                lambda v: json.dumps(trail_log_role_policy(v[0], account_id=v[1]))
            ),
            opts=self.child_opts(),
        )

        # CloudTrail checks at creation that it can write to the bucket and the log group.
        waits_for: list[pulumi.Resource] = [self.trail_log_policy]
        if args.log_bucket_policy is not None:
            waits_for.append(args.log_bucket_policy)
        self.trail = aws.cloudtrail.Trail(
            self.child_name("trail"),
            name=args.trail_name,
            s3_bucket_name=args.log_bucket_name,
            s3_key_prefix=CLOUDTRAIL_PREFIX,
            kms_key_id=args.logs_key_arn,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_log_file_validation=True,
            enable_logging=True,
            # CloudTrail needs the log-stream wildcard on the group's ARN.
            cloud_watch_logs_group_arn=self.trail_log_group.arn.apply(lambda arn: f"{arn}:*"),
            cloud_watch_logs_role_arn=self.trail_log_role.arn,
            event_selectors=[{"read_write_type": "All", "include_management_events": True}],
            tags=tags,
            opts=self.child_opts(depends_on=waits_for),
        )
        self.trail_arn: pulumi.Output[str] = self.trail.arn

        self.register_outputs(
            {
                "trail_arn": self.trail_arn,
                "trail_name": args.trail_name,
                "trail_log_group": self.trail_log_group.name,
                "log_groups": {role: group.name for role, group in self.log_groups.items()},
            }
        )
