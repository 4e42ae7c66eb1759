"""Application Load Balancers drop HTTP header fields that are not valid."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.support import LOAD_BALANCERS, truthy


def check(lb: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    kind = lb.get("loadBalancerType", default="application")
    if kind != "application":
        return  # only Application Load Balancers parse HTTP headers
    if not truthy(lb.get("dropInvalidHeaderFields", default=False)):
        yield "invalid header fields are passed to the targets: set dropInvalidHeaderFields: true"


RULE = Rule(
    name="aws-alb-loadbalancer-enable-drop-invalid-headers",
    description="Application Load Balancers drop invalid HTTP header fields (dropInvalidHeaderFields).",
    why="Malformed header names reach the gateway and the model servers as they are: a way to smuggle "
    "requests past the WAF and to desynchronise the proxies behind the load balancer.",
    severity="medium",
    remediation="Set dropInvalidHeaderFields: true (ReverseProxy and GpuFleet do, with "
    "desyncMitigationMode strictest).",
    frameworks=("AWS FSBP ELB.4", "GDPR Art. 32(1)(b)"),
    resource_types=LOAD_BALANCERS,
    check=check,
)
