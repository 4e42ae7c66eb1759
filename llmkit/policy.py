"""The policy engine: llmkit's rules, written once, run by CrossGuard and offline.

A rule (:class:`Rule`) is plain data plus a check function over a neutral view of resources
(:class:`Resource`, :class:`Stack`): the type token, the name, the URN, the properties in
camelCase (what CrossGuard and the offline graph both carry), the resource's id and its
provider's properties. The same rule objects are

- wrapped into a Pulumi CrossGuard ``PolicyPack`` by ``policies/__main__.py`` (through
  :mod:`llmkit.crossguard`), which gates ``pulumi preview/up --policy-pack policies``;
- evaluated here by :func:`evaluate` over the graph that ``llmkit plan`` records, so a security
  review needs no cloud credentials.

The rules live in ``policies/rules/``, one module per rule, each defining ``RULE``.

Unknown values (a property computed by the cloud, not known at preview; ``"[unknown]"`` in an
offline graph) never count as compliant or as a violation: reading one raises :class:`Unknown`,
and the rule is skipped for that resource (reported as skipped).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmkit.errors import ConfigError

UNKNOWN = "[unknown]"
SEVERITIES = ("low", "medium", "high", "critical")
Severity = Literal["low", "medium", "high", "critical"]
Enforcement = Literal["mandatory", "advisory"]
RULE_NAME = re.compile(
    r"(aws|k8s)-[a-z0-9]+-[a-z0-9]+-(missing|disallow|enable|configure|enforce)-[a-z0-9-]+"
)


class Unknown(Exception):
    """A value the rule needs is not known yet (preview): the rule does not apply this time."""


def known(value: Any) -> Any:
    """``value``, or raise :class:`Unknown` when it is an unknown placeholder."""
    if value == UNKNOWN:
        raise Unknown
    return value


def _get(value: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        known(value)
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
            value = value[part]
        else:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
    return known(value)


def as_list(value: Any) -> list[Any]:
    """A property that may be absent, one value or a list, as a list (unknown raises)."""
    value = known(value)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Resource:
    """One resource as a rule sees it."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    id: str | None = None
    provider: Mapping[str, Any] | None = None  # the provider resource's properties
    custom: bool = True

    def get(self, *path: str | int, default: Any = None) -> Any:
        """The property at ``path`` (keys and list indexes); ``default`` when absent."""
        value = _get(self.props, path)
        return default if value is None else value

    @property
    def components(self) -> list[str]:
        """The type tokens of the components this resource is nested in, outermost first."""
        parts = self.urn.split("::")
        chain = parts[2].split("$") if len(parts) >= 4 else []
        return chain[:-1]

    def within(self, component_type: str) -> bool:
        return component_type in self.components

    @property
    def region(self) -> str | None:
        """Where the resource lives: its own region property, else its provider's region."""
        own = self.props.get("region")
        if isinstance(own, str) and own != UNKNOWN:
            return own
        if self.provider:
            region = self.provider.get("region")
            return None if region is None else str(known(region))
        return None

    def default_tags(self) -> dict[str, str]:
        """The provider's default tags (pulumi-aws ``defaultTags.tags``)."""
        if not self.provider:
            return {}
        raw = known(self.provider.get("defaultTags"))
        if isinstance(raw, str):  # a provider's inputs travel as JSON strings
            import json

            raw = json.loads(raw)
        tags = (raw or {}).get("tags") or {}
        return {str(k): str(v) for k, v in tags.items()}

    def tags(self) -> dict[str, str]:
        """The tags the resource ends up with: the provider's defaults, then its own."""
        merged = self.default_tags()
        for key in ("tagsAll", "tags"):
            own = known(self.props.get(key))
            if isinstance(own, Mapping):
                merged.update({str(k): str(known(v)) for k, v in own.items()})
        return merged


@dataclass
class Stack:
    """Every resource of a stack, with lookups for rules that relate resources."""

    resources: list[Resource]
    _by_id: dict[str, Resource] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for r in self.resources:
            for ref in (r.id, r.props.get("arn")):
                if isinstance(ref, str) and ref and ref != UNKNOWN:
                    self._by_id.setdefault(ref, r)

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources if r.type in types]

    def resolve(self, ref: Any) -> Resource | None:
        """The resource an id or ARN names (unknown raises, a foreign id gives None)."""
        ref = known(ref)
        return self._by_id.get(ref) if isinstance(ref, str) else None

    def refers_to(self, ref: Any, target: Resource) -> bool:
        """Whether ``ref`` (an id, a name or an ARN in another resource's inputs) names ``target``."""
        ref = known(ref)
        names = {target.id, target.props.get("arn"), target.props.get("bucket"), target.props.get("name")}
        return isinstance(ref, str) and ref in {n for n in names if isinstance(n, str) and n != UNKNOWN}


ResourceCheck = Callable[[Resource, Mapping[str, Any]], Iterable[str]]
StackCheck = Callable[[Stack, Mapping[str, Any]], Iterable[tuple[Resource, str]]]


@dataclass(frozen=True)
class Setting:
    """One configurable threshold of a rule: a JSON schema fragment with a secure default."""

    schema: Mapping[str, Any]
    default: Any
    description: str


@dataclass(frozen=True)
class Rule:
    """One policy: metadata for the review catalogue, and a resource or a stack check."""

    name: str
    description: str  # one line: what must hold
    why: str  # the risk it guards against
    severity: Severity
    remediation: str
    frameworks: tuple[str, ...]
    enforcement: Enforcement = "mandatory"
    enforcement_reason: str = ""  # why not mandatory, when advisory
    resource_types: tuple[str, ...] = ()  # for resource checks: the types it looks at
    check: ResourceCheck | None = None
    check_stack: StackCheck | None = None
    settings: Mapping[str, Setting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not RULE_NAME.fullmatch(self.name):
            raise ValueError(f"rule name {self.name!r} is not aws|k8s-<service>-<resource>-<verb>-<object>")
        if (self.check is None) == (self.check_stack is None):
            raise ValueError(f"rule {self.name}: give exactly one of check and check_stack")
        if self.check is not None and not self.resource_types:
            raise ValueError(f"rule {self.name}: a resource check names its resource_types")
        if self.enforcement == "advisory" and not self.enforcement_reason:
            raise ValueError(f"rule {self.name}: an advisory rule says why it is not mandatory")
        if not self.frameworks:
            raise ValueError(f"rule {self.name}: name the frameworks it serves")

    def config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        values = {key: s.default for key, s in self.settings.items()}
        for key, value in (overrides or {}).items():
            if key == "enforcementLevel":
                continue
            if key not in self.settings:
                raise ConfigError(
                    key=f"{self.name}.{key}",
                    value=value,
                    accepted=", ".join(self.settings) or "no settings",
                    message="unknown policy setting",
                )
            values[key] = value
        return values


@dataclass(frozen=True)
class Violation:
    rule: str
    severity: Severity
    enforcement: Enforcement
    resource_type: str
    resource_name: str
    urn: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "enforcement": self.enforcement,
            "type": self.resource_type,
            "name": self.resource_name,
            "urn": self.urn,
            "message": self.message,
        }


@dataclass
class Report:
    violations: list[Violation]
    skipped: list[tuple[str, str]]  # (rule, urn) not evaluated: a value was unknown
    rules: list[Rule]

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    def by_rule(self) -> dict[str, list[Violation]]:
        found: dict[str, list[Violation]] = {}
        for v in self.violations:
            found.setdefault(v.rule, []).append(v)
        return found


def _run_resource_rule(rule: Rule, resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    assert rule.check is not None
    yield from rule.check(resource, config)


def evaluate(
    resources: Sequence[Resource],
    rules: Sequence[Rule] | None = None,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """Run every rule over ``resources``; ``config`` is {rule name: {setting: value}}."""
    rules = list(rules if rules is not None else load_rules())
    config = config or {}
    unknown_rules = sorted(set(config) - {r.name for r in rules} - {"all"})
    if unknown_rules:
        raise ConfigError(
            key="policy config",
            value=unknown_rules,
            accepted="rule names: " + ", ".join(r.name for r in rules),
            message="settings for rules that do not exist",
        )
    stack = Stack(list(resources))
    violations: list[Violation] = []
    skipped: list[tuple[str, str]] = []

    def add(rule: Rule, resource: Resource, message: str) -> None:
        violations.append(
            Violation(
                rule.name,
                rule.severity,
                rule.enforcement,
                resource.type,
                resource.name,
                resource.urn,
                message,
            )
        )

    for rule in rules:
        settings = rule.config(config.get(rule.name))
        if rule.check is not None:
            for resource in stack.resources:
                if resource.type not in rule.resource_types:
                    continue
                try:
                    messages = list(_run_resource_rule(rule, resource, settings))
                except Unknown:
                    skipped.append((rule.name, resource.urn))
                    continue
                for message in messages:
                    add(rule, resource, message)
        else:
            assert rule.check_stack is not None
            try:
                found = list(rule.check_stack(stack, settings))
            except Unknown:
                skipped.append((rule.name, "(stack)"))
                continue
            for resource, message in found:
                add(rule, resource, message)
    return Report(violations, skipped, rules)


# --- the rules ------------------------------------------------------------------------------


def _policies_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "policies"


def load_rules() -> list[Rule]:
    """Every rule in ``policies/rules/``, sorted by name."""
    root = _policies_dir().parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    package = importlib.import_module("policies.rules")
    rules = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"policies.rules.{info.name}")
        rule = getattr(module, "RULE", None)
        if not isinstance(rule, Rule):
            raise TypeError(f"policies/rules/{info.name}.py defines no RULE")
        if rule.name.replace("-", "_") != info.name:
            raise ValueError(
                f"policies/rules/{info.name}.py holds rule {rule.name}: one rule per module, named alike"
            )
        rules.append(rule)
    return sorted(rules, key=lambda r: r.name)


# --- the offline graph ----------------------------------------------------------------------


def resources_from_graph(graph: Mapping[str, Any]) -> list[Resource]:
    """The resources of a graph written by ``llmkit plan --json`` (schema llmkit.plan/v1)."""
    entries = graph.get("resources")
    if graph.get("schema") != "llmkit.plan/v1" or not isinstance(entries, list):
        raise ConfigError(
            key="graph",
            value=graph.get("schema"),
            accepted="a graph written by llmkit plan --json (schema llmkit.plan/v1)",
            message="not an llmkit plan graph",
        )
    providers = {
        f"{e['urn']}::{e.get('id')}": e.get("inputs") or {}
        for e in entries
        if str(e.get("type", "")).startswith("pulumi:providers:")
    }

    def props(entry: Mapping[str, Any]) -> dict[str, Any]:
        # The ARN the provider assigned is an output; CrossGuard's stack policies see it too.
        values = dict(entry.get("inputs") or {})
        if entry.get("arn") and "arn" not in values:
            values["arn"] = entry["arn"]
        return values

    return [
        Resource(
            type=e["type"],
            name=e["name"],
            urn=e["urn"],
            props=props(e),
            id=e.get("id"),
            provider=providers.get(e.get("provider") or ""),
            custom=bool(e.get("custom", True)),
        )
        for e in entries
    ]
