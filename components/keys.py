"""Customer-managed KMS keys, one per purpose, with least-privilege key policies.

Three symmetric keys:

- ``data``: model data at rest (S3 model store, EBS volumes of the GPU hosts), and the gateway's
  PostgreSQL (RDS) in stacks that have one;
- ``logs``: CloudWatch Logs log groups (VPC flow logs to CloudWatch included) and CloudTrail;
- ``secrets``: Secrets Manager secrets, and the SNS alert topic of budgets and alarms.

Every key rotates (``rotation_period_in_days`` from ``llmkit:kms.rotation_period_days``), has the
configured deletion window (``llmkit:kms.deletion_window_days``) and an alias
``alias/llmkit-<stack>-<purpose>``.

Key policy decisions (one policy per key, ``Resource: "*"`` meaning "this key", as in every KMS
key policy):

- Administration: the account root (and ``admin_role_arns``, if given) may manage the key with an
  explicit list of administrative actions; never ``kms:*`` and never ``Principal: "*"``. The
  root principal keeps the key manageable through IAM (no lockout) without granting use.
- Use: cryptographic use is delegated to IAM (``Principal`` = the account root) but only for
  callers of this account (``kms:CallerAccount``) and only through the AWS services the purpose
  needs (``kms:ViaService``): S3 and EC2 for ``data`` (and RDS, only in stacks with a gateway,
  whose PostgreSQL storage, snapshots and Performance Insights use it), CloudWatch Logs and S3
  (reading CloudTrail files) for ``logs``, Secrets Manager and SNS (publishing to, and reading,
  the encrypted alert topic) for ``secrets``. So an IAM policy alone cannot turn the data key
  into a general-purpose encryption key; direct ``kms:Decrypt`` calls are refused.
- Grants (``CreateGrant``/``ListGrants``/``RevokeGrant``) only when ``kms:GrantIsForAWSResource``
  is true: EBS and S3 need them, people do not.
- ``logs`` also allows the regional CloudWatch Logs service principal, limited by the
  ``kms:EncryptionContext:aws:logs:arn`` of this account's log groups, and CloudTrail, limited by
  the trail encryption context, ``aws:SourceArn`` and ``aws:SourceAccount``. VPC flow logs sent to
  CloudWatch are written by the logs service, so ``delivery.logs.amazonaws.com`` is not granted.
- ``data`` optionally allows service-linked roles (``service_linked_role_arns``; typically the
  EC2 Auto Scaling role ``.../aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling``),
  which cannot be granted KMS access through IAM and need it in the key policy to launch instances
  with CMK-encrypted EBS volumes. The role must exist before the policy names it.
- ``secrets`` also allows the service principals that publish to the SSE-KMS alert topic
  (components/budget.py): AWS Budgets (``budgets.amazonaws.com``) and CloudWatch alarms
  (``cloudwatch.amazonaws.com``). An SNS topic encrypted with a customer-managed key only accepts
  a service's messages when the key policy lets that service call ``kms:GenerateDataKey*`` and
  ``kms:Decrypt``; the AWS managed key ``alias/aws/sns`` cannot be edited to allow it. Only those
  two actions, and only on behalf of this account (``aws:SourceAccount``) and of its budgets /
  of the alarms of this region (``aws:SourceArn``), so the confused-deputy path is closed. No
  other key admits them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component
from llmkit.config import StackConfig

PURPOSES = ("data", "logs", "secrets")

ADMIN_ACTIONS = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
]
# What an AWS service needs to publish to an SNS topic encrypted with a customer-managed key.
SNS_PUBLISHER_ACTIONS = ["kms:GenerateDataKey*", "kms:Decrypt"]
USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
GRANT_ACTIONS = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]

DESCRIPTIONS = {
    "data": "llmkit model data at rest (S3 model store, EBS)",
    "logs": "llmkit logs (CloudWatch Logs, VPC flow logs, CloudTrail)",
    "secrets": "llmkit secrets (Secrets Manager) and alert topic (SNS)",
}


def _via_services(purpose: str, region: str, dns_suffix: str, rds: bool = False) -> list[str]:
    services = {"data": ["s3", "ec2"], "logs": ["logs", "s3"], "secrets": ["secretsmanager", "sns"]}[purpose]
    if purpose == "data" and rds:
        services = [*services, "rds"]
    return [f"{s}.{region}.{dns_suffix}" for s in services]


@dataclass
class KmsKeysArgs:
    """What :class:`KmsKeys` needs; :meth:`from_config` reads it from a stack's config."""

    rotation_period_days: int
    deletion_window_days: int
    region: str
    # None: the account of the caller (aws.get_caller_identity).
    account_id: pulumi.Input[str] | None = None
    admin_role_arns: list[pulumi.Input[str]] = field(default_factory=list)
    # Service-linked roles that use the data key directly (EC2 Auto Scaling for encrypted EBS).
    service_linked_role_arns: list[pulumi.Input[str]] = field(default_factory=list)
    # Whether RDS may use the data key (the gateway's PostgreSQL: components/gateway.py).
    rds: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: StackConfig, **overrides: Any) -> KmsKeysArgs:
        values: dict[str, Any] = {
            "rotation_period_days": cfg.kms.rotation_period_days,
            "deletion_window_days": cfg.kms.deletion_window_days,
            "region": cfg.region,
            "rds": cfg.gateway is not None,
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})


def key_policy(
    purpose: str,
    *,
    account_id: str,
    region: str,
    partition: str = "aws",
    dns_suffix: str = "amazonaws.com",
    admin_role_arns: list[str] | None = None,
    service_linked_role_arns: list[str] | None = None,
    rds: bool = False,
) -> dict[str, Any]:
    """The key policy document of one purpose's key, from plain values (call it inside apply).

    ``rds``: the data key may also be used through RDS (encrypted PostgreSQL storage, snapshots
    and Performance Insights of the gateway's database).
    """
    root = f"arn:{partition}:iam::{account_id}:root"
    via_services = _via_services(purpose, region, dns_suffix, rds)
    admins: str | list[str] = [root, *admin_role_arns] if admin_role_arns else root
    statements: list[dict[str, Any]] = [
        {
            "Sid": "KeyAdministration",
            "Effect": "Allow",
            "Principal": {"AWS": admins},
            "Action": ADMIN_ACTIONS,
            "Resource": "*",
        },
        {
            "Sid": "UseThroughAwsServicesByIamPrincipalsOfTheAccount",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": USE_ACTIONS,
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:CallerAccount": account_id,
                    "kms:ViaService": via_services,
                }
            },
        },
        {
            "Sid": "GrantsForAwsResourcesOnly",
            "Effect": "Allow",
            "Principal": {"AWS": root},
            "Action": GRANT_ACTIONS,
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:CallerAccount": account_id,
                    "kms:ViaService": via_services,
                },
                "Bool": {"kms:GrantIsForAWSResource": "true"},
            },
        },
    ]
    if purpose == "data" and service_linked_role_arns:
        statements += [
            {
                "Sid": "ServiceLinkedRolesUse",
                "Effect": "Allow",
                "Principal": {"AWS": list(service_linked_role_arns)},
                "Action": USE_ACTIONS,
                "Resource": "*",
            },
            {
                "Sid": "ServiceLinkedRolesGrants",
                "Effect": "Allow",
                "Principal": {"AWS": list(service_linked_role_arns)},
                "Action": ["kms:CreateGrant"],
                "Resource": "*",
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            },
        ]
    if purpose == "logs":
        # Any trail of the account may encrypt (its context); only trails homed here may call.
        any_trail = f"arn:{partition}:cloudtrail:*:{account_id}:trail/*"
        home_trail = f"arn:{partition}:cloudtrail:{region}:{account_id}:trail/*"
        statements += [
            {
                "Sid": "CloudWatchLogs",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.{dns_suffix}"},
                "Action": [
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                "Resource": "*",
                "Condition": {
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": f"arn:{partition}:logs:{region}:{account_id}:*"
                    }
                },
            },
            {
                "Sid": "CloudTrailEncryptLogs",
                "Effect": "Allow",
                "Principal": {"Service": f"cloudtrail.{dns_suffix}"},
                "Action": "kms:GenerateDataKey*",
                "Resource": "*",
                "Condition": {
                    "StringLike": {
                        "kms:EncryptionContext:aws:cloudtrail:arn": any_trail,
                        "aws:SourceArn": home_trail,
                    },
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            },
            {
                "Sid": "CloudTrailDescribeKey",
                "Effect": "Allow",
                "Principal": {"Service": f"cloudtrail.{dns_suffix}"},
                "Action": "kms:DescribeKey",
                "Resource": "*",
                "Condition": {
                    "StringLike": {
                        "aws:SourceArn": f"arn:{partition}:cloudtrail:{region}:{account_id}:trail/*"
                    },
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            },
        ]
    if purpose == "secrets":
        # The publishers of the encrypted alert topic (components/budget.py), on behalf of this
        # account only: its budgets (a global service, no region in the ARN) and its alarms here.
        publishers = {
            "BudgetsPublishToEncryptedTopic": (
                f"budgets.{dns_suffix}",
                f"arn:{partition}:budgets::{account_id}:*",
            ),
            "CloudWatchAlarmsPublishToEncryptedTopic": (
                f"cloudwatch.{dns_suffix}",
                f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:*",
            ),
        }
        statements += [
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": SNS_PUBLISHER_ACTIONS,
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": source_arn},
                },
            }
            for sid, (service, source_arn) in publishers.items()
        ]
    return {"Version": "2012-10-17", "Statement": statements}


class KmsKeys(Component):
    """The stack's customer-managed keys: ``data``, ``logs`` and ``secrets`` (see the module doc)."""

    TYPE = "llmkit:aws:KmsKeys"

    def __init__(self, name: str, args: KmsKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        account_id: pulumi.Input[str] = self.account_id(args.account_id)
        partition = aws.get_partition_output(opts=invoke_opts)
        stack = pulumi.get_stack()

        self.keys: dict[str, aws.kms.Key] = {}
        self.aliases: dict[str, aws.kms.Alias] = {}
        resolved = pulumi.Output.all(
            account_id,
            partition.partition,
            partition.dns_suffix,
            pulumi.Output.all(*args.admin_role_arns),
            pulumi.Output.all(*args.service_linked_role_arns),
        )

        def policy_json(purpose: str, v: list[Any]) -> str:
            # Only builds a string from resolved values; no resources are created in apply.
            document = key_policy(
                purpose,
                account_id=v[0],
                region=args.region,
                partition=v[1],
                dns_suffix=v[2],
                admin_role_arns=list(v[3]),
                service_linked_role_arns=list(v[4]),
                rds=args.rds,
            )
            return json.dumps(document)

        for purpose in PURPOSES:
            policy = resolved.apply(functools.partial(policy_json, purpose))
            key = aws.kms.Key(
                self.child_name(purpose),
                description=DESCRIPTIONS[purpose],
                key_usage="ENCRYPT_DECRYPT",
                customer_master_key_spec="SYMMETRIC_DEFAULT",
                enable_key_rotation=True,
                rotation_period_in_days=args.rotation_period_days,
                deletion_window_in_days=args.deletion_window_days,
                policy=policy,
                tags={**args.tags, "llmkit:key-purpose": purpose},
                opts=self.child_opts(),
            )
            self.aliases[purpose] = aws.kms.Alias(
                self.child_name(f"{purpose}-alias"),
                name=f"alias/llmkit-{stack}-{purpose}",
                target_key_id=key.arn,  # an ARN is accepted, and known in the offline plan
                opts=self.child_opts(),
            )
            self.keys[purpose] = key

        self.data = self.keys["data"]
        self.logs = self.keys["logs"]
        self.secrets = self.keys["secrets"]
        self.arns: dict[str, pulumi.Output[str]] = {p: k.arn for p, k in self.keys.items()}
        self.register_outputs({f"{p}_key_arn": arn for p, arn in self.arns.items()})
