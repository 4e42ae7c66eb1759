"""Launch templates and instances require IMDSv2 and keep metadata tokens on the host.

``metadataOptions.httpTokens`` is ``required`` (IMDSv1, which answers a single forged GET with the
instance role's credentials, is off) and ``httpPutResponseHopLimit`` is at most ``max_hop_limit``
(default 1: a token cannot cross the extra hop into a container on the host). Both must be set
explicitly: the defaults depend on the AMI (an AMI with ``ImdsSupport v2.0`` launches with hop
limit 2) and on account-level settings the stack does not see. ``httpEndpoint = disabled`` turns
the metadata service off altogether, which also complies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting
from policies.support import INSTANCES, LAUNCH_TEMPLATES


def check(resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    if resource.get("metadataOptions", "httpEndpoint") == "disabled":
        return
    tokens = resource.get("metadataOptions", "httpTokens")
    if tokens != "required":
        shown = "not set (the AMI or account default may allow IMDSv1)" if tokens is None else tokens
        yield f"metadataOptions.httpTokens is {shown}: set it to required (IMDSv2 only)"
    limit = config["max_hop_limit"]
    hops = resource.get("metadataOptions", "httpPutResponseHopLimit")
    if hops is None:
        yield (
            "metadataOptions.httpPutResponseHopLimit is not set (an AMI with ImdsSupport v2.0 defaults "
            f"to 2): set it to at most {limit}"
        )
        return
    try:
        number = int(hops)
    except (TypeError, ValueError):
        yield f"metadataOptions.httpPutResponseHopLimit {hops!r} is not a number: set it to at most {limit}"
        return
    if number > limit:
        yield f"metadataOptions.httpPutResponseHopLimit {number} is over the allowed {limit}"


RULE = Rule(
    name="aws-ec2-instance-enforce-imdsv2",
    description="Launch templates and instances require IMDSv2 (httpTokens required) with a hop limit of at "
    "most max_hop_limit, or disable the metadata endpoint.",
    why="IMDSv1 hands the instance role's credentials to any SSRF or forged request from the host, and a "
    "hop limit above 1 lets containers on a GPU host fetch them too: with them the model store and logs "
    "are open.",
    severity="high",
    remediation="Set metadataOptions httpTokens required and httpPutResponseHopLimit 1 (GpuFleet's launch "
    "templates do), or httpEndpoint disabled where nothing on the host needs instance metadata.",
    frameworks=("CIS AWS Foundations 5.6", "AWS FSBP EC2.8", "AWS FSBP EC2.170", "HIPAA 164.312(a)(1)"),
    resource_types=(*LAUNCH_TEMPLATES, *INSTANCES),
    check=check,
    settings={
        "max_hop_limit": Setting(
            {"type": "integer", "minimum": 1, "maximum": 64},
            1,
            "the largest httpPutResponseHopLimit allowed (AWS accepts 1..64; 2 lets containers reach IMDS)",
        )
    },
)
