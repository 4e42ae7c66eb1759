"""What the Kubernetes rules share: workload type tokens and a view of the pods a workload runs.

Rules see pulumi-kubernetes 4.x resource inputs, the Kubernetes objects in camelCase (``metadata``,
``spec``). Where the pod a workload runs is described:

- ``Pod``: the resource itself (``metadata``, ``spec``);
- ``Deployment``, ``StatefulSet``, ``DaemonSet``, ``ReplicaSet``, ``ReplicationController``, ``Job``:
  the pod template ``spec.template`` (``metadata``, ``spec``);
- ``CronJob``: ``spec.jobTemplate.spec.template``.

The older API versions pulumi-kubernetes still ships (``apps/v1beta1``, ``apps/v1beta2``,
``extensions/v1beta1``, ``batch/v1beta1``, ``batch/v2alpha1``) have the same shape and are checked
alike. ``*Patch`` resources are not: an absent field in a patch means "left as it is", not the
Kubernetes default, so the rules that treat absence as a violation cannot judge them.

A workload's namespace is its ``metadata.namespace``, else the namespace its provider defaults to
(the pulumi-kubernetes provider's ``namespace`` input), else ``default``. Every read goes through
:meth:`llmkit.policy.Resource.get`, so an unknown value raises :class:`llmkit.policy.Unknown` and
the engine skips the rule for that resource.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from llmkit.policy import Resource, as_list, known

# Where the pod (``metadata`` + ``spec``) sits inside each workload's inputs.
_TEMPLATE = ("spec", "template")
_CRON_TEMPLATE = ("spec", "jobTemplate", "spec", "template")
_APPS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": (),
    "kubernetes:core/v1:ReplicationController": _TEMPLATE,
    **{f"kubernetes:apps/v1:{kind}": _TEMPLATE for kind in _APPS},
    **{f"kubernetes:apps/v1beta1:{kind}": _TEMPLATE for kind in ("Deployment", "StatefulSet")},
    **{f"kubernetes:apps/v1beta2:{kind}": _TEMPLATE for kind in _APPS},
    **{
        f"kubernetes:extensions/v1beta1:{kind}": _TEMPLATE
        for kind in ("Deployment", "DaemonSet", "ReplicaSet")
    },
    "kubernetes:batch/v1:Job": _TEMPLATE,
    "kubernetes:batch/v1:CronJob": _CRON_TEMPLATE,
    "kubernetes:batch/v1beta1:CronJob": _CRON_TEMPLATE,
    "kubernetes:batch/v2alpha1:CronJob": _CRON_TEMPLATE,
}
WORKLOADS = tuple(TEMPLATE_PATHS)
NAMESPACES = ("kubernetes:core/v1:Namespace",)
NETWORK_POLICIES = (
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:extensions/v1beta1:NetworkPolicy",
)

CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")
_KIND = {
    "containers": "container",
    "initContainers": "init container",
    "ephemeralContainers": "ephemeral container",
}


def show(value: Any) -> str:
    """A property value as it reads in a manifest: true, false, 0, "text", ["A", "B"]."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def is_false(value: Any) -> bool:
    """An explicit false (a boolean, or the string "false"); unset is not false."""
    value = known(value)
    return value is False or (isinstance(value, str) and value.lower() == "false")


def namespace_of(resource: Resource) -> str:
    """The namespace a namespaced resource lands in."""
    own = resource.get("metadata", "namespace")
    if own:
        return str(own)
    if resource.provider:
        default = known(resource.provider.get("namespace"))
        if default:
            return str(default)
    return "default"


@dataclass(frozen=True)
class Container:
    """One entry of ``containers``, ``initContainers`` or ``ephemeralContainers``."""

    workload: Resource
    path: tuple[str | int, ...]  # to the container's mapping in the workload's inputs
    field: str
    name: str

    def get(self, *path: str | int, default: Any = None) -> Any:
        return self.workload.get(*self.path, *path, default=default)

    def __str__(self) -> str:
        return f'{_KIND[self.field]} "{self.name}"'


@dataclass(frozen=True)
class PodTemplate:
    """The pod a workload runs: its labels, its spec and its containers."""

    workload: Resource
    path: tuple[str, ...]  # to the object holding the pod's ``metadata`` and ``spec``

    def spec(self, *path: str | int, default: Any = None) -> Any:
        return self.workload.get(*self.path, "spec", *path, default=default)

    def labels(self) -> dict[str, str]:
        raw = self.workload.get(*self.path, "metadata", "labels", default={})
        if not isinstance(raw, Mapping):
            return {}
        return {str(k): str(known(v)) for k, v in raw.items()}

    @property
    def namespace(self) -> str:
        return namespace_of(self.workload)

    @property
    def windows(self) -> bool:
        """Whether the pod declares ``spec.os.name: windows`` (Linux-only controls do not apply)."""
        return self.spec("os", "name") == "windows"

    def containers(self, *fields: str) -> Iterator[Container]:
        """The containers in ``fields`` (all three kinds when none are named), in manifest order."""
        for field in fields or CONTAINER_FIELDS:
            for index, _ in enumerate(as_list(self.spec(field))):
                path: tuple[str | int, ...] = (*self.path, "spec", field, index)
                name = self.workload.get(*path, "name", default=f"{field}[{index}]")
                yield Container(self.workload, path, field, str(name))


def pod_template(workload: Resource) -> PodTemplate:
    """The pod ``workload`` runs (its type must be one of :data:`WORKLOADS`)."""
    return PodTemplate(workload, TEMPLATE_PATHS[workload.type])
