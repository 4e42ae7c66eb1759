"""No container can gain privileges: no setuid escalation, all capabilities dropped.

Follows the Pod Security Standards restricted controls "Privilege Escalation" and "Capabilities"
for every container kind (``containers``, ``initContainers``, ``ephemeralContainers``):

- ``securityContext.allowPrivilegeEscalation`` must be explicitly false: unset is a violation,
  because Kubernetes then lets a process gain more privileges than its parent (setuid binaries,
  file capabilities);
- ``securityContext.capabilities.drop`` must contain ``ALL`` (PSS restricted): escalation is
  also what a container does with the runtime's default capabilities (NET_RAW, SETUID, ...);
- ``securityContext.capabilities.add`` may only name capabilities in the setting
  ``allowed_capabilities`` (default: NET_BIND_SERVICE, the only one PSS restricted allows), so
  SYS_ADMIN and friends are violations. Names are compared exactly, as PSS admission does.

Pods with ``spec.os.name: windows`` are skipped: both controls are Linux-only in PSS, and the API
rejects these fields on Windows pods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting, as_list, known
from policies.k8s import WORKLOADS, is_false, pod_template, show

ACCEPTED_FALSE = "accepted: false"
ACCEPTED_DROP = 'accepted: a list containing "ALL"'


def check(workload: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    pod = pod_template(workload)
    if pod.windows:
        return
    allowed = [str(c) for c in config["allowed_capabilities"]]
    accepted_add = f"accepted: {', '.join(allowed) or 'none'}"
    for container in pod.containers():
        escalation = container.get("securityContext", "allowPrivilegeEscalation")
        if escalation is None:
            yield (
                f"{container}: securityContext.allowPrivilegeEscalation is unset "
                f"(Kubernetes defaults it to true); {ACCEPTED_FALSE}"
            )
        elif not is_false(escalation):
            yield (
                f"{container}: securityContext.allowPrivilegeEscalation is {show(escalation)}; "
                f"{ACCEPTED_FALSE}"
            )
        drop = [str(known(c)) for c in as_list(container.get("securityContext", "capabilities", "drop"))]
        if "ALL" not in drop:
            found = show(drop) if drop else "unset"
            yield f"{container}: securityContext.capabilities.drop is {found}; {ACCEPTED_DROP}"
        added = [str(known(c)) for c in as_list(container.get("securityContext", "capabilities", "add"))]
        extra = [c for c in added if c not in allowed]
        if extra:
            yield f"{container}: securityContext.capabilities.add has {', '.join(extra)}; {accepted_add}"


RULE = Rule(
    name="k8s-core-pod-disallow-privilege-escalation",
    description="Every container sets allowPrivilegeEscalation: false, drops ALL capabilities and adds none "
    "beyond the allowed ones.",
    why="A setuid binary or an added capability (SYS_ADMIN, NET_ADMIN, SYS_PTRACE) lets a compromised model "
    "server become root in its container and attack the node's kernel, the GPU driver and its neighbours.",
    severity="high",
    remediation="Set securityContext.allowPrivilegeEscalation: false and capabilities: {drop: [ALL]} on "
    "every container (init and ephemeral ones too); add back only NET_BIND_SERVICE if a port below 1024 "
    "is needed.",
    frameworks=(
        "CIS Kubernetes Benchmark v1.10 5.2.6",
        "CIS Kubernetes Benchmark v1.10 5.2.8",
        "CIS Kubernetes Benchmark v1.10 5.2.9",
        "CIS Kubernetes Benchmark v1.10 5.2.10",
        "PSS Restricted: Privilege Escalation",
        "PSS Restricted: Capabilities",
        "NSA-CISA Kubernetes Hardening Guidance v1.2: Pod security enforcement",
    ),
    resource_types=WORKLOADS,
    check=check,
    settings={
        "allowed_capabilities": Setting(
            {"type": "array", "items": {"type": "string", "pattern": "^[A-Z_]+$"}, "uniqueItems": True},
            ["NET_BIND_SERVICE"],
            "capabilities a container may add after dropping ALL "
            "(PSS restricted allows only NET_BIND_SERVICE)",
        )
    },
)
