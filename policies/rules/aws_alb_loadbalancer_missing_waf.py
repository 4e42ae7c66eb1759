"""Every internet-facing Application Load Balancer has an AWS WAF (v2) web ACL.

An association is an ``aws.wafv2.WebAclAssociation`` whose ``resourceArn`` names the load
balancer. Internal load balancers are out of scope: this rule does not require a WAF on them
(llmkit's ReverseProxy attaches one to its internal edge ALB anyway, as defence in depth).
WAF Classic associations do not count: WAF Classic is retired.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Stack
from policies.support import LOAD_BALANCERS, truthy

WEB_ACL_ASSOCIATIONS = ("aws:wafv2/webAclAssociation:WebAclAssociation",)


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    associations = stack.of_type(*WEB_ACL_ASSOCIATIONS)
    for lb in stack.of_type(*LOAD_BALANCERS):
        if lb.get("loadBalancerType", default="application") != "application":
            continue
        if truthy(lb.get("internal", default=False)):
            continue
        if not any(stack.refers_to(a.get("resourceArn"), lb) for a in associations):
            yield (
                lb,
                "internet-facing Application Load Balancer has no AWS WAF web ACL "
                "(an aws.wafv2.WebAclAssociation whose resourceArn names it)",
            )


RULE = Rule(
    name="aws-alb-loadbalancer-missing-waf",
    description="Every internet-facing Application Load Balancer is associated with an AWS WAF web ACL.",
    why="Without a WAF, floods, scanners and known-bad inputs from the internet reach the gateway directly, "
    "and nothing rate-limits a client that burns GPU time. Internal load balancers are out of scope: "
    "only clients inside the network reach them.",
    severity="high",
    remediation="Associate a regional WAFv2 web ACL with rate limit, IP reputation and managed rule groups "
    "(ReverseProxy creates one and its aws.wafv2.WebAclAssociation).",
    frameworks=("AWS Security Hub ELB.16", "GDPR Art. 32(1)(b)"),
    check_stack=check,
)
