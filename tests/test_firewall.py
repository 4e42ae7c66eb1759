"""The Firewall component: the tier chain of security groups and the egress Network Firewall."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.firewall import (
    GROUPS,
    Firewall,
    FirewallArgs,
    IngressRule,
    Rule,
    check_rules,
    domain_rule_capacity,
    plan_rules,
)
from llmkit.catalog import load_catalog
from llmkit.config import StackConfig, from_mapping, load_stack
from llmkit.plan import PlannedResource
from tests.conftest import Recorded

SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
NFW = "aws:networkfirewall"
PORTS = {name: runtime.port for name, runtime in load_catalog().runtimes.items()}
WORLD = ("0.0.0.0/0", "::/0")
ROOT = Path(__file__).resolve().parents[1]

Run = Callable[..., Recorded]


def build(run_pulumi: Run, args: FirewallArgs) -> Recorded:
    return run_pulumi(lambda: Firewall("fw", args))


def from_stack(run_pulumi: Run, cfg: StackConfig, **kwargs: Any) -> Recorded:
    kwargs.setdefault("firewall_subnet_ids", ["subnet-fw-a", "subnet-fw-b", "subnet-fw-c"])
    kwargs.setdefault("s3_prefix_list_id", "pl-s3")
    return build(run_pulumi, FirewallArgs.from_config(cfg, "vpc-1", **kwargs))


def config_with(stack: str, **changes: Any) -> StackConfig:
    """A real stack's config with some llmkit: keys replaced."""
    import yaml

    raw = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw.update({f"llmkit:{k}": v for k, v in changes.items()})
    return from_mapping(raw, source="test", project_dir=ROOT)


def group_of(rec: Recorded, sg_id: str) -> str:
    """The tier of a security group id as the mocks assign it (`fw-<tier>-id`)."""
    by_id = {f"{r.name}-id": r.name.removeprefix("fw-") for r in rec.of_type(SG)}
    return by_id[sg_id]


def rules(rec: Recorded) -> list[PlannedResource]:
    return rec.of_type(INGRESS) + rec.of_type(EGRESS)


def edges(rec: Recorded, kind: str, tier: str) -> set[tuple[int, int, str]]:
    """(from, to, peer) of a tier's rules of one kind; the peer is a tier, a CIDR or the prefix list."""
    found = set()
    for r in rec.of_type(kind):
        i = r.inputs
        if group_of(rec, i["securityGroupId"]) != tier:
            continue
        if "referencedSecurityGroupId" in i:
            peer = group_of(rec, i["referencedSecurityGroupId"])
        else:
            peer = i.get("cidrIpv4") or i.get("cidrIpv6") or f"prefix-list:{i['prefixListId']}"
        found.add((i["fromPort"], i["toPort"], peer))
    return found


@pytest.fixture(params=["dev", "staging", "prod"])
def recorded(request: pytest.FixtureRequest, run_pulumi: Run) -> Recorded:
    return from_stack(run_pulumi, load_stack(request.param, ROOT))


# --- the security group chain ------------------------------------------------------------------


def test_one_group_per_tier_with_no_inline_rules(recorded: Recorded) -> None:
    groups = recorded.of_type(SG)
    assert sorted(g.name for g in groups) == sorted(f"fw-{t}" for t in GROUPS)
    for g in groups:
        assert not g.inputs.get("ingress") and not g.inputs.get("egress"), g.name
        assert g.inputs["vpcId"] == "vpc-1"
        assert g.inputs["revokeRulesOnDelete"] is True
        assert g.parent == recorded.named("fw").urn


def test_rules_between_tiers_reference_groups_not_cidrs(recorded: Recorded) -> None:
    for r in rules(recorded):
        i = r.inputs
        assert i["ipProtocol"] == "tcp"
        peers = [k for k in ("referencedSecurityGroupId", "cidrIpv4", "cidrIpv6", "prefixListId") if k in i]
        assert len(peers) == 1, r.name
        tier = group_of(recorded, i["securityGroupId"])
        if tier in ("model", "data", "endpoints") or (r.type == INGRESS and tier == "app"):
            # nothing but a group (or, for the model's egress, the S3 prefix list) reaches these
            assert peers[0] in ("referencedSecurityGroupId", "prefixListId"), r.name


def test_the_chain_of_tiers_for_an_ollama_stack(run_pulumi: Run) -> None:
    cfg = load_stack("staging", ROOT)
    rec = from_stack(run_pulumi, cfg)
    model, app = PORTS["ollama"], cfg.firewall.app_port
    assert (model, app) == (11434, 8443)
    assert edges(rec, INGRESS, "lb") == {(443, 443, "10.0.0.0/8"), (80, 80, "10.0.0.0/8")}
    assert edges(rec, EGRESS, "lb") == {(app, app, "app")}
    assert edges(rec, INGRESS, "app") == {(app, app, "lb")}
    assert edges(rec, EGRESS, "app") == {
        (443, 443, "models_lb"),
        (443, 443, "endpoints"),
        (443, 443, "0.0.0.0/0"),
        (443, 443, "data"),
        (5432, 5432, "data"),
    }
    # The app tier reaches the hosts only through the model tier's internal load balancer.
    assert edges(rec, INGRESS, "models_lb") == {(443, 443, "app")}
    assert edges(rec, EGRESS, "models_lb") == {(model, model, "model")}
    assert edges(rec, INGRESS, "model") == {(model, model, "models_lb")}
    assert edges(rec, EGRESS, "model") == {(443, 443, "endpoints"), (443, 443, "prefix-list:pl-s3")}
    assert edges(rec, INGRESS, "data") == {(443, 443, "app"), (5432, 5432, "app")}
    assert edges(rec, EGRESS, "data") == set()
    assert edges(rec, INGRESS, "endpoints") == {(443, 443, "app"), (443, 443, "model")}
    assert edges(rec, EGRESS, "endpoints") == set()


def test_lb_admits_only_https_and_the_redirect_from_the_client_cidrs(run_pulumi: Run) -> None:
    cfg = load_stack("prod", ROOT)
    rec = from_stack(run_pulumi, cfg)
    clients = [str(c) for c in cfg.endpoint.allowed_client_cidrs]
    assert len(clients) == 2
    assert edges(rec, INGRESS, "lb") == {(p, p, c) for c in clients for p in (443, 80)}


def test_model_port_follows_the_runtime(run_pulumi: Run) -> None:
    cfg = config_with(
        "staging",
        runtime="vllm",
        models=[{"name": "deepseek-r1:32b", "quantization": "bf16", "context_length": 8192}],
    )
    rec = from_stack(run_pulumi, cfg)
    assert PORTS["vllm"] == 8000
    assert edges(rec, INGRESS, "model") == {(8000, 8000, "models_lb")}
    assert edges(rec, EGRESS, "models_lb") == {(8000, 8000, "model")}
    assert not any(port == 8000 for port, _, _ in edges(rec, EGRESS, "app"))


def test_app_port_comes_from_config(run_pulumi: Run) -> None:
    rec = from_stack(run_pulumi, config_with("dev", firewall={"app_port": 9443}))
    assert edges(rec, INGRESS, "app") == {(9443, 9443, "lb")}
    assert edges(rec, EGRESS, "lb") == {(9443, 9443, "app")}


def test_no_rule_opens_ssh_or_rdp(recorded: Recorded) -> None:
    for r in rules(recorded):
        low, high = r.inputs["fromPort"], r.inputs["toPort"]
        assert not low <= 22 <= high and not low <= 3389 <= high, r.name


def test_no_world_open_ingress_on_an_internal_endpoint(recorded: Recorded) -> None:
    assert not [r.name for r in recorded.of_type(INGRESS) if r.inputs.get("cidrIpv4") in WORLD]
    assert not [r.name for r in recorded.of_type(INGRESS) if "cidrIpv6" in r.inputs]


def test_public_endpoint_opens_only_443_to_the_world(run_pulumi: Run) -> None:
    endpoint = load_stack("staging", ROOT).endpoint.model_dump(mode="json")
    cfg = config_with(
        "staging",
        endpoint={**endpoint, "public": True, "allowed_client_cidrs": ["0.0.0.0/0"]},
        allow_world_open=["endpoint.allowed_client_cidrs"],  # the named override a public endpoint needs
    )
    rec = from_stack(run_pulumi, cfg)
    world = [r for r in rec.of_type(INGRESS) if r.inputs.get("cidrIpv4") in WORLD]
    assert [
        (group_of(rec, r.inputs["securityGroupId"]), r.inputs["fromPort"], r.inputs["toPort"]) for r in world
    ] == [("lb", 443, 443)]
    assert edges(rec, INGRESS, "lb") == {(443, 443, "0.0.0.0/0")}  # no port 80 for the world


def test_extra_ingress_from_config_becomes_cidr_rules_on_its_tier(run_pulumi: Run) -> None:
    extra = [
        {
            "tier": "app",
            "port": 9090,
            "cidrs": ["10.99.0.0/24", "10.98.0.0/24"],
            "description": "metrics scraper",
        },
        {"tier": "lb", "port": 443, "cidrs": ["192.168.10.0/24"], "description": "partner VPN"},
    ]
    rec = from_stack(run_pulumi, config_with("dev", firewall={"extra_ingress": extra}))
    assert edges(rec, INGRESS, "app") == {
        (8443, 8443, "lb"),
        (9090, 9090, "10.99.0.0/24"),
        (9090, 9090, "10.98.0.0/24"),
    }
    assert (443, 443, "192.168.10.0/24") in edges(rec, INGRESS, "lb")
    scraper = rec.named("fw-app-in-9090-10.99.0.0_24")
    assert scraper.inputs["description"] == "metrics scraper"


def test_data_ports_are_configurable(run_pulumi: Run) -> None:
    args = dataclasses.replace(FirewallArgs.from_config(load_stack("dev", ROOT), "vpc-1"), data_ports=[6379])
    rec = build(run_pulumi, args)
    assert edges(rec, INGRESS, "data") == {(6379, 6379, "app")}


def test_without_the_s3_prefix_list_the_model_reaches_only_the_endpoints(run_pulumi: Run) -> None:
    rec = build(run_pulumi, FirewallArgs.from_config(load_stack("dev", ROOT), "vpc-1"))
    assert edges(rec, EGRESS, "model") == {(443, 443, "endpoints")}


# --- the component's own invariants -------------------------------------------------------------


def safe_args(**changes: Any) -> FirewallArgs:
    return dataclasses.replace(FirewallArgs.from_config(load_stack("dev", ROOT), "vpc-1"), **changes)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"extra_ingress": [IngressRule("app", 22, ("10.0.0.0/8",), "ssh")]}, "opens port 22 (SSH)"),
        ({"extra_ingress": [IngressRule("lb", 3389, ("10.0.0.0/8",), "rdp")]}, "opens port 3389 (RDP)"),
        ({"data_ports": [3389]}, "opens port 3389 (RDP)"),
        ({"model_port": 22}, "opens port 22 (SSH)"),
        ({"extra_ingress": [IngressRule("model", 11434, ("10.0.0.0/8",), "x")]}, "admits only the tiers"),
        ({"extra_ingress": [IngressRule("data", 5432, ("10.0.0.0/8",), "x")]}, "admits only the tiers"),
        ({"extra_ingress": [IngressRule("app", 8443, ("0.0.0.0/0",), "x")]}, "only on port 443 of a public"),
        ({"extra_ingress": [IngressRule("lb", 443, ("::/0",), "x")]}, "only on port 443 of a public"),
        ({"client_cidrs": ["0.0.0.0/0"]}, "only on port 443 of a public"),
        ({"extra_ingress": [IngressRule("web", 443, ("10.0.0.0/8",), "x")]}, "unknown group 'web'"),
    ],
)
def test_component_refuses_unsafe_programmatic_rules(
    run_pulumi: Run, changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=r"unsafe firewall rules") as caught:
        build(run_pulumi, safe_args(**changes))
    assert problem in str(caught.value)


def test_world_open_443_is_accepted_on_a_public_load_balancer(run_pulumi: Run) -> None:
    rec = build(run_pulumi, safe_args(public=True, client_cidrs=["0.0.0.0/0"]))
    assert edges(rec, INGRESS, "lb") == {(443, 443, "0.0.0.0/0")}


@pytest.mark.parametrize(
    "rule",
    [
        Rule("lb", "ingress", 1, 65535, "everything", cidr="10.0.0.0/8"),  # a range over 22 and 3389
        Rule("model", "egress", 443, 443, "internet", cidr="0.0.0.0/0"),  # the model tier has no internet
        Rule("lb", "egress", 11434, 11434, "skip the app", peer_group="model"),  # lb reaches only app
        Rule("endpoints", "ingress", 443, 443, "from the lb", peer_group="lb"),
        Rule("data", "egress", 443, 443, "out", peer_group="app"),
        Rule("app", "egress", 80, 80, "plain HTTP out", cidr="0.0.0.0/0"),
        Rule("app", "ingress", 8443, 8443, "all protocols", peer_group="lb", protocol="-1"),
        Rule("app", "ingress", 8443, 8443, "two peers", peer_group="lb", cidr="10.0.0.0/8"),
        Rule("app", "ingress", 443, 443, "prefix list in", prefix_list=True),
    ],
)
def test_check_rules_refuses_each_broken_invariant(rule: Rule) -> None:
    with pytest.raises(ValueError, match="unsafe firewall rules"):
        check_rules([rule], public=True)


def test_the_planned_rules_of_every_stack_pass_the_check(stack_config: StackConfig) -> None:
    args = FirewallArgs.from_config(stack_config, "vpc-1", s3_prefix_list_id="pl-s3")
    planned = plan_rules(args)
    assert planned
    check_rules(planned, args.public)  # raises ValueError on any unsafe rule


def test_duplicate_rules_are_created_once(run_pulumi: Run) -> None:
    args = safe_args(extra_ingress=[IngressRule("lb", 443, ("10.0.0.0/8",), "again the clients")])
    rec = build(run_pulumi, args)
    names = [r.name for r in rules(rec)]
    assert len(names) == len(set(names))
    assert (
        rec.named("fw-lb-in-443-10.0.0.0_8").inputs["description"] == "HTTPS from client network 10.0.0.0/8"
    )


# --- the Network Firewall --------------------------------------------------------------------------


def nfw_resources(rec: Recorded) -> list[PlannedResource]:
    return [r for r in rec.resources if r.type.startswith(f"{NFW}/")]


def test_network_firewall_with_prods_allow_list(run_pulumi: Run) -> None:
    prod = load_stack("prod", ROOT)
    firewall = prod.firewall.model_copy(update={"network_firewall": True})
    cfg = prod.model_copy(update={"firewall": firewall})
    rec = from_stack(run_pulumi, cfg, log_kms_key_arn="arn:aws:kms:eu-central-1:123456789012:key/k")
    (group,) = rec.of_type(f"{NFW}/ruleGroup:RuleGroup")
    source = group.inputs["ruleGroup"]["rulesSource"]["rulesSourceList"]
    assert source["targets"] == cfg.firewall.egress_allowed_domains
    assert sorted(source["targetTypes"]) == ["HTTP_HOST", "TLS_SNI"]
    assert source["generatedRulesType"] == "ALLOWLIST"
    assert group.inputs["type"] == "STATEFUL"
    assert group.inputs["capacity"] == domain_rule_capacity(cfg.firewall.egress_allowed_domains)
    assert group.inputs["ruleGroup"]["statefulRuleOptions"]["ruleOrder"] == "STRICT_ORDER"
    assert group.inputs["ruleGroup"]["ruleVariables"]["ipSets"] == [
        {"key": "HOME_NET", "ipSet": {"definitions": [str(cfg.network.vpc_cidr)]}}
    ]

    (policy,) = rec.of_type(f"{NFW}/firewallPolicy:FirewallPolicy")
    p = policy.inputs["firewallPolicy"]
    assert p["statelessDefaultActions"] == p["statelessFragmentDefaultActions"] == ["aws:forward_to_sfe"]
    assert "aws:drop_established" in p["statefulDefaultActions"]
    assert p["statefulEngineOptions"]["ruleOrder"] == "STRICT_ORDER"
    assert [ref["resourceArn"] for ref in p["statefulRuleGroupReferences"]] == [
        f"arn:aws:networkfirewall:eu-central-1:123456789012:{group.name}"
    ]

    (fw,) = rec.of_type(f"{NFW}/firewall:Firewall")
    assert fw.inputs["subnetMappings"] == [
        {"subnetId": s} for s in ("subnet-fw-a", "subnet-fw-b", "subnet-fw-c")
    ]
    assert fw.inputs["vpcId"] == "vpc-1"
    assert fw.inputs["firewallPolicyArn"].endswith(f":{policy.name}")
    assert fw.inputs["deleteProtection"] is True

    (logging,) = rec.of_type(f"{NFW}/loggingConfiguration:LoggingConfiguration")
    assert logging.inputs["firewallArn"].endswith(f":{fw.name}")
    destinations = logging.inputs["loggingConfiguration"]["logDestinationConfigs"]
    assert sorted(d["logType"] for d in destinations) == ["ALERT", "FLOW"]
    log_groups = {g.inputs["name"]: g for g in rec.of_type("aws:cloudwatch/logGroup:LogGroup")}
    for d in destinations:
        assert d["logDestinationType"] == "CloudWatchLogs"
        target = log_groups[d["logDestination"]["logGroup"]]
        assert target.inputs["retentionInDays"] == cfg.logging.retention_days
        assert target.inputs["kmsKeyId"] == "arn:aws:kms:eu-central-1:123456789012:key/k"


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_no_network_firewall_when_disabled(run_pulumi: Run, stack: str) -> None:
    cfg = load_stack(stack, ROOT)
    assert not cfg.firewall.network_firewall
    rec = from_stack(run_pulumi, cfg)
    assert nfw_resources(rec) == []
    assert rec.of_type("aws:cloudwatch/logGroup:LogGroup") == []


def test_network_firewall_needs_subnets_and_domains(run_pulumi: Run) -> None:
    with pytest.raises(ValueError, match="firewall_subnet_ids"):
        build(run_pulumi, safe_args(network_firewall=True, egress_allowed_domains=["registry.ollama.ai"]))
    with pytest.raises(ValueError, match="egress_allowed_domains"):
        build(run_pulumi, safe_args(network_firewall=True, firewall_subnet_ids=["subnet-a"]))


def test_rule_group_capacity_leaves_room_to_grow() -> None:
    assert domain_rule_capacity(["a.example.com"]) == 100
    assert domain_rule_capacity([f"d{i}.example.com" for i in range(60)]) == 300  # 120 needed, doubled


def test_firewall_endpoint_ids_by_availability_zone() -> None:
    from types import SimpleNamespace as NS

    from components.firewall import _endpoints_by_az

    statuses = [
        NS(
            sync_states=[
                NS(availability_zone="eu-central-1a", attachments=[NS(endpoint_id="vpce-a")]),
                NS(availability_zone="eu-central-1b", attachments=[NS(endpoint_id="vpce-b")]),
            ]
        )
    ]
    assert _endpoints_by_az(statuses) == {"eu-central-1a": "vpce-a", "eu-central-1b": "vpce-b"}
    assert _endpoints_by_az(None) == {}
