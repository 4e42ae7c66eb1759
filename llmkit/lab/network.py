"""The lab's network: its subnet, its addresses, host names, and the bridge on the controller.

Decisions, for reviewers:

- **One private /24 per lab** (default ``10.97.0.0/24``): the controller is ``.1`` on a bridge of
  its own, hosts get ``.10``, ``.11``, ... in the order given. Only RFC 1918 networks are accepted
  (10/8, 172.16/12, 192.168/16), and a subnet that already has an address or a route on the
  controller is refused: the lab never shadows a network that exists.
- **Names derived from the subnet**: the bridge is ``llmkit-<hex of the first three octets>``
  (``llmkit-0a6100`` for 10.97.0.0/24) and each machine is ``<host>-<a>-<b>-<c>``, so two labs on
  two subnets never collide on an interface or machine name (nspawn derives the host side of the
  veth, ``vb-<machine>``, from the machine name, shortening it with a hash past 15 characters).
- **No way out**: the bridge has no uplink, the hosts no default route; IPv6 is off on the
  bridge. Traffic leaves the lab only through the controller's caching proxy.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.errors import ConfigError, LlmkitError

DEFAULT_SUBNET = "10.97.0.0/24"
CONTROLLER_OFFSET = 1
FIRST_HOST_OFFSET = 10
LAST_HOST_OFFSET = 254
MAX_HOSTS = LAST_HOST_OFFSET - FIRST_HOST_OFFSET + 1
IFNAME_MAX = 15
#: Names a lab host may not take (the controller's entry in /etc/hosts, and the usual aliases).
RESERVED_NAMES = frozenset({"controller", "lab-controller", "localhost", "ca"})
CONTROLLER_NAME = "lab-controller"

_HOST_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_ACCEPTED_HOSTS = (
    "a comma-separated list of distinct host names: lowercase letters, digits and inner hyphens, "
    "starting with a letter, at most 40 characters (e.g. proxy,gpu1,gpu2)"
)
_ACCEPTED_SUBNET = "a private (RFC 1918) IPv4 /24 network, e.g. 10.97.0.0/24 or 192.168.77.0/24"
_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


# --- validation -----------------------------------------------------------------------------------


def parse_subnet(value: str) -> ipaddress.IPv4Network:
    """The lab subnet: an RFC 1918 IPv4 /24 given as its network address (no host bits)."""
    text = str(value).strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ConfigError("--subnet", value, _ACCEPTED_SUBNET, f"not an IPv4 network ({exc})") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ConfigError("--subnet", value, _ACCEPTED_SUBNET, "IPv6 is not supported")
    if network.prefixlen != 24:
        raise ConfigError("--subnet", value, _ACCEPTED_SUBNET, f"a /{network.prefixlen}, not a /24")
    if not any(network.subnet_of(private) for private in _RFC1918):
        raise ConfigError("--subnet", value, _ACCEPTED_SUBNET, "not a private RFC 1918 network")
    return network


def validate_hosts(hosts: Sequence[str] | str) -> list[str]:
    """Host names in order: DNS labels, distinct, not reserved, at most :data:`MAX_HOSTS`."""
    if isinstance(hosts, str):
        names = [h.strip() for h in hosts.split(",")]
    else:
        names = [str(h).strip() for h in hosts]
    if not names or names == [""]:
        raise ConfigError("--hosts", ",".join(names), _ACCEPTED_HOSTS, "no host given")
    seen: set[str] = set()
    for name in names:
        if not _HOST_NAME.match(name):
            raise ConfigError("--hosts", name, _ACCEPTED_HOSTS, f"{name!r} is not a usable host name")
        if name in RESERVED_NAMES:
            raise ConfigError(
                "--hosts",
                name,
                _ACCEPTED_HOSTS,
                f"{name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})",
            )
        if name in seen:
            raise ConfigError("--hosts", name, _ACCEPTED_HOSTS, f"{name!r} is given twice")
        seen.add(name)
    if len(names) > MAX_HOSTS:
        raise ConfigError("--hosts", len(names), f"at most {MAX_HOSTS} hosts", "too many hosts for a /24")
    return names


# --- names and addresses --------------------------------------------------------------------------


def controller_address(network: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return network.network_address + CONTROLLER_OFFSET


def host_addresses(network: ipaddress.IPv4Network, names: Sequence[str]) -> dict[str, ipaddress.IPv4Address]:
    """``.10``, ``.11``, ... in the order of ``names``."""
    if len(names) > MAX_HOSTS:
        raise ConfigError("--hosts", len(names), f"at most {MAX_HOSTS} hosts", "too many hosts for a /24")
    return {name: network.network_address + FIRST_HOST_OFFSET + i for i, name in enumerate(names)}


def lab_tag(network: ipaddress.IPv4Network) -> str:
    """``10-97-0`` for 10.97.0.0/24: what makes this lab's machine names unique."""
    return "-".join(str(network.network_address).split(".")[:3])


def bridge_name(network: ipaddress.IPv4Network) -> str:
    """``llmkit-0a6100`` for 10.97.0.0/24 (13 characters: fits the 15 of an interface name)."""
    octets = network.network_address.packed[:3]
    name = "llmkit-" + octets.hex()
    assert len(name) <= IFNAME_MAX
    return name


def machine_name(host: str, network: ipaddress.IPv4Network) -> str:
    """The nspawn machine name of ``host`` in this lab (unique across labs on other subnets)."""
    return f"{host}-{lab_tag(network)}"


# --- the controller's interfaces ------------------------------------------------------------------


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise LlmkitError(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _ip_json(*args: str) -> list[dict[str, Any]]:
    result = run_ip("-j", *args, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    data = json.loads(result.stdout)
    return data if isinstance(data, list) else []


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def links_of_bridge(bridge: str) -> list[str]:
    """The interfaces attached to ``bridge`` (the host sides of the machines' veths)."""
    if not link_exists(bridge):
        return []
    return sorted(p.name for p in Path("/sys/class/net", bridge, "brif").iterdir())


def link_by_index(index: int) -> str | None:
    for link in _ip_json("link", "show"):
        if link.get("ifindex") == index:
            return str(link.get("ifname"))
    return None


def bridge_addresses(bridge: str) -> list[str]:
    out: list[str] = []
    for link in _ip_json("addr", "show", "dev", bridge):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                out.append(f"{info['local']}/{info['prefixlen']}")
    return out


def subnet_conflicts(network: ipaddress.IPv4Network) -> list[str]:
    """What already uses ``network`` on the controller: addresses in it, routes overlapping it."""
    found: list[str] = []
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            try:
                address = ipaddress.ip_address(info.get("local", ""))
            except ValueError:
                continue
            if address in network:
                found.append(f"address {address} on {link.get('ifname')}")
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst")
        if not dst or dst == "default":
            continue
        try:
            routed = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(routed, ipaddress.IPv4Network) and routed.prefixlen > 0 and routed.overlaps(network):
            found.append(f"route {dst} via {route.get('dev', '?')}")
    return found


def create_bridge(bridge: str, address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> None:
    """The lab's bridge with the controller's address; no IPv6, no uplink."""
    run_ip("link", "add", "name", bridge, "type", "bridge")
    ipv6 = Path("/proc/sys/net/ipv6/conf", bridge, "disable_ipv6")
    if ipv6.exists():
        ipv6.write_text("1\n")
    run_ip("addr", "add", f"{address}/{network.prefixlen}", "dev", bridge)
    run_ip("link", "set", bridge, "up")


def delete_link(name: str) -> bool:
    """Delete interface ``name``; False when it was not there."""
    if not link_exists(name):
        return False
    run_ip("link", "del", name)
    return True


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(address: str, port: int, deadline: float) -> bool:
    """Poll until ``address:port`` accepts a connection or ``deadline`` (time.monotonic) passes."""
    while True:
        if tcp_open(address, port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


# --- files of the machines ------------------------------------------------------------------------


@dataclass(frozen=True)
class HostEntry:
    name: str
    address: str


def networkd_unit(address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> str:
    """systemd-networkd file for ``host0``: the static lab address, no gateway, no IPv6, no DHCP.

    Installed as ``/etc/systemd/network/80-container-host0.network``, the name of systemd's own
    file for nspawn's ``host0`` (which asks for DHCP), so it replaces that one.
    """
    return (
        "# Written by llmkit lab: the lab address, and no default route (the lab has no way out).\n"
        "[Match]\n"
        "Name=host0\n"
        "\n"
        "[Network]\n"
        f"Address={address}/{network.prefixlen}\n"
        "DHCP=no\n"
        "LinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n"
    )


def hosts_file(entries: Sequence[HostEntry], controller: ipaddress.IPv4Address) -> str:
    """/etc/hosts of every machine: loopback, the controller and all lab hosts."""
    lines = [
        "# Written by llmkit lab.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{controller}\t{CONTROLLER_NAME}",
    ]
    lines += [f"{e.address}\t{e.name}" for e in entries]
    return "\n".join(lines) + "\n"
