"""The stack's monthly cost budget and the encrypted SNS topic every alert of the stack goes to.

:class:`Budget` creates:

- an SNS topic ``llmkit-<stack>-alerts``, encrypted at rest with the **secrets** KMS key
  (``kms_master_key_id``) and signing its messages with SHA256 (``signature_version`` 2);
- its topic policy (it replaces the default one, which lets any principal of the account
  publish and subscribe):

  - ``budgets.amazonaws.com`` may ``sns:Publish`` on behalf of this account's budgets only
    (``aws:SourceAccount`` = the account, ``aws:SourceArn`` like ``arn:aws:budgets::<account>:*``);
  - ``cloudwatch.amazonaws.com`` may ``sns:Publish`` on behalf of this stack's alarms only
    (``aws:SourceAccount`` and ``aws:SourceArn`` like
    ``arn:aws:cloudwatch:<region>:<account>:alarm:llmkit-<stack>-*``; components/alarms.py names
    every alarm with that prefix). These two conditions close the confused-deputy path: another
    account's budget or alarm cannot use the service to write to this topic;
  - publish and subscribe without TLS (``aws:SecureTransport`` false) are denied to everyone.

  Principals of the account keep managing the topic through IAM (same-account access needs an
  identity policy only); nothing outside the account is granted anything.
- an email subscription per ``llmkit:budget.alert_emails`` (each address gets a confirmation mail
  from AWS and receives nothing until it is confirmed);
- an AWS Budgets ``COST`` budget ``llmkit-<stack>-monthly``: ``MONTHLY``, limit
  ``llmkit:budget.monthly_usd`` USD, filtered to the stack's resources by the cost-allocation tag
  ``environment`` (cost filter ``TagKeyValue`` = ``user:environment$<llmkit:tags.environment>``),
  with one notification per threshold: ``alert_thresholds_percent`` on ``ACTUAL`` spend,
  ``forecast_thresholds_percent`` on ``FORECASTED`` spend, ``GREATER_THAN``, ``PERCENTAGE``, to the
  topic. AWS Budgets allows ten notifications per budget.

Encryption needs the key's cooperation: a service publishing to a topic encrypted with a
customer-managed key must be allowed ``kms:GenerateDataKey*`` and ``kms:Decrypt`` by the key policy.
components/keys.py grants exactly that to Budgets and CloudWatch on the secrets key (with the same
source conditions) and lets the account's principals use the key through SNS.

**The tag filter only matches once ``environment`` is an active cost-allocation tag** (Billing
console, or ``aws.costexplorer.CostAllocationTag`` from the organisation's management account).
Until it is activated the budget sees no cost and never alerts; activation is not done here because
only the payer account may do it and the tag must first have appeared in billing data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.alarms import alarm_name_prefix
from components.base import Component
from llmkit.config import StackConfig

# The tag the budget filters on; llmkit:tags must hold it (llmkit.config.REQUIRED_TAGS).
COST_ALLOCATION_TAG = "environment"
BUDGETS_SERVICE = "budgets.amazonaws.com"
CLOUDWATCH_SERVICE = "cloudwatch.amazonaws.com"
# AWS Budgets: at most ten notifications per budget.
MAX_NOTIFICATIONS = 10
THRESHOLD_RANGE = (1, 1000)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def topic_name(stack: str) -> str:
    return f"llmkit-{stack}-alerts"


def budget_name(stack: str) -> str:
    return f"llmkit-{stack}-monthly"


def tag_filter_value(environment: str) -> str:
    """The ``TagKeyValue`` cost filter value for user tag ``environment`` = `environment`."""
    return f"user:{COST_ALLOCATION_TAG}${environment}"


def topic_policy(
    topic_arn: str, *, account_id: str, region: str, stack: str, partition: str = "aws"
) -> dict[str, Any]:
    """The topic policy document, from plain values (call it inside apply)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BudgetsPublish",
                "Effect": "Allow",
                "Principal": {"Service": BUDGETS_SERVICE},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": f"arn:{partition}:budgets::{account_id}:*"},
                },
            },
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": CLOUDWATCH_SERVICE},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:"
                        + f"{alarm_name_prefix(stack)}*"
                    },
                },
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["sns:Publish", "sns:Subscribe"],
                "Resource": topic_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def _email_slug(email: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", email.lower()).strip("-")


def _check_thresholds(name: str, thresholds: Sequence[int]) -> None:
    low, high = THRESHOLD_RANGE
    for i, value in enumerate(thresholds):
        if not low <= value <= high:
            raise ValueError(f"BudgetArgs.{name}[{i}]: {value} is not a percentage {low}..{high}")
        if i and value <= thresholds[i - 1]:
            raise ValueError(
                f"BudgetArgs.{name}[{i}]: {value} is not greater than the threshold before it "
                f"({thresholds[i - 1]}); give each threshold once, in increasing order"
            )


@dataclass
class BudgetArgs:
    """What :class:`Budget` needs; :meth:`from_config` reads it from a stack's config."""

    monthly_usd: float
    alert_thresholds_percent: Sequence[int]
    forecast_thresholds_percent: Sequence[int]
    alert_emails: Sequence[str]
    # The secrets key (KmsKeys.secrets.arn): its policy lets Budgets and CloudWatch publish.
    kms_key_arn: pulumi.Input[str]
    # The value of the `environment` cost-allocation tag of the stack's resources.
    environment: str
    region: str
    stack: str
    # None: the account of the caller (aws.get_caller_identity).
    account_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: StackConfig, kms_key_arn: pulumi.Input[str], **overrides: Any) -> BudgetArgs:
        budget = cfg.budget
        values: dict[str, Any] = {
            "monthly_usd": budget.monthly_usd,
            "alert_thresholds_percent": list(budget.alert_thresholds_percent),
            "forecast_thresholds_percent": list(budget.forecast_thresholds_percent),
            "alert_emails": list(budget.alert_emails),
            "kms_key_arn": kms_key_arn,
            "environment": cfg.tags[COST_ALLOCATION_TAG],
            "region": cfg.region,
            "stack": cfg.stack or pulumi.get_stack(),
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})

    def validate(self) -> None:
        """Raise ValueError for args that would make a budget that cannot alert or cannot deploy."""
        if not self.monthly_usd > 0:
            raise ValueError(
                f"BudgetArgs.monthly_usd must be > 0 (US dollars a month), got {self.monthly_usd}"
            )
        if not self.alert_thresholds_percent:
            raise ValueError(
                "BudgetArgs.alert_thresholds_percent is empty: the actual spend would never alert"
            )
        _check_thresholds("alert_thresholds_percent", self.alert_thresholds_percent)
        _check_thresholds("forecast_thresholds_percent", self.forecast_thresholds_percent)
        count = len(self.alert_thresholds_percent) + len(self.forecast_thresholds_percent)
        if count > MAX_NOTIFICATIONS:
            raise ValueError(
                f"BudgetArgs: {count} thresholds (actual + forecast) but AWS Budgets allows "
                f"{MAX_NOTIFICATIONS} notifications per budget"
            )
        if not self.alert_emails:
            raise ValueError("BudgetArgs.alert_emails is empty: nobody would receive the alerts")
        slugs: dict[str, str] = {}
        for email in self.alert_emails:
            if not _EMAIL.fullmatch(email):
                raise ValueError(f"BudgetArgs.alert_emails: {email!r} is not an email address")
            if _email_slug(email) in slugs:
                raise ValueError(
                    f"BudgetArgs.alert_emails: {email!r} is listed twice (or clashes with "
                    f"{slugs[_email_slug(email)]!r})"
                )
            slugs[_email_slug(email)] = email
        if not self.environment or "$" in self.environment:
            raise ValueError(
                f"BudgetArgs.environment must be the non-empty value of the {COST_ALLOCATION_TAG!r} tag "
                f"without '$', got {self.environment!r}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", self.stack):
            raise ValueError(
                f"BudgetArgs.stack {self.stack!r} cannot name a topic and a budget: "
                "use up to 80 letters, digits, - and _"
            )


class Budget(Component):
    """The alert topic and the monthly cost budget of the stack (see the module doc)."""

    TYPE = "llmkit:aws:Budget"

    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        super().__init__(name, opts)
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        account_id: pulumi.Input[str] = self.account_id(args.account_id)
        partition = aws.get_partition_output(opts=invoke_opts).partition

        self.topic = aws.sns.Topic(
            self.child_name("topic"),
            name=topic_name(args.stack),
            display_name=f"llmkit {args.stack} alerts",
            kms_master_key_id=args.kms_key_arn,
            signature_version=2,
            tags=dict(args.tags),
            opts=self.child_opts(),
        )

        def policy_json(values: list[Any]) -> str:
            # Only builds a string from resolved values; no resources are created in apply.
            arn, account, part = values
            return json.dumps(
                topic_policy(arn, account_id=account, region=args.region, stack=args.stack, partition=part)
            )

        self.topic_policy = aws.sns.TopicPolicy(
            self.child_name("topic-policy"),
            arn=self.topic.arn,
            policy=pulumi.Output.all(self.topic.arn, account_id, partition).apply(policy_json),
            opts=self.child_opts(),
        )
        # The topic's ARN once its policy is in place: whatever publishes to it (the budget below,
        # the alarms) depends on the policy through this output, so no first alert is refused.
        self.topic_arn: pulumi.Output[str] = pulumi.Output.all(self.topic.arn, self.topic_policy.id).apply(
            lambda values: str(values[0])
        )

        self.subscriptions: dict[str, aws.sns.TopicSubscription] = {}
        for email in args.alert_emails:
            self.subscriptions[email] = aws.sns.TopicSubscription(
                self.child_name(f"email-{_email_slug(email)}"),
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=self.child_opts(),
            )

        notifications = [
            {
                "comparison_operator": "GREATER_THAN",
                "notification_type": kind,
                "threshold": float(threshold),
                "threshold_type": "PERCENTAGE",
                "subscriber_sns_topic_arns": [self.topic_arn],
            }
            for kind, thresholds in (
                ("ACTUAL", args.alert_thresholds_percent),
                ("FORECASTED", args.forecast_thresholds_percent),
            )
            for threshold in thresholds
        ]
        self.budget = aws.budgets.Budget(
            self.child_name("budget"),
            name=budget_name(args.stack),
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=f"{args.monthly_usd:.2f}",
            limit_unit="USD",
            cost_filters=[{"name": "TagKeyValue", "values": [tag_filter_value(args.environment)]}],
            notifications=notifications,  # type: ignore[arg-type]
            tags=dict(args.tags),
            opts=self.child_opts(),
        )

        self.register_outputs({"topic_arn": self.topic_arn, "budget_name": self.budget.name})
