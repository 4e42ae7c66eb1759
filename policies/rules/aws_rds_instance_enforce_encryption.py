"""RDS databases encrypt their storage with a customer-managed KMS key.

- ``aws.rds.Instance`` and ``aws.rds.Cluster`` (Aurora): ``storageEncrypted`` true and ``kmsKeyId``
  set to a key that is not an AWS managed key (``alias/aws/rds``). Without ``kmsKeyId`` RDS encrypts
  with ``aws/rds``, whose key policy the account cannot restrict.

Booleans may arrive as strings (``"true"``). A read replica of an encrypted instance is encrypted
too, but it must still name its key here: the rule judges what the program declares.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.support import truthy

DATABASES = ("aws:rds/instance:Instance", "aws:rds/cluster:Cluster")
AWS_MANAGED = "alias/aws/rds"


def _aws_managed(key: str) -> bool:
    return key.startswith("alias/aws/") or ":alias/aws/" in key


def check(database: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if not truthy(database.get("storageEncrypted")):
        yield (
            "storageEncrypted is not true (the database, its snapshots and backups are stored unencrypted): "
            "set storageEncrypted: true with a customer-managed kmsKeyId"
        )
        return
    key = database.get("kmsKeyId")
    if not key:
        yield (
            f"kmsKeyId is not set, so the AWS managed key {AWS_MANAGED} encrypts it: "
            "name a customer-managed KMS key"
        )
    elif isinstance(key, str) and _aws_managed(key):
        yield f"kmsKeyId {key} is an AWS managed key: name a customer-managed KMS key"


RULE = Rule(
    name="aws-rds-instance-enforce-encryption",
    description="RDS instances and clusters encrypt their storage (storageEncrypted) under a "
    f"customer-managed KMS key, not the AWS managed key {AWS_MANAGED}.",
    why="The gateway's database holds virtual keys, budgets, spend and request logs (prompts too, with "
    "store_prompts). Unencrypted storage exposes them in every snapshot and backup; under the AWS managed "
    "key anyone in the account who may use RDS can restore and read them, and key use cannot be narrowed or "
    "disabled in an incident. Encryption can only be chosen when the database is created.",
    severity="high",
    remediation="Set storageEncrypted: true and kmsKeyId to a customer-managed key ARN on the "
    "aws.rds.Instance (or aws.rds.Cluster); Gateway uses the KmsKeys data key, whose policy admits RDS.",
    frameworks=("AWS FSBP RDS.3", "HIPAA 164.312(a)(2)(iv)", "GDPR Art. 32(1)(a)", "NIST 800-53 SC-28"),
    resource_types=DATABASES,
    check=check,
)
