"""aws-provider-config-disallow-world-open-override: the stack's world-open override is reported."""

from __future__ import annotations

import json

from llmkit.config import WORLD_OPEN_TAG
from llmkit.policy import UNKNOWN, Resource
from policies.rules.aws_provider_config_disallow_world_open_override import RULE
from tests.pack.fixtures import messages, res, run, skipped

PROVIDER = "pulumi:providers:aws"
VPC = "aws:ec2/vpc:Vpc"
TAGS = {"owner": "platform-team", "environment": "prod", "data-classification": "internal"}


def provider(name: str = "aws", as_json: bool = False, tags: dict[str, str] | None = None) -> Resource:
    default_tags = {"tags": {**TAGS, **(tags or {})}}
    return res(
        PROVIDER,
        name,
        region="eu-central-1",
        defaultTags=json.dumps(default_tags) if as_json else default_tags,
    )


def test_a_provider_without_the_override_passes() -> None:
    assert messages(RULE, provider(), provider(as_json=True), res(VPC, "v")) == []
    assert messages(RULE, res(PROVIDER, "bare", region="eu-central-1")) == []  # no default tags at all


def test_the_override_is_reported_on_each_provider_that_carries_it() -> None:
    override = {WORLD_OPEN_TAG: "endpoint.allowed_client_cidrs gateway.admin_cidrs"}
    found = messages(
        RULE,
        provider("aws", tags=override),
        provider("aws-us", as_json=True, tags=override),  # as an offline graph carries it: JSON text
        provider("clean"),
    )
    text = (
        "the stack lets endpoint.allowed_client_cidrs gateway.admin_cidrs hold blocks wider than a /8 "
        "(0.0.0.0/0 is every address): llmkit:allow_world_open, tag llmkit:allow-world-open; confirm "
        "that these lists must reach the internet"
    )
    assert found == [("aws", text), ("aws-us", text)]
    (violation, *_) = run(RULE, provider(tags=override))
    assert (violation.enforcement, violation.severity) == ("advisory", "high")


def test_an_unknown_tag_value_is_skipped_not_judged() -> None:
    unknown = provider(tags={WORLD_OPEN_TAG: UNKNOWN})
    assert messages(RULE, unknown) == []
    assert skipped(RULE, unknown) == [(RULE.name, "(stack)")]
