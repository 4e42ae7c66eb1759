"""llmkit's rules as a Pulumi CrossGuard policy pack.

``policies/__main__.py`` calls :func:`build_pack`; ``pulumi preview/up --policy-pack policies``
then runs exactly the rules that :func:`llmkit.policy.evaluate` runs offline.

CrossGuard hands a policy its resource's properties through a proxy that raises on unknown
values (preview). :func:`plain` copies them into plain data with unknown values replaced by
:data:`llmkit.policy.UNKNOWN`, so a rule reads them as it reads an offline graph, and
:class:`llmkit.policy.Unknown` (raised when a rule reads one) makes the rule not apply to the
resource this time rather than fail or pass it.

A stack policy sees every resource with the URNs of its dependencies (which link resources at
preview, when the IDs and ARNs that would link them are unknown); a finding about the whole
stack (something it lacks) is reported with no URN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Stack, Unknown

PACK_NAME = "llmkit"


def plain(value: Any) -> Any:
    """CrossGuard property values (proxies, with unknowns) as plain data with UNKNOWN markers."""
    from pulumi_policy.proxy import UnknownValueError

    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in list(value.keys()):
            try:
                item = value[key]
            except UnknownValueError:
                out[str(key)] = UNKNOWN
                continue
            out[str(key)] = plain(item)
        return out
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def _provider_props(provider: Any) -> Mapping[str, Any] | None:
    return plain(provider.props) if provider is not None else None


def _resource(
    type_: str, name: str, urn: str, props: Any, provider: Any, dependencies: Sequence[Any] = ()
) -> Resource:
    data = plain(props)
    rid = data.get("id")
    return Resource(
        type=type_,
        name=name,
        urn=urn,
        props=data,
        id=rid if isinstance(rid, str) and rid != UNKNOWN else None,
        provider=_provider_props(provider),
        dependencies=tuple(d.urn for d in dependencies or ()),
    )


def _schema(rule: Rule) -> Any:
    from pulumi_policy import PolicyConfigSchema

    if not rule.settings:
        return None
    return PolicyConfigSchema(
        properties={
            key: {**s.schema, "default": s.default, "description": s.description}
            for key, s in rule.settings.items()
        }
    )


def _config(rule: Rule, given: Mapping[str, Any]) -> dict[str, Any]:
    return rule.config({k: v for k, v in given.items() if k in rule.settings})


def policy_for(rule: Rule) -> Any:
    """One rule as a CrossGuard ResourceValidationPolicy or StackValidationPolicy."""
    from pulumi_policy import (
        EnforcementLevel,
        ResourceValidationPolicy,
        Severity,
        StackValidationPolicy,
    )

    common: dict[str, Any] = {
        "name": rule.name,
        "description": rule.description,
        "enforcement_level": EnforcementLevel(rule.enforcement),
        "config_schema": _schema(rule),
        "severity": Severity(rule.severity),
        "remediation_steps": rule.remediation,
        "tags": list(rule.frameworks),
    }

    if rule.check is not None:
        check = rule.check

        def validate_resource(args: Any, report_violation: Any) -> None:
            if args.resource_type not in rule.resource_types:
                return
            resource = _resource(args.resource_type, args.name, args.urn, args.props, args.provider)
            try:
                messages = list(check(resource, _config(rule, args.get_config())))
            except Unknown:
                return
            for message in messages:
                report_violation(message, None)

        return ResourceValidationPolicy(validate=validate_resource, **common)

    check_stack = rule.check_stack
    assert check_stack is not None

    def validate_stack(args: Any, report_violation: Any) -> None:
        stack = Stack(
            [
                _resource(r.resource_type, r.name, r.urn, r.props, r.provider, r.dependencies)
                for r in args.resources
            ]
        )
        try:
            found = list(check_stack(stack, _config(rule, args.get_config())))
        except Unknown:
            return
        for resource, message in found:
            if resource is None:  # the stack as a whole: something it must have is missing
                report_violation(message, None)
            else:
                report_violation(f"{resource.name}: {message}", resource.urn)

    return StackValidationPolicy(validate=validate_stack, **common)


def policies(rules: Sequence[Rule]) -> list[Any]:
    return [policy_for(rule) for rule in rules]


def build_pack(rules: Sequence[Rule]) -> Any:
    """Create the PolicyPack (this starts CrossGuard's analyzer server: only __main__ calls it)."""
    from pulumi_policy import PolicyPack

    return PolicyPack(name=PACK_NAME, policies=policies(rules))
