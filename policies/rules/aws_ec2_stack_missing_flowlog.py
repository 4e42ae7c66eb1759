"""The stack records its network traffic: a VPC flow log for every VPC it uses.

``aws-ec2-vpc-missing-flowlog`` checks each VPC the stack creates (and the traffic its flow log
records). This rule checks what that one cannot see, because it only looks at VPCs that are there:

- the stack has at least one ``aws.ec2.FlowLog``: a stack whose flow logs, or whose VPC and its
  flow log, were removed has nothing to record its traffic (an empty stack included);
- every VPC the stack places resources in without creating it (a ``vpcId`` of a subnet, a
  security group, an endpoint… that names no VPC of the stack) has a flow log of the stack whose
  ``vpcId`` is that VPC's id.

A ``vpcId`` unknown at preview is the ID of a VPC the stack is creating: that VPC's flow log is
the other rule's to check. Only a stack of Kubernetes resources alone is out of scope
(``policies.support.kubernetes_only``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Stack
from policies.rules.aws_ec2_vpc_missing_flowlog import FLOW_LOGS, VPCS
from policies.support import kubernetes_only


def _used_vpcs(stack: Stack) -> dict[str, list[Resource]]:
    """VPC ids that resources (other than flow logs) name in ``vpcId``, with those resources."""
    used: dict[str, list[Resource]] = {}
    for resource in stack.resources:
        if resource.type in FLOW_LOGS:
            continue
        ref = resource.props.get("vpcId")
        if isinstance(ref, str) and ref and ref != UNKNOWN:
            used.setdefault(ref, []).append(resource)
    return used


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource | None, str]]:
    if kubernetes_only(stack):
        return
    own = stack.of_type(*VPCS)
    logs = stack.of_type(*FLOW_LOGS)
    used = _used_vpcs(stack)
    foreign = {ref: users for ref, users in used.items() if not any(stack.refers_to(ref, vpc) for vpc in own)}
    if not logs:
        vpcs = [vpc.name for vpc in own] + sorted(foreign)
        yield (
            None,
            "the stack has no VPC flow log (aws.ec2.FlowLog)"
            + (f" for the VPCs it uses ({', '.join(vpcs)})" if vpcs else " and no VPC")
            + ": no record of the connections into, out of and within the model tier",
        )
        return
    logged = {log.props.get("vpcId") for log in logs}
    for ref, users in sorted(foreign.items()):
        if ref in logged:
            continue
        names = ", ".join(user.name for user in users[:3]) + (", …" if len(users) > 3 else "")
        yield (
            None,
            f"VPC {ref}, which the stack uses ({names}) but does not create, has no flow log in the "
            "stack (an aws.ec2.FlowLog with that vpcId)",
        )


RULE = Rule(
    name="aws-ec2-stack-missing-flowlog",
    description="The stack has VPC flow logs: at least one, and one for every VPC it uses but does not "
    "create (aws-ec2-vpc-missing-flowlog checks the VPCs it creates).",
    why="Flow logs are the only record of the connections the model tier makes and receives: without "
    "them an exfiltration attempt, a scan or a lateral move leaves no trace. A stack whose VPC and "
    "flow log are gone, or that runs in a VPC it does not create, passes the per-VPC rule with "
    "nothing recorded.",
    severity="medium",
    remediation="Keep the Network component (it makes the VPC and an aws.ec2.FlowLog of ALL traffic to a "
    "KMS-encrypted log group); for a VPC the stack does not create, add an aws.ec2.FlowLog with its "
    "vpcId.",
    frameworks=(
        "CIS AWS Foundations 3.7",
        "AWS FSBP EC2.6",
        "NIST SP 800-53 Rev. 5 AU-12",
        "HIPAA 164.312(b)",
    ),
    check_stack=check,
)
