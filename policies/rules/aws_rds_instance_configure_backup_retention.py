"""RDS databases keep automated backups for at least ``min_retention_days`` days.

- ``aws.rds.Instance`` and ``aws.rds.Cluster`` (Aurora): ``backupRetentionPeriod`` set and at least
  the minimum (default 7). Left out, RDS keeps one day of backups; 0 turns them off.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting

DATABASES = ("aws:rds/instance:Instance", "aws:rds/cluster:Cluster")


def check(database: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    minimum = config["min_retention_days"]
    wanted = f"set it to at least {minimum} days"
    days = database.get("backupRetentionPeriod")
    if days is None:
        yield f"backupRetentionPeriod is not set (RDS keeps backups for 1 day): {wanted}"
    elif int(days) == 0:
        yield f"backupRetentionPeriod is 0, which turns automated backups off: {wanted}"
    elif int(days) < minimum:
        yield f"backupRetentionPeriod {int(days)} is under the minimum of {minimum} days"


RULE = Rule(
    name="aws-rds-instance-configure-backup-retention",
    description="RDS instances and clusters keep automated backups (backupRetentionPeriod) for at least "
    "min_retention_days days.",
    why="Without automated backups, or with a day of them, a bad migration, a deleted table or corrupted "
    "storage loses the gateway's keys, budgets and audit trail of spend for good; point-in-time recovery "
    "only reaches back as far as the retention.",
    severity="medium",
    remediation="Set backupRetentionPeriod to at least the minimum (Gateway sets "
    "llmkit:gateway.database.backup_retention_days, 7..35, default 14).",
    frameworks=("AWS FSBP RDS.11", "HIPAA 164.308(a)(7)(ii)(A)", "GDPR Art. 32(1)(c)"),
    resource_types=DATABASES,
    check=check,
    settings={
        "min_retention_days": Setting(
            {"type": "integer", "minimum": 1, "maximum": 35},
            7,
            "the shortest automated backup retention allowed, in days (RDS accepts 1..35)",
        )
    },
)
