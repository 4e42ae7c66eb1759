"""Secrets Manager secrets (and their replicas) are encrypted with a customer-managed KMS key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, as_list

SECRETS = ("aws:secretsmanager/secret:Secret",)
AWS_MANAGED = "alias/aws/secretsmanager"


def _aws_managed(key: str) -> bool:
    """An AWS managed key named by alias or alias ARN: every alias under alias/aws/ is AWS's own."""
    alias = key.split(":", 5)[-1] if key.startswith("arn:") else key
    return alias.startswith("alias/aws/")


def _problem(key: Any) -> str | None:
    if not key:
        return f"kmsKeyId is not set, so the AWS managed key {AWS_MANAGED} encrypts it"
    if isinstance(key, str) and _aws_managed(key):
        return f"kmsKeyId {key} is an AWS managed key"
    return None


def check(secret: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    problem = _problem(secret.get("kmsKeyId"))
    if problem:
        yield f"{problem}: set a customer-managed KMS key ARN (not {AWS_MANAGED})"
    for index in range(len(as_list(secret.get("replicas")))):
        region = secret.get("replicas", index, "region", default="?")
        problem = _problem(secret.get("replicas", index, "kmsKeyId"))
        if problem:
            yield f"replica in {region}: {problem}: set a customer-managed KMS key of that region"


RULE = Rule(
    name="aws-secretsmanager-secret-enforce-kms",
    description="Secrets Manager secrets and their replicas use a customer-managed KMS key, "
    f"not the AWS managed key {AWS_MANAGED}.",
    why="Under the AWS managed key, anyone in the account with secretsmanager:GetSecretValue reads the "
    "secret: its key policy cannot be narrowed, the secret cannot be shared across accounts, and key use "
    "cannot be disabled in an incident. A customer-managed key adds a second, auditable gate on the "
    "gateway's keys.",
    severity="medium",
    remediation="Set kmsKeyId on the aws.secretsmanager.Secret (and on every replica) to a customer-managed "
    "key ARN (Secrets uses the KmsKeys secrets key).",
    frameworks=("HIPAA 164.312(a)(2)(iv)", "GDPR Art. 32(1)(a)", "NIST 800-53 SC-28"),
    resource_types=SECRETS,
    check=check,
)
