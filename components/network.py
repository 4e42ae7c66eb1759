"""The VPC of a stack: four tiers of private subnets, their routes, NACLs, flow logs and endpoints.

Tiers (one subnet per tier and AZ, carved by :meth:`llmkit.config.StackConfig.subnet_plan`):

- ``dmz``: the load balancer and the NAT gateways. The only tier routed to the internet gateway.
- ``app``: the gateway / the customer's app. Default route to the NAT gateway of its AZ (or the
  single NAT gateway when ``nat_gateways: one``); with the Network Firewall, to the firewall
  endpoint of its AZ instead (below).
- ``model``: GPU hosts. **No default route at all**: its route tables hold only the local route
  and the S3 gateway endpoint's prefix-list route; everything else goes to interface endpoints.
- ``data``: no default route either.

**The inspected egress path** (``egress_firewall``, from ``llmkit:firewall.network_firewall``)
follows AWS's distributed Network Firewall model with NAT gateways. Two more subnets per AZ:
``firewall`` for the firewall endpoints and ``nat`` for the NAT gateways (they leave the dmz, so
that the load balancer's traffic to the app tier is never hairpinned through the firewall)::

    app --0.0.0.0/0--> firewall endpoint (AZ i) --firewall subnet 0.0.0.0/0--> NAT --> IGW
    IGW --> NAT --nat subnet: app CIDR i--> firewall endpoint (AZ i) --local--> app (AZ i)

Both directions of a connection cross the same endpoint, as the stateful engine needs. The
firewall endpoints exist only after the firewall does, so the app tier's default route and the
NAT subnets' return routes are added by :meth:`Network.route_app_egress_through`; until it is
called the app tier has no route out at all (fail closed, never around the firewall).

No subnet maps public IPs on launch (the ALB and the NAT gateways get their own addresses), the
VPC's default security group is stripped of every rule, and the VPC's flow logs (all traffic)
go to a KMS-encrypted CloudWatch log group.

Network ACLs mirror the security groups' intent by CIDR (a NACL cannot reference a security
group); the security groups (the Firewall component) remain the precise control. NACLs are
stateless, so every allowed connection needs its return traffic allowed on the ephemeral
ports. No NACL entry's port range contains SSH (22) or RDP (3389): the ephemeral range is
written as 1024-3388 and 3390-65535, and no entry uses the "all traffic" protocol (-1). The
return-traffic entries from anywhere also leave out the tier's own service port (app, model), so
that port is open only to the tier in front of it.
Whatever no entry allows hits the NACL's implicit deny.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, collapse_addresses
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from components.base import Component
from llmkit.catalog import load_catalog
from llmkit.config import DATA_PORTS, DEFAULT_APP_PORT, EGRESS_SUBNETS, TIERS, StackConfig

ANYWHERE = "0.0.0.0/0"
EPHEMERAL = (1024, 65535)
# Ports no NACL entry may open, in either direction: remote administration goes through SSM.
ADMIN_PORTS = (22, 3389)
# AWS's default quota of entries per NACL and direction.
NACL_RULES_PER_DIRECTION = 20

# The interface endpoints the private tiers reach AWS through (com.amazonaws.<region>.<service>):
# keys and logs, SSM session manager, STS, secrets, the container registry, and for the GPU hosts
# CloudWatch metrics (their scaling metrics) and Auto Scaling (completing the launch hook).
INTERFACE_ENDPOINT_SERVICES = (
    "kms",
    "logs",
    "monitoring",
    "autoscaling",
    "ssm",
    "ssmmessages",
    "ec2messages",
    "sts",
    "secretsmanager",
    "ecr.api",
    "ecr.dkr",
)
FLOW_LOGS_SERVICE = "vpc-flow-logs.amazonaws.com"


# --- network ACL rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class NaclRule:
    """One allow entry of a NACL: TCP from/to ``cidr`` on ports ``from_port``..``to_port``."""

    cidr: str
    from_port: int
    to_port: int
    why: str

    def _fields(self, rule_no: int) -> dict[str, Any]:
        return {
            "rule_no": rule_no,
            "action": "allow",
            "protocol": "tcp",
            "cidr_block": self.cidr,
            "from_port": self.from_port,
            "to_port": self.to_port,
        }

    def ingress(self, rule_no: int) -> aws.ec2.NetworkAclIngressArgs:
        return aws.ec2.NetworkAclIngressArgs(**self._fields(rule_no))

    def egress(self, rule_no: int) -> aws.ec2.NetworkAclEgressArgs:
        return aws.ec2.NetworkAclEgressArgs(**self._fields(rule_no))


def without_ports(
    from_port: int, to_port: int, excluded: Sequence[int] = ADMIN_PORTS
) -> list[tuple[int, int]]:
    """The range ``from_port..to_port`` split so that no piece contains an ``excluded`` port."""
    pieces: list[tuple[int, int]] = []
    low = from_port
    for port in sorted(set(excluded)):
        if low <= port <= to_port:
            if low < port:
                pieces.append((low, port - 1))
            low = port + 1
    if low <= to_port:
        pieces.append((low, to_port))
    return pieces


def _rules(
    cidrs: Sequence[str], ports: Sequence[int | tuple[int, int]], why: str, also_excluded: Sequence[int] = ()
) -> Iterator[NaclRule]:
    """Allow entries for every (collapsed) CIDR and port (range), never covering an admin port."""
    collapsed = [str(n) for n in collapse_addresses(IPv4Network(c) for c in cidrs)]
    for cidr in collapsed:
        for port in ports:
            low, high = port if isinstance(port, tuple) else (port, port)
            for a, b in without_ports(low, high, (*ADMIN_PORTS, *also_excluded)):
                yield NaclRule(cidr, a, b, why)


def nacl_rules(
    plan: dict[str, list[str]],
    app_port: int,
    model_port: int,
    data_ports: Sequence[int],
) -> dict[str, dict[str, list[NaclRule]]]:
    """{subnet kind: {"ingress": [...], "egress": [...]}}: the NACL entries of every kind, in order.

    The kinds are the four tiers, plus ``nat`` and ``firewall`` when ``plan`` has those subnets
    (the inspected egress path); the NAT gateways are then no longer in the dmz.
    """
    dmz, app, model, data = (plan[t] for t in TIERS)
    nat_in_dmz = "nat" not in plan
    eph = [EPHEMERAL]
    rules: dict[str, dict[str, list[NaclRule]]] = {
        "dmz": {
            "ingress": [
                # The load balancer's security group narrows 443 to the allowed client CIDRs.
                *_rules([ANYWHERE], [443], "HTTPS from clients"),
                *_rules([ANYWHERE], [80], "HTTP, answered by a redirect to HTTPS"),
                # Responses to the load balancer's connections to the app tier, and (NAT in the
                # dmz) to the NAT gateways' connections to the internet.
                *_rules([ANYWHERE] if nat_in_dmz else app, eph, "return traffic"),
            ],
            "egress": [
                *_rules(app, [app_port], "load balancer to the app tier"),
                *(_rules([ANYWHERE], [443], "NAT gateway egress to HTTPS") if nat_in_dmz else ()),
                *_rules([ANYWHERE], eph, "responses to clients (and NAT'ed app hosts)"),
            ],
        },
        "app": {
            "ingress": [
                *_rules(dmz, [app_port], "load balancer to the app tier"),
                # Responses from the internet (through the NAT) and from the model/data tiers; the
                # app port stays reachable from the DMZ only.
                *_rules([ANYWHERE], eph, "return traffic", also_excluded=[app_port]),
            ],
            "egress": [
                *_rules(data, data_ports, "app tier to the data tier"),
                # The model tier's internal load balancer, the interface endpoints, S3 and the
                # internet through the NAT gateways (and the Network Firewall).
                *_rules([ANYWHERE], [443], "HTTPS: model load balancer, VPC endpoints, NAT"),
                *_rules(dmz, eph, "responses to the load balancer"),
            ],
        },
        "model": {
            "ingress": [
                # The internal load balancer's nodes and the interface endpoints' ENIs live here.
                *_rules([*app, *model], [443], "HTTPS to the model load balancer and the endpoints"),
                *_rules(model, [model_port], "the model port, only from the model load balancer"),
                # Responses from the interface endpoints and from S3 through the gateway endpoint
                # (S3's addresses are public): the route table, not the NACL, keeps this tier off
                # the internet. The model port stays reachable from the model subnets only (Linux
                # picks ephemeral ports from 32768-60999, so no reply is ever addressed to it).
                *_rules(
                    [ANYWHERE], eph, "return traffic from the endpoints and S3", also_excluded=[model_port]
                ),
            ],
            "egress": [
                *_rules(model, [model_port], "model load balancer to the hosts"),
                *_rules([*app, *model], eph, "responses to the app tier and from the endpoints"),
                # S3 through the gateway endpoint has public destination addresses; the model
                # route tables have no default route, so nothing else leaves the VPC.
                *_rules([ANYWHERE], [443], "HTTPS to the VPC endpoints and S3"),
            ],
        },
        "data": {
            "ingress": [*_rules(app, data_ports, "the data ports, only from the app tier")],
            "egress": [*_rules(app, eph, "responses to the app tier")],
        },
    }
    for kind in EGRESS_SUBNETS:
        if kind in plan:
            # The app tier's outbound HTTPS passes the firewall endpoints and the NAT gateways in
            # both directions, with the app hosts' addresses on the inside.
            rules[kind] = {
                "ingress": [
                    *_rules(app, [443], "outbound HTTPS from the app tier"),
                    *_rules([ANYWHERE], eph, "responses from the internet"),
                ],
                "egress": [
                    *_rules([ANYWHERE], [443], "outbound HTTPS of the app tier"),
                    *_rules(app, eph, "responses to the app tier"),
                ],
            }
    return rules


def firewall_endpoint_in(endpoints: Mapping[str, str], az: str) -> str:
    """The firewall endpoint of ``az`` in {availability zone: endpoint id}; a clear error if none."""
    if az not in endpoints:
        raise ValueError(
            f"the Network Firewall has no endpoint in {az} "
            f"(it has: {', '.join(sorted(endpoints)) or 'none'}); "
            "give it one firewall subnet in every AZ of the network"
        )
    return endpoints[az]


# --- Network -----------------------------------------------------------------------------------


@dataclass
class NetworkArgs:
    """What a :class:`Network` needs; build it from a stack's config with :meth:`from_config`."""

    vpc_cidr: str
    az_count: int
    subnet_plan: dict[str, list[str]]  # tier -> one CIDR per AZ, in AZ order
    nat_gateways: Literal["one", "per_az"]
    model_port: int
    flow_log_retention_days: int
    flow_logs_key_arn: pulumi.Input[str]
    app_port: int = DEFAULT_APP_PORT
    data_ports: list[int] = field(default_factory=lambda: list(DATA_PORTS))
    # None: the first az_count zones of aws.get_availability_zones(state="available").
    az_names: list[str] | None = None

    @classmethod
    def from_config(cls, cfg: StackConfig, flow_logs_key_arn: pulumi.Input[str]) -> NetworkArgs:
        return cls(
            vpc_cidr=str(cfg.network.vpc_cidr),
            az_count=cfg.network.az_count,
            subnet_plan={tier: [str(n) for n in nets] for tier, nets in cfg.subnet_plan().items()},
            nat_gateways=cfg.network.nat_gateways,
            model_port=load_catalog().runtime(cfg.runtime).port,
            app_port=cfg.firewall.app_port,
            flow_log_retention_days=cfg.logging.retention_days,
            flow_logs_key_arn=flow_logs_key_arn,
        )


class Network(Component):
    """The VPC, its tiered subnets, routes, NAT gateways, NACLs and flow logs."""

    TYPE = "llmkit:aws:Network"

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        invoke = pulumi.InvokeOptions(parent=self)

        kinds = set(args.subnet_plan)
        if kinds not in (set(TIERS), {*TIERS, *EGRESS_SUBNETS}):
            raise ValueError(
                f"subnet_plan must have exactly the tiers {', '.join(TIERS)}, plus "
                f"{' and '.join(EGRESS_SUBNETS)} for the inspected egress path"
            )
        self.egress_firewall = kinds != set(TIERS)
        self.kinds: tuple[str, ...] = (*TIERS, *EGRESS_SUBNETS) if self.egress_firewall else TIERS
        bad = [t for t in self.kinds if len(args.subnet_plan[t]) != args.az_count]
        if bad:
            raise ValueError(f"subnet_plan tiers {', '.join(bad)} need one CIDR per AZ ({args.az_count})")
        names: Sequence[str] = (
            args.az_names
            if args.az_names is not None
            else aws.get_availability_zones(state="available", opts=invoke).names
        )
        if len(names) < args.az_count:
            raise ValueError(f"az_count is {args.az_count} but only {len(names)} zones are available")
        self.azs: list[str] = list(names[: args.az_count])
        self._plan = args.subnet_plan
        self._egress_routed = False

        self._create_vpc(args)
        self._create_subnets(args)
        self._create_gateways(args)
        self._create_route_tables()
        self._create_nacls(args)
        self._create_flow_logs(args, invoke)

        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "azs": self.azs,
                "subnet_ids": self.subnet_ids,
                "route_table_ids": self.route_table_ids,
                "nat_gateway_ids": [n.id for n in self.nat_gateways],
                "flow_log_id": self.flow_log.id,
                "flow_log_group": self.flow_log_group.name,
            }
        )

    def _create_vpc(self, args: NetworkArgs) -> None:
        """The VPC, and its default security group adopted and stripped of every rule."""
        self.vpc = aws.ec2.Vpc(
            self.child_name("vpc"),
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": self.child_name("vpc")},
            opts=self.child_opts(),
        )
        self.vpc_id: pulumi.Output[str] = self.vpc.id
        # Adopt the default security group and strip it of every rule.
        self.default_security_group = aws.ec2.DefaultSecurityGroup(
            self.child_name("default-sg"),
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            tags={"Name": self.child_name("default-sg-locked")},
            opts=self.child_opts(),
        )

    def _create_subnets(self, args: NetworkArgs) -> None:
        """One subnet per kind (tier, and the egress subnets) and AZ; none maps public IPs."""
        self.subnets: dict[str, list[aws.ec2.Subnet]] = {
            tier: [
                aws.ec2.Subnet(
                    self.child_name(f"{tier}-{i}"),
                    vpc_id=self.vpc.id,
                    cidr_block=cidr,
                    availability_zone=self.azs[i],
                    map_public_ip_on_launch=False,
                    tags={"Name": self.child_name(f"{tier}-{i}"), "llmkit:tier": tier},
                    opts=self.child_opts(),
                )
                for i, cidr in enumerate(args.subnet_plan[tier])
            ]
            for tier in self.kinds
        }
        self.subnet_ids: dict[str, list[pulumi.Output[str]]] = {
            tier: [s.id for s in subnets] for tier, subnets in self.subnets.items()
        }

    def _create_gateways(self, args: NetworkArgs) -> None:
        """The internet gateway, and one NAT gateway (with its EIP) or one per AZ."""
        self.internet_gateway = aws.ec2.InternetGateway(
            self.child_name("igw"),
            vpc_id=self.vpc.id,
            tags={"Name": self.child_name("igw")},
            opts=self.child_opts(),
        )
        nat_count = 1 if args.nat_gateways == "one" else args.az_count
        self._nat_count = nat_count
        self.nat_eips: list[aws.ec2.Eip] = []
        self.nat_gateways: list[aws.ec2.NatGateway] = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(
                self.child_name(f"natgw-eip-{i}"),
                domain="vpc",
                tags={"Name": self.child_name(f"natgw-eip-{i}")},
                opts=self.child_opts(depends_on=[self.internet_gateway]),
            )
            self.nat_eips.append(eip)
            self.nat_gateways.append(
                aws.ec2.NatGateway(
                    self.child_name(f"natgw-{i}"),
                    allocation_id=eip.id,
                    subnet_id=self.subnets["nat" if self.egress_firewall else "dmz"][i].id,
                    connectivity_type="public",
                    tags={"Name": self.child_name(f"natgw-{i}")},
                    opts=self.child_opts(depends_on=[self.internet_gateway]),
                )
            )

    def _create_route_tables(self) -> None:
        """One route table per kind and AZ; default routes as separate Route resources.

        Model and data tables get no route of their own: the S3 gateway endpoint adds its
        prefix-list route to them (PrivateEndpoints), and nothing else. With the inspected
        egress path the app tables get theirs from route_app_egress_through().
        """
        self.route_tables: dict[str, list[aws.ec2.RouteTable]] = {}
        self.routes: list[aws.ec2.Route] = []
        nat_count = self._nat_count
        for tier in self.kinds:
            tables = []
            for i, subnet in enumerate(self.subnets[tier]):
                table = aws.ec2.RouteTable(
                    self.child_name(f"{tier}-rt-{i}"),
                    vpc_id=self.vpc.id,
                    tags={"Name": self.child_name(f"{tier}-rt-{i}"), "llmkit:tier": tier},
                    opts=self.child_opts(),
                )
                aws.ec2.RouteTableAssociation(
                    self.child_name(f"{tier}-rta-{i}"),
                    route_table_id=table.id,
                    subnet_id=subnet.id,
                    opts=self.child_opts(),
                )
                if tier in ("dmz", "nat"):
                    self.routes.append(
                        aws.ec2.Route(
                            self.child_name(f"{tier}-default-{i}"),
                            route_table_id=table.id,
                            destination_cidr_block=ANYWHERE,
                            gateway_id=self.internet_gateway.id,
                            opts=self.child_opts(),
                        )
                    )
                elif tier == "firewall" or (tier == "app" and not self.egress_firewall):
                    nat = self.nat_gateways[i if nat_count > 1 else 0]
                    self.routes.append(
                        aws.ec2.Route(
                            self.child_name(f"{tier}-default-{i}"),
                            route_table_id=table.id,
                            destination_cidr_block=ANYWHERE,
                            nat_gateway_id=nat.id,
                            opts=self.child_opts(),
                        )
                    )
                tables.append(table)
            self.route_tables[tier] = tables
        self.route_table_ids: dict[str, list[pulumi.Output[str]]] = {
            tier: [t.id for t in tables] for tier, tables in self.route_tables.items()
        }

    def _create_nacls(self, args: NetworkArgs) -> None:
        """One NACL per kind, its entries from nacl_rules(); within AWS's default quota of entries."""
        self.nacl_rules = nacl_rules(args.subnet_plan, args.app_port, args.model_port, args.data_ports)
        self.nacls: dict[str, aws.ec2.NetworkAcl] = {}
        for tier in self.kinds:
            entries = self.nacl_rules[tier]
            for direction, rules in entries.items():
                if len(rules) > NACL_RULES_PER_DIRECTION:
                    raise ValueError(
                        f"the {tier} NACL needs {len(rules)} {direction} entries, over AWS's default "
                        f"quota of {NACL_RULES_PER_DIRECTION}; use contiguous subnet CIDRs per tier"
                    )
            self.nacls[tier] = aws.ec2.NetworkAcl(
                self.child_name(f"{tier}-nacl"),
                vpc_id=self.vpc.id,
                subnet_ids=self.subnet_ids[tier],
                ingress=[r.ingress(100 + 10 * n) for n, r in enumerate(entries["ingress"])],
                egress=[r.egress(100 + 10 * n) for n, r in enumerate(entries["egress"])],
                tags={"Name": self.child_name(f"{tier}-nacl"), "llmkit:tier": tier},
                opts=self.child_opts(),
            )

    def _create_flow_logs(self, args: NetworkArgs, invoke: pulumi.InvokeOptions) -> None:
        """The VPC's flow logs (all traffic) to a KMS-encrypted log group, through a scoped role."""
        account = aws.get_caller_identity(opts=invoke).account_id
        partition = aws.get_partition(opts=invoke).partition
        region = aws.get_region(opts=invoke).region
        self.flow_log_group = aws.cloudwatch.LogGroup(
            self.child_name("flow-logs"),
            kms_key_id=args.flow_logs_key_arn,
            retention_in_days=args.flow_log_retention_days,
            opts=self.child_opts(),
        )
        self.flow_log_role = aws.iam.Role(
            self.child_name("flow-logs-role"),
            description="Lets VPC Flow Logs of this account write to the flow-log group",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": FLOW_LOGS_SERVICE},
                            "Action": "sts:AssumeRole",
                            "Condition": {
                                "StringEquals": {"aws:SourceAccount": account},
                                "ArnLike": {
                                    "aws:SourceArn": f"arn:{partition}:ec2:{region}:{account}:vpc-flow-log/*"
                                },
                            },
                        }
                    ],
                }
            ),
            opts=self.child_opts(),
        )
        self.flow_log_policy = aws.iam.RolePolicy(
            self.child_name("flow-logs-write"),
            role=self.flow_log_role.id,
            # The group's ARN (CreateLogStream, DescribeLogStreams) and its streams (":*").
            policy=self.flow_log_group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "logs:CreateLogStream",
                                    "logs:PutLogEvents",
                                    "logs:DescribeLogStreams",
                                ],
                                "Resource": [arn, f"{arn}:*"],
                            }
                        ],
                    }
                )
            ),
            opts=self.child_opts(),
        )
        self.flow_log = aws.ec2.FlowLog(
            self.child_name("flow-log"),
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=self.flow_log_group.arn,
            iam_role_arn=self.flow_log_role.arn,
            max_aggregation_interval=60,
            tags={"Name": self.child_name("flow-log")},
            opts=self.child_opts(depends_on=[self.flow_log_policy]),
        )

    def route_app_egress_through(self, endpoint_ids: pulumi.Input[Mapping[str, str]]) -> list[aws.ec2.Route]:
        """Send the app tier's egress through the Network Firewall: call once with its endpoints.

        ``endpoint_ids`` maps availability zone -> firewall endpoint id (the Firewall's
        ``firewall_endpoint_ids``). Adds each app table's default route to the endpoint of its
        AZ, and to each NAT subnet's table the return route of every app subnet it serves, to
        the endpoint of that app subnet's AZ, so both directions cross the same endpoint.
        """
        if not self.egress_firewall:
            raise ValueError("route_app_egress_through needs the nat and firewall subnets (network_firewall)")
        if self._egress_routed:
            raise ValueError("route_app_egress_through was already called for this network")
        self._egress_routed = True
        ids = pulumi.Output.from_input(endpoint_ids)

        def endpoint(az: str) -> pulumi.Output[str]:
            return ids.apply(lambda found: firewall_endpoint_in(found, az))

        added: list[aws.ec2.Route] = []
        for i, (az, table) in enumerate(zip(self.azs, self.route_tables["app"], strict=True)):
            added.append(
                aws.ec2.Route(
                    self.child_name(f"app-default-{i}"),
                    route_table_id=table.id,
                    destination_cidr_block=ANYWHERE,
                    vpc_endpoint_id=endpoint(az),
                    opts=self.child_opts(),
                )
            )
            nat_table = self.route_tables["nat"][i if self._nat_count > 1 else 0]
            added.append(
                aws.ec2.Route(
                    self.child_name(f"nat-return-app-{i}"),
                    route_table_id=nat_table.id,
                    destination_cidr_block=self._plan["app"][i],
                    vpc_endpoint_id=endpoint(az),
                    opts=self.child_opts(),
                )
            )
        self.routes += added
        return added


# --- PrivateEndpoints --------------------------------------------------------------------------


@dataclass
class PrivateEndpointsArgs:
    """What :class:`PrivateEndpoints` needs; all ids come from :class:`Network` and the Firewall."""

    vpc_id: pulumi.Input[str]
    region: str
    subnet_ids: Sequence[pulumi.Input[str]]  # where the interface endpoints' ENIs go: the model tier
    route_table_ids: Sequence[pulumi.Input[str]]  # the tables the S3 gateway endpoint routes from
    security_group_id: pulumi.Input[str]  # the endpoints' SG (Firewall: admits app and model tiers)
    # The S3 gateway endpoint's policy (JSON); None leaves AWS's default, full access.
    s3_policy: pulumi.Input[str] | None = None


class PrivateEndpoints(Component):
    """The S3 gateway endpoint and the interface endpoints of INTERFACE_ENDPOINT_SERVICES."""

    TYPE = "llmkit:aws:PrivateEndpoints"

    def __init__(
        self, name: str, args: PrivateEndpointsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(name, opts)
        self.gateway = aws.ec2.VpcEndpoint(
            self.child_name("s3"),
            vpc_id=args.vpc_id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=list(args.route_table_ids),
            policy=args.s3_policy,
            tags={"Name": self.child_name("s3")},
            opts=self.child_opts(),
        )
        # The S3 prefix list, for security group rules to S3 (FirewallArgs.s3_prefix_list_id).
        self.s3_prefix_list_id: pulumi.Output[str] = self.gateway.prefix_list_id
        self.interfaces: dict[str, aws.ec2.VpcEndpoint] = {
            service: aws.ec2.VpcEndpoint(
                self.child_name(service.replace(".", "-")),
                vpc_id=args.vpc_id,
                service_name=f"com.amazonaws.{args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=list(args.subnet_ids),
                security_group_ids=[args.security_group_id],
                tags={"Name": self.child_name(service.replace(".", "-"))},
                opts=self.child_opts(),
            )
            for service in INTERFACE_ENDPOINT_SERVICES
        }
        self.register_outputs(
            {
                "gateway_id": self.gateway.id,
                "s3_prefix_list_id": self.s3_prefix_list_id,
                "interface_ids": {s: e.id for s, e in self.interfaces.items()},
            }
        )
