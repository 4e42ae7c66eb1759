"""Budget: the encrypted alert topic, its policy and subscriptions, and the monthly cost budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from components.budget import Budget, BudgetArgs, topic_policy
from llmkit.config import StackConfig, load_stack
from llmkit.plan import MOCK_ACCOUNT_ID
from tests.conftest import ROOT, Recorded

TOPIC = "aws:sns/topic:Topic"
TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
BUDGET = "aws:budgets/budget:Budget"
SECRETS_KEY = f"arn:aws:kms:eu-central-1:{MOCK_ACCOUNT_ID}:key/secrets"
TOPIC_ARN = f"arn:aws:sns:eu-central-1:{MOCK_ACCOUNT_ID}:budget-topic"  # the mock ARN of the topic

RunPulumi = Callable[..., Recorded]


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return load_stack("prod", ROOT)


def deploy(run_pulumi: RunPulumi, cfg: StackConfig, **overrides: Any) -> Recorded:
    return run_pulumi(
        lambda: Budget("budget", BudgetArgs.from_config(cfg, SECRETS_KEY, **overrides)), stack=cfg.stack
    )


@pytest.fixture
def budget(run_pulumi: RunPulumi, prod: StackConfig) -> Recorded:
    return deploy(run_pulumi, prod)


def _policy(rec: Recorded) -> dict[str, Any]:
    (policy,) = rec.of_type(TOPIC_POLICY)
    document: dict[str, Any] = json.loads(policy.inputs["policy"])
    return document


def _statement(rec: Recorded, sid: str) -> dict[str, Any]:
    return next(s for s in _policy(rec)["Statement"] if s["Sid"] == sid)


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_topic_is_encrypted_with_the_secrets_key(budget: Recorded) -> None:
    (topic,) = budget.of_type(TOPIC)
    assert topic.inputs["kmsMasterKeyId"] == SECRETS_KEY
    assert topic.inputs["name"] == "llmkit-prod-alerts"
    assert topic.inputs["signatureVersion"] == 2  # SHA256-signed messages


def test_topic_policy_admits_only_budgets_and_this_stacks_alarms(budget: Recorded) -> None:
    (policy,) = budget.of_type(TOPIC_POLICY)
    assert policy.inputs["arn"] == TOPIC_ARN
    statements = _policy(budget)["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    # Nothing but the two service principals is allowed anything, and only to publish here.
    assert sorted(s["Principal"]["Service"] for s in allows) == [
        "budgets.amazonaws.com",
        "cloudwatch.amazonaws.com",
    ]
    for statement in allows:
        assert set(statement["Principal"]) == {"Service"}
        assert _actions(statement) == ["sns:Publish"]
        assert statement["Resource"] == TOPIC_ARN
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": MOCK_ACCOUNT_ID}
    assert _statement(budget, "BudgetsPublish")["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:budgets::{MOCK_ACCOUNT_ID}:*"
    }
    assert _statement(budget, "CloudWatchAlarmsPublish")["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:cloudwatch:eu-central-1:{MOCK_ACCOUNT_ID}:alarm:llmkit-prod-*"
    }


def test_topic_policy_denies_publish_and_subscribe_without_tls(budget: Recorded) -> None:
    deny = _statement(budget, "DenyInsecureTransport")
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert sorted(_actions(deny)) == ["sns:Publish", "sns:Subscribe"]
    assert deny["Resource"] == TOPIC_ARN
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # The only statement with Principal "*" is this Deny.
    assert [s["Sid"] for s in _policy(budget)["Statement"] if s["Principal"] == "*"] == [
        "DenyInsecureTransport"
    ]


def test_an_email_subscription_per_alert_address(budget: Recorded, prod: StackConfig) -> None:
    subscriptions = budget.of_type(SUBSCRIPTION)
    assert sorted(s.inputs["endpoint"] for s in subscriptions) == sorted(prod.budget.alert_emails)
    assert len(subscriptions) == 2
    for subscription in subscriptions:
        assert subscription.inputs["protocol"] == "email"
        assert subscription.inputs["topic"] == TOPIC_ARN
    assert budget.named("budget-email-finops-example-com").inputs["endpoint"] == "finops@example.com"


def test_monthly_cost_budget_filtered_by_the_environment_tag(budget: Recorded) -> None:
    (resource,) = budget.of_type(BUDGET)
    inputs = resource.inputs
    assert inputs["name"] == "llmkit-prod-monthly"
    assert inputs["budgetType"] == "COST"
    assert inputs["timeUnit"] == "MONTHLY"
    assert float(inputs["limitAmount"]) == 45000
    assert inputs["limitUnit"] == "USD"
    assert inputs["costFilters"] == [{"name": "TagKeyValue", "values": ["user:environment$prod"]}]


def test_one_notification_per_threshold_to_the_topic(budget: Recorded, prod: StackConfig) -> None:
    (resource,) = budget.of_type(BUDGET)
    notifications = resource.inputs["notifications"]
    found = [(n["notificationType"], n["threshold"]) for n in notifications]
    assert found == [("ACTUAL", 50), ("ACTUAL", 80), ("ACTUAL", 95), ("ACTUAL", 110), ("FORECASTED", 100)]
    assert len(notifications) == len(prod.budget.alert_thresholds_percent) + len(
        prod.budget.forecast_thresholds_percent
    )
    for notification in notifications:
        assert notification["comparisonOperator"] == "GREATER_THAN"
        assert notification["thresholdType"] == "PERCENTAGE"
        assert notification["subscriberSnsTopicArns"] == [TOPIC_ARN]
        assert "subscriberEmailAddresses" not in notification  # one path: the encrypted topic


def test_budget_and_topic_arn_wait_for_the_topic_policy(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    seen: dict[str, Any] = {}

    def program() -> None:
        import pulumi

        component = Budget("budget", BudgetArgs.from_config(prod, SECRETS_KEY))
        pulumi.export("topic_arn", component.topic_arn)
        seen["component"] = component

    rec = run_pulumi(program, stack="prod")
    policy = rec.named("budget-topic-policy")
    assert policy.urn in rec.named("budget-budget").dependencies
    assert rec.outputs == {"topic_arn": TOPIC_ARN}
    assert seen["component"].topic is not None and seen["component"].budget is not None


def test_budget_follows_the_config(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    budget = prod.budget.model_copy(
        update={
            "monthly_usd": 1234.5,
            "alert_thresholds_percent": [90],
            "forecast_thresholds_percent": [],
            "alert_emails": ["oncall@example.org"],
        }
    )
    cfg = prod.model_copy(update={"budget": budget, "tags": {**prod.tags, "environment": "prod-eu"}})
    rec = deploy(run_pulumi, cfg)
    (resource,) = rec.of_type(BUDGET)
    assert float(resource.inputs["limitAmount"]) == 1234.5
    assert resource.inputs["costFilters"][0]["values"] == ["user:environment$prod-eu"]
    assert [(n["notificationType"], n["threshold"]) for n in resource.inputs["notifications"]] == [
        ("ACTUAL", 90)
    ]
    assert [s.inputs["endpoint"] for s in rec.of_type(SUBSCRIPTION)] == ["oncall@example.org"]


def test_every_real_stack_gets_its_budget(run_pulumi: RunPulumi, stack_config: StackConfig) -> None:
    rec = deploy(run_pulumi, stack_config)
    (resource,) = rec.of_type(BUDGET)
    assert resource.inputs["name"] == f"llmkit-{stack_config.stack}-monthly"
    assert float(resource.inputs["limitAmount"]) == stack_config.budget.monthly_usd
    assert resource.inputs["costFilters"][0]["values"] == [
        f"user:environment${stack_config.tags['environment']}"
    ]
    actual = [n["threshold"] for n in resource.inputs["notifications"] if n["notificationType"] == "ACTUAL"]
    assert actual == stack_config.budget.alert_thresholds_percent
    assert len(rec.of_type(SUBSCRIPTION)) == len(stack_config.budget.alert_emails)


def test_explicit_account_id_is_used_in_the_policy(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    rec = deploy(run_pulumi, prod, account_id="210987654321")
    for statement in _policy(rec)["Statement"]:
        if statement["Effect"] == "Allow":
            assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "210987654321"}
            assert ":210987654321:" in statement["Condition"]["ArnLike"]["aws:SourceArn"]


def test_topic_policy_document_in_another_partition() -> None:
    document = topic_policy(
        "arn:aws-cn:sns:cn-north-1:111122223333:t",
        account_id="111122223333",
        region="cn-north-1",
        stack="cn",
        partition="aws-cn",
    )
    sources = [
        s["Condition"]["ArnLike"]["aws:SourceArn"] for s in document["Statement"] if s["Effect"] == "Allow"
    ]
    assert sources == [
        "arn:aws-cn:budgets::111122223333:*",
        "arn:aws-cn:cloudwatch:cn-north-1:111122223333:alarm:llmkit-cn-*",
    ]


def test_children_are_parented_and_named(budget: Recorded) -> None:
    (component,) = budget.of_type(Budget.TYPE)
    assert component.type == "llmkit:aws:Budget"
    children = [r for r in budget.resources if r is not component]
    assert len(children) == 1 + 1 + 2 + 1  # topic, policy, two subscriptions, budget
    for child in children:
        assert child.parent == component.urn
        assert child.name.startswith("budget-")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"monthly_usd": 0}, "monthly_usd must be > 0"),
        ({"alert_thresholds_percent": []}, "would never alert"),
        ({"alert_thresholds_percent": [80, 80]}, "not greater than the threshold before it"),
        ({"forecast_thresholds_percent": [0]}, "not a percentage 1..1000"),
        (
            {"alert_thresholds_percent": list(range(10, 100, 10)), "forecast_thresholds_percent": [100, 110]},
            "11 thresholds .* allows 10",
        ),
        ({"alert_emails": []}, "nobody would receive"),
        ({"alert_emails": ["not-an-address"]}, "not an email address"),
        ({"alert_emails": ["a@example.com", "A@example.com"]}, "listed twice"),
        ({"environment": "prod$x"}, "without '\\$'"),
        ({"environment": ""}, "environment"),
        ({"stack": "bad stack"}, "cannot name a topic"),
    ],
)
def test_bad_arguments_are_refused(
    run_pulumi: RunPulumi, prod: StackConfig, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BudgetArgs.from_config(prod, SECRETS_KEY, **overrides).validate()
    # The component refuses them too (it validates before registering anything).
    with pytest.raises(ValueError, match=message):
        deploy(run_pulumi, prod, **overrides)


def test_args_from_stack_config(prod: StackConfig) -> None:
    args = BudgetArgs.from_config(prod, SECRETS_KEY)
    assert args.monthly_usd == prod.budget.monthly_usd
    assert list(args.alert_thresholds_percent) == prod.budget.alert_thresholds_percent
    assert list(args.forecast_thresholds_percent) == prod.budget.forecast_thresholds_percent
    assert list(args.alert_emails) == prod.budget.alert_emails
    assert args.environment == prod.tags["environment"] == "prod"
    assert args.region == prod.region
    assert args.stack == "prod"
    assert args.kms_key_arn == SECRETS_KEY
    assert args.account_id is None
