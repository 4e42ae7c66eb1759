"""The whole site: every deploy a host needs, chosen by its inventory groups.

Run it from the repository root::

    pyinfra playbooks/inventories/onprem.example.py playbooks/site.py

or, as the AWS user data does, from the playbooks directory (``--chdir``), where pyinfra also
finds ``group_data/``::

    pyinfra --yes --chdir <bundle>/playbooks /etc/llmkit/inventory.py site.py

What runs where (in this order):

- every host, first: ``hardening()`` (key-only SSH, security updates) and ``firewall()``
  (nftables, drop by default);
- ``gpu`` hosts, and the AWS model hosts (groups ``model_<slug>``): ``gpu_driver()``, ``cuda()``,
  ``container_toolkit()``, ``model_cache()`` (the AWS hosts' model volume, mounted where Ollama
  keeps models; nothing elsewhere), ``ollama()`` (on 127.0.0.1 only), ``models()``, ``tls_terminator()``
  (mTLS on ``model_port`` at the model-tier address);
- ``gateway`` hosts: ``gateway()`` (LiteLLM's proxy: virtual keys, routing and retries over the
  model hosts, spend logs in PostgreSQL);
- ``proxy`` hosts: ``reverse_proxy()`` (TLS 1.3, client CIDRs, rate limits, upstreams = the
  gateway hosts when the inventory has any, else the gpu hosts);
- every host, last: ``monitoring()`` (exporters; the ``monitoring`` hosts scrape them).

Hardening and the firewall come first so a host is locked down before any service listens.

Defaults: ``group_data/all.py``. pyinfra loads it only when it finds it (``--chdir playbooks`` or
``--group-data playbooks/group_data``); otherwise this file fills in every key a host lacks from
it, for every host of the inventory (a proxy reads its upstreams' data), before any deploy runs.
Keys the inventory sets are never touched.
"""

from __future__ import annotations

import copy
import importlib
import runpy
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state, host, state

# The deploys are imported as ``playbooks.deploys.<name>``: make the directory above this one
# importable when pyinfra runs with ``--chdir playbooks`` (it only adds the working directory).
# First on the path: the bundle's own playbooks and llmkit, never another copy that happens to
# be importable (an activated virtualenv with llmkit installed, say).
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) in sys.path:
    sys.path.remove(str(_REPO))
sys.path.insert(0, str(_REPO))

from llmkit.groups import (  # noqa: E402  (after the path above: the bundle's own llmkit)
    GATEWAY_GROUP,
    PROXY_GROUP,
    is_model_host,
)

DEPLOYS_PACKAGE = "playbooks.deploys"
GROUP_DATA_ALL = Path(__file__).resolve().parent / "group_data" / "all.py"

Step = tuple[str, str]
"""A deploy: (module under ``playbooks.deploys``, function in it)."""

FIRST: tuple[Step, ...] = (("hardening", "hardening"), ("firewall", "firewall"))
GPU: tuple[Step, ...] = (
    ("gpu_driver", "gpu_driver"),
    ("cuda", "cuda"),
    ("container_toolkit", "container_toolkit"),
    ("model_cache", "model_cache"),
    ("ollama", "ollama"),
    ("models", "models"),
    ("reverse_proxy", "tls_terminator"),
)
GATEWAY: tuple[Step, ...] = (("gateway", "gateway"),)
PROXY: tuple[Step, ...] = (("reverse_proxy", "reverse_proxy"),)
LAST: tuple[Step, ...] = (("monitoring", "monitoring"),)


def is_gpu_host(groups: Iterable[str]) -> bool:
    """In the ``gpu`` group, or an AWS model host (group ``model_<slug>``)."""
    return is_model_host(groups)


def steps_for(groups: Iterable[str]) -> list[Step]:
    """The deploys a host in ``groups`` gets, in the order they run."""
    names = list(groups)
    steps = list(FIRST)
    if is_gpu_host(names):
        steps += GPU
    if GATEWAY_GROUP in names:
        steps += GATEWAY
    if PROXY_GROUP in names:
        steps += PROXY
    return steps + list(LAST)


@cache
def _defaults_of(path: str) -> Mapping[str, Any]:
    namespace = runpy.run_path(path)
    return types.MappingProxyType(
        {
            key: value
            for key, value in namespace.items()
            if not key.startswith("__")
            and not isinstance(value, types.ModuleType | types.FunctionType | type)
        }
    )


def group_defaults(path: Path = GROUP_DATA_ALL) -> dict[str, Any]:
    """The host-data defaults of ``group_data/all.py``, as pyinfra reads them (a fresh copy)."""
    return copy.deepcopy(dict(_defaults_of(str(path))))


def fill_defaults(hosts: Iterable[Host], defaults: Mapping[str, Any]) -> None:
    """Give each host every default it lacks, below everything the inventory sets."""
    missing = object()
    for member in hosts:
        for key, value in defaults.items():
            if member.data.get(key, missing) is missing:
                setattr(member.data, key, copy.deepcopy(value))


def deploy_function(step: Step) -> Callable[[], Any]:
    module_name, function_name = step
    module = importlib.import_module(f"{DEPLOYS_PACKAGE}.{module_name}")
    function: Callable[[], Any] = getattr(module, function_name)
    return function


def _call(module_name: str, function_name: str) -> None:
    deploy_function((module_name, function_name))()


def run(current: Host) -> None:
    """Fill in the defaults (every host), then run the current host's deploys (see steps_for).

    One call per line: in CLI mode pyinfra identifies an operation across hosts by the line
    numbers of the calls that made it. Called from one line in a loop, two deploys' operations
    on different hosts could get the same identity (one operation, or an ordering cycle).
    """
    fill_defaults(current.inventory, group_defaults())
    groups = list(current.groups)
    gpu, gateway, proxy = is_gpu_host(groups), GATEWAY_GROUP in groups, PROXY_GROUP in groups
    _call("hardening", "hardening")
    _call("firewall", "firewall")
    if gpu:
        _call("gpu_driver", "gpu_driver")
        _call("cuda", "cuda")
        _call("container_toolkit", "container_toolkit")
        _call("model_cache", "model_cache")
        _call("ollama", "ollama")
        _call("models", "models")
        _call("reverse_proxy", "tls_terminator")
    if gateway:
        _call("gateway", "gateway")
    if proxy:
        _call("reverse_proxy", "reverse_proxy")
    _call("monitoring", "monitoring")


def run_by_pyinfra() -> bool:
    """True while pyinfra executes this file for a host (not when a test or a tool imports it)."""
    if not (ctx_state.isset() and ctx_host.isset()):
        return False
    executing = getattr(state, "current_exec_filename", None)
    return bool(executing) and Path(str(executing)).resolve() == Path(__file__).resolve()


if run_by_pyinfra():
    run(host)
