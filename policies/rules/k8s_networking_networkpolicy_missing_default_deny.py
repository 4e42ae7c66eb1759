"""Every model namespace the stack uses has a default-deny NetworkPolicy.

A namespace is in scope when it is listed in the setting ``model_namespaces`` (default
``["llmkit-model"]``) and the stack either creates it (a ``Namespace`` whose ``metadata.name`` is
that name) or deploys a workload into it (any type of :data:`policies.k8s.WORKLOADS`).

A NetworkPolicy in that namespace is a default-deny when

- its ``podSelector`` selects every pod (``{}``: no ``matchLabels``, no ``matchExpressions``);
- its ``policyTypes`` contain both ``Ingress`` and ``Egress`` (unset means Ingress only, plus
  Egress when egress rules are given, so it must be written out);
- none of its ``ingress``/``egress`` rules allows all traffic: a rule without ``ports`` whose peers
  (``from``/``to``) are missing or empty, or include an ``ipBlock`` of 0.0.0.0/0 or ::/0, or a
  ``namespaceSelector: {}`` without a narrowing ``podSelector`` (every pod of every namespace).
  Narrow rules (DNS egress to kube-system, a port) may live in it; the usual form has none.

Other NetworkPolicies may then allow specific traffic. The violation is reported on the
``Namespace`` resource when the stack creates it, else on every workload deployed into it; the
message says what falls short in the NetworkPolicies that select every pod there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting, Stack, as_list, known
from policies.k8s import NAMESPACES, NETWORK_POLICIES, WORKLOADS, namespace_of, show
from policies.support import WORLD

ACCEPTED = (
    "accepted: a NetworkPolicy there with podSelector: {}, policyTypes: [Ingress, Egress] "
    "and no rule that allows all traffic"
)


def selects_all(selector: Any) -> bool:
    if selector is None:
        return True  # an absent podSelector is the empty selector
    if not isinstance(selector, Mapping):
        return False
    return not known(selector.get("matchLabels")) and not as_list(selector.get("matchExpressions"))


def opens_all(policy: Resource, direction: str, index: int) -> str | None:
    """What rule ``direction[index]`` lets through when it allows all traffic; None when it is narrow."""
    rule = ("spec", direction, index)
    if as_list(policy.get(*rule, "ports")):
        return None
    peers_key = "from" if direction == "ingress" else "to"
    peers = as_list(policy.get(*rule, peers_key))
    if not peers:
        return f"all traffic (no {peers_key} peers, no ports)"
    for j in range(len(peers)):
        peer = (*rule, peers_key, j)
        cidr = policy.get(*peer, "ipBlock", "cidr")
        if cidr in WORLD:
            return f"all traffic {peers_key} {cidr}"
        namespaces = policy.get(*peer, "namespaceSelector")
        pods = policy.get(*peer, "podSelector")
        if namespaces is not None and selects_all(namespaces) and selects_all(pods):
            return f"all traffic {peers_key} every pod in every namespace"
    return None


def gaps(policy: Resource) -> list[str]:
    """Why ``policy`` (whose podSelector selects every pod) is not a default-deny; [] when it is."""
    found = []
    types = [str(t) for t in as_list(policy.get("spec", "policyTypes"))]
    missing = [t for t in ("Ingress", "Egress") if t not in types]
    if missing:
        written = show(types) if types else "unset"
        found.append(f"policyTypes is {written}, without {' and '.join(missing)}")
    for direction in ("ingress", "egress"):
        for index in range(len(as_list(policy.get("spec", direction)))):
            opened = opens_all(policy, direction, index)
            if opened:
                found.append(f"{direction}[{index}] allows {opened}")
    return found


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    wanted = [str(n) for n in config["model_namespaces"]]
    # namespace -> what a violation is reported on: the Namespace the stack creates, else its workloads
    targets: dict[str, list[Resource]] = {}
    for namespace in stack.of_type(*NAMESPACES):
        name = namespace.get("metadata", "name")
        if name in wanted:
            targets[str(name)] = [namespace]
    created = set(targets)
    for workload in stack.of_type(*WORKLOADS):
        name = namespace_of(workload)
        if name in wanted and name not in created:
            targets.setdefault(name, []).append(workload)
    policies = stack.of_type(*NETWORK_POLICIES)
    for name, resources in targets.items():
        shortfalls = []
        for policy in policies:
            if namespace_of(policy) != name or not selects_all(policy.get("spec", "podSelector")):
                continue
            why = gaps(policy)
            if not why:
                break
            shortfalls.append(f"{policy.name}: {'; '.join(why)}")
        else:
            near = f" ({' | '.join(shortfalls)})" if shortfalls else ""
            for resource in resources:
                yield resource, f"namespace {name} has no default-deny NetworkPolicy{near}; {ACCEPTED}"


RULE = Rule(
    name="k8s-networking-networkpolicy-missing-default-deny",
    description="Every model namespace the stack creates or deploys into has a default-deny NetworkPolicy "
    "for ingress and egress.",
    why="Without a default-deny every pod in the cluster can reach the model servers and they can reach "
    "anything, so one compromised pod can query or exfiltrate models and prompts, and a compromised model "
    "server can call out to the internet.",
    severity="high",
    remediation="Create a NetworkPolicy in each model namespace with podSelector: {} and policyTypes: "
    "[Ingress, Egress] and no rules, then allow only the app tier to the model port (and DNS) in further "
    "NetworkPolicies, as the AWS model tier's security groups do.",
    frameworks=(
        "CIS Kubernetes Benchmark v1.10 5.3.2",
        "NSA-CISA Kubernetes Hardening Guidance v1.2: Network policies",
        "GDPR Art. 32(1)(b)",
    ),
    check_stack=check,
    settings={
        "model_namespaces": Setting(
            {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            ["llmkit-model"],
            "namespaces that need a default-deny NetworkPolicy when the stack creates or deploys into them",
        )
    },
)
