"""Every container of every workload runs as a non-root user.

Follows the Pod Security Standards restricted controls "Running as Non-root" and "Running as
Non-root user":

- each container's effective ``runAsNonRoot`` must be true: its own ``securityContext.runAsNonRoot``
  when set (a container overrides the pod), else the pod's ``securityContext.runAsNonRoot``; unset at
  both levels is a violation (the kubelet then starts the image's user, root by default);
- ``runAsUser: 0`` is a violation wherever it is written, in the pod's or a container's security
  context, even where a container overrides the pod's value (as PSS judges it).

All three container kinds are checked (``containers``, ``initContainers``, ``ephemeralContainers``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, known
from policies.k8s import WORKLOADS, pod_template, show
from policies.support import truthy

ACCEPTED_NONROOT = "accepted: true in the container's or the pod's securityContext"
ACCEPTED_UID = "accepted: a non-zero UID, or unset with runAsNonRoot: true"


def is_root(uid: Any) -> bool:
    uid = known(uid)
    return not isinstance(uid, bool) and str(uid).strip() == "0"


def check(workload: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    pod = pod_template(workload)
    if is_root(pod.spec("securityContext", "runAsUser")):
        yield f"pod securityContext: runAsUser is 0 (root); {ACCEPTED_UID}"
    pod_nonroot = pod.spec("securityContext", "runAsNonRoot")
    for container in pod.containers():
        if is_root(container.get("securityContext", "runAsUser")):
            yield f"{container}: securityContext.runAsUser is 0 (root); {ACCEPTED_UID}"
        own = container.get("securityContext", "runAsNonRoot")
        if own is not None:
            if not truthy(own):
                yield f"{container}: securityContext.runAsNonRoot is {show(own)}; {ACCEPTED_NONROOT}"
        elif pod_nonroot is None:
            yield (
                f"{container}: runAsNonRoot is unset in the container's and the pod's securityContext; "
                f"{ACCEPTED_NONROOT}"
            )
        elif not truthy(pod_nonroot):
            yield (
                f"{container}: runAsNonRoot is unset, and the pod's securityContext.runAsNonRoot is "
                f"{show(pod_nonroot)}; {ACCEPTED_NONROOT}"
            )


RULE = Rule(
    name="k8s-core-pod-enforce-nonroot",
    description="Every container runs with runAsNonRoot: true (container or pod level); no runAsUser is 0.",
    why="A model server running as root turns any remote-code bug in the inference stack (pickle loading, "
    "template injection, a CUDA driver flaw) into root in the container, one step from the node.",
    severity="high",
    remediation="Set securityContext.runAsNonRoot: true and a non-zero runAsUser in the pod securityContext "
    "(or on each container), and build images whose USER is not root.",
    frameworks=(
        "CIS Kubernetes Benchmark v1.10 5.2.7",
        "PSS Restricted: Running as Non-root",
        "PSS Restricted: Running as Non-root user",
        "NSA-CISA Kubernetes Hardening Guidance v1.2: Non-root containers",
    ),
    resource_types=WORKLOADS,
    check=check,
)
