"""CloudWatch log groups encrypt their events with a customer-managed KMS key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule

LOG_GROUPS = ("aws:cloudwatch/logGroup:LogGroup",)


def check(group: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if not group.get("kmsKeyId"):
        yield "kmsKeyId is not set: events are encrypted only with a CloudWatch-owned key; set a KMS key ARN"


RULE = Rule(
    name="aws-cloudwatch-loggroup-enforce-kms",
    description="Every CloudWatch log group encrypts its events with a customer-managed KMS key (kmsKeyId).",
    why="Proxy, gateway and model-server logs can hold prompts, client addresses and request metadata; "
    "with the service-owned key any principal allowed logs:GetLogEvents reads them, nobody can revoke "
    "access by key policy and no KMS audit trail shows who decrypted what.",
    severity="medium",
    remediation="Set kmsKeyId on the aws.cloudwatch.LogGroup to a customer-managed key whose policy lets the "
    "logs.<region>.amazonaws.com principal use it (AuditTrail, Network, Firewall and Secrets use the KmsKeys "
    "logs key).",
    frameworks=("HIPAA 164.312(a)(2)(iv)", "GDPR Art. 32(1)(a)", "NIST 800-53 SC-28"),
    resource_types=LOG_GROUPS,
    check=check,
)
