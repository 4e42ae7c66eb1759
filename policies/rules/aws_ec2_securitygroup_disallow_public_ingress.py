"""Nothing is reachable from every address but HTTPS on an internet-facing load balancer.

Security group ingress comes in three forms, and all three are read: the inline ``ingress[]`` of
``aws.ec2.SecurityGroup`` (and of ``aws.ec2.DefaultSecurityGroup``), ``aws.ec2.SecurityGroupRule``
with ``type: ingress``, and ``aws.vpc.SecurityGroupIngressRule``. :func:`ingress_permissions`
turns each into :class:`Permission` records; the admin-ports rule reads the same records.

A source is world-wide when it is a CIDR with prefix length 0 (``0.0.0.0/0``, ``::/0``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from llmkit.policy import Resource, Rule, Stack, as_list, known
from policies.support import LOAD_BALANCERS, SECURITY_GROUPS, WORLD, truthy

DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
VPC_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
# The resources that carry ingress permissions: groups with inline rules, and the two rule resources.
INGRESS_TYPES = (*SECURITY_GROUPS, DEFAULT_SECURITY_GROUP, SECURITY_GROUP_RULE, VPC_INGRESS_RULE)

ALL = "all"
PROTOCOLS = {"-1": ALL, "all": ALL, "6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
PORTED = ("tcp", "udp")  # the protocols whose from/to are ports (for ICMP they are type and code)
HTTPS = 443


@dataclass(frozen=True)
class Permission:
    """One ingress permission: what a group admits, on which protocol and ports, from where."""

    resource: Resource  # the resource that declares it (the group, or the rule resource)
    group: str  # the security group it belongs to: a resource name, else its id as given
    group_ref: str | None  # the group's id as other resources name it (None: not known here)
    protocol: str  # "all", "tcp", "udp", "icmp", "icmpv6" or a protocol number
    from_port: int
    to_port: int
    cidrs: tuple[str, ...]  # IPv4 and IPv6 CIDR sources
    peers: tuple[str, ...]  # other sources: security groups, prefix lists, "self"

    @property
    def ports(self) -> str:
        """The protocol and port range as text: "tcp 443", "tcp 0-1024", "all protocols"."""
        if self.protocol == ALL:
            return "all protocols and ports"
        if self.protocol not in PORTED:
            return self.protocol
        if self.from_port == self.to_port:
            return f"{self.protocol} {self.from_port}"
        return f"{self.protocol} {self.from_port}-{self.to_port}"

    def covers(self, port: int) -> bool:
        """Whether ``port`` (TCP or UDP) is admitted."""
        if self.protocol == ALL:
            return True
        return self.protocol in PORTED and self.from_port <= port <= self.to_port

    @property
    def sources(self) -> str:
        return ", ".join((*self.cidrs, *self.peers)) or "no source"


def is_world(cidr: str) -> bool:
    """Whether a source CIDR is every address (``0.0.0.0/0``, ``::/0``, or written otherwise)."""
    if cidr in WORLD:
        return True
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _protocol(value: Any) -> str:
    text = str(known(value)).strip().lower()
    return PROTOCOLS.get(text, text)


def _port(value: Any, default: int) -> int:
    value = known(value)
    return default if value is None else int(value)


def _strings(*values: Any) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        found.extend(str(known(item)) for item in as_list(value) if known(item) is not None)
    return tuple(found)


def _permission(
    resource: Resource,
    group: str,
    group_ref: str | None,
    protocol: Any,
    from_port: Any,
    to_port: Any,
    cidrs: tuple[str, ...],
    peers: tuple[str, ...],
) -> Permission:
    proto = _protocol(protocol)
    low, high = (0, 65535) if proto == ALL else (_port(from_port, 0), _port(to_port, 65535))
    return Permission(resource, group, group_ref, proto, low, high, cidrs, peers)


def _group_of(resource: Resource, stack: Stack | None) -> tuple[str, str | None]:
    """The group a rule resource belongs to: (its name or the id as given, the id)."""
    ref = known(resource.get("securityGroupId"))
    if not isinstance(ref, str):
        return "(unnamed group)", None
    group = stack.resolve(ref) if stack is not None else None
    return (group.name if group is not None else ref), ref


def ingress_permissions(resource: Resource, stack: Stack | None = None) -> Iterator[Permission]:
    """The ingress permissions ``resource`` declares (none for egress rules or other types).

    ``stack`` (when given) names a rule resource's group by the group's resource name.
    """
    if resource.type in (*SECURITY_GROUPS, DEFAULT_SECURITY_GROUP):
        for entry in as_list(resource.get("ingress")):
            entry = known(entry)
            if not isinstance(entry, Mapping):
                continue
            peers = _strings(entry.get("securityGroups"), entry.get("prefixListIds"))
            if truthy(entry.get("self", False)):
                peers = (*peers, "self")
            yield _permission(
                resource,
                resource.name,
                resource.id,
                entry.get("protocol"),
                entry.get("fromPort"),
                entry.get("toPort"),
                _strings(entry.get("cidrBlocks"), entry.get("ipv6CidrBlocks")),
                peers,
            )
    elif resource.type == SECURITY_GROUP_RULE:
        if str(resource.get("type", default="")).lower() != "ingress":
            return
        group, ref = _group_of(resource, stack)
        peers = _strings(resource.get("sourceSecurityGroupId"), resource.get("prefixListIds"))
        if truthy(resource.get("self", default=False)):
            peers = (*peers, "self")
        yield _permission(
            resource,
            group,
            ref,
            resource.get("protocol"),
            resource.get("fromPort"),
            resource.get("toPort"),
            _strings(resource.get("cidrBlocks"), resource.get("ipv6CidrBlocks")),
            peers,
        )
    elif resource.type == VPC_INGRESS_RULE:
        group, ref = _group_of(resource, stack)
        yield _permission(
            resource,
            group,
            ref,
            resource.get("ipProtocol"),
            resource.get("fromPort"),
            resource.get("toPort"),
            _strings(resource.get("cidrIpv4"), resource.get("cidrIpv6")),
            _strings(resource.get("referencedSecurityGroupId"), resource.get("prefixListId")),
        )


def _internet_facing_groups(stack: Stack) -> set[str]:
    """The security group ids named by internet-facing load balancers (``internal`` not true)."""
    groups: set[str] = set()
    for lb in stack.of_type(*LOAD_BALANCERS):
        if truthy(lb.get("internal", default=False)):
            continue
        groups.update(str(known(ref)) for ref in as_list(lb.get("securityGroups")))
    return groups


def _attached(permission: Permission, stack: Stack, lb_groups: set[str]) -> bool:
    if permission.group_ref is None:
        return False
    if permission.group_ref in lb_groups:
        return True
    group = stack.resolve(permission.group_ref)
    return group is not None and any(stack.refers_to(ref, group) for ref in lb_groups)


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    lb_groups: set[str] | None = None  # read only when a world-open 443 needs it
    for resource in stack.of_type(*INGRESS_TYPES):
        for permission in ingress_permissions(resource, stack):
            for cidr in (c for c in permission.cidrs if is_world(c)):
                where = f"security group {permission.group} admits {cidr} on {permission.ports}"
                if (permission.protocol, permission.from_port, permission.to_port) != ("tcp", HTTPS, HTTPS):
                    yield (
                        resource,
                        f"{where}: only tcp 443 may be open to every address, and only on the group "
                        "of an internet-facing load balancer",
                    )
                    continue
                if lb_groups is None:
                    lb_groups = _internet_facing_groups(stack)
                if not _attached(permission, stack, lb_groups):
                    yield (
                        resource,
                        f"{where}, but the group is not attached to an internet-facing load balancer: "
                        "only such a group may admit every address (on tcp 443)",
                    )


RULE = Rule(
    name="aws-ec2-securitygroup-disallow-public-ingress",
    description="Security groups admit 0.0.0.0/0 or ::/0 only on tcp 443, and only on an internet-facing "
    "load balancer's group.",
    why="A port open to every address is scanned within minutes: a model server, gateway or database "
    "reachable from the internet bypasses the WAF, TLS termination and authentication at the edge.",
    severity="critical",
    remediation="Admit client CIDRs (endpoint.allowed_client_cidrs), or another tier's security group, "
    "instead of 0.0.0.0/0; only the load balancer of a public endpoint admits the world on 443 "
    "(the Firewall component builds exactly that chain).",
    frameworks=(
        "CIS AWS Foundations 5.2",
        "CIS AWS Foundations 5.3",
        "AWS FSBP EC2.18",
        "AWS FSBP EC2.19",
        "HIPAA 164.312(a)(1)",
        "GDPR Art. 32(1)(b)",
    ),
    check_stack=check,
)
