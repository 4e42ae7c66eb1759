"""Application and Network Load Balancers write access logs to an S3 bucket.

Gateway Load Balancers have no access logs in AWS, so they are out of scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.support import LOAD_BALANCERS, truthy


def check(lb: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if lb.get("loadBalancerType", default="application") == "gateway":
        return
    enabled = truthy(lb.get("accessLogs", "enabled", default=False))
    bucket = lb.get("accessLogs", "bucket")
    if not enabled:
        yield "access logs are off: set accessLogs.enabled: true and accessLogs.bucket"
    elif not bucket:
        yield "access logs are enabled but name no bucket: set accessLogs.bucket"


RULE = Rule(
    name="aws-alb-loadbalancer-enable-access-logs",
    description="Application and Network Load Balancers have access logs enabled, delivered to a bucket.",
    why="Without access logs there is no record of who called the endpoint, from where and with what "
    "result: abuse of the model, leaked API keys and attacks cannot be investigated.",
    severity="medium",
    remediation="Set accessLogs: {enabled: true, bucket: <the log bucket>} (ReverseProxy and GpuFleet "
    "deliver to LogBucket's bucket).",
    frameworks=("AWS FSBP ELB.5", "HIPAA 164.312(b)"),
    resource_types=LOAD_BALANCERS,
    check=check,
)
