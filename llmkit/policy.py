"""The policy engine: llmkit's rules, written once, run by CrossGuard and offline.

A rule (:class:`Rule`) is plain data plus a check function over a neutral view of resources
(:class:`Resource`, :class:`Stack`): the type token, the name, the URN, the properties in
camelCase (what CrossGuard and the offline graph both carry), the resource's id and its
provider's properties. The same rule objects are

- wrapped into a Pulumi CrossGuard ``PolicyPack`` by ``policies/__main__.py`` (through
  :mod:`llmkit.crossguard`), which gates ``pulumi preview/up --policy-pack policies``;
- evaluated here by :func:`evaluate` over the graph that ``llmkit plan`` records, so a security
  review needs no cloud credentials.

The rules live in ``policies/rules/``, one module per rule, each defining ``RULE``; they import
this engine, and it never imports them: callers pass the rules in (``policies.rules.load_rules``).

Unknown values (a property computed by the cloud, not known at preview; ``"[unknown]"`` in an
offline graph) never count as compliant or as a violation: reading one raises :class:`Unknown`,
and the rule is skipped for that resource (reported as skipped).

A stack check may report the stack itself rather than one of its resources (``None`` in place
of the resource): that is how a rule says that something the stack must have is missing. Offline
such a finding is a :class:`Violation` of :data:`STACK_TYPE` with no URN; under CrossGuard it is
reported with no URN, as CrossGuard reports stack-level violations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmkit.errors import ConfigError, LlmkitError

UNKNOWN = "[unknown]"
#: The type and name a finding about the whole stack (something missing) is reported under.
STACK_TYPE = "pulumi:pulumi:Stack"
STACK_NAME = "(the stack)"
GRAPH_SCHEMA = "llmkit.plan/v1"
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
    dependencies: tuple[str, ...] = ()  # the URNs of the resources it depends on

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
#: A stack check yields (resource, message), or (None, message) for the stack as a whole.
StackCheck = Callable[[Stack, Mapping[str, Any]], Iterable[tuple[Resource | None, str]]]


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
    urn: str  # "" for a finding about the whole stack
    message: str

    @property
    def of_stack(self) -> bool:
        """Whether the finding is about the stack as a whole (something it lacks)."""
        return not self.urn and self.resource_type == STACK_TYPE

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


class RuleFailed(Exception):
    """A rule raised while reading the resources: a malformed graph, or a bug in the rule.

    ``llmkit policy check`` reports it as a bad graph (exit 2, naming the file, the rule and the
    resource); elsewhere it keeps its cause for the traceback.
    """

    def __init__(self, rule: str, urn: str | None, cause: BaseException) -> None:
        self.rule = rule
        self.urn = urn
        self.cause = cause
        where = f"resource {urn}" if urn else "the stack"
        super().__init__(f"rule {rule} failed on {where}: {type(cause).__name__}: {cause}")


def _run_resource_rule(rule: Rule, resource: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    assert rule.check is not None
    yield from rule.check(resource, config)


def _guarded(rule: Rule, urn: str | None, check: Callable[..., Iterable[Any]], *args: Any) -> list[Any]:
    """``list(check(*args))``; an exception other than Unknown or a user error is :class:`RuleFailed`."""
    try:
        return list(check(*args))
    except (Unknown, LlmkitError):
        raise
    except Exception as exc:
        raise RuleFailed(rule.name, urn, exc) from exc


def evaluate(
    resources: Sequence[Resource],
    rules: Sequence[Rule],
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """Run ``rules`` over ``resources``; ``config`` is {rule name: {setting: value}}."""
    rules = list(rules)
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

    def add(rule: Rule, resource: Resource | None, message: str) -> None:
        violations.append(
            Violation(
                rule.name,
                rule.severity,
                rule.enforcement,
                resource.type if resource else STACK_TYPE,
                resource.name if resource else STACK_NAME,
                resource.urn if resource else "",
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
                    messages = _guarded(rule, resource.urn, _run_resource_rule, rule, resource, settings)
                except Unknown:
                    skipped.append((rule.name, resource.urn))
                    continue
                for message in messages:
                    add(rule, resource, message)
        else:
            assert rule.check_stack is not None
            try:
                found = _guarded(rule, None, rule.check_stack, stack, settings)
            except Unknown:
                skipped.append((rule.name, "(stack)"))
                continue
            for resource, message in found:
                add(rule, resource, message)
    return Report(violations, skipped, rules)


# --- the offline graph ----------------------------------------------------------------------

_GRAPH_ACCEPTED = f"a graph written by llmkit plan --json (schema {GRAPH_SCHEMA})"
# What each resource entry holds: (JSON types accepted, required, in words).
_ENTRY_FIELDS: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "urn": ((str,), True, "a string"),
    "type": ((str,), True, "a string"),
    "name": ((str,), True, "a string"),
    "id": ((str, type(None)), False, "a string or null"),
    "arn": ((str, type(None)), False, "a string or null"),
    "provider": ((str, type(None)), False, "a string or null"),
    "parent": ((str, type(None)), False, "a string or null"),
    "custom": ((bool,), False, "true or false"),
    "dependencies": ((list,), False, "a list of URN strings"),
    "inputs": ((dict, type(None)), False, "an object or null"),
}


def _bad_graph(key: str, value: Any, accepted: str, message: str, source: str | None) -> ConfigError:
    return ConfigError(key=key, value=value, accepted=accepted, message=message, source=source)


def _check_entry(index: int, entry: Any, source: str | None) -> None:
    where = f"resources[{index}]"
    if not isinstance(entry, dict):
        raise _bad_graph(where, entry, "an object per resource", "a resource is not a JSON object", source)
    for key, (types, required, words) in _ENTRY_FIELDS.items():
        if key not in entry:
            if required:
                raise _bad_graph(f"{where}.{key}", entry, words, f"the resource has no {key}", source)
            continue
        value = entry[key]
        if not isinstance(value, types):
            raise _bad_graph(f"{where}.{key}", value, words, f"{key} has the wrong type", source)
    if not entry["urn"] or not entry["type"]:
        raise _bad_graph(f"{where}.urn", entry, "a non-empty urn and type", "empty urn or type", source)
    for n, dep in enumerate(entry.get("dependencies") or []):
        if not isinstance(dep, str):
            raise _bad_graph(f"{where}.dependencies[{n}]", dep, "a URN string", "not a URN", source)


def check_graph(graph: Any, source: str | None = None) -> list[dict[str, Any]]:
    """The resource entries of ``graph``, after checking its shape; :class:`ConfigError` if malformed.

    ``source`` (the file's name) starts the error's message. Only the shape is checked: the
    resources' inputs are whatever the program gave, and a rule that cannot read them raises
    :class:`RuleFailed` in :func:`evaluate`.
    """
    if not isinstance(graph, dict):
        kind = "a list" if isinstance(graph, list) else type(graph).__name__
        raise _bad_graph("graph", kind, "a JSON object: " + _GRAPH_ACCEPTED, "not a JSON object", source)
    if graph.get("schema") != GRAPH_SCHEMA:
        raise _bad_graph(
            "graph.schema", graph.get("schema"), _GRAPH_ACCEPTED, "not an llmkit plan graph", source
        )
    entries = graph.get("resources")
    if not isinstance(entries, list):
        raise _bad_graph(
            "graph.resources",
            entries,
            "a list of resources (empty for a stack of none)",
            "no resource list",
            source,
        )
    for index, entry in enumerate(entries):
        _check_entry(index, entry, source)
    return entries


def resources_from_graph(graph: Mapping[str, Any], source: str | None = None) -> list[Resource]:
    """The resources of a graph written by ``llmkit plan --json`` (schema llmkit.plan/v1).

    A malformed graph raises :class:`ConfigError` naming ``source`` and what is wrong.
    """
    entries = check_graph(graph, source)
    providers = {
        f"{e['urn']}::{e.get('id')}": e.get("inputs") or {}
        for e in entries
        if e["type"].startswith("pulumi:providers:")
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
            custom=e.get("custom", True),
            dependencies=tuple(e.get("dependencies") or ()),
        )
        for e in entries
    ]
