"""The model tier has no route out: no internet gateway, no NAT, no default route of any kind.

Which route tables are the model tier's:

- an ``aws.ec2.RouteTable`` (or ``DefaultRouteTable``) tagged ``llmkit:tier`` = ``model``;
- a table that an ``aws.ec2.RouteTableAssociation`` associates with a subnet tagged
  ``llmkit:tier`` = ``model``;
- for a model subnet without an explicit association, its VPC's main route table, when an
  ``aws.ec2.MainRouteTableAssociation`` in the stack sets it. A model subnet with neither uses a
  main route table the stack does not show, so the subnet itself is a violation: the model tier's
  routing must be explicit.

Their routes are read inline (``routes[]``) and as separate ``aws.ec2.Route`` resources
(``routeTableId``). A route is a violation when it targets an internet gateway (``gatewayId``
naming an ``aws.ec2.InternetGateway``, or an ``igw-`` id), a NAT gateway, an egress-only internet
gateway or a carrier gateway, whatever its destination; or when its destination is ``0.0.0.0/0``
or ``::/0``, whatever its target (transit gateway, peering, network interface, firewall or
Gateway Load Balancer endpoint, virtual private gateway, ...). Route propagation from a virtual
private gateway is a violation too: it would install whatever the other side announces, a
default route included. The S3 gateway endpoint adds its prefix-list route itself (no Route
resource) and routes to a prefix list through an endpoint are fine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from llmkit.policy import Resource, Rule, Stack, as_list, known
from policies.rules.aws_ec2_securitygroup_disallow_public_ingress import is_world

ROUTE_TABLES = ("aws:ec2/routeTable:RouteTable", "aws:ec2/defaultRouteTable:DefaultRouteTable")
ROUTES = ("aws:ec2/route:Route",)
ASSOCIATIONS = ("aws:ec2/routeTableAssociation:RouteTableAssociation",)
MAIN_ASSOCIATIONS = ("aws:ec2/mainRouteTableAssociation:MainRouteTableAssociation",)
PROPAGATIONS = ("aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation",)
SUBNETS = ("aws:ec2/subnet:Subnet",)
INTERNET_GATEWAYS = ("aws:ec2/internetGateway:InternetGateway",)
TIER_TAG = "llmkit:tier"
MODEL_TIER = "model"

# Targets that reach the internet whatever the destination.
INTERNET_TARGETS = (
    ("natGatewayId", "NAT gateway"),
    ("egressOnlyGatewayId", "egress-only internet gateway"),
    ("carrierGatewayId", "carrier gateway"),
)
# Every target, for naming what a default route points at.
TARGETS = (
    ("gatewayId", "gateway"),
    *INTERNET_TARGETS,
    ("transitGatewayId", "transit gateway"),
    ("vpcPeeringConnectionId", "VPC peering connection"),
    ("networkInterfaceId", "network interface"),
    ("vpcEndpointId", "VPC endpoint"),
    ("localGatewayId", "local gateway"),
    ("coreNetworkArn", "core network"),
    ("odbNetworkArn", "ODB network"),
)
WHY = (
    "the model tier has no internet route "
    "(AWS through VPC endpoints, the mirror through the S3 gateway endpoint)"
)


@dataclass(frozen=True)
class ModelTable:
    """A route table of the model tier, and why it is one."""

    ref: str  # its id as routes and associations name it
    label: str  # its resource name, else the id
    reason: str
    table: Resource | None  # None: the table is not a resource of this stack


def _name(stack: Stack, ref: str) -> str:
    found = stack.resolve(ref)
    return found.name if found is not None else ref


def _is_model(resource: Resource) -> bool:
    return resource.tags().get(TIER_TAG) == MODEL_TIER


def model_tables(stack: Stack) -> tuple[list[ModelTable], list[Resource]]:
    """The model tier's route tables, and the model subnets whose routing the stack does not show."""
    tables: dict[str, ModelTable] = {}

    def add(ref: Any, reason: str) -> None:
        ref = known(ref)
        if not isinstance(ref, str) or ref in tables:
            return
        table = stack.resolve(ref)
        tables[ref] = ModelTable(ref, table.name if table is not None else ref, reason, table)

    for table in stack.of_type(*ROUTE_TABLES):
        if _is_model(table):
            ref = table.id or table.name
            tables.setdefault(ref, ModelTable(ref, table.name, f"tagged {TIER_TAG}={MODEL_TIER}", table))
    associations = stack.of_type(*ASSOCIATIONS)
    unrouted: list[Resource] = []
    for subnet in (s for s in stack.of_type(*SUBNETS) if _is_model(s)):
        explicit = [a for a in associations if stack.refers_to(a.get("subnetId"), subnet)]
        for association in explicit:
            add(association.get("routeTableId"), f"associated with model subnet {subnet.name}")
        if explicit:
            continue
        mains = [m for m in stack.of_type(*MAIN_ASSOCIATIONS) if m.get("vpcId") == subnet.get("vpcId")]
        for main in mains:
            add(main.get("routeTableId"), f"the main route table of model subnet {subnet.name}")
        if not mains:
            unrouted.append(subnet)
    return list(tables.values()), unrouted


def _destination(route: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = known(route.get(key))
        if value:
            return str(value)
    return "(no destination)"


def _egress(stack: Stack, route: Mapping[str, Any], destination: str) -> str | None:
    """Why ``route`` gives the model tier a way out, or None."""
    gateway = known(route.get("gatewayId"))
    if isinstance(gateway, str):
        found = stack.resolve(gateway)
        if gateway.startswith("igw-") or (found is not None and found.type in INTERNET_GATEWAYS):
            return f"route {destination} -> internet gateway {_name(stack, gateway)}"
    for key, kind in INTERNET_TARGETS:
        target = known(route.get(key))
        if target:
            return f"route {destination} -> {kind} {_name(stack, str(target))}"
    if is_world(destination):
        for key, kind in TARGETS:
            target = known(route.get(key))
            if target:
                return f"default route {destination} -> {kind} {_name(stack, str(target))}"
        return f"default route {destination}"
    return None


def _named_by(stack: Stack, ref: Any, table: ModelTable) -> bool:
    ref = known(ref)
    return ref == table.ref or (table.table is not None and stack.refers_to(ref, table.table))


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    tables, unrouted = model_tables(stack)
    for subnet in unrouted:
        yield (
            subnet,
            "model-tier subnet has no route table association, so it uses its VPC's main route table, "
            "which this stack does not show: associate it with a model-tier route table",
        )
    for model in tables:
        where = f"model-tier route table {model.label} ({model.reason})"
        if model.table is not None:
            for route in as_list(model.table.get("routes")):
                route = known(route) or {}
                destination = _destination(route, "cidrBlock", "ipv6CidrBlock", "destinationPrefixListId")
                if problem := _egress(stack, route, destination):
                    yield model.table, f"{where} has {problem}: {WHY}"
            for vgw in as_list(model.table.get("propagatingVgws")):
                yield (
                    model.table,
                    f"{where} propagates routes from {_name(stack, str(known(vgw)))}: a propagated default "
                    f"route would be a way out; {WHY}",
                )
        for route in stack.of_type(*ROUTES):
            if not _named_by(stack, route.get("routeTableId"), model):
                continue
            destination = _destination(
                route.props, "destinationCidrBlock", "destinationIpv6CidrBlock", "destinationPrefixListId"
            )
            if problem := _egress(stack, route.props, destination):
                yield route, f"{where} has {problem}: {WHY}"
        for propagation in stack.of_type(*PROPAGATIONS):
            if _named_by(stack, propagation.get("routeTableId"), model):
                gateway = _name(stack, str(propagation.get("vpnGatewayId")))
                yield (
                    propagation,
                    f"{where} propagates routes from {gateway}: a propagated default route would be a "
                    f"way out; {WHY}",
                )


RULE = Rule(
    name="aws-ec2-routetable-disallow-model-egress",
    description="Model-tier route tables have no route to an internet, NAT, egress-only or carrier gateway "
    "and no default route.",
    why="The GPU hosts hold the model weights and see every prompt; a route out lets a compromised host or "
    "a malicious model file exfiltrate them or fetch tooling, and bypasses the egress firewall.",
    severity="critical",
    remediation="Give model subnets their own route tables with only the local route and the S3 gateway "
    "endpoint (Network does); reach AWS services through interface endpoints (PrivateEndpoints).",
    frameworks=("NIST SP 800-53 Rev. 5 SC-7", "HIPAA 164.312(e)(1)", "GDPR Art. 32(1)(b)"),
    check_stack=check,
)
