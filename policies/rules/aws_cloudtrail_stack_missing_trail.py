"""The stack has a CloudTrail trail, and it is logging.

A trail counts when it is an ``aws.cloudtrail.Trail`` of the stack whose ``enableLogging`` is not
false (pulumi-aws's default is true). How the trail records (every region, signed and encrypted
log files) is ``aws-cloudtrail-trail-configure-integrity``; this rule is about it being there at
all: without it the pack has nothing to check, and a graph with the trail removed would pass.

Only a stack of Kubernetes resources alone is out of scope (``policies.support.kubernetes_only``);
an empty stack lacks the trail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Stack, Unknown
from policies.support import kubernetes_only

TRAILS = ("aws:cloudtrail/trail:Trail",)


def _off(value: Any) -> bool:
    """enableLogging false (pulumi-aws sometimes carries booleans as strings)."""
    return value is False or (isinstance(value, str) and value.lower() == "false")


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource | None, str]]:
    if kubernetes_only(stack):
        return
    trails = stack.of_type(*TRAILS)
    if not trails:
        yield (
            None,
            "the stack has no CloudTrail trail (aws.cloudtrail.Trail): no record of who changed the "
            "deployment, its keys or its network",
        )
        return
    states = [trail.props.get("enableLogging") for trail in trails]
    if any(state != UNKNOWN and not _off(state) for state in states):
        return  # one trail records
    if UNKNOWN in states:
        raise Unknown  # the only candidates are unknown at preview: not judged
    names = ", ".join(trail.name for trail in trails)
    yield None, f"no CloudTrail trail of the stack is logging ({names}: enableLogging false)"


RULE = Rule(
    name="aws-cloudtrail-stack-missing-trail",
    description="The stack has a CloudTrail trail that is logging (enableLogging not false).",
    why="Without a trail no API call is recorded: who created an access key, opened a security group, "
    "disabled a key or read the model store cannot be established, and an incident cannot be "
    "reconstructed. A stack without one also passes every rule about trails, because there is "
    "nothing to check.",
    severity="high",
    remediation="Keep the AuditTrail component in the program (it makes a multi-region, validated, "
    "KMS-encrypted aws.cloudtrail.Trail), with enableLogging true.",
    frameworks=(
        "CIS AWS Foundations 3.1",
        "AWS FSBP CloudTrail.1",
        "NIST SP 800-53 Rev. 5 AU-2",
        "HIPAA 164.312(b)",
        "GDPR Art. 32(1)(d)",
    ),
    check_stack=check,
)
