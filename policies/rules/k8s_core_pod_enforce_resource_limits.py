"""Every container has CPU and memory limits; every model server has a GPU limit.

- Each entry of ``containers`` and ``initContainers`` sets ``resources.limits.cpu`` and
  ``resources.limits.memory`` (``ephemeralContainers`` are skipped: the API forbids resources on them).
- A **model server** is a pod (a ``Pod``, or the pod template of any other workload) whose labels
  contain every key/value pair of the setting ``model_server_labels`` (default
  ``{"app.kubernetes.io/component": "model-server"}``) **and** whose workload lands in a namespace
  listed in the setting ``model_namespaces`` (default ``["llmkit-model"]``). Both must hold: the
  label picks the server out of the helpers that share its namespace (downloaders, exporters), and
  the namespace is where the GPU tier lives. An empty ``model_server_labels`` makes every pod in a
  model namespace a model server.
- At least one of a model server's ``containers`` sets ``resources.limits`` ``nvidia.com/gpu`` to a
  whole number of at least 1. Not every container: a sidecar (auth proxy, metrics exporter) must
  not hold a GPU of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting
from policies.k8s import WORKLOADS, PodTemplate, pod_template, show

GPU = "nvidia.com/gpu"


def whole_gpus(value: Any) -> int | None:
    """The GPU count a limit asks for, or None when it is not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def is_model_server(pod: PodTemplate, config: Mapping[str, Any]) -> bool:
    labels = pod.labels()
    wanted = config["model_server_labels"]
    return all(labels.get(k) == v for k, v in wanted.items()) and pod.namespace in config["model_namespaces"]


def check(workload: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    pod = pod_template(workload)
    for container in pod.containers("containers", "initContainers"):
        missing = [k for k in ("cpu", "memory") if container.get("resources", "limits", k) in (None, "")]
        if missing:
            yield (
                f"{container}: resources.limits has no {' and no '.join(missing)}; "
                "accepted: both limits.cpu and limits.memory set"
            )
    if not is_model_server(pod, config):
        return
    found = []
    for container in pod.containers("containers"):
        limit = container.get("resources", "limits", GPU)
        if limit is None:
            continue
        count = whole_gpus(limit)
        if count is not None and count >= 1:
            return
        found.append(f"{container} has {show(limit)}")
    seen = f" ({'; '.join(found)})" if found else ""
    yield (
        f"model server in namespace {pod.namespace}: no container sets resources.limits {GPU} to at least 1"
        f"{seen}; accepted: a whole number >= 1 on the container that serves the model"
    )


RULE = Rule(
    name="k8s-core-pod-enforce-resource-limits",
    description="Every container sets CPU and memory limits; every model server pod limits nvidia.com/gpu.",
    why="An unbounded container (a runaway prompt, a context-length bomb, a memory leak in the server) "
    "starves its neighbours on a shared GPU node; a model server without a GPU limit is not isolated by "
    "the device plugin and may see every GPU on the node.",
    severity="medium",
    remediation="Set resources.limits.cpu and resources.limits.memory on every container and init container, "
    "and resources.limits nvidia.com/gpu (sized by llmkit.sizing) on the container that serves the model.",
    frameworks=(
        "NSA-CISA Kubernetes Hardening Guidance v1.2: Resource policies",
        "GDPR Art. 32(1)(b)",
    ),
    resource_types=WORKLOADS,
    check=check,
    settings={
        "model_server_labels": Setting(
            {"type": "object", "additionalProperties": {"type": "string"}},
            {"app.kubernetes.io/component": "model-server"},
            "pod labels that mark a model server (all must match; the pod must also be in a model namespace)",
        ),
        "model_namespaces": Setting(
            {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            ["llmkit-model"],
            "namespaces whose labelled pods are model servers that must limit nvidia.com/gpu",
        ),
    },
)
