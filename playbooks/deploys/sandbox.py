"""What the llmkit systemd units share: the IP allow-list of ``IPAddressDeny=any`` units; and
``egress_allow``, the addresses host data lets a host connect to (the model hosts' firewall and
the units that call out take it in).

Every llmkit unit denies all IP traffic (``IPAddressDeny=any``) except with the addresses its
service must talk to (``IPAddressAllow=``), rendered here from host data and the inventory: the
loopback (``localhost``), the unit's own listen address (local clients connect from it), and per
unit the peers it serves or calls (the monitoring hosts for an exporter, the proxies and model
hosts for the gateway...). systemd enforces it with a BPF program on the unit's cgroup (cgroup v2;
where the kernel or manager cannot, systemd says so and runs the unit without it, and the host
firewall still applies).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmkit.errors import ConfigError

LOCALHOST = "localhost"
ANY = "any"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Destination:
    network: Network
    port: int
    protocol: str  # "tcp" | "udp"
    why: str


EGRESS_ACCEPTED = "a list of ADDRESS[/PREFIX]:PORT or [IPv6[/PREFIX]]:PORT entries, optionally /udp"
_EGRESS_ENTRY = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:/\d{1,3})?)\]|(?P<v4>[0-9.]+(?:/\d{1,2})?))"
    r":(?P<port>\d{1,5})(?:/(?P<proto>tcp|udp))?$"
)


def egress_allow(data: Mapping[str, Any]) -> list[Destination]:
    """``egress_allow`` parsed; ConfigError naming the key and the entry otherwise."""
    values = data.get("egress_allow") or []
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ConfigError("egress_allow", values, EGRESS_ACCEPTED, "not a list")
    out = []
    for value in values:
        match = _EGRESS_ENTRY.match(value) if isinstance(value, str) else None
        try:
            if match is None:
                raise ValueError(value)
            network = ipaddress.ip_network(match["v6"] or match["v4"])
            port, protocol = int(match["port"]), match["proto"] or "tcp"
            if not 1 <= port <= 65535:
                raise ValueError(port)
        except ValueError:
            raise ConfigError(
                "egress_allow", value, EGRESS_ACCEPTED, "not an address (or network) and a port"
            ) from None
        if network.prefixlen == 0:
            raise ConfigError(
                "egress_allow",
                value,
                EGRESS_ACCEPTED,
                "a whole address family is not an allow-list entry (set egress_allow_any: true to "
                "turn the model hosts' egress allow-list off)",
            )
        out.append(Destination(network, port, protocol, "egress_allow"))
    return out


def ip_allow(*groups: Iterable[str]) -> list[str]:
    """``localhost`` then the given addresses and networks, collapsed (v4, then v6); ``any`` wins.

    ValueError on an entry that is neither an address nor a network: the caller names its key.
    """
    networks = []
    for group in groups:
        for entry in group:
            if entry == ANY:
                return [ANY]
            network = ipaddress.ip_network(str(entry).split("%", 1)[0], strict=False)
            if not network.is_loopback:
                networks.append(network)
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return [LOCALHOST, *(str(n) for n in v4), *(str(n) for n in v6)]
