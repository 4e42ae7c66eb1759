"""No security group admits SSH (22) or RDP (3389), from any source, nor every protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.rules.aws_ec2_securitygroup_disallow_public_ingress import (
    ALL,
    INGRESS_TYPES,
    ingress_permissions,
)

ADMIN_PORTS = {22: "SSH", 3389: "RDP"}


def check(resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    for permission in ingress_permissions(resource):
        if permission.protocol == ALL:
            yield (
                f"ingress on all protocols and ports from {permission.sources} admits every port, "
                "22 (SSH) and 3389 (RDP) included: name the protocol and port"
            )
            continue
        covered = [f"{port} ({name})" for port, name in ADMIN_PORTS.items() if permission.covers(port)]
        if covered:
            yield (
                f"ingress {permission.ports} from {permission.sources} admits {' and '.join(covered)}: "
                "no admin port is opened, reach hosts through SSM Session Manager"
            )


RULE = Rule(
    name="aws-ec2-securitygroup-disallow-admin-ports",
    description="No security group ingress admits port 22 or 3389, or all protocols, from any source.",
    why="SSH and RDP are the first ports attackers try, and an admin port open even to an internal range "
    "lets one compromised host log in to the GPU fleet; an all-protocol rule opens them implicitly.",
    severity="high",
    remediation="Remove the rule and reach hosts through SSM Session Manager (the fleet's instance role "
    "and VPC endpoints allow it); give every rule a protocol and the one port it needs (the Firewall "
    "component refuses 22 and 3389).",
    frameworks=(
        "CIS AWS Foundations 5.2",
        "CIS AWS Foundations 5.3",
        "AWS FSBP EC2.19",
        "HIPAA 164.312(a)(1)",
        "GDPR Art. 32(1)(b)",
    ),
    resource_types=INGRESS_TYPES,
    check=check,
)
