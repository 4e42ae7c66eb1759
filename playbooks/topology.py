"""Who is where in the inventory: groups, addresses and ports the deploys share.

The reverse proxy, the gateway, the firewall and the terminators all need to know which hosts
serve models, which are proxies or gateways, and at which address and port each is reached. That
knowledge lives here, once; this module never imports a deploy: the deploys import it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pyinfra import host

from llmkit.config import Gateway, from_mapping
from llmkit.errors import ConfigError, ConfigErrors
from llmkit.gateway import litellm_release

# The inventory's groups (AWS model hosts are in ``model_<slug>``) live in llmkit.groups, shared
# with the planners; the deploys may import them from here.
from llmkit.groups import GATEWAY_GROUP as GATEWAY_GROUP
from llmkit.groups import GPU_GROUP as GPU_GROUP
from llmkit.groups import MODEL_GROUP_PREFIX as MODEL_GROUP_PREFIX
from llmkit.groups import PROXY_GROUP as PROXY_GROUP
from llmkit.groups import is_model_host as is_model_host

#: The name the proxy verifies on every model host's certificate (a DNS SAN they all carry).
UPSTREAM_TLS_NAME = "model.llmkit.internal"
#: The name the proxy verifies on every gateway's certificate (with gateways in the inventory).
GATEWAY_TLS_NAME = "gateway.llmkit.internal"
HTTPS_PORT = 443


# --- addresses ------------------------------------------------------------------------------------


def socket_address(address: str, port: int) -> str:
    """``address:port`` for nginx, with IPv6 addresses in brackets."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return f"{address}:{port}"
    return f"[{parsed}]:{port}" if parsed.version == 6 else f"{parsed}:{port}"


def model_host_address(name: str, data: Mapping[str, Any]) -> str:
    """The address a model host serves on: ``model_bind_address``, else ``ssh_hostname``, else its name."""
    address = data.get("model_bind_address") or data.get("ssh_hostname") or name
    address = str(address)
    if address.startswith("@") or not re.match(r"^[A-Za-z0-9.:_-]+$", address):
        raise ValueError(
            f"model host {name}: cannot tell its address ({address!r}); "
            "set model_bind_address in its host data"
        )
    return address


# --- model hosts ---------------------------------------------------------------------------------


def model_hosts() -> list[tuple[str, dict[str, Any]]]:
    """(name, data) of every host in the gpu group or a ``model_<slug>`` group, in inventory order."""
    seen: dict[str, dict[str, Any]] = {}
    for group in [GPU_GROUP, *sorted(g for g in host.inventory.groups if g.startswith(MODEL_GROUP_PREFIX))]:
        for member in host.inventory.get_group(group, []):
            seen.setdefault(member.name, member.data.dict())
    return list(seen.items())


# --- gateways --------------------------------------------------------------------------------------


def gateway_config(value: Any, source: str = "host data") -> Gateway:
    """The ``gateway`` host data as a validated ``llmkit.config.Gateway``; errors name the key."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            "gateway",
            value,
            "a mapping with the keys of the stack's llmkit:gateway section: "
            + ", ".join(Gateway.model_fields),
            "required on gateway hosts" if value is None else "not a mapping",
            source=source,
        )
    try:
        # The stack schema validates the section exactly as a stack's llmkit:gateway; only its
        # problems matter here (the stack's own required keys are absent on purpose).
        from_mapping({"llmkit:gateway": dict(value)}, source=source)
    except ConfigErrors as exc:
        mine = [
            ConfigError(e.key.removeprefix("llmkit:"), e.value, e.accepted, e.problem, source=source)
            for e in exc.errors
            if e.key == "llmkit:gateway" or e.key.startswith(("llmkit:gateway.", "llmkit:gateway["))
        ]
        if mine:
            raise ConfigErrors(mine, source=source) from None
    return Gateway.model_validate(dict(value))


def gateway_port(data: Mapping[str, Any]) -> int:
    """``gateway_port``, or the pinned LiteLLM release's port (llmkit/data/gateway.yaml)."""
    value = data.get("gateway_port")
    if value is None:
        return litellm_release().port
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError("gateway_port", value, "a TCP port 1-65535", "invalid port")
    return value


def gateway_members() -> list[tuple[str, dict[str, Any]]]:
    """(name, data) of every host in the ``gateway`` group, in inventory order."""
    return [(member.name, member.data.dict()) for member in host.inventory.get_group(GATEWAY_GROUP, [])]


def gateway_upstream(name: str, data: Mapping[str, Any]) -> str:
    """Where a proxy reaches a gateway: ``gateway_bind_address``, else ``ssh_hostname``, else its name."""
    address = str(data.get("gateway_bind_address") or data.get("ssh_hostname") or name)
    if address.startswith("@") or not re.match(r"^[A-Za-z0-9.:_-]+$", address):
        raise ValueError(
            f"gateway host {name}: cannot tell its address ({address!r}); "
            "set gateway_bind_address in its host data"
        )
    return socket_address(address, gateway_port(data))


def admin_cidrs(members: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """``gateway.admin_cidrs`` of the gateway hosts (they must agree): who may use the management API."""
    found: dict[tuple[str, ...], str] = {}
    for name, data in members:
        config = gateway_config(data.get("gateway"), f"host data of {name}")
        found.setdefault(tuple(str(c) for c in config.admin_cidrs), name)
    if len(found) > 1:
        raise ConfigError(
            "gateway.admin_cidrs",
            [list(k) for k in found],
            "the same list on every gateway host (put gateway in the gateway group's data)",
            f"the gateway hosts disagree ({', '.join(found.values())})",
        )
    return list(next(iter(found))) if found else []
