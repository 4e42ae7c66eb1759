"""Host firewall (nftables): drop by default, open only what each host's role needs, to whom.

Decisions, for reviewers:

- ``policy drop`` on input and forward; output is open (the network, not the host, limits egress).
  Always accepted: established/related traffic, loopback, the ICMP/ICMPv6 messages that keep
  TCP working (errors, packet too big, neighbour discovery) and rate-limited echo.
- SSH only from ``admin_cidrs``; an empty list is refused (it would lock the admins out).
- Proxy hosts: 443 only from ``client_cidrs`` (empty is refused: a proxy nobody may reach).
- GPU hosts (group ``gpu`` or ``model_<slug>``): ``model_port`` only from the proxy hosts'
  addresses, the ``gateway`` group's hosts and ``gateway_hosts``.
- Gateway hosts (group ``gateway``): ``gateway_port`` (LiteLLM) only from the proxy hosts.
- Monitoring: ``node_exporter_port`` on every host, ``gpu_exporter_port`` on GPU hosts,
  ``proxy_metrics_port`` (mtail) on proxies, only from the ``monitoring`` group's hosts.
- Peer hosts are identified by IP address (``ssh_hostname``, else the inventory name): a name that
  is not an address is refused rather than resolved on the controller at deploy time.
- The ruleset lives in its own table (``inet llmkit``), replaced atomically: ``nft -c -f`` checks
  it, then ``nft -f`` loads it, both only when the file changed; ``nftables.service`` loads it at
  boot. Admins must be inside ``admin_cidrs`` before the first run: established sessions survive,
  new ones from elsewhere do not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from playbooks.deploys.gateway import gateway_port
from playbooks.render import render

NFTABLES_CONF = "/etc/nftables.conf"
SSH_PORT = 22
HTTPS_PORT = 443
PROXY_GROUP = "proxy"
GPU_GROUP = "gpu"
MODEL_GROUP_PREFIX = "model_"
MONITORING_GROUP = "monitoring"
GATEWAY_GROUP = "gateway"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rule:
    """Accept new TCP connections to ``port`` from these sources (collapsed, v4 and v6 apart)."""

    comment: str
    port: int
    v4: list[str] = field(default_factory=list)
    v6: list[str] = field(default_factory=list)


def networks(values: Iterable[Any], key: str) -> list[Network]:
    """Parse addresses and CIDRs; a CIDR with host bits set is refused (a likely typo)."""
    if isinstance(values, str):
        raise ValueError(f"{key} must be a list of addresses or CIDRs, got the string {values!r}")
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value), strict=True))
        except ValueError as error:
            raise ValueError(f"{key}: {value!r} is not an IP address or CIDR ({error})") from None
    return out


def peer_address(name: str, data: Mapping[str, Any], group: str) -> Network:
    """A peer host's address as a /32 (/128) network: ``ssh_hostname``, else its inventory name."""
    address = str(data.get("ssh_hostname") or name)
    try:
        return ipaddress.ip_network(address)
    except ValueError:
        raise ValueError(
            f"firewall: host {name} of group {group} has no IP address ({address!r}); "
            "set its ssh_hostname to the address it connects from"
        ) from None


def rule(comment: str, port: int, sources: Sequence[Network]) -> Rule | None:
    """A rule, or None when nobody may connect (no line at all rather than an empty set)."""
    v4 = [str(n) for n in ipaddress.collapse_addresses(n for n in sources if n.version == 4)]
    v6 = [str(n) for n in ipaddress.collapse_addresses(n for n in sources if n.version == 6)]
    if not v4 and not v6:
        return None
    return Rule(comment=comment, port=port, v4=v4, v6=v6)


def _port(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{key} must be a TCP port (1-65535), got {value!r}")
    return value


def roles(groups: Iterable[str]) -> list[str]:
    """The firewall roles of a host from its inventory groups."""
    names = set(groups)
    out = []
    if PROXY_GROUP in names:
        out.append("proxy")
    if GPU_GROUP in names or any(g.startswith(MODEL_GROUP_PREFIX) for g in names):
        out.append("gpu")
    if GATEWAY_GROUP in names:
        out.append("gateway")
    return out


def firewall_context(
    host_name: str,
    groups: Iterable[str],
    data: Mapping[str, Any],
    peers: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
) -> dict[str, Any]:
    """The ruleset template's context.

    ``peers``: (name, data) of the proxy, monitoring and gateway hosts, by group.
    """
    host_roles = roles(groups)
    admin = networks(data.get("admin_cidrs") or [], "admin_cidrs")
    if not admin:
        raise ValueError("admin_cidrs is empty: SSH would be closed to everyone (set the admins' networks)")
    monitoring = [peer_address(n, d, MONITORING_GROUP) for n, d in peers.get(MONITORING_GROUP, [])]
    candidates: list[Rule | None] = [rule("SSH from the admin networks", SSH_PORT, admin)]
    if "proxy" in host_roles:
        clients = networks(data.get("client_cidrs") or [], "client_cidrs")
        if not clients:
            raise ValueError("client_cidrs is empty on a proxy host: 443 would be closed to every client")
        candidates.append(rule("HTTPS from the client networks", HTTPS_PORT, clients))
        metrics_port = _port(data, "proxy_metrics_port")
        candidates.append(rule("Proxy SLO metrics from monitoring", metrics_port, monitoring))
    proxies = [peer_address(n, d, PROXY_GROUP) for n, d in peers.get(PROXY_GROUP, [])]
    if "gateway" in host_roles:
        candidates.append(rule("LLM gateway (LiteLLM) from the proxies", gateway_port(data), proxies))
    if "gpu" in host_roles:
        gateways = [peer_address(n, d, GATEWAY_GROUP) for n, d in peers.get(GATEWAY_GROUP, [])]
        gateways += networks(data.get("gateway_hosts") or [], "gateway_hosts")
        candidates.append(
            rule("Model port from the proxies and gateways", _port(data, "model_port"), proxies + gateways)
        )
    candidates.append(rule("node_exporter from monitoring", _port(data, "node_exporter_port"), monitoring))
    if "gpu" in host_roles:
        candidates.append(rule("GPU exporter from monitoring", _port(data, "gpu_exporter_port"), monitoring))
    return {
        "host_name": host_name,
        "roles": host_roles or ["base"],
        "rules": [r for r in candidates if r is not None],
    }


def render_ruleset(context: Mapping[str, Any]) -> str:
    return render("nftables.conf.j2", **context)


def _group_peers(group: str) -> list[tuple[str, dict[str, Any]]]:
    return [(member.name, member.data.dict()) for member in host.inventory.get_group(group, [])]


@deploy("Host firewall")
def firewall() -> None:
    """nftables: drop by default, the role's ports open to their sources only."""
    context = firewall_context(
        host.name,
        host.groups,
        host.data.dict(),
        {group: _group_peers(group) for group in (PROXY_GROUP, MONITORING_GROUP, GATEWAY_GROUP)},
    )
    apt.packages(name="nftables", packages=["nftables"], update=True, cache_time=3600)
    ruleset = files.put(
        name="nftables ruleset",
        src=StringIO(render_ruleset(context)),
        dest=NFTABLES_CONF,
        user="root",
        group="root",
        mode="600",
    )
    server.shell(
        name="Check, then load the ruleset",
        commands=[f"nft -c -f {NFTABLES_CONF}", f"nft -f {NFTABLES_CONF}"],
        _if=ruleset.did_change,
    )
    systemd.service(name="nftables at boot", service="nftables.service", running=True, enabled=True)
