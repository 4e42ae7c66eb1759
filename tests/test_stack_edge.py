"""The whole program, per real stack: the hardened edge as `llmkit plan` records it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from llmkit.catalog import load_catalog
from llmkit.plan import Plan, PlannedResource, run_plan

ROOT = Path(__file__).resolve().parent.parent
STACKS = ["dev", "staging", "prod"]


@cache
def plan_of(stack: str) -> Plan:
    return run_plan(stack, ROOT)


def of_type(plan: Plan, token: str, prefix: str = "") -> list[PlannedResource]:
    return [r for r in plan.resources if r.type == token and r.name.startswith(prefix)]


@pytest.mark.parametrize("stack", STACKS)
def test_model_tier_has_no_route_to_the_internet(stack: str) -> None:
    plan = plan_of(stack)
    model_tables = {
        f"{r.name}-id" for r in of_type(plan, "aws:ec2/routeTable:RouteTable") if "-model-" in r.name
    }
    assert len(model_tables) == plan.config.network.az_count
    for route in of_type(plan, "aws:ec2/route:Route"):
        if route.inputs["routeTableId"] in model_tables:
            pytest.fail(f"model route table has a route: {route.inputs}")
    for table in of_type(plan, "aws:ec2/routeTable:RouteTable"):
        if f"{table.name}-id" in model_tables:
            assert not table.inputs.get("routes")
    gateway = next(
        r
        for r in of_type(plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs["vpcEndpointType"] == "Gateway"
    )
    assert model_tables <= set(gateway.inputs["routeTableIds"])


@pytest.mark.parametrize("stack", STACKS)
def test_tier_rules_reference_groups_and_never_open_ssh_or_rdp(stack: str) -> None:
    plan = plan_of(stack)
    port = load_catalog().runtime(plan.config.runtime).port
    rules = of_type(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rules
    for rule in rules:
        lo, hi = rule.inputs["fromPort"], rule.inputs["toPort"]
        assert not (lo <= 22 <= hi or lo <= 3389 <= hi), rule.name
        assert rule.inputs.get("cidrIpv4") != "0.0.0.0/0" or plan.config.endpoint.public
        assert "cidrIpv6" not in rule.inputs
    model_in = [r for r in rules if r.name.startswith("fw-model-in")]
    assert [(r.inputs["fromPort"], r.inputs["referencedSecurityGroupId"]) for r in model_in] == [
        (port, "fw-models_lb-id")
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_edge_is_tls13_with_waf_and_logs(stack: str) -> None:
    plan = plan_of(stack)
    (alb,) = of_type(plan, "aws:lb/loadBalancer:LoadBalancer", "edge-")
    assert alb.inputs["internal"] is not plan.config.endpoint.public
    assert alb.inputs["dropInvalidHeaderFields"] is True
    assert alb.inputs["accessLogs"]["enabled"] is True
    assert alb.inputs["enableDeletionProtection"] is plan.config.endpoint.deletion_protection
    listeners = {r.inputs["port"]: r for r in of_type(plan, "aws:lb/listener:Listener", "edge-")}
    assert set(listeners) == {80, 443}
    assert listeners[443].inputs["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    assert [a["type"] for a in listeners[80].inputs["defaultActions"]] == ["redirect"]
    (assoc,) = of_type(plan, "aws:wafv2/webAclAssociation:WebAclAssociation")
    assert assoc.inputs["resourceArn"] == listeners[443].inputs["loadBalancerArn"]
    (targets,) = of_type(plan, "aws:lb/targetGroup:TargetGroup", "edge-")
    assert targets.inputs["port"] == plan.config.firewall.app_port
    assert plan.outputs["endpoint"].endswith(".elb.amazonaws.com")


def test_prod_requires_client_certificates_from_its_ca() -> None:
    plan = plan_of("prod")
    (store,) = of_type(plan, "aws:lb/trustStore:TrustStore")
    listener = next(r for r in of_type(plan, "aws:lb/listener:Listener", "edge-") if r.inputs["port"] == 443)
    assert listener.inputs["mutualAuthentication"]["mode"] == "verify"
    assert listener.inputs["mutualAuthentication"]["trustStoreArn"].endswith(store.name)
    (bundle,) = of_type(plan, "aws:s3/bucketObjectv2:BucketObjectv2")
    assert bundle.inputs["key"] == store.inputs["caCertificatesBundleS3Key"]


@pytest.mark.parametrize("stack", STACKS)
def test_flow_logs_and_log_groups_are_encrypted_with_retention(stack: str) -> None:
    plan = plan_of(stack)
    (flow,) = of_type(plan, "aws:ec2/flowLog:FlowLog")
    assert flow.inputs["trafficType"] == "ALL"
    for group in of_type(plan, "aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs["kmsKeyId"] == "arn:aws:kms:eu-central-1:123456789012:keys-logs", group.name
        assert group.inputs["retentionInDays"] == plan.config.logging.retention_days, group.name


def test_prod_sends_app_egress_through_the_network_firewall() -> None:
    plan = plan_of("prod")
    assert plan.config.firewall.network_firewall
    (firewall,) = of_type(plan, "aws:networkfirewall/firewall:Firewall")
    azs = plan.config.network.az_count
    # One endpoint per AZ, in the dedicated firewall subnets.
    assert [m["subnetId"] for m in firewall.inputs["subnetMappings"]] == [
        f"net-firewall-{i}-id" for i in range(azs)
    ]
    (policy,) = of_type(plan, "aws:networkfirewall/firewallPolicy:FirewallPolicy")
    assert firewall.inputs["firewallPolicyArn"].endswith(policy.name)
    (rules,) = of_type(plan, "aws:networkfirewall/ruleGroup:RuleGroup")
    source = rules.inputs["ruleGroup"]["rulesSource"]["rulesSourceList"]
    assert source["generatedRulesType"] == "ALLOWLIST"
    assert source["targets"] == plan.config.firewall.egress_allowed_domains
    routes = {r.name: r.inputs for r in of_type(plan, "aws:ec2/route:Route")}
    for i in range(azs):
        # The mock names endpoint n after the n-th subnet mapping, which is in AZ n.
        assert routes[f"net-app-default-{i}"]["vpcEndpointId"] == f"vpce-fw-egress-{i}"
        assert routes[f"net-nat-return-app-{i}"]["vpcEndpointId"] == f"vpce-fw-egress-{i}"
        assert routes[f"net-firewall-default-{i}"]["natGatewayId"] == f"net-natgw-{i}-id"
        assert routes[f"net-nat-default-{i}"]["gatewayId"] == "net-igw-id"
    assert not [r for r in routes.values() if r.get("natGatewayId") and "app-rt" in r["routeTableId"]]


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_without_the_network_firewall_app_egress_goes_to_nat(stack: str) -> None:
    plan = plan_of(stack)
    assert not of_type(plan, "aws:networkfirewall/firewall:Firewall")
    routes = {r.name: r.inputs for r in of_type(plan, "aws:ec2/route:Route")}
    assert routes["net-app-default-0"]["natGatewayId"] == "net-natgw-0-id"
