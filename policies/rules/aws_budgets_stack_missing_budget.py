"""The stack has a cost budget, and the budget tells someone when spend crosses a threshold.

A budget counts when it is an ``aws.budgets.Budget`` of the stack with ``budgetType`` ``COST`` and
at least one notification with a subscriber (an e-mail address or an SNS topic). llmkit's Budget
component makes one per stack (``llmkit:budget`` is required in every stack file), filtered to the
stack's resources, notifying the stack's alert topic.

Only a stack of Kubernetes resources alone is out of scope (``policies.support.kubernetes_only``);
an empty stack lacks the budget.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Stack, Unknown, as_list
from policies.support import kubernetes_only

BUDGETS = ("aws:budgets/budget:Budget",)
SUBSCRIBERS = ("subscriberEmailAddresses", "subscriberSnsTopicArns")


def _notifies(budget: Resource) -> bool:
    """Whether a notification of ``budget`` has a subscriber (Unknown when that is not known yet)."""
    unknown = False
    for notification in as_list(budget.get("notifications")):
        if not isinstance(notification, Mapping):
            continue
        for key in SUBSCRIBERS:
            try:
                if as_list(notification.get(key)):
                    return True
            except Unknown:  # a topic ARN at preview
                unknown = True
    if unknown:
        raise Unknown
    return False


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource | None, str]]:
    if kubernetes_only(stack):
        return
    budgets = [b for b in stack.of_type(*BUDGETS) if str(b.get("budgetType", default="")).upper() == "COST"]
    if not budgets:
        yield (
            None,
            "the stack has no cost budget (aws.budgets.Budget with budgetType COST): GPU spend, "
            "runaway scaling or a leaked key that burns tokens goes unnoticed until the invoice",
        )
        return
    unknown = False
    for budget in budgets:
        try:
            if _notifies(budget):
                return
        except Unknown:
            unknown = True
    if unknown:
        raise Unknown  # no budget surely notifies, and one may: not judged
    for budget in budgets:
        yield budget, "the cost budget notifies no one: add a notification with an e-mail or SNS subscriber"


RULE = Rule(
    name="aws-budgets-stack-missing-budget",
    description="The stack has an AWS Budgets cost budget with at least one notification that reaches "
    "a subscriber.",
    why="GPU hosts cost thousands a month each: an Auto Scaling group stuck at its maximum, a forgotten "
    "test fleet or a stolen API key driving inference is found only on the invoice when no budget "
    "alerts. Cost is also a signal of abuse (denial of wallet).",
    severity="medium",
    remediation="Keep the Budget component in the program (llmkit:budget in the stack file: monthly_usd, "
    "alert_thresholds_percent, alert_emails); it makes a COST budget notifying the alert topic.",
    frameworks=("AWS Well-Architected COST02-BP05", "NIST SP 800-53 Rev. 5 SA-2"),
    check_stack=check,
)
