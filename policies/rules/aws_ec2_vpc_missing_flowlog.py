"""Every VPC has a flow log that records all its traffic.

A flow log counts for a VPC when its ``vpcId`` names the VPC; ``trafficType`` must be the
``required_traffic_type`` setting (``ALL`` by default), and ``ALL`` always satisfies it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting, Stack

VPCS = ("aws:ec2/vpc:Vpc", "aws:ec2/defaultVpc:DefaultVpc")
FLOW_LOGS = ("aws:ec2/flowLog:FlowLog",)
TRAFFIC_TYPES = ("ALL", "ACCEPT", "REJECT")


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    required = str(config["required_traffic_type"]).upper()
    accepted = {"ALL", required}
    logs = stack.of_type(*FLOW_LOGS)
    for vpc in stack.of_type(*VPCS):
        mine = [log for log in logs if stack.refers_to(log.get("vpcId"), vpc)]
        if not mine:
            yield (
                vpc,
                f"VPC has no flow log (an aws.ec2.FlowLog with vpcId naming it, trafficType {required})",
            )
            continue
        types = [str(log.get("trafficType", default="")).upper() for log in mine]
        if not accepted & set(types):
            found = ", ".join(f"{log.name}: {t or 'unset'}" for log, t in zip(mine, types, strict=True))
            yield vpc, f"VPC flow logs record too little traffic ({found}); required trafficType {required}"


RULE = Rule(
    name="aws-ec2-vpc-missing-flowlog",
    description="Every VPC has a flow log recording the required traffic type (ALL by default).",
    why="Without flow logs an exfiltration attempt from the model tier, a scan or a lateral move leaves no "
    "network record: incidents cannot be detected or reconstructed. Rejected traffic alone misses the "
    "connections that succeeded.",
    severity="medium",
    remediation="Add an aws.ec2.FlowLog with vpcId set to the VPC and trafficType ALL (Network does, "
    "to a KMS-encrypted log group).",
    frameworks=("CIS AWS Foundations 3.7", "AWS FSBP EC2.6", "HIPAA 164.312(b)"),
    check_stack=check,
    settings={
        "required_traffic_type": Setting(
            {"type": "string", "enum": list(TRAFFIC_TYPES)},
            "ALL",
            "the traffic a VPC's flow log must record: ALL, ACCEPT or REJECT (ALL always satisfies it)",
        )
    },
)
