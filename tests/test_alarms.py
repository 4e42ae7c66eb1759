"""Alarms: CloudWatch alarms on latency, 5xx rate, unhealthy targets and GPU utilization."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from components import metrics
from components.alarms import Alarms, AlarmsArgs
from components.budget import Budget, BudgetArgs
from llmkit.config import StackConfig, load_stack
from llmkit.plan import MOCK_ACCOUNT_ID
from tests.conftest import ROOT, Recorded

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = f"arn:aws:sns:eu-central-1:{MOCK_ACCOUNT_ID}:llmkit-prod-alerts"
EDGE_LB = "app/llmkit-edge/50dc6c495c0c9188"
MODEL_LB = "app/llmkit-model/6d0ecf831eec9f09"
LOAD_BALANCERS = [("edge", EDGE_LB), ("model", MODEL_LB)]
TARGET_GROUPS = [
    ("edge-app", "targetgroup/edge-app/73e2d6bc24d8a067", EDGE_LB),
    ("r1-32b", "targetgroup/r1-32b/943f017f100becff", MODEL_LB),
]
ASGS = [("r1-32b", "llmkit-prod-r1-32b"), ("r1-70b", "llmkit-prod-r1-70b")]

RunPulumi = Callable[..., Recorded]


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return load_stack("prod", ROOT)


def make_args(cfg: StackConfig, **overrides: Any) -> AlarmsArgs:
    inputs: dict[str, Any] = {
        "topic_arn": TOPIC,
        "load_balancers": LOAD_BALANCERS,
        "target_groups": TARGET_GROUPS,
        "asg_names": ASGS,
        **overrides,
    }
    return AlarmsArgs.from_config(cfg, **inputs)


def deploy(run_pulumi: RunPulumi, cfg: StackConfig, **overrides: Any) -> Recorded:
    return run_pulumi(lambda: Alarms("alarms", make_args(cfg, **overrides)), stack=cfg.stack)


@pytest.fixture
def alarms(run_pulumi: RunPulumi, prod: StackConfig) -> Recorded:
    return deploy(run_pulumi, prod)


def _alarm(rec: Recorded, name: str) -> dict[str, Any]:
    """The inputs of the alarm whose AWS name is `name`."""
    (found,) = [r for r in rec.of_type(ALARM) if r.inputs["name"] == name]
    return found.inputs


def test_alarm_names_are_deterministic_and_readable(alarms: Recorded) -> None:
    names = sorted(r.inputs["name"] for r in alarms.of_type(ALARM))
    assert names == sorted(
        [
            "llmkit-prod-edge-p99-latency",
            "llmkit-prod-model-p99-latency",
            "llmkit-prod-edge-5xx-rate",
            "llmkit-prod-model-5xx-rate",
            "llmkit-prod-edge-app-unhealthy-targets",
            "llmkit-prod-r1-32b-unhealthy-targets",
            "llmkit-prod-r1-32b-gpu-low",
            "llmkit-prod-r1-32b-gpu-high",
            "llmkit-prod-r1-70b-gpu-low",
            "llmkit-prod-r1-70b-gpu-high",
        ]
    )
    # Resource names follow the component's: alarms-<label>-<alarm>.
    assert alarms.named("alarms-edge-p99-latency").inputs["name"] == "llmkit-prod-edge-p99-latency"


def test_every_alarm_reports_breach_and_recovery_to_the_topic(alarms: Recorded) -> None:
    for alarm in alarms.of_type(ALARM):
        assert alarm.inputs["alarmActions"] == [TOPIC], alarm.name
        assert alarm.inputs["okActions"] == [TOPIC], alarm.name
        assert "insufficientDataActions" not in alarm.inputs
        assert alarm.inputs.get("actionsEnabled", True) is True
        description = alarm.inputs["alarmDescription"]
        assert 40 < len(description) <= 1024  # says what to do, within CloudWatch's limit


def test_missing_data_is_chosen_per_alarm(alarms: Recorded) -> None:
    expected = {
        "p99-latency": "notBreaching",
        "5xx-rate": "notBreaching",
        "unhealthy-targets": "notBreaching",
        "gpu-high": "notBreaching",
        "gpu-low": "missing",
    }
    for alarm in alarms.of_type(ALARM):
        kind = next(k for k in expected if alarm.inputs["name"].endswith(f"-{k}"))
        assert alarm.inputs["treatMissingData"] == expected[kind], alarm.name


@pytest.mark.parametrize(("label", "suffix"), LOAD_BALANCERS)
def test_p99_latency_per_load_balancer(alarms: Recorded, label: str, suffix: str) -> None:
    alarm = _alarm(alarms, f"llmkit-prod-{label}-p99-latency")
    assert alarm["namespace"] == "AWS/ApplicationELB"
    assert alarm["metricName"] == "TargetResponseTime"
    assert alarm["extendedStatistic"] == "p99"
    assert "statistic" not in alarm
    assert alarm["dimensions"] == {"LoadBalancer": suffix}
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm["threshold"] == 2  # llmkit:alarms.p99_latency_seconds default
    assert alarm["period"] == 60
    assert (alarm["datapointsToAlarm"], alarm["evaluationPeriods"]) == (3, 5)
    assert alarm["evaluateLowSampleCountPercentiles"] == "ignore"


@pytest.mark.parametrize(("label", "suffix"), LOAD_BALANCERS)
def test_5xx_rate_is_metric_math_without_division_by_zero(alarms: Recorded, label: str, suffix: str) -> None:
    alarm = _alarm(alarms, f"llmkit-prod-{label}-5xx-rate")
    # A metric-math alarm carries no metric of its own.
    for key in ("metricName", "namespace", "period", "statistic", "dimensions"):
        assert key not in alarm
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    expression = queries.pop("errorrate")
    assert expression["returnData"] is True
    assert expression["expression"] == (
        "IF(FILL(requests, 0) > 0, 100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests, "
        "IF(FILL(elb5xx, 0) > 0, 100, 0))"
    )
    assert {q: m["metric"]["metricName"] for q, m in queries.items()} == {
        "requests": "RequestCount",
        "target5xx": "HTTPCode_Target_5XX_Count",
        "elb5xx": "HTTPCode_ELB_5XX_Count",
    }
    for query in queries.values():
        assert query["returnData"] is False
        assert query["metric"]["namespace"] == "AWS/ApplicationELB"
        assert query["metric"]["stat"] == "Sum"
        assert query["metric"]["period"] == 60
        assert query["metric"]["dimensions"] == {"LoadBalancer": suffix}
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm["threshold"] == pytest.approx(0.1)  # llmkit:alarms.error_rate_percent default
    assert (alarm["datapointsToAlarm"], alarm["evaluationPeriods"]) == (3, 5)


class _Datapoint(float):
    """A metric value in CloudWatch metric math: dividing by zero gives no value (nan), not an error."""

    def __rtruediv__(self, other: object) -> float:
        return math.nan if self == 0 else float(other) / float(self)  # type: ignore[arg-type]


def _evaluate(expression: str, **series: float | None) -> float:
    """One minute of the alarm's own expression; None: the metric has no datapoint (nan) that minute."""

    def fill(value: float, default: float) -> _Datapoint:
        return _Datapoint(default if math.isnan(value) else value)

    def if_(condition: bool, then: float, otherwise: float) -> float:
        return then if condition else otherwise

    values = {k: _Datapoint(math.nan if v is None else v) for k, v in series.items()}
    result: float = eval(expression, {"__builtins__": {}}, {"IF": if_, "FILL": fill, **values})
    return result


def test_5xx_expression_never_divides_by_zero_and_sees_outages(alarms: Recorded) -> None:
    (query,) = [q for q in _alarm(alarms, "llmkit-prod-edge-5xx-rate")["metricQueries"] if "expression" in q]
    expression = query["expression"]
    assert _evaluate(expression, requests=1000, target5xx=1, elb5xx=1) == pytest.approx(0.2)
    assert _evaluate(expression, requests=1000, target5xx=None, elb5xx=None) == 0
    # Idle minute: no requests, no errors: 0 %, not a division by zero.
    assert _evaluate(expression, requests=0, target5xx=None, elb5xx=None) == 0
    assert _evaluate(expression, requests=None, target5xx=None, elb5xx=None) == 0
    # Every target down: no request reaches a target, the ALB answers 503 itself: 100 %.
    assert _evaluate(expression, requests=None, target5xx=None, elb5xx=50) == 100


@pytest.mark.parametrize(("label", "target_group", "lb"), TARGET_GROUPS)
def test_unhealthy_targets_per_target_group(alarms: Recorded, label: str, target_group: str, lb: str) -> None:
    alarm = _alarm(alarms, f"llmkit-prod-{label}-unhealthy-targets")
    assert alarm["namespace"] == "AWS/ApplicationELB"
    assert alarm["metricName"] == "UnHealthyHostCount"
    assert alarm["dimensions"] == {"TargetGroup": target_group, "LoadBalancer": lb}
    assert alarm["statistic"] == "Maximum"
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm["threshold"] == 0
    assert alarm["period"] == 60
    assert alarm["evaluationPeriods"] == alarm["datapointsToAlarm"] == 3


@pytest.mark.parametrize(("label", "asg"), ASGS)
def test_gpu_band_per_auto_scaling_group(alarms: Recorded, label: str, asg: str) -> None:
    low = _alarm(alarms, f"llmkit-prod-{label}-gpu-low")
    high = _alarm(alarms, f"llmkit-prod-{label}-gpu-high")
    for alarm in (low, high):
        # The names the hosts publish under (components/metrics.py).
        assert alarm["namespace"] == metrics.NAMESPACE == "llmkit/Fleet"
        assert alarm["metricName"] == metrics.GPU_UTILIZATION == "GPUUtilization"
        assert alarm["dimensions"] == {metrics.DIMENSION: asg} == {"AutoScalingGroupName": asg}
        assert alarm["statistic"] == "Average"
        assert alarm["period"] == 60
        # Sustained for llmkit:alarms.sustained_minutes (default 15): every minute must breach.
        assert alarm["evaluationPeriods"] == alarm["datapointsToAlarm"] == 15
    assert (low["comparisonOperator"], low["threshold"]) == ("LessThanThreshold", 70)
    assert (high["comparisonOperator"], high["threshold"]) == ("GreaterThanThreshold", 90)


def test_alarms_follow_the_config(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    cfg = prod.model_copy(
        update={
            "alarms": prod.alarms.model_copy(
                update={
                    "p99_latency_seconds": 7.5,
                    "error_rate_percent": 2.5,
                    "gpu_utilization_band_percent": (20, 60),
                    "sustained_minutes": 30,
                }
            )
        }
    )
    rec = deploy(run_pulumi, cfg)
    assert _alarm(rec, "llmkit-prod-edge-p99-latency")["threshold"] == 7.5
    assert _alarm(rec, "llmkit-prod-model-5xx-rate")["threshold"] == 2.5
    low = _alarm(rec, "llmkit-prod-r1-70b-gpu-low")
    high = _alarm(rec, "llmkit-prod-r1-70b-gpu-high")
    assert (low["threshold"], high["threshold"]) == (20, 60)
    assert low["evaluationPeriods"] == high["datapointsToAlarm"] == 30
    assert "30 minutes" in low["alarmDescription"]


def test_only_the_given_resources_are_watched(run_pulumi: RunPulumi, prod: StackConfig) -> None:
    rec = deploy(run_pulumi, prod, load_balancers=[("edge", EDGE_LB)], target_groups=[], asg_names=[])
    assert sorted(r.inputs["name"] for r in rec.of_type(ALARM)) == [
        "llmkit-prod-edge-5xx-rate",
        "llmkit-prod-edge-p99-latency",
    ]


def test_wired_to_the_budget_topic_the_alarms_wait_for_its_policy(
    run_pulumi: RunPulumi, prod: StackConfig
) -> None:
    def program() -> None:
        budget = Budget("budget", BudgetArgs.from_config(prod, "arn:aws:kms:eu-central-1:123456789012:key/s"))
        Alarms(
            "alarms",
            AlarmsArgs.from_config(prod, topic_arn=budget.topic_arn, load_balancers=[("edge", EDGE_LB)]),
        )

    rec = run_pulumi(program, stack="prod")
    topic_arn = f"arn:aws:sns:eu-central-1:{MOCK_ACCOUNT_ID}:budget-topic"
    policy = rec.named("budget-topic-policy")
    for alarm in rec.of_type(ALARM):
        assert alarm.inputs["alarmActions"] == alarm.inputs["okActions"] == [topic_arn]
        assert policy.urn in alarm.dependencies
        # The topic policy admits this alarm's name.
        assert alarm.inputs["name"].startswith("llmkit-prod-")


def test_children_are_parented_and_outputs_registered(alarms: Recorded) -> None:
    (component,) = alarms.of_type(Alarms.TYPE)
    assert component.type == "llmkit:aws:Alarms"
    children = [r for r in alarms.resources if r is not component]
    assert len(children) == 10
    for child in children:
        assert child.parent == component.urn
        assert child.type == ALARM
        assert child.name.startswith("alarms-")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"p99_latency_seconds": 0}, "p99_latency_seconds must be > 0"),
        ({"error_rate_percent": 0}, "error_rate_percent must be > 0 and <= 100"),
        ({"error_rate_percent": 101}, "error_rate_percent must be > 0 and <= 100"),
        ({"gpu_band": (90, 70)}, "gpu_band must be"),
        ({"gpu_band": (10, 101)}, "gpu_band must be"),
        ({"sustained_minutes": 0}, "sustained_minutes must be 1..1440"),
        ({"sustained_minutes": 1441}, "sustained_minutes must be 1..1440"),
        ({"topic_arn": "arn:aws:sqs:eu-central-1:123456789012:q"}, "SNS topic ARN"),
        ({"load_balancers": [("Edge LB", EDGE_LB)]}, "label 'Edge LB'"),
        ({"load_balancers": [("edge", EDGE_LB), ("edge", MODEL_LB)]}, "used twice"),
        ({"asg_names": [("", "asg")]}, "label ''"),
        ({"load_balancers": [], "target_groups": [], "asg_names": []}, "nothing to watch"),
        ({"stack": "a b"}, "cannot name alarms"),
    ],
)
def test_bad_arguments_are_refused(
    run_pulumi: RunPulumi, prod: StackConfig, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_args(prod, **overrides).validate()
    with pytest.raises(ValueError, match=message):
        deploy(run_pulumi, prod, **overrides)


def test_args_from_stack_config(stack_config: StackConfig) -> None:
    args = AlarmsArgs.from_config(stack_config, topic_arn=TOPIC, load_balancers=LOAD_BALANCERS)
    assert args.p99_latency_seconds == stack_config.alarms.p99_latency_seconds
    assert args.error_rate_percent == stack_config.alarms.error_rate_percent
    assert args.gpu_band == tuple(stack_config.alarms.gpu_utilization_band_percent)
    assert args.sustained_minutes == stack_config.alarms.sustained_minutes
    assert args.stack == stack_config.stack
    assert list(args.load_balancers) == LOAD_BALANCERS
    assert list(args.target_groups) == [] and list(args.asg_names) == []
    assert dict(args.tags) == stack_config.tags
