"""The pyinfra inventory's group names: one home for the planners (``components/fleet.py``,
``llmkit.inventory``) and the deploys (``playbooks/``).

The host bundle ships the ``llmkit`` package and the deploys import this module on the hosts:
it stays standard-library only and Python 3.10-compatible.
"""

from __future__ import annotations

from collections.abc import Iterable

GPU_GROUP = "gpu"
PROXY_GROUP = "proxy"
MONITORING_GROUP = "monitoring"
GATEWAY_GROUP = "gateway"
#: Each served model's hosts form a group ``model_<slug with _ for ->`` (a Python identifier).
MODEL_GROUP_PREFIX = "model_"


def model_group(slug: str) -> str:
    """The inventory group of a model's hosts: ``model_<slug>``, ``-`` written ``_``."""
    return MODEL_GROUP_PREFIX + slug.replace("-", "_")


def is_model_host(groups: Iterable[str]) -> bool:
    """Whether a host in these groups serves a model (the ``gpu`` group or any ``model_*`` one)."""
    return any(g == GPU_GROUP or g.startswith(MODEL_GROUP_PREFIX) for g in groups)
