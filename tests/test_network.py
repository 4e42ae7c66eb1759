"""The Network and PrivateEndpoints components, on the recording mock runtime.

Every assertion reads recorded inputs (plain data, camelCase as the engine sees them), never
inside an apply callback. Mocked resources have the id f"{name}-id", which is how routes,
associations and endpoints are matched to the tables and subnets they refer to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network, collapse_addresses
from typing import Any

import pytest

import llmkit.plan as plan_module
from components.network import (
    ADMIN_PORTS,
    ANYWHERE,
    FLOW_LOGS_SERVICE,
    INTERFACE_ENDPOINT_SERVICES,
    Network,
    NetworkArgs,
    PrivateEndpoints,
    PrivateEndpointsArgs,
    firewall_endpoint_in,
    without_ports,
)
from llmkit.catalog import load_catalog
from llmkit.config import DATA_PORTS, EGRESS_SUBNETS, TIERS, StackConfig, load_stack
from llmkit.plan import MOCK_ACCOUNT_ID, PlannedResource
from tests.conftest import ROOT, Recorded

KEY_ARN = "arn:aws:kms:eu-central-1:123456789012:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
ENDPOINTS_SG = "sg-endpoints-id"

SUBNET = "aws:ec2/subnet:Subnet"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
NAT = "aws:ec2/natGateway:NatGateway"
NACL = "aws:ec2/networkAcl:NetworkAcl"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"


def fw_endpoints(cfg: StackConfig) -> dict[str, str]:
    """Stand-ins for the Network Firewall's endpoint ids, by availability zone."""
    return {f"{cfg.region}{z}": f"vpce-fw-{z}" for z in "abcdef"[: cfg.network.az_count]}


def _program(cfg: StackConfig, route_egress: bool = True) -> Callable[[], None]:
    def program() -> None:
        net = Network("net", NetworkArgs.from_config(cfg, KEY_ARN))
        if net.egress_firewall and route_egress:
            net.route_app_egress_through(fw_endpoints(cfg))
        PrivateEndpoints(
            "endpoints",
            PrivateEndpointsArgs(
                vpc_id=net.vpc_id,
                region=cfg.region,
                subnet_ids=net.subnet_ids["model"],
                route_table_ids=[t.id for tier in ("model", "data", "app") for t in net.route_tables[tier]],
                security_group_id=ENDPOINTS_SG,
            ),
        )

    return program


@pytest.fixture
def network(run_pulumi: Callable[..., Recorded], stack_config: StackConfig) -> tuple[StackConfig, Recorded]:
    """Each real stack's network, recorded."""
    return stack_config, run_pulumi(_program(stack_config), region=stack_config.region)


def _id(resource: PlannedResource) -> str:
    return f"{resource.name}-id"


def _tables(rec: Recorded, tier: str) -> list[PlannedResource]:
    return sorted(
        (r for r in rec.of_type(ROUTE_TABLE) if r.inputs.get("tags", {}).get("llmkit:tier") == tier),
        key=lambda r: r.name,
    )


def _entries(nacl: PlannedResource) -> Iterator[tuple[str, dict[str, Any]]]:
    for direction in ("ingress", "egress"):
        for entry in nacl.inputs.get(direction, []):
            yield direction, entry


def _within(cidr: str, allowed: list[IPv4Network]) -> bool:
    return any(IPv4Network(cidr).subnet_of(n) for n in collapse_addresses(allowed))


# --- VPC and subnets ---------------------------------------------------------------------------


def test_vpc_has_dns_and_a_locked_default_security_group(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    vpc = rec.named("net-vpc")
    assert vpc.inputs["cidrBlock"] == str(cfg.network.vpc_cidr)
    assert vpc.inputs["enableDnsSupport"] is True
    assert vpc.inputs["enableDnsHostnames"] is True
    default_sg = rec.named("net-default-sg")
    assert default_sg.type == "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
    assert default_sg.inputs["vpcId"] == _id(vpc)
    assert not default_sg.inputs.get("ingress")
    assert not default_sg.inputs.get("egress")


def test_subnets_match_the_plan_and_map_no_public_ips(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    plan = cfg.subnet_plan()
    subnets = rec.of_type(SUBNET)
    assert len(subnets) == len(plan) * cfg.network.az_count
    assert set(plan) == set(TIERS) | (set(EGRESS_SUBNETS) if cfg.firewall.network_firewall else set())
    for tier in plan:
        assert len(plan[tier]) == cfg.network.az_count
        zones = []
        for i, cidr in enumerate(plan[tier]):
            subnet = rec.named(f"net-{tier}-{i}")
            assert subnet.inputs["cidrBlock"] == str(cidr)
            assert subnet.inputs["tags"]["llmkit:tier"] == tier
            assert subnet.inputs["vpcId"] == "net-vpc-id"
            zones.append(subnet.inputs["availabilityZone"])
        assert zones == [f"{cfg.region}{z}" for z in "abcdef"[: cfg.network.az_count]]
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)


def test_each_subnet_uses_its_tiers_route_table_of_its_az(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    associations = {a.inputs["subnetId"]: a.inputs["routeTableId"] for a in rec.of_type(ASSOCIATION)}
    for tier in cfg.subnet_plan():
        for i in range(cfg.network.az_count):
            assert associations[f"net-{tier}-{i}-id"] == f"net-{tier}-rt-{i}-id"
    assert len(associations) == len(rec.of_type(SUBNET))


# --- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["model", "data"])
def test_model_and_data_tiers_have_no_default_route(network: tuple[StackConfig, Recorded], tier: str) -> None:
    cfg, rec = network
    tables = _tables(rec, tier)
    assert len(tables) == cfg.network.az_count
    table_ids = {_id(t) for t in tables}
    for table in tables:
        for route in table.inputs.get("routes", []):  # inline routes, if any were ever added
            assert route.get("cidrBlock") != ANYWHERE
            assert not route.get("gatewayId")
            assert not route.get("natGatewayId")
    separate = [r for r in rec.of_type(ROUTE) if r.inputs["routeTableId"] in table_ids]
    assert separate == [], f"{tier} route tables must have no routes: {[r.name for r in separate]}"


def test_dmz_routes_to_the_internet_gateway(network: tuple[StackConfig, Recorded]) -> None:
    _, rec = network
    igw = rec.named("net-igw")
    for table in _tables(rec, "dmz"):
        routes = [r for r in rec.of_type(ROUTE) if r.inputs["routeTableId"] == _id(table)]
        assert [(r.inputs["destinationCidrBlock"], r.inputs.get("gatewayId")) for r in routes] == [
            (ANYWHERE, _id(igw))
        ]


def _routes_of(rec: Recorded, table: PlannedResource) -> list[dict[str, Any]]:
    return [r.inputs for r in rec.of_type(ROUTE) if r.inputs["routeTableId"] == _id(table)]


def test_app_routes_go_to_the_nat_of_their_az(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    nat_ids = [_id(n) for n in sorted(rec.of_type(NAT), key=lambda n: n.name)]
    endpoints = list(fw_endpoints(cfg).values())
    for i, table in enumerate(_tables(rec, "app")):
        routes = _routes_of(rec, table)
        assert len(routes) == 1
        route = routes[0]
        assert route["destinationCidrBlock"] == ANYWHERE
        assert not route.get("gatewayId")
        nat = nat_ids[i] if cfg.network.nat_gateways == "per_az" else nat_ids[0]
        if cfg.firewall.network_firewall:  # through the firewall endpoint of the same AZ
            assert route["vpcEndpointId"] == endpoints[i]
            assert not route.get("natGatewayId")
        else:
            assert route["natGatewayId"] == nat


@pytest.mark.parametrize("nat_gateways", ["per_az", "one"])
def test_inspected_egress_crosses_the_same_firewall_endpoint_both_ways(
    run_pulumi: Callable[..., Recorded], nat_gateways: str
) -> None:
    base = load_stack("prod", ROOT)
    assert base.firewall.network_firewall
    cfg = base.model_copy(update={"network": base.network.model_copy(update={"nat_gateways": nat_gateways})})
    cfg.network._plan = base.network._plan
    rec = run_pulumi(_program(cfg), region=cfg.region)
    plan, azs = cfg.subnet_plan(), cfg.network.az_count
    endpoints = list(fw_endpoints(cfg).values())
    nats = sorted(rec.of_type(NAT), key=lambda n: n.name)
    assert len(nats) == (azs if nat_gateways == "per_az" else 1)
    # NAT gateways live in the nat subnets, not in the dmz with the load balancer.
    assert [n.inputs["subnetId"] for n in nats] == [f"net-nat-{i}-id" for i in range(len(nats))]
    for i, table in enumerate(_tables(rec, "firewall")):  # firewall subnet -> its AZ's NAT
        nat = _id(nats[i] if nat_gateways == "per_az" else nats[0])
        assert _routes_of(rec, table) == [
            {"destinationCidrBlock": ANYWHERE, "natGatewayId": nat, "routeTableId": _id(table)}
        ]
    returns: dict[str, str] = {}
    for table in _tables(rec, "nat"):  # nat subnet -> IGW, and each app CIDR back to its endpoint
        routes = _routes_of(rec, table)
        assert {
            "destinationCidrBlock": ANYWHERE,
            "gatewayId": "net-igw-id",
            "routeTableId": _id(table),
        } in routes
        returns |= {r["destinationCidrBlock"]: r["vpcEndpointId"] for r in routes if "vpcEndpointId" in r}
    assert returns == {str(plan["app"][i]): endpoints[i] for i in range(azs)}
    # The load balancer's dmz sends nothing through the firewall: only its IGW route.
    for table in _tables(rec, "dmz"):
        assert [r.get("gatewayId") for r in _routes_of(rec, table)] == ["net-igw-id"]


def test_without_firewall_endpoints_the_app_tier_has_no_way_out(run_pulumi: Callable[..., Recorded]) -> None:
    cfg = load_stack("prod", ROOT)
    rec = run_pulumi(_program(cfg, route_egress=False), region=cfg.region)
    for table in _tables(rec, "app"):
        assert _routes_of(rec, table) == []


def test_egress_routing_refuses_misuse(run_pulumi: Callable[..., Recorded]) -> None:
    prod, dev = load_stack("prod", ROOT), load_stack("dev", ROOT)

    def twice() -> None:
        net = Network("net", NetworkArgs.from_config(prod, KEY_ARN))
        net.route_app_egress_through(fw_endpoints(prod))
        net.route_app_egress_through(fw_endpoints(prod))

    with pytest.raises(ValueError, match="already called"):
        run_pulumi(twice, region=prod.region)

    def no_firewall_subnets() -> None:
        Network("net", NetworkArgs.from_config(dev, KEY_ARN)).route_app_egress_through({})

    with pytest.raises(ValueError, match="needs the nat and firewall subnets"):
        run_pulumi(no_firewall_subnets, region=dev.region)


def test_a_missing_firewall_endpoint_is_named() -> None:
    # Routes resolve the endpoint of their AZ through this when the firewall's statuses arrive.
    found = {"eu-central-1a": "vpce-a", "eu-central-1b": "vpce-b"}
    assert firewall_endpoint_in(found, "eu-central-1b") == "vpce-b"
    with pytest.raises(
        ValueError, match=r"no endpoint in eu-central-1c \(it has: eu-central-1a, eu-central-1b\)"
    ):
        firewall_endpoint_in(found, "eu-central-1c")


@pytest.mark.parametrize(("stack", "expected"), [("dev", 1), ("prod", 3)])
def test_nat_gateways_one_or_per_az(run_pulumi: Callable[..., Recorded], stack: str, expected: int) -> None:
    cfg = load_stack(stack, ROOT)
    rec = run_pulumi(_program(cfg), region=cfg.region)
    nats = sorted(rec.of_type(NAT), key=lambda n: n.name)
    assert len(nats) == expected
    assert expected == (1 if cfg.network.nat_gateways == "one" else cfg.network.az_count)
    home = "nat" if cfg.firewall.network_firewall else "dmz"
    for i, nat in enumerate(nats):
        assert nat.inputs["subnetId"] == f"net-{home}-{i}-id"
        eip = rec.named(f"net-natgw-eip-{i}")
        assert eip.inputs["domain"] == "vpc"
        assert nat.inputs["allocationId"] == _id(eip)


# --- flow logs ---------------------------------------------------------------------------------


def test_flow_logs_capture_all_traffic_to_an_encrypted_group(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    group = rec.named("net-flow-logs")
    assert group.inputs["kmsKeyId"] == KEY_ARN
    assert group.inputs["retentionInDays"] == cfg.logging.retention_days
    group_arn = f"arn:aws:cloudwatch:{cfg.region}:{MOCK_ACCOUNT_ID}:net-flow-logs"  # the mock's ARN

    flow_logs = rec.of_type("aws:ec2/flowLog:FlowLog")
    assert len(flow_logs) == 1
    flow_log = flow_logs[0].inputs
    assert flow_log["trafficType"] == "ALL"
    assert flow_log["vpcId"] == "net-vpc-id"
    assert flow_log["logDestinationType"] == "cloud-watch-logs"
    assert flow_log["logDestination"] == group_arn
    role = rec.named("net-flow-logs-role")
    assert flow_log["iamRoleArn"] == f"arn:aws:iam:{cfg.region}:{MOCK_ACCOUNT_ID}:net-flow-logs-role"

    trust = json.loads(role.inputs["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": FLOW_LOGS_SERVICE}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": MOCK_ACCOUNT_ID}

    policies = rec.of_type("aws:iam/rolePolicy:RolePolicy")
    assert [p.inputs["role"] for p in policies] == [_id(role)]
    (statement,) = json.loads(policies[0].inputs["policy"])["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == [
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    ]
    assert sorted(statement["Resource"]) == [group_arn, f"{group_arn}:*"]
    assert not rec.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")


# --- network ACLs ------------------------------------------------------------------------------


def test_every_tier_has_a_nacl_on_its_subnets(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    assert len(rec.of_type(NACL)) == len(cfg.subnet_plan())
    for tier in cfg.subnet_plan():
        nacl = rec.named(f"net-{tier}-nacl")
        assert nacl.inputs["subnetIds"] == [f"net-{tier}-{i}-id" for i in range(cfg.network.az_count)]
        for direction in ("ingress", "egress"):
            numbers = [e["ruleNo"] for e in nacl.inputs[direction]]
            assert len(numbers) == len(set(numbers)) <= 20


def test_no_nacl_entry_covers_ssh_or_rdp(network: tuple[StackConfig, Recorded]) -> None:
    _, rec = network
    for nacl in rec.of_type(NACL):
        for direction, entry in _entries(nacl):
            assert entry["protocol"] == "tcp", f"{nacl.name} {direction}: {entry}"
            assert entry["action"] == "allow"
            for port in ADMIN_PORTS:
                assert not entry["fromPort"] <= port <= entry["toPort"], f"{nacl.name} {direction}: {entry}"


def _ingress_to(rec: Recorded, tier: str, port: int) -> list[str]:
    entries = rec.named(f"net-{tier}-nacl").inputs["ingress"]
    return [e["cidrBlock"] for e in entries if e["fromPort"] <= port <= e["toPort"]]


def test_model_port_only_from_the_model_load_balancer(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    model_port = load_catalog().runtime(cfg.runtime).port
    plan = cfg.subnet_plan()
    # The internal load balancer's nodes live in the model subnets: the port is open from
    # there only, and the app tier reaches the balancer on 443.
    sources = _ingress_to(rec, "model", model_port)
    assert sources, "the model port must be reachable from the model subnets"
    assert all(_within(cidr, plan["model"]) for cidr in sources), sources
    assert all(any(s.subnet_of(IPv4Network(c)) for c in sources) for s in plan["model"])
    https = _ingress_to(rec, "model", 443)
    assert all(any(s.subnet_of(IPv4Network(c)) for c in https) for s in plan["app"])


def test_egress_subnets_pass_only_the_app_tiers_https(run_pulumi: Callable[..., Recorded]) -> None:
    cfg = load_stack("prod", ROOT)
    rec = run_pulumi(_program(cfg), region=cfg.region)
    app = cfg.subnet_plan()["app"]
    for kind in EGRESS_SUBNETS:
        nacl = rec.named(f"net-{kind}-nacl")
        https_in = [e for e in nacl.inputs["ingress"] if e["fromPort"] <= 443 <= e["toPort"]]
        assert https_in and all(_within(e["cidrBlock"], app) for e in https_in)
        back = [e for e in nacl.inputs["egress"] if e["fromPort"] >= 1024]
        assert back and all(_within(e["cidrBlock"], app) for e in back)
    # With the NAT gateways gone from the dmz, the dmz no longer sends HTTPS to the internet.
    dmz_out = rec.named("net-dmz-nacl").inputs["egress"]
    assert not [e for e in dmz_out if e["cidrBlock"] == ANYWHERE and e["fromPort"] <= 443 <= e["toPort"]]


def test_app_port_only_from_the_dmz_and_data_ports_only_from_the_app_tier(
    network: tuple[StackConfig, Recorded],
) -> None:
    cfg, rec = network
    plan = cfg.subnet_plan()
    sources = _ingress_to(rec, "app", cfg.firewall.app_port)
    assert sources
    assert all(_within(c, plan["dmz"]) for c in sources), sources
    for port in DATA_PORTS:
        sources = _ingress_to(rec, "data", port)
        assert sources
        assert all(_within(c, plan["app"]) for c in sources), sources


def test_without_ports_splits_around_admin_ports() -> None:
    assert without_ports(1024, 65535) == [(1024, 3388), (3390, 65535)]
    assert without_ports(0, 65535) == [(0, 21), (23, 3388), (3390, 65535)]
    assert without_ports(22, 22) == []
    assert without_ports(443, 443) == [(443, 443)]
    assert without_ports(1024, 65535, (3389, 11434)) == [(1024, 3388), (3390, 11433), (11435, 65535)]


# --- endpoints ---------------------------------------------------------------------------------


def test_interface_endpoints_are_private_and_use_the_given_group(
    network: tuple[StackConfig, Recorded],
) -> None:
    cfg, rec = network
    interfaces = [e for e in rec.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Interface"]
    services = {e.inputs["serviceName"] for e in interfaces}
    assert services == {f"com.amazonaws.{cfg.region}.{s}" for s in INTERFACE_ENDPOINT_SERVICES}
    assert len(interfaces) == len(INTERFACE_ENDPOINT_SERVICES)
    model_subnets = [f"net-model-{i}-id" for i in range(cfg.network.az_count)]
    for endpoint in interfaces:
        assert endpoint.inputs["privateDnsEnabled"] is True
        assert endpoint.inputs["securityGroupIds"] == [ENDPOINTS_SG]
        assert endpoint.inputs["subnetIds"] == model_subnets
        assert endpoint.inputs["vpcId"] == "net-vpc-id"


def test_s3_gateway_endpoint_routes_the_model_tier(network: tuple[StackConfig, Recorded]) -> None:
    cfg, rec = network
    gateways = [e for e in rec.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Gateway"]
    assert len(gateways) == 1
    gateway = gateways[0].inputs
    assert gateway["serviceName"] == f"com.amazonaws.{cfg.region}.s3"
    assert {_id(t) for t in _tables(rec, "model")} <= set(gateway["routeTableIds"])


# --- structure ---------------------------------------------------------------------------------


def test_every_child_is_parented_to_its_component(network: tuple[StackConfig, Recorded]) -> None:
    _, rec = network
    components = {r.urn: r for r in rec.resources if not r.custom}
    assert sorted(c.type for c in components.values()) == [
        "llmkit:aws:Network",
        "llmkit:aws:PrivateEndpoints",
    ]
    for resource in rec.resources:
        if resource.custom:
            assert resource.parent in components, resource.name
            owner = components[resource.parent]
            assert resource.name.startswith(f"{owner.name}-"), resource.name
            expected = "llmkit:aws:PrivateEndpoints" if resource.type == ENDPOINT else "llmkit:aws:Network"
            assert owner.type == expected, resource.name


def test_args_from_config(stack_config: StackConfig) -> None:
    args = NetworkArgs.from_config(stack_config, KEY_ARN)
    assert args.vpc_cidr == str(stack_config.network.vpc_cidr)
    assert args.az_count == stack_config.network.az_count
    assert args.subnet_plan == {t: [str(n) for n in ns] for t, ns in stack_config.subnet_plan().items()}
    assert args.nat_gateways == stack_config.network.nat_gateways
    assert args.model_port == load_catalog().runtime(stack_config.runtime).port
    assert args.app_port == stack_config.firewall.app_port
    assert args.flow_log_retention_days == stack_config.logging.retention_days
    assert args.flow_logs_key_arn == KEY_ARN
    assert args.az_names is None


def test_explicit_az_names_are_used(run_pulumi: Callable[..., Recorded]) -> None:
    cfg = load_stack("dev", ROOT)
    args = NetworkArgs.from_config(cfg, KEY_ARN)
    args.az_names = ["eu-central-1b", "eu-central-1c", "eu-central-1a"]
    rec = run_pulumi(lambda: Network("net", args), region=cfg.region)
    assert [rec.named(f"net-app-{i}").inputs["availabilityZone"] for i in range(2)] == [
        "eu-central-1b",
        "eu-central-1c",
    ]


def test_a_plan_without_one_subnet_per_az_is_refused() -> None:
    cfg = load_stack("dev", ROOT)
    args = NetworkArgs.from_config(cfg, KEY_ARN)
    args.subnet_plan["model"] = args.subnet_plan["model"][:1]
    with pytest.raises(ValueError, match="model"):
        plan_module.record(lambda: Network("net", args))
