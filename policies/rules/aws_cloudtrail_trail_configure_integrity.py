"""CloudTrail trails record every region, sign their log files and encrypt them with a KMS key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.support import truthy

TRAILS = ("aws:cloudtrail/trail:Trail",)


def _shown(value: Any) -> str:
    if value is None:
        return "not set (false)"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def check(trail: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    multi_region = trail.get("isMultiRegionTrail")
    if not truthy(multi_region):
        yield (
            f"isMultiRegionTrail is {_shown(multi_region)}: set it to true so API calls in every region "
            "are recorded"
        )
    validation = trail.get("enableLogFileValidation")
    if not truthy(validation):
        yield (
            f"enableLogFileValidation is {_shown(validation)}: set it to true so altered or deleted "
            "log files are detected"
        )
    if not trail.get("kmsKeyId"):
        yield "kmsKeyId is not set: log files are only SSE-S3 encrypted; set a customer-managed KMS key ARN"


RULE = Rule(
    name="aws-cloudtrail-trail-configure-integrity",
    description="CloudTrail trails are multi-region, have log file validation on and encrypt with a KMS key.",
    why="A single-region trail misses API calls made in other regions (where an attacker would work); "
    "without log file validation a deleted or edited log file goes unnoticed; without a customer-managed "
    "KMS key anyone who can read the log bucket reads the account's whole API history.",
    severity="high",
    remediation="Set isMultiRegionTrail: true, enableLogFileValidation: true and kmsKeyId to a "
    "customer-managed key ARN on the aws.cloudtrail.Trail (AuditTrail does all three, with the KmsKeys "
    "logs key).",
    frameworks=(
        "CIS AWS Foundations 3.1",
        "CIS AWS Foundations 3.2",
        "CIS AWS Foundations 3.5",
        "AWS FSBP CloudTrail.1",
        "AWS FSBP CloudTrail.2",
        "AWS FSBP CloudTrail.4",
        "HIPAA 164.312(b)",
        "HIPAA 164.312(c)(1)",
        "GDPR Art. 32(1)(b)",
    ),
    resource_types=TRAILS,
    check=check,
)
