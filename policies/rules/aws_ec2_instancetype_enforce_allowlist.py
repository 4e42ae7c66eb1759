"""EC2 instance types come from an allowlist: by default the GPU types of llmkit's catalog.

Checked: ``instanceType`` of launch templates (when set: a template used by a mixed instances
policy may leave it to the group) and instances, and every
``mixedInstancesPolicy.launchTemplate.overrides[].instanceType`` of Auto Scaling groups (a group
with a plain ``launchTemplate`` launches the template's type, checked on the template).
Attribute-based selection (``instanceRequirements``) lets AWS pick any matching type, which an
allowlist cannot bound, so it fails too.

The default allowlist is every instance type in ``llmkit.catalog`` (the reviewed GPU types whose
GPUs, drivers and sizes the sizing knows); ``allowed_instance_types`` replaces it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.catalog import load_catalog
from llmkit.policy import Resource, Rule, Setting, as_list, known
from policies.support import INSTANCES, LAUNCH_TEMPLATES

GROUPS = ("aws:autoscaling/group:Group",)
ATTRIBUTE_BASED = (
    "uses instanceRequirements (attribute-based selection), which the allowlist cannot bound: "
    "name instanceType"
)


def _not_allowed(where: str, instance_type: Any, allowed: list[str]) -> str | None:
    if instance_type in allowed:
        return None
    return f"{where} {instance_type} is not allowed (one of: {', '.join(allowed)})"


def check(resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    allowed = list(config["allowed_instance_types"])
    if resource.type in GROUPS:
        overrides = as_list(resource.get("mixedInstancesPolicy", "launchTemplate", "overrides"))
        for index, override in enumerate(overrides):
            override = known(override)
            if not isinstance(override, Mapping):
                continue
            where = f"mixedInstancesPolicy override {index}"
            if known(override.get("instanceRequirements")) is not None:
                yield f"{where} {ATTRIBUTE_BASED}"
            instance_type = known(override.get("instanceType"))
            if instance_type is not None and (
                problem := _not_allowed(f"{where} instance type", instance_type, allowed)
            ):
                yield problem
        return
    if resource.get("instanceRequirements") is not None:
        yield f"launch template {ATTRIBUTE_BASED}"
    instance_type = resource.get("instanceType")  # unset: the group's overrides or the template decide
    if instance_type is not None and (problem := _not_allowed("instance type", instance_type, allowed)):
        yield problem


RULE = Rule(
    name="aws-ec2-instancetype-enforce-allowlist",
    description="Launch templates, instances and Auto Scaling group overrides use only allowed instance "
    "types (default: the GPU types of llmkit's catalog).",
    why="An unreviewed type may lack the GPU memory, driver support or compute capability the sizing "
    "assumed, or run up a large bill: a p5.48xlarge costs far more per hour than the fleet was budgeted for.",
    severity="medium",
    remediation="Pick an instance type from the allowlist: GpuFleet chooses them from llmkit's catalog "
    "through the sizing (llmkit size); add a new type to the catalog, reviewed, rather than to one stack.",
    frameworks=(
        "AWS Config desired-instance-type",
        "AWS Well-Architected COST02-BP05",
        "NIST SP 800-53 Rev. 5 CM-2",
    ),
    resource_types=(*LAUNCH_TEMPLATES, *INSTANCES, *GROUPS),
    check=check,
    settings={
        "allowed_instance_types": Setting(
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
            sorted(load_catalog().instances),
            "the instance types allowed (default: every instance type in llmkit's catalog)",
        )
    },
)
