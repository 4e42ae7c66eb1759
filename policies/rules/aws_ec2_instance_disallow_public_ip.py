"""Launch templates and instances do not ask for a public IPv4 address.

- ``aws.ec2.LaunchTemplate``: no ``networkInterfaces[].associatePublicIpAddress`` true (pulumi-aws
  carries it as the string ``"true"``);
- ``aws.ec2.Instance``: ``associatePublicIpAddress`` not true.

No exception for GPU hosts: the model tier reaches what it needs through VPC endpoints and the
inspected egress path. Whether a subnet maps public IPs on launch is the subnet's business
(``mapPublicIpOnLaunch``), not this rule's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, as_list, known
from policies.support import INSTANCES, LAUNCH_TEMPLATES, truthy

WHY_NOT = "set it to false (instances reach AWS through VPC endpoints and egress through the firewall)"


def check(resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if resource.type in INSTANCES:
        if truthy(resource.get("associatePublicIpAddress")):
            yield f"associatePublicIpAddress is true: {WHY_NOT}"
        return
    for index, interface in enumerate(as_list(resource.get("networkInterfaces"))):
        interface = known(interface)
        if isinstance(interface, Mapping) and truthy(interface.get("associatePublicIpAddress")):
            yield f"networkInterfaces[{index}].associatePublicIpAddress is true: {WHY_NOT}"


RULE = Rule(
    name="aws-ec2-instance-disallow-public-ip",
    description="Launch templates and instances do not associate a public IPv4 address.",
    why="A public address makes the host reachable from the internet whenever a security group or NACL rule "
    "slips, and gives it a direct route out around the egress firewall.",
    severity="high",
    remediation="Set associatePublicIpAddress false on the instance or on every launch template network "
    "interface, and place hosts in private subnets (GpuFleet's launch templates do).",
    frameworks=("AWS FSBP EC2.9", "AWS FSBP EC2.25", "HIPAA 164.312(a)(1)", "GDPR Art. 32(1)(b)"),
    resource_types=(*LAUNCH_TEMPLATES, *INSTANCES),
    check=check,
)
