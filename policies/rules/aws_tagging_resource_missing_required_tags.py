"""Every taggable AWS resource carries the required tags with non-empty values.

Taggable means what pulumi-aws says: the resource class accepts a ``tags`` argument. The type token maps
to the class (``aws:ec2/vpc:Vpc`` -> ``pulumi_aws.ec2.Vpc``, module ``index`` -> ``pulumi_aws``,
``lambda`` -> ``pulumi_aws.lambda_``), and the answer is cached per token. The class's signature is read
from its source file (``pulumi_aws/ec2/vpc.py``, the one that registers the token) without importing it:
pulumi-aws's modules take seconds to import, which an offline ``llmkit policy check`` should not pay.
Where the module is imported already (a plan, CrossGuard), or the file is not found, the class is
inspected.

The provider's default tags count (pulumi-aws stamps them on every taggable resource), with two
exceptions where they do not reach what matters:

- Auto Scaling groups take tags as a list of ``{key, value, propagateAtLaunch}``; default tags do not
  apply to them, so the group must carry each tag itself with ``propagateAtLaunch`` true, which is what
  its instances get.
- Launch templates: default tags tag the template, not what it launches; the ``tagSpecifications`` for
  resource types ``instance`` and ``volume`` must carry the tags.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from llmkit.config import REQUIRED_TAGS
from llmkit.policy import Resource, Rule, Setting, Stack, as_list, known
from policies.support import LAUNCH_TEMPLATES, truthy

AUTOSCALING_GROUPS = ("aws:autoscaling/group:Group",)
LAUNCHED = ("instance", "volume")  # what a launch template's tagSpecifications must tag
MODULES = {"index": "pulumi_aws", "lambda": "pulumi_aws.lambda_"}


@cache
def _package_dir(name: str) -> Path | None:
    """Where package ``name`` is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def _source(type_: str, module_name: str) -> bytes | None:
    """The pulumi-aws source that registers ``type_``: ``<module>/<snake_case name>.py``, as bytes."""
    root = _package_dir("pulumi_aws")
    if root is None:
        return None
    directory = root.joinpath(*module_name.split(".")[1:])
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", type_.split(":")[1].split("/", 1)[-1]).lower()
    quoted = (f"'{type_}'".encode(), f'"{type_}"'.encode())
    for candidate in (directory / f"{snake}.py", *sorted(directory.glob("*.py"))):
        try:
            source = candidate.read_bytes()
        except OSError:
            continue
        if any(q in source for q in quoted) and b"def _internal_init(" in source:
            return source
    return None


def _init_parameters(source: bytes) -> list[str] | None:
    """The parameter names of the resource class's ``_internal_init``, read from its generated source
    (one parameter per line: ``name: annotation = default,``)."""
    found = re.search(rb"def _internal_init\((.*?)\):\n", source, re.DOTALL)
    if found is None:
        return None
    names = [re.match(rb"\s*(\w+)\s*(?:[:=,]|$)", line) for line in found.group(1).split(b"\n")]
    return [n.group(1).decode() for n in names if n is not None]


def _imported_parameters(module_name: str, class_name: str) -> list[str] | None:
    with warnings.catch_warnings():  # loading a module announces its deprecated resources
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            cls = getattr(importlib.import_module(module_name), class_name, None)
        except ImportError:
            return None
    init = getattr(cls, "_internal_init", None)
    return None if init is None else list(inspect.signature(init).parameters)


@cache
def taggable(type_: str) -> bool | None:
    """Whether the pulumi-aws class of ``type_`` takes ``tags``; None when no such class is found."""
    parts = type_.split(":")
    if len(parts) != 3 or parts[0] != "aws":
        return None
    service = parts[1].split("/", 1)[0]
    module_name = MODULES.get(service, f"pulumi_aws.{service}")
    if module_name in sys.modules:  # already imported (a plan, a CrossGuard run): ask the class
        return _takes_tags(_imported_parameters(module_name, parts[2]))
    source = _source(type_, module_name)
    parameters = _init_parameters(source) if source is not None else None
    if parameters is None:
        parameters = _imported_parameters(module_name, parts[2])
    return _takes_tags(parameters)


def _takes_tags(parameters: list[str] | None) -> bool | None:
    return None if parameters is None else "tags" in parameters


def _own_tags(resource: Resource, keys: Sequence[str]) -> dict[str, str]:
    """The required tags the resource ends up with: its provider's defaults, then its own.

    Like Resource.tags(), but reads only the required keys: an unknown value of another tag (a
    Name computed at deploy time) does not make the rule skip the whole stack.
    """
    merged = {k: v for k, v in resource.default_tags().items() if k in keys}
    for prop in ("tagsAll", "tags"):
        own = known(resource.props.get(prop))
        if isinstance(own, Mapping):
            merged.update({k: str(known(own[k])) for k in keys if k in own and own[k] is not None})
    return merged


def _lacking(tags: Mapping[str, Any], keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(missing keys, keys with an empty value)."""
    missing = [k for k in keys if k not in tags]
    empty = [k for k in keys if k in tags and not str(tags[k]).strip()]
    return missing, empty


def _describe(missing: list[str], empty: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if empty:
        parts.append(f"empty {', '.join(empty)}")
    return "; ".join(parts)


def _check_group(group: Resource, keys: Sequence[str]) -> Iterator[str]:
    propagated: dict[str, str] = {}
    unpropagated: list[str] = []
    for index in range(len(as_list(group.get("tags")))):
        key = group.get("tags", index, "key")
        if key not in keys:
            continue
        value = group.get("tags", index, "value", default="")
        if truthy(group.get("tags", index, "propagateAtLaunch", default=False)):
            propagated[key] = str(value)
        else:
            unpropagated.append(key)
    missing, empty = _lacking(propagated, keys)
    not_propagated = [k for k in missing if k in unpropagated]
    missing = [k for k in missing if k not in unpropagated]
    if missing or empty:
        yield (
            f"Auto Scaling group tags {_describe(missing, empty)}: provider default tags do not apply "
            "to Auto Scaling groups; add each as {key, value, propagateAtLaunch: true} to tags"
        )
    if not_propagated:
        yield (
            f"Auto Scaling group tags {', '.join(not_propagated)} have propagateAtLaunch false: the group's "
            "instances do not get them; set propagateAtLaunch: true"
        )


def _check_launch_template(template: Resource, keys: Sequence[str]) -> Iterator[str]:
    specs = as_list(template.get("tagSpecifications"))
    for kind in LAUNCHED:
        tags: dict[str, str] = {}
        for index in range(len(specs)):
            if template.get("tagSpecifications", index, "resourceType") != kind:
                continue
            spec_tags = template.get("tagSpecifications", index, "tags", default={})
            if isinstance(spec_tags, Mapping):
                tags.update({k: str(known(spec_tags[k])) for k in keys if k in spec_tags})
        missing, empty = _lacking(tags, keys)
        if missing or empty:
            yield (
                f"tagSpecifications for resourceType {kind} {_describe(missing, empty)}: provider default "
                f"tags do not reach launched {kind}s; tag them in a tagSpecifications entry for {kind}"
            )


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    keys = list(config["required_tags"])
    for resource in stack.resources:
        if not resource.type.startswith("aws:") or not resource.custom:
            continue
        if resource.type in AUTOSCALING_GROUPS:
            for message in _check_group(resource, keys):
                yield resource, message
            continue
        can_tag = taggable(resource.type)
        if can_tag is False or (can_tag is None and "tags" not in resource.props):
            continue  # not taggable (or a type this pulumi-aws does not know, carrying no tags)
        missing, empty = _lacking(_own_tags(resource, keys), keys)
        if missing or empty:
            found = _describe(missing, empty)
            yield (
                resource,
                f"required tags {found} (need non-empty {', '.join(keys)}: set them in the provider's "
                "defaultTags or the resource's tags)",
            )
        if resource.type in LAUNCH_TEMPLATES:
            for message in _check_launch_template(resource, keys):
                yield resource, message


RULE = Rule(
    name="aws-tagging-resource-missing-required-tags",
    description="Every taggable AWS resource carries the required tags (default: "
    + ", ".join(REQUIRED_TAGS)
    + ") with non-empty values; Auto Scaling groups propagate them, launch templates tag instances and "
    "volumes.",
    why="Untagged resources have no accountable owner in an incident, escape cost allocation, and (without "
    "data-classification) cannot be matched to the data they hold, which GDPR records of processing and "
    "classification-based access controls rely on. Provider default tags do not reach Auto Scaling groups "
    "nor the instances and volumes a launch template starts, so GPU hosts holding prompts would be "
    "unlabelled.",
    severity="low",
    remediation="Set the required tags once in the aws provider's defaultTags (llmkit's __main__ does, from "
    "llmkit:tags); for Auto Scaling groups and launch templates add them explicitly, as GpuFleet does "
    "(tags with propagateAtLaunch: true, tagSpecifications for instance and volume).",
    frameworks=("AWS Resource Tagging Standard", "GDPR Art. 30", "NIST 800-53 CM-8"),
    check_stack=check,
    settings={
        "required_tags": Setting(
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "uniqueItems": True,
            },
            list(REQUIRED_TAGS),
            "the tag keys every taggable resource must carry with a non-empty value",
        )
    },
)
