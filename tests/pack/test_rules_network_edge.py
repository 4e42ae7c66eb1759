"""Network and edge rules: world-open and admin-port ingress, listener TLS and HTTP, ALB hardening,
the model tier's routes and VPC flow logs."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from llmkit.plan import run_plan
from llmkit.policy import UNKNOWN, Stack, evaluate, resources_from_graph
from policies.rules.aws_alb_listener_disallow_plain_http import RULE as PLAIN_HTTP
from policies.rules.aws_alb_listener_enforce_tls13 import RULE as TLS13
from policies.rules.aws_alb_listener_enforce_tls13 import TLS13_ONLY_POLICIES
from policies.rules.aws_alb_loadbalancer_enable_access_logs import RULE as ACCESS_LOGS
from policies.rules.aws_alb_loadbalancer_enable_drop_invalid_headers import RULE as DROP_HEADERS
from policies.rules.aws_alb_loadbalancer_missing_waf import RULE as WAF
from policies.rules.aws_ec2_routetable_disallow_model_egress import RULE as MODEL_EGRESS
from policies.rules.aws_ec2_routetable_disallow_model_egress import model_tables
from policies.rules.aws_ec2_securitygroup_disallow_admin_ports import RULE as ADMIN_PORTS
from policies.rules.aws_ec2_securitygroup_disallow_public_ingress import RULE as PUBLIC_INGRESS
from policies.rules.aws_ec2_securitygroup_disallow_public_ingress import is_world
from policies.rules.aws_ec2_vpc_missing_flowlog import RULE as FLOW_LOGS
from tests.pack.fixtures import messages, res, skipped

ROOT = Path(__file__).resolve().parents[2]
RULES = [
    PUBLIC_INGRESS,
    ADMIN_PORTS,
    TLS13,
    PLAIN_HTTP,
    DROP_HEADERS,
    ACCESS_LOGS,
    WAF,
    MODEL_EGRESS,
    FLOW_LOGS,
]

SG = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LB = "aws:lb/loadBalancer:LoadBalancer"
ALB = "aws:alb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
ALB_LISTENER = "aws:alb/listener:Listener"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
ALB_LISTENER_RULE = "aws:alb/listenerRule:ListenerRule"
WAF_ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
DEFAULT_ROUTE_TABLE = "aws:ec2/defaultRouteTable:DefaultRouteTable"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
MAIN_ASSOCIATION = "aws:ec2/mainRouteTableAssociation:MainRouteTableAssociation"
PROPAGATION = "aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation"
IGW = "aws:ec2/internetGateway:InternetGateway"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"

ONLY_443 = (
    "only tcp 443 may be open to every address, and only on the group of an internet-facing load balancer"
)
NOT_ATTACHED = (
    "but the group is not attached to an internet-facing load balancer: only such a group may admit every "
    "address (on tcp 443)"
)
SSM = "no admin port is opened, reach hosts through SSM Session Manager"
ALL_PORTS = "admits every port, 22 (SSH) and 3389 (RDP) included: name the protocol and port"
WHY = (
    "the model tier has no internet route "
    "(AWS through VPC endpoints, the mirror through the S3 gateway endpoint)"
)
ONLY_REDIRECTS = "an HTTP listener only redirects to HTTPS"
REDIRECT = {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}
FORWARD = {"type": "forward", "targetGroupArn": "arn:aws:lb:eu-central-1:123456789012:tg"}


def tcp(port: int, to: int | None = None, **source: Any) -> dict[str, Any]:
    """An inline ingress entry."""
    return {"protocol": "tcp", "fromPort": port, "toPort": port if to is None else to, **source}


def ports(value: int | tuple[int, int] | None) -> dict[str, Any]:
    if value is None:
        return {}
    low, high = (value, value) if isinstance(value, int) else value
    return {"fromPort": low, "toPort": high}


def vpc_in(name: str, group: str, protocol: str, port: Any = None, **source: Any) -> Any:
    """An aws.vpc.SecurityGroupIngressRule."""
    return res(INGRESS, name, securityGroupId=group, ipProtocol=protocol, **ports(port), **source)


def sg_rule(name: str, kind: str, group: str, protocol: str, port: Any, **source: Any) -> Any:
    """An aws.ec2.SecurityGroupRule."""
    return res(SG_RULE, name, type=kind, securityGroupId=group, protocol=protocol, **ports(port), **source)


def world_443(group: str = "lb-id", name: str = "in-443") -> Any:
    return vpc_in(name, group, "tcp", 443, cidrIpv4="0.0.0.0/0")


# --- aws-ec2-securitygroup-disallow-public-ingress ----------------------------------------------


def test_world_https_on_an_internet_facing_load_balancer_group_passes() -> None:
    for lb_type, internal in ((LB, {"internal": False}), (ALB, {})):  # internal absent: internet-facing
        lb = res(lb_type, "edge", securityGroups=["lb-id"], **internal)
        assert messages(PUBLIC_INGRESS, res(SG, "lb"), world_443(), lb) == []
    ipv6 = res(SG, "lb", ingress=[tcp(443, ipv6CidrBlocks=["::/0"])])
    assert messages(PUBLIC_INGRESS, ipv6, res(LB, "edge", internal=False, securityGroups=["lb-id"])) == []


def test_a_group_of_another_stack_named_by_id_counts_when_the_load_balancer_names_it() -> None:
    rule = world_443("sg-0abc", "in")
    assert messages(PUBLIC_INGRESS, rule, res(LB, "edge", securityGroups=["sg-0abc"])) == []
    assert messages(PUBLIC_INGRESS, rule, res(LB, "edge", securityGroups=["sg-0def"])) == [
        ("in", f"security group sg-0abc admits 0.0.0.0/0 on tcp 443, {NOT_ATTACHED}")
    ]


def test_restricted_sources_and_egress_are_not_world_ingress() -> None:
    private = res(SG, "lb", ingress=[tcp(80, cidrBlocks=["10.0.0.0/8"]), tcp(8443, securityGroups=["a"])])
    egress_rule = sg_rule("out", "egress", "lb-id", "-1", 0, cidrBlocks=["0.0.0.0/0"])
    egress = res(EGRESS, "out2", securityGroupId="lb-id", ipProtocol="-1", cidrIpv4="0.0.0.0/0")
    assert messages(PUBLIC_INGRESS, private, egress_rule, egress) == []


def test_world_ingress_on_another_port_fails_in_every_form() -> None:
    inline = res(SG, "web", ingress=[tcp(80, cidrBlocks=["0.0.0.0/0"]), tcp(443, cidrBlocks=["10.0.0.0/8"])])
    default = res(DEFAULT_SG, "default", ingress=[tcp(8080, ipv6CidrBlocks=["::/0"])])
    rule = sg_rule("ssh", "ingress", "app-id", "tcp", 22, ipv6CidrBlocks=["::/0"])
    vpc_rule = vpc_in("range", "lb-id", "tcp", (80, 443), cidrIpv4="0.0.0.0/0")
    everything = vpc_in("all", "lb-id", "-1", cidrIpv4="0.0.0.0/0")
    groups = (res(SG, "app"), res(SG, "lb"))
    lb = res(LB, "edge", internal=False, securityGroups=["lb-id"])
    assert messages(PUBLIC_INGRESS, inline, default, *groups, rule, vpc_rule, everything, lb) == [
        ("web", f"security group web admits 0.0.0.0/0 on tcp 80: {ONLY_443}"),
        ("default", f"security group default admits ::/0 on tcp 8080: {ONLY_443}"),
        ("ssh", f"security group app admits ::/0 on tcp 22: {ONLY_443}"),
        ("range", f"security group lb admits 0.0.0.0/0 on tcp 80-443: {ONLY_443}"),
        ("all", f"security group lb admits 0.0.0.0/0 on all protocols and ports: {ONLY_443}"),
    ]


def test_world_https_on_a_group_without_an_internet_facing_load_balancer_fails() -> None:
    internal = res(LB, "models", internal=True, securityGroups=["lb-id"])
    assert messages(PUBLIC_INGRESS, res(SG, "lb"), world_443(), internal) == [
        ("in-443", f"security group lb admits 0.0.0.0/0 on tcp 443, {NOT_ATTACHED}")
    ]
    assert messages(PUBLIC_INGRESS, res(SG, "lb"), world_443()) != []
    udp = res(SG, "lb", ingress=[{"protocol": "udp", **ports(443), "cidrBlocks": ["0.0.0.0/0"]}])
    assert messages(PUBLIC_INGRESS, udp, res(LB, "edge", securityGroups=["lb-id"])) == [
        ("lb", f"security group lb admits 0.0.0.0/0 on udp 443: {ONLY_443}")
    ]


def test_world_cidr_spellings() -> None:
    assert is_world("0.0.0.0/0") and is_world("::/0") and is_world("::0/0")
    assert not is_world("10.0.0.0/8") and not is_world("0.0.0.0/1") and not is_world("not a cidr")


def test_unknown_source_or_load_balancer_is_skipped() -> None:
    unknown_cidr = vpc_in("in", "lb-id", "tcp", 80, cidrIpv4=UNKNOWN)
    assert messages(PUBLIC_INGRESS, unknown_cidr) == []
    assert skipped(PUBLIC_INGRESS, unknown_cidr) == [(PUBLIC_INGRESS.name, "(stack)")]
    found = (res(SG, "lb"), world_443(), res(LB, "edge", internal=UNKNOWN, securityGroups=["lb-id"]))
    assert messages(PUBLIC_INGRESS, *found) == []
    assert skipped(PUBLIC_INGRESS, *found) == [(PUBLIC_INGRESS.name, "(stack)")]


# --- aws-ec2-securitygroup-disallow-admin-ports -------------------------------------------------


def test_ingress_without_admin_ports_passes() -> None:
    inline = res(
        SG, "lb", ingress=[tcp(443, cidrBlocks=["10.0.0.0/8"]), tcp(8443, 9000, securityGroups=["a"])]
    )
    rule = sg_rule("r", "ingress", "lb-id", "6", (23, 3388), cidrBlocks=["10.0.0.0/8"])
    icmp = vpc_in("ping", "lb-id", "icmp", (3, 30), cidrIpv4="10.0.0.0/8")  # ICMP type and code, not ports
    egress = sg_rule("out", "egress", "lb-id", "-1", 0, cidrBlocks=["10.0.0.0/8"])
    assert messages(ADMIN_PORTS, inline, rule, icmp, egress) == []


def test_admin_ports_fail_from_any_source_in_every_form() -> None:
    inline = res(
        SG, "hosts", ingress=[tcp(22, cidrBlocks=["10.0.0.0/8"]), tcp(443, cidrBlocks=["10.0.0.0/8"])]
    )
    default = res(DEFAULT_SG, "default", ingress=[tcp(22, self=True)])
    rule = sg_rule("wide", "ingress", "h-id", "tcp", (0, 65535), sourceSecurityGroupId="sg-peer")
    vpc_rule = vpc_in("rdp", "h-id", "udp", 3389, prefixListId="pl-123")
    assert messages(ADMIN_PORTS, inline, default, rule, vpc_rule) == [
        ("hosts", f"ingress tcp 22 from 10.0.0.0/8 admits 22 (SSH): {SSM}"),
        ("default", f"ingress tcp 22 from self admits 22 (SSH): {SSM}"),
        ("wide", f"ingress tcp 0-65535 from sg-peer admits 22 (SSH) and 3389 (RDP): {SSM}"),
        ("rdp", f"ingress udp 3389 from pl-123 admits 3389 (RDP): {SSM}"),
    ]


def test_all_protocol_ingress_fails_whatever_the_source() -> None:
    vpc_rule = vpc_in("any", "h-id", "-1", referencedSecurityGroupId="sg-app")
    inline = res(SG, "h", ingress=[{"protocol": "all", **ports(0), "cidrBlocks": ["10.1.0.0/16"]}])
    rule = sg_rule("r", "ingress", "h-id", "-1", 0, self=True)
    assert messages(ADMIN_PORTS, vpc_rule, inline, rule) == [
        ("any", f"ingress on all protocols and ports from sg-app {ALL_PORTS}"),
        ("h", f"ingress on all protocols and ports from 10.1.0.0/16 {ALL_PORTS}"),
        ("r", f"ingress on all protocols and ports from self {ALL_PORTS}"),
    ]


def test_unknown_ports_are_skipped() -> None:
    rule = res(INGRESS, "r", securityGroupId="h-id", ipProtocol="tcp", fromPort=UNKNOWN, toPort=UNKNOWN)
    assert messages(ADMIN_PORTS, rule) == []
    assert skipped(ADMIN_PORTS, rule) == [(ADMIN_PORTS.name, rule.urn)]


# --- aws-alb-listener-enforce-tls13 -------------------------------------------------------------


TLS13_ONLY = "ELBSecurityPolicy-TLS13-1-3-2021-06"
TLS13_FIPS = "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04"
TLS12_RES = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"


def test_tls13_only_listeners_pass() -> None:
    https = res(LISTENER, "https", protocol="HTTPS", port=443, sslPolicy=TLS13_ONLY)
    tls = res(ALB_LISTENER, "tls", protocol="TLS", port=443, sslPolicy=TLS13_FIPS)
    pq = res(LISTENER, "pq", protocol="HTTPS", port=443, sslPolicy="ELBSecurityPolicy-TLS13-1-3-PQ-2025-09")
    http = res(LISTENER, "http", protocol="HTTP", port=80)  # no TLS: out of scope here
    assert messages(TLS13, https, tls, pq, http) == []


def test_missing_or_older_policy_fails() -> None:
    allowed = ", ".join(TLS13_ONLY_POLICIES)
    none = res(LISTENER, "none", protocol="HTTPS", port=443)
    old = res(ALB_LISTENER, "old", protocol="TLS", port=443, sslPolicy="ELBSecurityPolicy-2016-08")
    assert messages(TLS13, none, old) == [
        (
            "none",
            "HTTPS listener has no sslPolicy (AWS then applies ELBSecurityPolicy-2016-08, TLS 1.0 and up): "
            f"set one of: {allowed}",
        ),
        ("old", f"sslPolicy ELBSecurityPolicy-2016-08 is not a TLS 1.3 policy (one of: {allowed})"),
    ]


def test_a_tls12_compatible_policy_needs_the_setting() -> None:
    listener = res(LISTENER, "l", protocol="HTTPS", port=443, sslPolicy=TLS12_RES)
    assert messages(TLS13, listener) != []
    assert messages(TLS13, listener, allowed_ssl_policies=[*TLS13_ONLY_POLICIES, TLS12_RES]) == []
    strict = res(LISTENER, "s", protocol="HTTPS", port=443, sslPolicy=TLS13_ONLY)
    assert messages(TLS13, strict, allowed_ssl_policies=[TLS13_FIPS]) == [
        ("s", f"sslPolicy {TLS13_ONLY} is not a TLS 1.3 policy (one of: {TLS13_FIPS})")
    ]


def test_unknown_policy_is_skipped() -> None:
    listener = res(LISTENER, "l", protocol="HTTPS", port=443, sslPolicy=UNKNOWN)
    assert messages(TLS13, listener) == []
    assert skipped(TLS13, listener) == [(TLS13.name, listener.urn)]


# --- aws-alb-listener-disallow-plain-http -------------------------------------------------------


def test_http_that_only_redirects_to_https_passes() -> None:
    http = res(LISTENER, "http", protocol="HTTP", port=80, defaultActions=[REDIRECT])
    https = res(
        ALB_LISTENER,
        "https",
        protocol="HTTPS",
        port=443,
        defaultActions=[FORWARD],
        arn="arn:aws:lb:eu-central-1:123456789012:https",
    )
    on_https = res(
        LISTENER_RULE, "route", listenerArn="arn:aws:lb:eu-central-1:123456789012:https", actions=[FORWARD]
    )
    gateway = res(LISTENER, "gwlb", defaultActions=[FORWARD])  # no protocol and no port: a GWLB listener
    assert messages(PLAIN_HTTP, http, https, on_https, gateway) == []


def test_http_default_actions_that_serve_fail() -> None:
    forward = res(LISTENER, "fwd", protocol="HTTP", port=80, defaultActions=[FORWARD])
    # No protocol: HTTP, the AWS default.
    fixed = res(ALB_LISTENER, "fixed", port=8080, defaultActions=[{"type": "fixed-response"}])
    to_http = res(
        LISTENER,
        "to-http",
        protocol="HTTP",
        port=80,
        defaultActions=[{"type": "redirect", "redirect": {"protocol": "HTTP", "port": "8080"}}],
    )
    same = res(
        LISTENER, "same", protocol="HTTP", port=80, defaultActions=[{"type": "redirect", "redirect": {}}]
    )
    empty = res(LISTENER, "empty", protocol="HTTP", port=80, defaultActions=[])
    mixed = res(LISTENER, "mixed", protocol="HTTP", port=81, defaultActions=[REDIRECT, FORWARD])
    assert messages(PLAIN_HTTP, forward, fixed, to_http, same, empty, mixed) == [
        ("fwd", f"HTTP listener on port 80 has a forward action: {ONLY_REDIRECTS}"),
        (
            "fixed",
            f"HTTP listener on port 8080 has a fixed-response action: {ONLY_REDIRECTS}",
        ),
        ("to-http", "HTTP listener on port 80 redirects with protocol HTTP: redirect to protocol HTTPS"),
        (
            "same",
            "HTTP listener on port 80 redirects with protocol unset (#{protocol}, the request's own): "
            "redirect to protocol HTTPS",
        ),
        ("empty", "HTTP listener on port 80 has no action: give it a redirect to HTTPS"),
        ("mixed", f"HTTP listener on port 81 has a forward action: {ONLY_REDIRECTS}"),
    ]


def test_listener_rules_on_an_http_listener_fail_unless_they_redirect() -> None:
    http = res(
        LISTENER,
        "http",
        protocol="HTTP",
        port=80,
        defaultActions=[REDIRECT],
        arn="arn:aws:lb:eu-central-1:123456789012:http",
    )
    forwards = res(
        LISTENER_RULE, "api", listenerArn="arn:aws:lb:eu-central-1:123456789012:http", actions=[FORWARD]
    )
    by_id = res(ALB_LISTENER_RULE, "legacy", listenerArn="http-id", actions=[{"type": "fixed-response"}])
    redirects = res(LISTENER_RULE, "ok", listenerArn="http-id", actions=[REDIRECT])
    assert messages(PLAIN_HTTP, http, forwards, by_id, redirects) == [
        ("api", f"rule on HTTP listener http has a forward action: {ONLY_REDIRECTS}"),
        (
            "legacy",
            f"rule on HTTP listener http has a fixed-response action: {ONLY_REDIRECTS}",
        ),
    ]


def test_unknown_actions_are_skipped() -> None:
    listener = res(LISTENER, "http", protocol="HTTP", port=80, defaultActions=UNKNOWN)
    assert messages(PLAIN_HTTP, listener) == []
    assert skipped(PLAIN_HTTP, listener) == [(PLAIN_HTTP.name, "(stack)")]


# --- aws-alb-loadbalancer-enable-drop-invalid-headers -------------------------------------------


def test_albs_that_drop_invalid_headers_pass_and_other_types_are_out_of_scope() -> None:
    dropping = res(LB, "a", loadBalancerType="application", dropInvalidHeaderFields=True)
    as_text = res(ALB, "b", dropInvalidHeaderFields="true")
    others = (res(LB, "n", loadBalancerType="network"), res(LB, "g", loadBalancerType="gateway"))
    assert messages(DROP_HEADERS, dropping, as_text, *others) == []


def test_albs_that_pass_invalid_headers_fail() -> None:
    message = "invalid header fields are passed to the targets: set dropInvalidHeaderFields: true"
    assert messages(DROP_HEADERS, res(LB, "a"), res(ALB, "b", dropInvalidHeaderFields=False)) == [
        ("a", message),
        ("b", message),
    ]


def test_unknown_header_setting_is_skipped() -> None:
    lb = res(LB, "a", dropInvalidHeaderFields=UNKNOWN)
    assert messages(DROP_HEADERS, lb) == []
    assert skipped(DROP_HEADERS, lb) == [(DROP_HEADERS.name, lb.urn)]


# --- aws-alb-loadbalancer-enable-access-logs ----------------------------------------------------


def test_load_balancers_with_access_logs_pass() -> None:
    logs = {"enabled": True, "bucket": "logs-id", "prefix": "alb"}
    network = res(ALB, "n", loadBalancerType="network", accessLogs=logs)
    assert messages(ACCESS_LOGS, res(LB, "a", accessLogs=logs), network) == []
    assert messages(ACCESS_LOGS, res(LB, "g", loadBalancerType="gateway")) == []  # GWLBs have no access logs


def test_load_balancers_without_access_logs_fail() -> None:
    off = "access logs are off: set accessLogs.enabled: true and accessLogs.bucket"
    found = messages(
        ACCESS_LOGS,
        res(LB, "none"),
        res(ALB, "disabled", accessLogs={"enabled": False, "bucket": "logs-id"}),
        res(LB, "nobucket", accessLogs={"enabled": True}),
    )
    assert found == [
        ("none", off),
        ("disabled", off),
        ("nobucket", "access logs are enabled but name no bucket: set accessLogs.bucket"),
    ]


def test_unknown_access_logs_are_skipped() -> None:
    lb = res(LB, "a", accessLogs=UNKNOWN)
    assert messages(ACCESS_LOGS, lb) == []
    assert skipped(ACCESS_LOGS, lb) == [(ACCESS_LOGS.name, lb.urn)]


# --- aws-alb-loadbalancer-missing-waf -----------------------------------------------------------

EDGE_ARN = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:loadbalancer/app/edge/0123456789abcdef"
NO_WAF = (
    "internet-facing Application Load Balancer has no AWS WAF web ACL "
    "(an aws.wafv2.WebAclAssociation whose resourceArn names it)"
)


def test_internet_facing_alb_with_a_web_acl_passes() -> None:
    lb = res(LB, "edge", internal=False, arn=EDGE_ARN)
    association = res(WAF_ASSOCIATION, "waf", resourceArn=EDGE_ARN, webAclArn="arn:aws:wafv2:acl")
    assert messages(WAF, lb, association) == []


def test_internal_and_non_application_load_balancers_are_out_of_scope() -> None:
    internal = res(LB, "internal", internal=True, loadBalancerType="application")
    network = res(ALB, "nlb", internal=False, loadBalancerType="network")
    assert messages(WAF, internal, network) == []


def test_internet_facing_alb_without_a_web_acl_fails() -> None:
    unset = res(ALB, "default-scheme")  # internal absent: internet-facing
    other = res(LB, "edge", internal=False, arn=EDGE_ARN)
    elsewhere = res(WAF_ASSOCIATION, "waf", resourceArn="arn:aws:elasticloadbalancing:eu-central-1:1:other")
    assert messages(WAF, unset, other, elsewhere) == [("default-scheme", NO_WAF), ("edge", NO_WAF)]


def test_unknown_association_target_is_skipped() -> None:
    lb = res(LB, "edge", internal=False, arn=EDGE_ARN)
    association = res(WAF_ASSOCIATION, "w", resourceArn=UNKNOWN)
    assert messages(WAF, lb, association) == []
    assert skipped(WAF, lb, association) == [(WAF.name, "(stack)")]


# --- aws-ec2-routetable-disallow-model-egress ---------------------------------------------------

MODEL = {"llmkit:tier": "model"}


def route(name: str, destination: str, table: str = "model-rt-id", **target: str) -> Any:
    """An aws.ec2.Route to a CIDR (IPv4 or IPv6) or a prefix list."""
    key = (
        "destinationPrefixListId"
        if destination.startswith("pl-")
        else "destinationIpv6CidrBlock"
        if ":" in destination
        else "destinationCidrBlock"
    )
    return res(ROUTE, name, routeTableId=table, **{key: destination}, **target)


def model_network(*extra: Any, routes: list[dict[str, Any]] | None = None) -> list[Any]:
    """A model subnet with its own (untagged) route table, an app subnet with a NAT route, an IGW."""
    return [
        res(VPC, "vpc"),
        res(IGW, "igw", vpcId="vpc-id"),
        res(SUBNET, "model-a", vpcId="vpc-id", tags=MODEL),
        res(ROUTE_TABLE, "model-rt", vpcId="vpc-id", routes=routes or []),
        res(ASSOCIATION, "model-rta", subnetId="model-a-id", routeTableId="model-rt-id"),
        res(SUBNET, "app-a", vpcId="vpc-id", tags={"llmkit:tier": "app"}),
        res(ROUTE_TABLE, "app-rt", vpcId="vpc-id", tags={"llmkit:tier": "app"}),
        res(ASSOCIATION, "app-rta", subnetId="app-a-id", routeTableId="app-rt-id"),
        route("app-default", "0.0.0.0/0", "app-rt-id", natGatewayId="nat-id"),
        *extra,
    ]


def test_model_tables_without_a_way_out_pass() -> None:
    private = [
        {"cidrBlock": "10.1.0.0/16", "vpcPeeringConnectionId": "pcx-1"},
        {"destinationPrefixListId": "pl-s3", "vpcEndpointId": "vpce-s3"},
        {"cidrBlock": "10.0.0.0/8", "gatewayId": "vgw-1"},
    ]
    s3 = route("s3", "pl-s3", vpcEndpointId="vpce-s3")
    tagged = res(DEFAULT_ROUTE_TABLE, "main", defaultRouteTableId="rtb-main", tags=MODEL, routes=private)
    assert messages(MODEL_EGRESS, *model_network(s3, tagged, routes=private)) == []


def test_routes_to_internet_nat_and_egress_only_gateways_fail_inline() -> None:
    routes = [
        {"cidrBlock": "0.0.0.0/0", "gatewayId": "igw-0123"},
        {"cidrBlock": "192.0.2.0/24", "natGatewayId": "nat-1"},
        {"ipv6CidrBlock": "2001:db8::/32", "egressOnlyGatewayId": "eigw-1"},
        {"cidrBlock": "198.51.100.0/24", "carrierGatewayId": "cagw-1"},
    ]
    tagged = res(ROUTE_TABLE, "rt", vpcId="vpc-id", tags=MODEL, routes=routes)
    where = "model-tier route table rt (tagged llmkit:tier=model) has"
    assert messages(MODEL_EGRESS, tagged) == [
        ("rt", f"{where} route 0.0.0.0/0 -> internet gateway igw-0123: {WHY}"),
        ("rt", f"{where} route 192.0.2.0/24 -> NAT gateway nat-1: {WHY}"),
        ("rt", f"{where} route 2001:db8::/32 -> egress-only internet gateway eigw-1: {WHY}"),
        ("rt", f"{where} route 198.51.100.0/24 -> carrier gateway cagw-1: {WHY}"),
    ]


def test_separate_routes_out_of_an_associated_model_table_fail() -> None:
    igw = route("to-igw", "203.0.113.0/24", gatewayId="igw-id")  # the stack's IGW, by its id
    tgw = route("to-tgw", "0.0.0.0/0", transitGatewayId="tgw-1")
    eni = route("to-eni", "::/0", networkInterfaceId="eni-1")
    firewall = route("to-fw", "0.0.0.0/0", vpcEndpointId="vpce-fw")
    where = "model-tier route table model-rt (associated with model subnet model-a) has"
    assert messages(MODEL_EGRESS, *model_network(igw, tgw, eni, firewall)) == [
        ("to-igw", f"{where} route 203.0.113.0/24 -> internet gateway igw: {WHY}"),
        ("to-tgw", f"{where} default route 0.0.0.0/0 -> transit gateway tgw-1: {WHY}"),
        ("to-eni", f"{where} default route ::/0 -> network interface eni-1: {WHY}"),
        ("to-fw", f"{where} default route 0.0.0.0/0 -> VPC endpoint vpce-fw: {WHY}"),
    ]


def test_route_propagation_into_a_model_table_fails() -> None:
    inline = res(ROUTE_TABLE, "rt", vpcId="vpc-id", tags=MODEL, propagatingVgws=["vgw-1"])
    separate = res(PROPAGATION, "prop", routeTableId="model-rt-id", vpnGatewayId="vgw-2")
    found = messages(MODEL_EGRESS, *model_network(inline, separate))
    way_out = f"a propagated default route would be a way out; {WHY}"
    assert found == [
        (
            "rt",
            f"model-tier route table rt (tagged llmkit:tier=model) propagates routes from vgw-1: {way_out}",
        ),
        (
            "prop",
            "model-tier route table model-rt (associated with model subnet model-a) propagates routes from "
            f"vgw-2: {way_out}",
        ),
    ]


def test_a_model_subnet_routes_through_the_main_table_only_when_the_stack_sets_it() -> None:
    subnet = res(SUBNET, "model-b", vpcId="vpc-id", tags=MODEL)
    assert messages(MODEL_EGRESS, res(VPC, "vpc"), subnet) == [
        (
            "model-b",
            "model-tier subnet has no route table association, so it uses its VPC's main route table, "
            "which this stack does not show: associate it with a model-tier route table",
        )
    ]
    main = res(ROUTE_TABLE, "main-rt", vpcId="vpc-id")
    main_association = res(MAIN_ASSOCIATION, "main", vpcId="vpc-id", routeTableId="main-rt-id")
    nat = route("nat", "0.0.0.0/0", "main-rt-id", natGatewayId="nat-1")
    assert messages(MODEL_EGRESS, res(VPC, "vpc"), subnet, main, main_association) == []
    assert messages(MODEL_EGRESS, res(VPC, "vpc"), subnet, main, main_association, nat) == [
        (
            "nat",
            "model-tier route table main-rt (the main route table of model subnet model-b) has "
            f"route 0.0.0.0/0 -> NAT gateway nat-1: {WHY}",
        )
    ]


def test_other_tiers_may_route_out() -> None:
    igw = route("dmz", "0.0.0.0/0", "app-rt-id", gatewayId="igw-id")
    assert messages(MODEL_EGRESS, *model_network(igw)) == []


def test_unknown_route_table_is_skipped() -> None:
    unknown = route("r", "0.0.0.0/0", UNKNOWN, gatewayId="igw-id")
    assert messages(MODEL_EGRESS, *model_network(unknown)) == []
    assert skipped(MODEL_EGRESS, *model_network(unknown)) == [(MODEL_EGRESS.name, "(stack)")]


# --- aws-ec2-vpc-missing-flowlog ----------------------------------------------------------------


def test_vpc_with_an_all_traffic_flow_log_passes() -> None:
    assert messages(FLOW_LOGS, res(VPC, "vpc"), res(FLOW_LOG, "fl", vpcId="vpc-id", trafficType="ALL")) == []


def test_vpc_without_a_flow_log_fails() -> None:
    other = res(FLOW_LOG, "fl", vpcId="vpc-other", trafficType="ALL")
    assert messages(FLOW_LOGS, res(VPC, "vpc"), other) == [
        ("vpc", "VPC has no flow log (an aws.ec2.FlowLog with vpcId naming it, trafficType ALL)")
    ]


def test_flow_logs_of_part_of_the_traffic_fail_unless_the_setting_accepts_them() -> None:
    vpc = res(VPC, "vpc")
    reject = res(FLOW_LOG, "rej", vpcId="vpc-id", trafficType="REJECT")
    unset = res(FLOW_LOG, "none", vpcId="vpc-id")
    assert messages(FLOW_LOGS, vpc, reject, unset) == [
        (
            "vpc",
            "VPC flow logs record too little traffic (rej: REJECT, none: unset); required trafficType ALL",
        )
    ]
    assert messages(FLOW_LOGS, vpc, reject, required_traffic_type="REJECT") == []
    accept = res(FLOW_LOG, "acc", vpcId="vpc-id", trafficType="ACCEPT")
    assert messages(FLOW_LOGS, vpc, accept, required_traffic_type="REJECT") == [
        ("vpc", "VPC flow logs record too little traffic (acc: ACCEPT); required trafficType REJECT")
    ]
    everything = res(FLOW_LOG, "all", vpcId="vpc-id", trafficType="ALL")
    assert messages(FLOW_LOGS, vpc, everything, required_traffic_type="ACCEPT") == []


def test_unknown_flow_log_target_is_skipped() -> None:
    vpc, log = res(VPC, "vpc"), res(FLOW_LOG, "fl", vpcId=UNKNOWN, trafficType="ALL")
    assert messages(FLOW_LOGS, vpc, log) == []
    assert skipped(FLOW_LOGS, vpc, log) == [(FLOW_LOGS.name, "(stack)")]


# --- our stacks -------------------------------------------------------------------------------


@cache
def graph(stack: str) -> dict[str, Any]:
    return run_plan(stack, ROOT).to_graph()


def fired(g: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(v.rule, v.resource_name, v.message) for v in evaluate(resources_from_graph(g), RULES).violations]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_our_stacks_pass_these_rules(stack: str) -> None:
    report = evaluate(resources_from_graph(graph(stack)), RULES)
    assert report.violations == []
    assert report.skipped == []


def test_the_prod_graph_is_what_the_rules_expect() -> None:
    """The rules see real resources in the prod graph: the three model route tables, the VPC."""
    stack = Stack(resources_from_graph(graph("prod")))
    tables, unrouted = model_tables(stack)
    assert sorted(t.label for t in tables) == ["net-model-rt-0", "net-model-rt-1", "net-model-rt-2"]
    assert unrouted == []
    assert [r.name for r in stack.of_type(VPC)] == ["net-vpc"]


def _entry(g: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in g["resources"] if e["name"] == name)


def test_breaking_the_prod_graph_fires_the_rules() -> None:
    g = copy.deepcopy(graph("prod"))
    out = copy.deepcopy(_entry(g, "net-dmz-default-0"))  # 0.0.0.0/0 to the internet gateway
    out.update(urn=out["urn"].replace("net-dmz-default-0", "net-model-out"), name="net-model-out")
    out.update(id="net-model-out-id")
    out["inputs"]["routeTableId"] = "net-model-rt-0-id"
    g["resources"].append(out)
    _entry(g, "fw-lb-in-80-10.0.0.0_8")["inputs"]["cidrIpv4"] = "0.0.0.0/0"
    _entry(g, "fleet-https")["inputs"]["sslPolicy"] = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    _entry(g, "edge-http")["inputs"]["defaultActions"] = [FORWARD]
    _entry(g, "edge-alb")["inputs"]["dropInvalidHeaderFields"] = False
    del _entry(g, "fleet-alb")["inputs"]["accessLogs"]
    _entry(g, "net-flow-log")["inputs"]["trafficType"] = "REJECT"
    _entry(g, "fw-data-in-5432-app")["inputs"].update(fromPort=22, toPort=22)
    assert {(rule, name) for rule, name, _ in fired(g)} == {
        (MODEL_EGRESS.name, "net-model-out"),
        (PUBLIC_INGRESS.name, "fw-lb-in-80-10.0.0.0_8"),
        (TLS13.name, "fleet-https"),
        (PLAIN_HTTP.name, "edge-http"),
        (DROP_HEADERS.name, "edge-alb"),
        (ACCESS_LOGS.name, "fleet-alb"),
        (FLOW_LOGS.name, "net-vpc"),
        (ADMIN_PORTS.name, "fw-data-in-5432-app"),
    }


# Resources that name another by ARN (a WAF association's resourceArn, a listener rule's
# listenerArn) are linked in the offline graph through the ARNs the plan records.


def test_an_internet_facing_alb_with_its_waf_passes_and_without_fails() -> None:
    g = copy.deepcopy(graph("prod"))
    _entry(g, "edge-alb")["inputs"]["internal"] = False  # its aws.wafv2.WebAclAssociation stays
    assert fired(g) == []
    g["resources"] = [e for e in g["resources"] if e["name"] != "edge-waf-alb"]
    assert [(r, n) for r, n, _ in fired(g)] == [(WAF.name, "edge-alb")]


def test_a_forwarding_rule_on_the_http_listener_fires() -> None:
    g = copy.deepcopy(graph("prod"))
    rule = copy.deepcopy(_entry(g, "fleet-route-deepseek-r1-32b"))
    rule.update(
        urn=rule["urn"].replace("fleet-route-deepseek-r1-32b", "edge-http-leak"), name="edge-http-leak"
    )
    rule.update(id="edge-http-leak-id", arn=None)
    rule["inputs"]["listenerArn"] = _entry(g, "edge-http")["arn"]
    g["resources"].append(rule)
    assert {(r, n) for r, n, _ in fired(g)} == {(PLAIN_HTTP.name, "edge-http-leak")}
