"""The stack's edge has its AWS WAF: a web ACL of the stack associated with the edge load balancer.

The edge is the Application Load Balancer of llmkit's ReverseProxy component (``llmkit:aws:
ReverseProxy`` in its URN): the one clients reach. Its WAF (rate limit, IP reputation, managed
rules) must be there:

- always when the edge is internet-facing (``internal`` false: ``llmkit:endpoint.public: true``);
- also when it is internal, unless the ``internal_edge`` setting is false: llmkit attaches the WAF
  to an internal edge as defence in depth (components/edge.py), so a missing one there is a
  change to review, not a choice the stack file can make.

An association counts when it is an ``aws.wafv2.WebAclAssociation`` whose ``resourceArn`` names the
load balancer and whose ``webAclArn`` names an ``aws.wafv2.WebAcl`` of the stack (whose rules the
review sees). At preview, when those ARNs are not known yet, the association's dependencies link
it. Every other internet-facing load balancer is ``aws-alb-loadbalancer-missing-waf``'s to check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Setting, Stack
from policies.support import EDGE, LOAD_BALANCERS, truthy

ASSOCIATIONS = ("aws:wafv2/webAclAssociation:WebAclAssociation",)
WEB_ACLS = ("aws:wafv2/webAcl:WebAcl",)


def _names(stack: Stack, via: Resource, ref: Any, target: Resource) -> bool:
    """Whether ``ref`` (a property of ``via``) names ``target``; by dependency while it is unknown."""
    if ref == UNKNOWN:
        return target.urn in via.dependencies
    return stack.refers_to(ref, target)


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource | None, str]]:
    associations = stack.of_type(*ASSOCIATIONS)
    acls = stack.of_type(*WEB_ACLS)
    for lb in stack.of_type(*LOAD_BALANCERS):
        if not lb.within(EDGE) or lb.get("loadBalancerType", default="application") != "application":
            continue
        public = not truthy(lb.get("internal", default=False))
        if not public and not config["internal_edge"]:
            continue
        mine = [a for a in associations if _names(stack, a, a.props.get("resourceArn"), lb)]
        if any(_names(stack, a, a.props.get("webAclArn"), acl) for a in mine for acl in acls):
            continue
        where = "internet-facing" if public else "internal"
        found = (
            " (its association names no web ACL of the stack: "
            + ", ".join(str(a.props.get("webAclArn")) for a in mine)
            + ")"
            if mine
            else " (an aws.wafv2.WebAclAssociation whose resourceArn names it)"
        )
        yield lb, f"the {where} edge load balancer has no AWS WAF web ACL of the stack{found}"


RULE = Rule(
    name="aws-wafv2-stack-missing-edge-association",
    description="The edge load balancer (ReverseProxy's ALB) is associated with a WAF web ACL of the stack: "
    "always when internet-facing, and when internal unless internal_edge is false.",
    why="The edge's WAF is what rate-limits clients and drops known-bad inputs before they reach the "
    "gateway and burn GPU time. On an internet-facing edge its absence exposes the API to floods and "
    "scanners; on an internal one, a compromised host inside the network reaches the gateway "
    "unfiltered. An association to a web ACL outside the stack escapes review.",
    severity="high",
    remediation="Keep the ReverseProxy's aws.wafv2.WebAcl and its aws.wafv2.WebAclAssociation with the "
    "edge ALB (components/edge.py makes both).",
    frameworks=("AWS Security Hub ELB.16", "NIST SP 800-53 Rev. 5 SC-5", "GDPR Art. 32(1)(b)"),
    check_stack=check,
    settings={
        "internal_edge": Setting(
            {"type": "boolean"},
            True,
            "require the WAF on an internal edge too (llmkit attaches one as defence in depth); false "
            "requires it only on an internet-facing edge",
        )
    },
)
