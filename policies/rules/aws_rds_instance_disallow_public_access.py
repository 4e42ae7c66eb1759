"""RDS instances are not publicly accessible.

- ``aws.rds.Instance``: ``publiclyAccessible`` not true (pulumi-aws may carry it as ``"true"``).

Whether the instance's subnets could route to the internet is the network's business; with
``publiclyAccessible`` false RDS gives the instance no public address, whatever the subnets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.support import truthy

INSTANCES = ("aws:rds/instance:Instance",)


def check(database: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if truthy(database.get("publiclyAccessible")):
        yield (
            "publiclyAccessible is true (the instance gets a public address): set it to false and reach the "
            "database from the app tier inside the VPC"
        )


RULE = Rule(
    name="aws-rds-instance-disallow-public-access",
    description="RDS instances are not publicly accessible (publiclyAccessible is not true).",
    why="A publicly accessible database has an internet address: one security group slip exposes the "
    "gateway's keys, budgets and request logs to password guessing and exploits from anywhere.",
    severity="critical",
    remediation="Set publiclyAccessible: false and place the instance in private subnets behind a security "
    "group that admits only the app tier (Gateway uses the data subnets and the Firewall's data group).",
    frameworks=("AWS FSBP RDS.2", "HIPAA 164.312(a)(1)", "GDPR Art. 32(1)(b)"),
    resource_types=INSTANCES,
    check=check,
)
