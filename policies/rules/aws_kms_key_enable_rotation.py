"""KMS customer-managed symmetric keys rotate their key material."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting
from policies.support import truthy


def check(key: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    spec = key.get("customerMasterKeySpec", default=key.get("keySpec", default="SYMMETRIC_DEFAULT"))
    if spec != "SYMMETRIC_DEFAULT":
        return  # AWS rotates only symmetric encryption keys automatically
    if not truthy(key.get("enableKeyRotation", default=False)):
        yield "key rotation is off: set enableKeyRotation: true"
        return
    period = key.get("rotationPeriodInDays", default=365)
    if int(period) > config["max_rotation_period_days"]:
        yield f"rotation period {period} days is over the allowed {config['max_rotation_period_days']}"


RULE = Rule(
    name="aws-kms-key-enable-rotation",
    description="Customer-managed symmetric KMS keys rotate their key material automatically.",
    why="A key that never rotates exposes every object ever encrypted with it if its material leaks.",
    severity="high",
    remediation="Set enableKeyRotation: true (KmsKeys does) and rotationPeriodInDays within the limit.",
    frameworks=("CIS AWS Foundations 3.6", "AWS FSBP KMS.4", "HIPAA 164.312(a)(2)(iv)", "GDPR Art. 32(1)(a)"),
    resource_types=("aws:kms/key:Key",),
    check=check,
    settings={
        "max_rotation_period_days": Setting(
            {"type": "integer", "minimum": 90, "maximum": 2560},
            365,
            "the longest rotation period allowed, in days (AWS accepts 90..2560)",
        )
    },
)
