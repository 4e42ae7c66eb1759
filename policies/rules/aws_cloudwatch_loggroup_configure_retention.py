"""CloudWatch log groups keep their events for a set period of at least the minimum."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.config import LOG_RETENTION_DAYS
from llmkit.policy import Resource, Rule, Setting

LOG_GROUPS = ("aws:cloudwatch/logGroup:LogGroup",)


def check(group: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    minimum = config["min_retention_days"]
    days = group.get("retentionInDays", default=0)
    if int(days) == 0:
        yield (
            f"retentionInDays is not set: events never expire; set a retention of at least {minimum} days "
            "(CloudWatch accepts 1..3653 from a fixed list)"
        )
    elif int(days) < minimum:
        yield f"retentionInDays {days} is below the minimum of {minimum} days"


RULE = Rule(
    name="aws-cloudwatch-loggroup-configure-retention",
    description="Every CloudWatch log group sets retentionInDays, to at least the minimum retention.",
    why="Too short a retention deletes the evidence before an incident is found (breaches surface months "
    "later). No retention at all (absent or 0: never expire) is a violation too, unlike AWS Config's "
    "cw-loggroup-retention-period-check: these log groups hold prompts, client addresses and request "
    "metadata, and keeping personal data forever breaks GDPR storage limitation (Art. 5(1)(e)); an explicit "
    "period is the documented decision that both need.",
    severity="medium",
    remediation="Set retentionInDays on the aws.cloudwatch.LogGroup to at least the minimum (llmkit sets "
    "llmkit:logging retention_days, 180 days or more, on every log group it creates: AuditTrail, Network, "
    "Firewall, Secrets, the WAF log group).",
    frameworks=("AWS FSBP CloudWatch.16", "HIPAA 164.312(b)", "GDPR Art. 5(1)(e)"),
    resource_types=LOG_GROUPS,
    check=check,
    settings={
        "min_retention_days": Setting(
            {"type": "integer", "minimum": 1, "maximum": 3653},
            LOG_RETENTION_DAYS[0],  # the shortest retention llmkit's config accepts
            "the shortest retention allowed, in days (never-expire log groups fail regardless)",
        )
    },
)
