"""No workload runs a privileged container or shares the node's namespaces.

Checks every workload type (:data:`policies.k8s.WORKLOADS`) and every container kind
(``containers``, ``initContainers``, ``ephemeralContainers``):

- ``securityContext.privileged: true`` on a container (PSS baseline "Privileged Containers");
- ``hostNetwork``, ``hostPID`` or ``hostIPC`` true on the pod spec (PSS baseline "Host Namespaces"):
  they live here rather than in a rule of their own because each one, like a privileged container,
  removes the isolation between the pod and the node; PSS baseline groups them the same way;
- ``securityContext.windowsOptions.hostProcess: true`` on the pod or a container (PSS baseline
  "HostProcess"): the Windows spelling of a privileged container.

Unset and false are both accepted (false is the Kubernetes default for all of them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule
from policies.k8s import WORKLOADS, pod_template, show
from policies.support import truthy

HOST_NAMESPACES = {"hostNetwork": "network", "hostPID": "process ID", "hostIPC": "IPC"}
ACCEPTED = "accepted: false or unset"


def check(workload: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    pod = pod_template(workload)
    for field, what in HOST_NAMESPACES.items():
        value = pod.spec(field)
        if truthy(value):
            yield f"pod spec: {field} is {show(value)}, sharing the node's {what} namespace; {ACCEPTED}"
    host_process = pod.spec("securityContext", "windowsOptions", "hostProcess")
    if truthy(host_process):
        yield f"pod securityContext: windowsOptions.hostProcess is {show(host_process)}; {ACCEPTED}"
    for container in pod.containers():
        privileged = container.get("securityContext", "privileged")
        if truthy(privileged):
            yield f"{container}: securityContext.privileged is {show(privileged)}; {ACCEPTED}"
        host_process = container.get("securityContext", "windowsOptions", "hostProcess")
        if truthy(host_process):
            yield (
                f"{container}: securityContext.windowsOptions.hostProcess is {show(host_process)}; {ACCEPTED}"
            )


RULE = Rule(
    name="k8s-core-pod-disallow-privileged",
    description="No container is privileged and no pod shares the node's network, PID or IPC namespace.",
    why="A privileged container or a pod in the host's namespaces is root on the GPU node: it can read "
    "every other tenant's model weights, prompts and device memory, sniff node traffic and escape the "
    "container.",
    severity="critical",
    remediation="Leave securityContext.privileged, windowsOptions.hostProcess, hostNetwork, hostPID and "
    "hostIPC unset or false; GPU access needs the NVIDIA device plugin's nvidia.com/gpu resource, not a "
    "privileged pod.",
    frameworks=(
        "CIS Kubernetes Benchmark v1.10 5.2.2",
        "CIS Kubernetes Benchmark v1.10 5.2.3",
        "CIS Kubernetes Benchmark v1.10 5.2.4",
        "CIS Kubernetes Benchmark v1.10 5.2.5",
        "PSS Baseline: Privileged Containers",
        "PSS Baseline: Host Namespaces",
        "PSS Baseline: HostProcess",
        "NSA-CISA Kubernetes Hardening Guidance v1.2: Pod security enforcement",
    ),
    resource_types=WORKLOADS,
    check=check,
)
