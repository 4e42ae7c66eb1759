"""HTTPS and TLS listeners negotiate TLS 1.3 only.

The default allows AWS's TLS 1.3-only security policies: the 2021 one that llmkit's edge and
fleet listeners use, and its FIPS and hybrid post-quantum (ML-KEM) variants. The
``ELBSecurityPolicy-TLS13-1-2-*`` policies also accept TLS 1.2; a stack that must serve TLS 1.2
clients adds one to ``allowed_ssl_policies`` (and its reviewers see that in the policy config).
A listener without ``sslPolicy`` gets ``ELBSecurityPolicy-2016-08`` from the API (TLS 1.0 and
up), so a missing policy is a violation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting
from llmkit.tls import ALB_TLS13_ONLY_POLICIES, ALB_TLS_POLICY
from policies.support import LISTENERS

TLS13_ONLY_POLICIES = ALB_TLS13_ONLY_POLICIES
ENCRYPTED = ("HTTPS", "TLS")


def check(listener: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    protocol = str(listener.get("protocol", default="")).upper()
    if protocol not in ENCRYPTED:
        return
    allowed = list(config["allowed_ssl_policies"])
    policy = listener.get("sslPolicy")
    if not policy:
        yield (
            f"{protocol} listener has no sslPolicy (AWS then applies ELBSecurityPolicy-2016-08, TLS 1.0 "
            f"and up): set one of: {', '.join(allowed)}"
        )
    elif policy not in allowed:
        yield f"sslPolicy {policy} is not a TLS 1.3 policy (one of: {', '.join(allowed)})"


RULE = Rule(
    name="aws-alb-listener-enforce-tls13",
    description="HTTPS and TLS listeners use a TLS 1.3-only security policy.",
    why="Prompts, completions and API keys cross this listener; older protocol versions and their CBC and "
    "RSA key-exchange suites allow downgrade and decryption attacks, and a listener without a policy "
    "accepts TLS 1.0.",
    severity="high",
    remediation=f"Set sslPolicy to {ALB_TLS_POLICY} (ReverseProxy and GpuFleet do), or to "
    "its FIPS or post-quantum variant.",
    frameworks=(
        "AWS Security Hub ELB.17",
        "HIPAA 164.312(e)(1)",
        "HIPAA 164.312(e)(2)(ii)",
        "GDPR Art. 32(1)(a)",
    ),
    resource_types=LISTENERS,
    check=check,
    settings={
        "allowed_ssl_policies": Setting(
            {"type": "array", "items": {"type": "string", "pattern": "^ELBSecurityPolicy-"}, "minItems": 1},
            list(TLS13_ONLY_POLICIES),
            "the ELB security policies a listener may use (default: the TLS 1.3-only ones)",
        )
    },
)
