"""A stack that opens a client or admin CIDR list to the world says so, and every review sees it.

``llmkit:allow_world_open`` (``llmkit/config.py``) is the one way a stack lets
``endpoint.allowed_client_cidrs``, ``gateway.admin_cidrs`` or ``firewall.extra_ingress`` hold a
block wider than a /8 (``0.0.0.0/0`` included). The program then stamps the tag
``llmkit:allow-world-open`` (its value: the keys) on every AWS resource through the provider's
default tags. This rule reports each AWS provider that carries the tag: the override is a decision
of the stack's owners, so the finding is advisory, but it is in every plan and every
``pulumi preview``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.config import WORLD_OPEN_TAG
from llmkit.policy import Resource, Rule, Stack, known

PROVIDERS = ("pulumi:providers:aws",)


def _default_tags(provider: Resource) -> Mapping[str, Any]:
    """The provider's ``defaultTags.tags`` (its inputs travel as JSON text in a graph)."""
    raw = known(provider.props.get("defaultTags"))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    tags = known(raw.get("tags")) if isinstance(raw, Mapping) else None
    return tags if isinstance(tags, Mapping) else {}


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    for provider in stack.of_type(*PROVIDERS):
        keys = known(_default_tags(provider).get(WORLD_OPEN_TAG))
        if keys is None:
            continue
        yield (
            provider,
            f"the stack lets {keys or '(no key)'} hold blocks wider than a /8 (0.0.0.0/0 is every "
            f"address): llmkit:allow_world_open, tag {WORLD_OPEN_TAG}; confirm that these lists must "
            "reach the internet",
        )


RULE = Rule(
    name="aws-provider-config-disallow-world-open-override",
    description="No stack opens a client or admin CIDR list to the world (llmkit:allow_world_open, "
    "seen as the provider's default tag llmkit:allow-world-open).",
    why="A client or admin list with 0.0.0.0/0 (or any block wider than a /8) lets the internet reach "
    "what the list guards: the endpoint, the gateway's key and spend APIs, an extra ingress port. "
    "llmkit refuses such a list unless the stack names it in llmkit:allow_world_open; this rule keeps "
    "that decision in front of every reviewer.",
    severity="high",
    remediation="List the networks that need access (office, VPN, partner CIDRs) instead, and remove the "
    "key from llmkit:allow_world_open. Keep the override only for an endpoint that is public on "
    "purpose (endpoint.public: true), behind its WAF and rate limit.",
    frameworks=("CIS AWS Foundations 5.2", "NIST SP 800-53 Rev. 5 SC-7", "GDPR Art. 32(1)(b)"),
    enforcement="advisory",
    enforcement_reason="the override is the stack owners' explicit, named decision, such as a public "
    "endpoint; the finding reports it rather than blocking it",
    check_stack=check,
)
