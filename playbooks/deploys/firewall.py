"""Host firewall (nftables): drop by default, open only what each host's role needs, to whom.

Decisions, for reviewers:

- ``policy drop`` on input and forward. Always accepted: established/related traffic, loopback,
  the ICMP/ICMPv6 messages that keep TCP working (errors, packet too big, neighbour discovery)
  and rate-limited echo.
- **Egress of the model hosts** (group ``gpu`` or ``model_<slug>``, and no other role): an
  allow-list, then ``reject`` (a refused connection fails at once and is logged, rate-limited,
  with the prefix ``llmkit egress refused``). Besides replies (established/related), loopback,
  ICMP errors, neighbour discovery and DHCP, a model host may reach only:

  - DNS (udp/tcp 53): ``dns_servers``, or when that is None the name servers the host itself
    uses (``/etc/resolv.conf``, and systemd-resolved's upstreams);
  - NTP (udp 123): ``ntp_servers``;
  - its mirrors: the host and port of ``models_mirror_url``, ``ollama_mirror_url``,
    ``exporters_mirror_url`` and (when NVIDIA's repositories are used) ``nvidia_repo_mirror``
    when they name an IP address; for an ``s3://`` model store, the AWS CLI's endpoint when the
    host sets ``AWS_ENDPOINT_URL(_S3)`` to an address, and the instance metadata service
    (169.254.169.254:80, the instance role's credentials);
  - apt: the proxy apt is configured with (``apt-config``), else the hosts of its sources, when
    they are addresses;
  - ``egress_allow``: ``ADDRESS[/PREFIX]:PORT[/udp]`` entries for everything else: log and metric
    targets, mirrors named by DNS names, the S3 prefix list and VPC endpoints on AWS.

  The firewall allows addresses, never names: a source given by name (a mirror URL, apt's
  sources, GitHub or the Ollama registry when no mirror is set) is reachable only when
  ``egress_allow`` lists its addresses, and the deploy warns, naming the key, when it does not
  list any on that port. ``egress_allow_any: true`` turns the allow-list off (an explicit unsafe
  choice, said in the ruleset). A host that is also a proxy or a gateway keeps open egress (those
  roles reach other tiers), and the deploy says so. Other hosts keep open egress (the network,
  not the host, limits it).
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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any
from urllib.parse import urlsplit

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy
from pyinfra.operations import apt, files, server, systemd

from llmkit.errors import ConfigError
from playbooks.deploys.sandbox import EGRESS_ACCEPTED, Destination, Network, egress_allow
from playbooks.render import render
from playbooks.topology import (
    GATEWAY_GROUP,
    GPU_GROUP,
    HTTPS_PORT,
    MODEL_GROUP_PREFIX,
    PROXY_GROUP,
    gateway_port,
)

NFTABLES_CONF = "/etc/nftables.conf"
SSH_PORT = 22
MONITORING_GROUP = "monitoring"


@dataclass(frozen=True)
class Rule:
    """Accept new TCP connections to ``port`` from these sources (collapsed, v4 and v6 apart)."""

    comment: str
    port: int
    v4: list[str] = field(default_factory=list)
    v6: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Egress:
    """Accept new connections to ``port`` (``protocol``) at these destinations (v4 and v6 apart)."""

    comment: str
    protocol: str
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


# --- egress of the model hosts --------------------------------------------------------------------

IMDS = ipaddress.ip_network("169.254.169.254/32")
DNS_PORT = 53
NTP_PORT = 123
#: Host-data keys of URLs the model host deploys fetch from (the host itself, with curl or the AWS CLI).
MIRROR_KEYS = {
    "models_mirror_url": "the model mirror",
    "ollama_mirror_url": "the Ollama release mirror",
    "exporters_mirror_url": "the exporter release mirror",
}
#: Where a release comes from when its mirror key is not set (a name: egress_allow must list it).
DEFAULT_SOURCES = {
    "ollama_mirror_url": ("github.com", 443, "Ollama's release, as ollama_mirror_url is not set"),
    "exporters_mirror_url": (
        "github.com",
        443,
        "the exporters' releases, as exporters_mirror_url is not set",
    ),
}


def addresses(data: Mapping[str, Any], key: str) -> list[Network]:
    """``dns_servers``/``ntp_servers``: IP addresses (not networks); ConfigError naming the key."""
    values = data.get(key) or []
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ConfigError(key, values, "a list of IP addresses", "not a list")
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(ipaddress.ip_address(str(value))))
        except ValueError:
            raise ConfigError(key, value, "a list of IP addresses", "not an IP address") from None
    return out


@dataclass(frozen=True)
class HostEgress:
    """What the host's own configuration says it connects to (fact :class:`HostEgressFacts`)."""

    nameservers: tuple[str, ...] = ()
    apt_proxies: tuple[tuple[str, str], ...] = ()  # (scheme, proxy URL)
    apt_sources: tuple[str, ...] = ()  # scheme://host[:port]
    aws_endpoint: str | None = None  # AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL


_SECTIONS = ("@@llmkit-resolv", "@@llmkit-apt-proxy", "@@llmkit-apt-sources", "@@llmkit-aws")
_NAMESERVER = re.compile(r"^\s*nameserver\s+(\S+)")
_APT_PROXY = re.compile(r'^Acquire::(https?)::Proxy\s+"([^"]*)";$', re.IGNORECASE)


class HostEgressFacts(FactBase[HostEgress]):
    """The host's name servers (resolv.conf and systemd-resolved's upstreams), apt's proxies and
    source hosts (``apt-config dump``, ``apt-get indextargets``), and the AWS CLI's endpoint from
    the environment the deploy runs in."""

    @staticmethod
    def default() -> HostEgress:
        return HostEgress()

    def command(self) -> str:
        resolv, proxy, sources, aws = _SECTIONS
        return (
            f"echo {resolv}; cat /etc/resolv.conf /run/systemd/resolve/resolv.conf 2>/dev/null; "
            f"echo {proxy}; apt-config dump 2>/dev/null | grep -i -E '^Acquire::https?::Proxy ' ; "
            f"echo {sources}; apt-get indextargets --format '$(URI)' 2>/dev/null | cut -d/ -f1-3 | sort -u; "
            f'echo {aws}; printf "%s\\n" "${{AWS_ENDPOINT_URL_S3:-${{AWS_ENDPOINT_URL:-}}}}"; true'
        )

    def process(self, output: list[str]) -> HostEgress:
        section = ""
        nameservers: list[str] = []
        proxies: list[tuple[str, str]] = []
        sources: list[str] = []
        aws: str | None = None
        for raw in output:
            line = raw.strip()
            if line in _SECTIONS:
                section = line
            elif section == _SECTIONS[0] and (match := _NAMESERVER.match(line)):
                nameservers.append(match[1])
            elif section == _SECTIONS[1] and (match := _APT_PROXY.match(line)):
                if match[2] and match[2].upper() != "DIRECT":
                    proxies.append((match[1].lower(), match[2]))
            elif section == _SECTIONS[2] and line:
                sources.append(line)
            elif section == _SECTIONS[3] and line:
                aws = line
        return HostEgress(
            nameservers=tuple(dict.fromkeys(nameservers)),
            apt_proxies=tuple(dict.fromkeys(proxies)),
            apt_sources=tuple(dict.fromkeys(sources)),
            aws_endpoint=aws,
        )


def _ip_network(text: str | None) -> Network | None:
    try:
        return ipaddress.ip_network(ipaddress.ip_address(str(text or "").split("%", 1)[0]))
    except ValueError:
        return None


def url_destination(url: str, why: str) -> tuple[Destination | None, tuple[str, int] | None]:
    """(the destination of an http(s) URL whose host is an address, else (its host name, port))."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None, None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None, None
    network = _ip_network(parts.hostname)
    if network is None:
        return None, (parts.hostname, port)
    return Destination(network, port, "tcp", why), None


def model_host_egress(data: Mapping[str, Any], facts: HostEgress) -> tuple[list[Destination], list[str]]:
    """What a model host may connect to, and a warning per source given by name that egress_allow
    does not cover (no entry on its port): the firewall cannot allow a name."""
    allowed = egress_allow(data)
    named: list[tuple[str, str, int, str]] = []  # (key, host name, port, what)
    out: list[Destination] = []
    if data.get("dns_servers") is None:
        dns = [n for n in map(_ip_network, facts.nameservers) if n is not None and not n.is_loopback]
    else:
        dns = addresses(data, "dns_servers")
    for network in dns:
        out += [Destination(network, DNS_PORT, proto, "DNS") for proto in ("udp", "tcp")]
    out += [Destination(n, NTP_PORT, "udp", "NTP") for n in addresses(data, "ntp_servers")]

    urls = {key: data.get(key) for key in MIRROR_KEYS}
    if data.get("nvidia_driver_source") == "nvidia" or data.get("container_toolkit"):
        urls["nvidia_repo_mirror"] = (
            data.get("nvidia_repo_mirror") or "https://developer.download.nvidia.com/"
        )
    for key, url in urls.items():
        what = MIRROR_KEYS.get(key, "NVIDIA's repositories")
        if url is None:
            if key in DEFAULT_SOURCES:
                named.append((key, *DEFAULT_SOURCES[key]))
            continue
        text = str(url).split("{", 1)[0]  # a URL template: its fixed part names the server
        if text.startswith("s3://"):
            out.append(Destination(IMDS, 80, "tcp", "the instance role's credentials (instance metadata)"))
            endpoint = facts.aws_endpoint
            found, name = (
                url_destination(endpoint, f"{what} (AWS_ENDPOINT_URL)") if endpoint else (None, None)
            )
            if found is not None:
                out.append(found)
            else:
                host_name, port = name or ("the S3 endpoint (the region's S3 prefix list)", 443)
                named.append((key, host_name, port, what))
            continue
        found, name = url_destination(text, what)
        if found is not None:
            out.append(found)
        elif name is not None:
            named.append((key, *name, what))
    models = [m for m in data.get("models") or [] if isinstance(m, Mapping)]
    if any((m.get("source") or "registry") == "registry" for m in models):
        named.append(("models", "registry.ollama.ai (and its CDN)", 443, "a model with source registry"))

    proxied = {scheme for scheme, _ in facts.apt_proxies}
    for scheme, proxy in facts.apt_proxies:
        found, name = url_destination(proxy, f"apt's {scheme} proxy")
        if found is not None:
            out.append(found)
        elif name is not None:
            named.append(("egress_allow", *name, f"apt's {scheme} proxy"))
    for source in facts.apt_sources:
        if source.split(":", 1)[0] in proxied:
            continue
        found, name = url_destination(source, "apt's sources")
        if found is not None:
            out.append(found)
        elif name is not None:
            named.append(("egress_allow", *name, "apt's sources (sources.list)"))

    warnings = [
        f"{key}: {what}: {host_name} (port {port}) is a name, and a model host's egress allow-list "
        f"holds addresses only; list its addresses in egress_allow ({EGRESS_ACCEPTED}), or it stays "
        "unreachable"
        for key, host_name, port, what in dict.fromkeys(named)
        if not any(d.port == port and d.protocol == "tcp" for d in allowed)
    ]
    return out + allowed, warnings


def egress_rules(destinations: Iterable[Destination]) -> list[Egress]:
    """One rule per protocol and port (sorted), its destinations collapsed, its comment the reasons."""
    grouped: dict[tuple[str, int], list[Destination]] = {}
    for d in destinations:
        grouped.setdefault((d.protocol, d.port), []).append(d)
    rules = []
    for (protocol, port), members in sorted(grouped.items(), key=lambda item: (item[0][1], item[0][0])):
        whys = ", ".join(dict.fromkeys(m.why for m in members))
        v4 = ipaddress.collapse_addresses(m.network for m in members if m.network.version == 4)
        v6 = ipaddress.collapse_addresses(m.network for m in members if m.network.version == 6)
        rules.append(Egress(whys, protocol, port, [str(n) for n in v4], [str(n) for n in v6]))
    return rules


def egress_filtered(host_roles: Sequence[str]) -> bool:
    """Model hosts with no other role get the egress allow-list."""
    return list(host_roles) == ["gpu"]


def egress_context(
    host_roles: Sequence[str], data: Mapping[str, Any], facts: HostEgress | None
) -> dict[str, Any]:
    """The output chain's part of the template context: policy, rules, and why."""
    allow_any = data.get("egress_allow_any", False)
    if not isinstance(allow_any, bool):
        raise ConfigError("egress_allow_any", allow_any, "true or false", "not a boolean")
    if not egress_filtered(host_roles):
        why = "also a proxy or gateway" if "gpu" in host_roles else "not a model host"
        return {"egress_filter": False, "egress_note": f"egress is open: {why}", "egress": [], "warnings": []}
    if allow_any:
        egress_allow(data)  # still validated
        note = "egress is open: egress_allow_any is true (an explicit choice)"
        return {"egress_filter": False, "egress_note": note, "egress": [], "warnings": []}
    destinations, warnings = model_host_egress(data, facts or HostEgress())
    return {
        "egress_filter": True,
        "egress_note": "model host: egress only to the destinations below",
        "egress": egress_rules(destinations),
        "warnings": warnings,
    }


def firewall_context(
    host_name: str,
    groups: Iterable[str],
    data: Mapping[str, Any],
    peers: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
    facts: HostEgress | None = None,
) -> dict[str, Any]:
    """The ruleset template's context.

    ``peers``: (name, data) of the proxy, monitoring and gateway hosts, by group. ``facts``: the
    host's own view of its name servers, apt proxies and sources (:class:`HostEgressFacts`; None:
    none known), which the model hosts' egress allow-list takes in.
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
        **egress_context(host_roles, data, facts),
    }


def render_ruleset(context: Mapping[str, Any]) -> str:
    return render("nftables.conf.j2", **context)


def _group_peers(group: str) -> list[tuple[str, dict[str, Any]]]:
    return [(member.name, member.data.dict()) for member in host.inventory.get_group(group, [])]


@deploy("Host firewall")
def firewall() -> None:
    """nftables: drop by default, the role's ports open to their sources only."""
    data = host.data.dict()
    facts = host.get_fact(HostEgressFacts) if egress_filtered(roles(host.groups)) else None
    context = firewall_context(
        host.name,
        host.groups,
        data,
        {group: _group_peers(group) for group in (PROXY_GROUP, MONITORING_GROUP, GATEWAY_GROUP)},
        facts,
    )
    for warning in context["warnings"]:
        logger.warning(f"{host.name}: firewall: {warning}")
    if "gpu" in context["roles"] and not context["egress_filter"]:
        logger.warning(f"{host.name}: firewall: model host with open egress ({context['egress_note']})")
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
