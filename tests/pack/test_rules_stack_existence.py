"""What every stack must have: a trail, flow logs, a budget, the three KMS keys, the edge's WAF.

The compliant fixture is the real prod graph (`llmkit plan prod`, the program on the mock runtime);
each violation fixture is that graph with one thing removed or turned off. Each is checked through
the offline runner (`evaluate`) and through `llmkit policy check` (exit 1); an empty graph lacks
everything, and a Kubernetes-only stack is out of scope.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmkit.cli import main
from llmkit.policy import STACK_NAME, UNKNOWN, Rule, evaluate, resources_from_graph
from policies.rules import load_rules
from policies.rules.aws_budgets_stack_missing_budget import RULE as BUDGET
from policies.rules.aws_cloudtrail_stack_missing_trail import RULE as TRAIL
from policies.rules.aws_ec2_stack_missing_flowlog import RULE as FLOW_LOGS
from policies.rules.aws_kms_stack_missing_keys import PURPOSE_TAG, PURPOSES
from policies.rules.aws_kms_stack_missing_keys import RULE as KEYS
from policies.rules.aws_wafv2_stack_missing_edge_association import RULE as EDGE_WAF
from tests.pack.fixtures import plan_graph

Graph = dict[str, Any]
NEW_RULES = (TRAIL, FLOW_LOGS, BUDGET, KEYS, EDGE_WAF)

NO_TRAIL = (
    "the stack has no CloudTrail trail (aws.cloudtrail.Trail): no record of who changed the deployment, "
    "its keys or its network"
)
NO_BUDGET = (
    "the stack has no cost budget (aws.budgets.Budget with budgetType COST): GPU spend, runaway scaling "
    "or a leaked key that burns tokens goes unnoticed until the invoice"
)
FLOW_TAIL = ": no record of the connections into, out of and within the model tier"
KEY_MESSAGES = {
    "data": "the stack has no data key (an aws.kms.Key tagged llmkit:key-purpose=data), the "
    "customer-managed key of model data at rest: the model store, the GPU hosts' EBS volumes, the "
    "gateway's database",
    "logs": "the stack has no logs key (an aws.kms.Key tagged llmkit:key-purpose=logs), the "
    "customer-managed key of CloudWatch log groups, VPC flow logs and CloudTrail",
    "secrets": "the stack has no secrets key (an aws.kms.Key tagged llmkit:key-purpose=secrets), the "
    "customer-managed key of Secrets Manager secrets and the alert topic",
}
NO_EDGE_WAF = (
    "has no AWS WAF web ACL of the stack (an aws.wafv2.WebAclAssociation whose resourceArn names it)"
)


def _entry(g: Graph, name: str) -> dict[str, Any]:
    (found,) = [e for e in g["resources"] if e["name"] == name]
    return found


def _inputs(g: Graph, name: str) -> dict[str, Any]:
    inputs: dict[str, Any] = _entry(g, name)["inputs"]
    return inputs


def without(*names: str, graph: Graph | None = None) -> Graph:
    g = graph if graph is not None else plan_graph("prod")
    missing = set(names) - {e["name"] for e in g["resources"]}
    assert not missing, f"not in the graph: {missing}"
    g["resources"] = [e for e in g["resources"] if e["name"] not in names]
    return g


def _add(g: Graph, type_: str, name: str, inputs: dict[str, Any]) -> None:
    providers = [e["provider"] for e in g["resources"] if e["name"] == "net-vpc"]
    g["resources"].append(
        {
            "urn": f"urn:pulumi:prod::llmkit::{type_}::{name}",
            "id": f"{name}-id",
            "type": type_,
            "name": name,
            "custom": True,
            "provider": providers[0] if providers and type_.startswith("aws:") else None,
            "dependencies": [],
            "inputs": inputs,
        }
    )


def found(rule: Rule, g: Graph, **settings: Any) -> list[tuple[str, str]]:
    report = evaluate(resources_from_graph(g), [rule], {rule.name: settings} if settings else None)
    return [(v.resource_name, v.message) for v in report.violations]


def skipped(rule: Rule, g: Graph) -> list[tuple[str, str]]:
    return evaluate(resources_from_graph(g), [rule]).skipped


def check_cli(tmp_path: Path, g: Graph) -> Result:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(g))
    return CliRunner().invoke(main, ["policy", "check", str(path)])


# --- the compliant fixtures: our stacks --------------------------------------------------------------


@pytest.mark.parametrize("stack", ["prod", "staging", "dev"])
@pytest.mark.parametrize("rule", NEW_RULES, ids=lambda r: r.name)
def test_our_stacks_have_what_every_stack_must_have(stack: str, rule: Rule) -> None:
    g = plan_graph(stack)
    assert found(rule, g) == []
    assert skipped(rule, g) == []


def test_the_new_rules_are_stack_rules_named_by_the_convention() -> None:
    names = {r.name for r in load_rules()}
    for rule in NEW_RULES:
        assert rule.name in names
        assert rule.check_stack is not None
        assert "-stack-missing-" in rule.name


# --- aws-cloudtrail-stack-missing-trail ----------------------------------------------------------


def test_a_stack_without_its_trail_fails() -> None:
    assert found(TRAIL, without("audit-trail")) == [(STACK_NAME, NO_TRAIL)]


@pytest.mark.parametrize("off", [False, "false"])
def test_a_trail_that_does_not_log_is_not_a_trail(off: Any) -> None:
    g = plan_graph("prod")
    _inputs(g, "audit-trail")["enableLogging"] = off
    assert found(TRAIL, g) == [
        (STACK_NAME, "no CloudTrail trail of the stack is logging (audit-trail: enableLogging false)")
    ]


def test_a_trail_whose_logging_is_unknown_is_not_judged() -> None:
    g = plan_graph("prod")
    _inputs(g, "audit-trail")["enableLogging"] = UNKNOWN
    assert found(TRAIL, g) == []
    assert skipped(TRAIL, g) == [(TRAIL.name, "(stack)")]


# --- aws-ec2-stack-missing-flowlog ---------------------------------------------------------------


def test_a_stack_without_its_flow_log_fails() -> None:
    assert found(FLOW_LOGS, without("net-flow-log")) == [
        (
            STACK_NAME,
            "the stack has no VPC flow log (aws.ec2.FlowLog) for the VPCs it uses (net-vpc)" + FLOW_TAIL,
        )
    ]


def test_a_stack_without_its_vpc_and_flow_log_fails() -> None:
    # aws-ec2-vpc-missing-flowlog sees no VPC here, so it has nothing to say: this rule does.
    g = without("net-vpc", "net-flow-log")
    assert found(FLOW_LOGS, g) == [
        (
            STACK_NAME,
            "the stack has no VPC flow log (aws.ec2.FlowLog) for the VPCs it uses (net-vpc-id)" + FLOW_TAIL,
        )
    ]


def test_a_vpc_the_stack_uses_but_does_not_create_needs_a_flow_log_of_the_stack() -> None:
    g = plan_graph("prod")
    _add(g, "aws:ec2/subnet:Subnet", "extra-subnet", {"vpcId": "vpc-0abc", "cidrBlock": "10.9.0.0/24"})
    assert found(FLOW_LOGS, g) == [
        (
            STACK_NAME,
            "VPC vpc-0abc, which the stack uses (extra-subnet) but does not create, has no flow log in the "
            "stack (an aws.ec2.FlowLog with that vpcId)",
        )
    ]
    _add(g, "aws:ec2/flowLog:FlowLog", "extra-flow-log", {"vpcId": "vpc-0abc", "trafficType": "ALL"})
    assert found(FLOW_LOGS, g) == []


def test_a_flow_log_for_a_vpc_the_stack_does_not_create_counts() -> None:
    assert found(FLOW_LOGS, without("net-vpc")) == []  # the flow log names net-vpc-id, which is used


def test_a_vpc_id_unknown_at_preview_is_a_vpc_of_the_stack_not_a_foreign_one() -> None:
    g = plan_graph("prod")
    _add(g, "aws:ec2/subnet:Subnet", "late-subnet", {"vpcId": UNKNOWN})
    assert found(FLOW_LOGS, g) == []


# --- aws-budgets-stack-missing-budget ------------------------------------------------------------


def test_a_stack_without_its_budget_fails() -> None:
    assert found(BUDGET, without("budget-budget")) == [(STACK_NAME, NO_BUDGET)]


def test_a_usage_budget_is_not_a_cost_budget() -> None:
    g = plan_graph("prod")
    _inputs(g, "budget-budget")["budgetType"] = "USAGE"
    assert found(BUDGET, g) == [(STACK_NAME, NO_BUDGET)]


@pytest.mark.parametrize(
    "notifications",
    [[], [{"threshold": 80, "subscriberSnsTopicArns": [], "subscriberEmailAddresses": []}]],
    ids=["none", "no subscriber"],
)
def test_a_budget_that_notifies_no_one_fails(notifications: list[Any]) -> None:
    g = plan_graph("prod")
    _inputs(g, "budget-budget")["notifications"] = notifications
    assert found(BUDGET, g) == [
        (
            "budget-budget",
            "the cost budget notifies no one: add a notification with an e-mail or SNS subscriber",
        )
    ]


def test_a_budget_notifying_by_email_passes_and_an_unknown_topic_is_not_judged() -> None:
    g = plan_graph("prod")
    _inputs(g, "budget-budget")["notifications"] = [{"subscriberEmailAddresses": ["finops@example.com"]}]
    assert found(BUDGET, g) == []
    _inputs(g, "budget-budget")["notifications"] = [{"subscriberSnsTopicArns": UNKNOWN}]
    assert found(BUDGET, g) == []
    assert skipped(BUDGET, g) == [(BUDGET.name, "(stack)")]


# --- aws-kms-stack-missing-keys ------------------------------------------------------------------


def test_the_purposes_are_those_the_keys_component_makes() -> None:
    from components.keys import PURPOSES as COMPONENT_PURPOSES

    assert tuple(PURPOSES) == COMPONENT_PURPOSES
    keys = [e for e in plan_graph("prod")["resources"] if e["type"] == "aws:kms/key:Key"]
    assert sorted(k["inputs"]["tags"][PURPOSE_TAG] for k in keys) == sorted(PURPOSES)


@pytest.mark.parametrize("purpose", sorted(KEY_MESSAGES))
def test_a_stack_without_one_of_its_keys_fails(purpose: str) -> None:
    assert found(KEYS, without(f"keys-{purpose}")) == [(STACK_NAME, KEY_MESSAGES[purpose])]


def test_a_key_without_its_purpose_tag_is_missing() -> None:
    g = plan_graph("prod")
    del _inputs(g, "keys-secrets")["tags"][PURPOSE_TAG]
    assert found(KEYS, g) == [(STACK_NAME, KEY_MESSAGES["secrets"])]


def test_a_disabled_or_signing_key_cannot_serve_its_purpose() -> None:
    g = plan_graph("prod")
    _inputs(g, "keys-logs")["isEnabled"] = False
    _inputs(g, "keys-data")["keyUsage"] = "SIGN_VERIFY"
    assert found(KEYS, g) == [
        ("keys-data", "the stack's data key cannot be used: keyUsage is SIGN_VERIFY, not ENCRYPT_DECRYPT"),
        ("keys-logs", "the stack's logs key cannot be used: it is disabled (isEnabled false)"),
    ]


# --- aws-wafv2-stack-missing-edge-association ----------------------------------------------------


def test_the_internal_edge_without_its_waf_fails() -> None:
    g = without("edge-waf-alb")
    assert found(EDGE_WAF, g) == [("edge-alb", "the internal edge load balancer " + NO_EDGE_WAF)]
    # Where reviewers accept an internal edge without a WAF, the setting says so; the model tier's
    # internal load balancer (fleet-alb) is never the edge.
    assert found(EDGE_WAF, g, internal_edge=False) == []


def test_the_public_edge_without_its_waf_fails_whatever_the_setting() -> None:
    g = without("edge-waf-alb")
    _inputs(g, "edge-alb")["internal"] = False
    expected = [("edge-alb", "the internet-facing edge load balancer " + NO_EDGE_WAF)]
    assert found(EDGE_WAF, g) == expected
    assert found(EDGE_WAF, g, internal_edge=False) == expected


def test_the_public_edge_with_its_waf_passes() -> None:
    g = plan_graph("prod")
    _inputs(g, "edge-alb")["internal"] = False
    assert found(EDGE_WAF, g) == []


def test_an_association_with_a_web_acl_outside_the_stack_does_not_count() -> None:
    foreign = "arn:aws:wafv2:eu-central-1:999999999999:regional/webacl/other/1"
    g = plan_graph("prod")
    _inputs(g, "edge-waf-alb")["webAclArn"] = foreign
    message = (
        "the internal edge load balancer has no AWS WAF web ACL of the stack (its association names no "
        f"web ACL of the stack: {foreign})"
    )
    assert found(EDGE_WAF, g) == [("edge-alb", message)]
    acl = "arn:aws:wafv2:eu-central-1:123456789012:edge-waf"
    assert found(EDGE_WAF, without("edge-waf", "edge-waf-logs")) == [
        ("edge-alb", message.replace(foreign, acl))
    ]


def test_at_preview_the_association_is_linked_by_its_dependencies() -> None:
    g = plan_graph("prod")
    _inputs(g, "edge-waf-alb").update(resourceArn=UNKNOWN, webAclArn=UNKNOWN)
    assert found(EDGE_WAF, g) == []  # it depends on edge-alb and edge-waf
    _entry(g, "edge-waf-alb")["dependencies"] = []
    assert found(EDGE_WAF, g) == [("edge-alb", "the internal edge load balancer " + NO_EDGE_WAF)]


# --- through `llmkit policy check` ---------------------------------------------------------------

REMOVALS = {
    "the trail": (("audit-trail",), TRAIL, "the stack has no CloudTrail"),
    "the flow log": (("net-flow-log",), FLOW_LOGS, "the stack has no VPC flow log"),
    "the vpc and its flow log": (("net-vpc", "net-flow-log"), FLOW_LOGS, "the stack has no VPC flow log"),
    "the budget": (("budget-budget",), BUDGET, "the stack has no cost budget"),
    "the data key": (("keys-data",), KEYS, "the stack has no data key"),
    "the logs key": (("keys-logs",), KEYS, "the stack has no logs key"),
    "the secrets key": (("keys-secrets",), KEYS, "the stack has no secrets key"),
    "the waf association": (("edge-waf-alb",), EDGE_WAF, "the internal edge load balancer"),
}


@pytest.mark.parametrize("removed", sorted(REMOVALS))
def test_policy_check_fails_a_graph_without_what_the_stack_must_have(tmp_path: Path, removed: str) -> None:
    names, rule, start = REMOVALS[removed]
    result = check_cli(tmp_path, without(*names))
    assert result.exit_code == 1, result.output
    assert rule.name in result.output
    assert start in result.output
    assert "policy: FAIL" in result.output
    if rule is not EDGE_WAF:
        assert "the stack" in result.output  # the finding is about the stack, not a resource


def test_an_empty_graph_lacks_everything_and_is_a_finding(tmp_path: Path) -> None:
    empty: Graph = {"schema": "llmkit.plan/v1", "resources": []}
    report = evaluate(resources_from_graph(empty), load_rules())
    assert sorted((v.rule, v.message) for v in report.mandatory) == sorted(
        [
            (TRAIL.name, NO_TRAIL),
            (FLOW_LOGS.name, "the stack has no VPC flow log (aws.ec2.FlowLog) and no VPC" + FLOW_TAIL),
            (BUDGET.name, NO_BUDGET),
            *[(KEYS.name, KEY_MESSAGES[p]) for p in sorted(KEY_MESSAGES)],
        ]
    )
    assert all(v.of_stack and v.urn == "" for v in report.violations)
    result = check_cli(tmp_path, empty)
    assert result.exit_code == 1, result.output
    for rule in (TRAIL, FLOW_LOGS, BUDGET, KEYS):
        assert rule.name in result.output
    for start in ("no CloudTrail trail", "no VPC flow log", "no cost budget", "no data key", "no logs key"):
        assert start in result.output
    assert "policy: FAIL" in result.output
    assert "6 mandatory" in result.output


def test_a_kubernetes_only_stack_is_out_of_scope_and_an_aws_resource_brings_it_in() -> None:
    g: Graph = {"schema": "llmkit.plan/v1", "resources": []}
    _add(g, "kubernetes:core/v1:Namespace", "model-ns", {"metadata": {"name": "llmkit-model"}})
    for rule in NEW_RULES:
        assert found(rule, g) == []
    _add(g, "aws:s3/bucket:Bucket", "stray", {})
    assert found(TRAIL, g) == [(STACK_NAME, NO_TRAIL)]
