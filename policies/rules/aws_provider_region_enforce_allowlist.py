"""Data residency: every AWS provider and every regional AWS resource is in an allowed region."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting, Stack, known

PROVIDERS = ("pulumi:providers:aws",)
# The EU regions (GDPR: personal data stays in the EU/EEA without a Chapter V transfer mechanism).
EU_REGIONS = (
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
)
# Global services, out of scope: their resources hold identity, billing or public DNS configuration, not
# customer data, and have no region of their own (the provider's region only picks an API endpoint).
GLOBAL_SERVICES = ("iam", "organizations", "account", "budgets", "costexplorer", "cur", "route53")
# ... except the Route 53 parts that are regional (Resolver, Profiles): those stay in scope.
REGIONAL_IN_GLOBAL = ("aws:route53/resolver", "aws:route53/profiles")


def _global(type_: str) -> bool:
    service = type_.split(":", 2)[1].split("/", 1)[0] if type_.count(":") >= 2 else ""
    return service in GLOBAL_SERVICES and not type_.startswith(REGIONAL_IN_GLOBAL)


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    allowed = list(config["allowed_regions"])
    accepted = f"one of: {', '.join(allowed)}"
    for provider in stack.of_type(*PROVIDERS):
        region = known(provider.props.get("region"))
        if not region:
            yield (
                provider,
                (
                    "provider sets no region (it would come from AWS_REGION or the profile): "
                    f"set region ({accepted})"
                ),
            )
        elif region not in allowed:
            yield provider, f"provider region {region} is outside the allowed regions ({accepted})"
    for resource in stack.resources:
        if not resource.type.startswith("aws:") or not resource.custom or _global(resource.type):
            continue
        own = resource.get("region")  # raises Unknown if unknown (.region would use the provider's)
        region = resource.region
        source = "its region property" if own else "its provider's region"
        if region is None:
            unknown = "region unknown: neither a region property nor a provider region"
            yield resource, f"{unknown}; set the provider's region ({accepted})"
        elif region not in allowed:
            yield resource, f"region {region} ({source}) is outside the allowed regions ({accepted})"


RULE = Rule(
    name="aws-provider-region-enforce-allowlist",
    description="Every AWS provider and every regional AWS resource is in one of the allowed regions "
    "(default: the EU regions).",
    why="Prompts, completions, logs and model data are personal data under GDPR; a resource created in a "
    "region outside the EU/EEA transfers them to a third country (GDPR Chapter V) without the legal basis "
    "the deployment was approved for. A provider or resource whose region cannot be determined fails: "
    "residency must be provable from the plan. Out of scope: global services with no region of their own "
    "that hold configuration, not customer data: "
    + ", ".join(GLOBAL_SERVICES)
    + " (except Route 53 Resolver and Profiles, which are regional).",
    severity="high",
    remediation="Pin the aws provider's region (aws:region) to an allowed region and create every resource "
    "through it (llmkit's __main__ creates one explicit provider from the stack config, whose region must "
    "be in llmkit:allowed_regions); remove per-resource region overrides that leave the list.",
    frameworks=("GDPR Art. 44",),
    check_stack=check,
    settings={
        "allowed_regions": Setting(
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
            list(EU_REGIONS),
            "the AWS regions resources may live in (default: the EU regions, for GDPR data residency)",
        )
    },
)
