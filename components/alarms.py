"""CloudWatch alarms on the service-level targets of ``llmkit:alarms``, reporting to the alert topic.

Per load balancer (the public edge ALB and the internal model ALB), from ``AWS/ApplicationELB``
with the dimension ``LoadBalancer`` = the ALB's ARN suffix:

- ``<label>-p99-latency``: ``TargetResponseTime`` p99 over ``p99_latency_seconds``;
- ``<label>-5xx-rate``: the share of requests answered 5xx, in percent, over
  ``error_rate_percent``, from metric math::

      IF(FILL(requests, 0) > 0,
         100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests,
         IF(FILL(elb5xx, 0) > 0, 100, 0))

  ``HTTPCode_Target_5XX_Count`` + ``HTTPCode_ELB_5XX_Count`` over ``RequestCount`` (sums per
  minute). The ``IF`` never divides by zero; a minute without requests that reached a target but
  with 5xx from the load balancer itself (every target down: ``RequestCount`` only counts requests
  for which a target was chosen) counts as 100 %, so a total outage is not mistaken for silence.

Per target group (dimensions ``TargetGroup`` and ``LoadBalancer``, both ARN suffixes):

- ``<label>-unhealthy-targets``: ``UnHealthyHostCount`` (maximum) > 0.

Per Auto Scaling group of GPU hosts, from the hosts' own metric (components/metrics.py:
``llmkit/Fleet`` ``GPUUtilization``, dimension ``AutoScalingGroupName``), averaged per minute
(period 60 s) and held for ``sustained_minutes`` (evaluation periods = minutes):

- ``<label>-gpu-low``: below the band's low end: the fleet is bigger than its load;
- ``<label>-gpu-high``: above the band's high end: the fleet is saturated.

Windows: latency and 5xx alarm when 3 of the last 5 one-minute periods breach (a single slow or
failing minute does not page, a real problem pages within five minutes); unhealthy targets when
3 consecutive minutes breach (a host being replaced flaps for less than that).

Missing data, per alarm (``treat_missing_data``), and why:

- p99 latency and 5xx rate: ``notBreaching``. An ALB publishes these only for minutes with
  traffic; a quiet minute is neither slow nor failing. A total outage still alarms through the
  ELB 5xx branch above and the unhealthy-targets alarm.
- unhealthy targets: ``notBreaching``. The ALB publishes the count every minute while the group
  has registered targets; a gap means no targets, which the 5xx and GPU alarms cover.
- GPU high: ``notBreaching``. A minute without a sample is no evidence of saturation.
- GPU low: ``missing``. Silence is neither idle nor busy: a fleet scaled to zero must not page as
  "idle", and a host whose exporter died shows as INSUFFICIENT_DATA on the dashboard instead of
  a false OK.

Every alarm has ``alarm_actions`` and ``ok_actions`` = the topic (components/budget.py), so the
on-call hears both the breach and the recovery. Names are ``llmkit-<stack>-<label>-<alarm>``: the
topic policy only admits alarms with the ``llmkit-<stack>-`` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components import metrics
from components.base import Component
from llmkit.config import StackConfig

ALB_NAMESPACE = "AWS/ApplicationELB"
PERIOD_SECONDS = 60
# Latency and 5xx rate: M of N one-minute periods.
SLO_EVALUATION_PERIODS = 5
SLO_DATAPOINTS_TO_ALARM = 3
UNHEALTHY_MINUTES = 3
# CloudWatch: evaluation_periods * period may not exceed one day.
MAX_SUSTAINED_MINUTES = 24 * 60
ERROR_RATE_EXPRESSION = (
    "IF(FILL(requests, 0) > 0, 100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests, "
    "IF(FILL(elb5xx, 0) > 0, 100, 0))"
)
# Why each alarm treats missing data as it does (see the module doc).
TREAT_MISSING_DATA = {
    "p99-latency": "notBreaching",
    "5xx-rate": "notBreaching",
    "unhealthy-targets": "notBreaching",
    "gpu-high": "notBreaching",
    "gpu-low": "missing",
}
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?")


def alarm_name_prefix(stack: str) -> str:
    """Every alarm of the stack starts with this; the alert topic admits only such alarms."""
    return f"llmkit-{stack}-"


def alarm_name(stack: str, label: str, alarm: str) -> str:
    """``llmkit-<stack>-<label>-<alarm>``, e.g. ``llmkit-prod-edge-p99-latency``."""
    return f"{alarm_name_prefix(stack)}{label}-{alarm}"


@dataclass
class AlarmsArgs:
    """What :class:`Alarms` watches and against which targets.

    ``load_balancers``: ``(label, ALB arn_suffix)``; ``target_groups``: ``(label, target group
    arn_suffix, its ALB's arn_suffix)``; ``asg_names``: ``(label, Auto Scaling group name)``.
    Labels name the alarms, so they must be short lowercase words, unique per kind.
    """

    topic_arn: pulumi.Input[str]
    load_balancers: Sequence[tuple[str, pulumi.Input[str]]]
    target_groups: Sequence[tuple[str, pulumi.Input[str], pulumi.Input[str]]]
    asg_names: Sequence[tuple[str, pulumi.Input[str]]]
    p99_latency_seconds: float
    error_rate_percent: float
    gpu_band: tuple[int, int]
    sustained_minutes: int
    stack: str
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        *,
        topic_arn: pulumi.Input[str],
        load_balancers: Sequence[tuple[str, pulumi.Input[str]]] = (),
        target_groups: Sequence[tuple[str, pulumi.Input[str], pulumi.Input[str]]] = (),
        asg_names: Sequence[tuple[str, pulumi.Input[str]]] = (),
        **overrides: Any,
    ) -> AlarmsArgs:
        """Thresholds from ``llmkit:alarms``, plus the resources other components made."""
        alarms = cfg.alarms
        values: dict[str, Any] = {
            "topic_arn": topic_arn,
            "load_balancers": list(load_balancers),
            "target_groups": list(target_groups),
            "asg_names": list(asg_names),
            "p99_latency_seconds": alarms.p99_latency_seconds,
            "error_rate_percent": alarms.error_rate_percent,
            "gpu_band": tuple(alarms.gpu_utilization_band_percent),
            "sustained_minutes": alarms.sustained_minutes,
            "stack": cfg.stack or pulumi.get_stack(),
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})

    def validate(self) -> None:
        """Raise ValueError for args that would make alarms that cannot fire or cannot deploy."""
        if not self.p99_latency_seconds > 0:
            raise ValueError(f"AlarmsArgs.p99_latency_seconds must be > 0, got {self.p99_latency_seconds}")
        if not 0 < self.error_rate_percent <= 100:
            raise ValueError(
                f"AlarmsArgs.error_rate_percent must be > 0 and <= 100, got {self.error_rate_percent}"
            )
        if len(self.gpu_band) != 2 or not 0 <= self.gpu_band[0] < self.gpu_band[1] <= 100:
            raise ValueError(
                f"AlarmsArgs.gpu_band must be (low, high) with 0 <= low < high <= 100, got {self.gpu_band}"
            )
        if not 1 <= self.sustained_minutes <= MAX_SUSTAINED_MINUTES:
            raise ValueError(
                f"AlarmsArgs.sustained_minutes must be 1..{MAX_SUSTAINED_MINUTES} (CloudWatch evaluates "
                f"at most one day), got {self.sustained_minutes}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.stack):
            raise ValueError(
                f"AlarmsArgs.stack {self.stack!r} cannot name alarms: use letters, digits, - and _"
            )
        if isinstance(self.topic_arn, str) and not re.fullmatch(
            r"arn:aws[a-z-]*:sns:[^:]+:\d{12}:[^:]+", self.topic_arn
        ):
            raise ValueError(f"AlarmsArgs.topic_arn must be an SNS topic ARN, got {self.topic_arn!r}")
        kinds = {
            "load_balancers": [entry[0] for entry in self.load_balancers],
            "target_groups": [entry[0] for entry in self.target_groups],
            "asg_names": [entry[0] for entry in self.asg_names],
        }
        for kind, labels in kinds.items():
            for label in labels:
                if not isinstance(label, str) or not _LABEL.fullmatch(label):
                    raise ValueError(
                        f"AlarmsArgs.{kind}: label {label!r} must be 1..64 lowercase letters, digits and "
                        "'-' (it names the alarm)"
                    )
                if labels.count(label) > 1:
                    raise ValueError(
                        f"AlarmsArgs.{kind}: label {label!r} is used twice; alarm names must differ"
                    )
        if not any(kinds.values()):
            raise ValueError("AlarmsArgs: nothing to watch; give load_balancers, target_groups or asg_names")


class Alarms(Component):
    """The stack's CloudWatch alarms (see the module doc); handles in :attr:`alarms` by short name."""

    TYPE = "llmkit:aws:Alarms"

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        super().__init__(name, opts)
        self.args = args
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        low, high = args.gpu_band
        minutes = args.sustained_minutes
        slo_window = f"{SLO_DATAPOINTS_TO_ALARM} of the last {SLO_EVALUATION_PERIODS} minutes"

        for label, lb in args.load_balancers:
            self._alarm(
                label,
                "p99-latency",
                description=(
                    f"p99 response time of the targets behind the {label} load balancer is over "
                    f"{args.p99_latency_seconds:g} s in {slo_window}. Check the model hosts' GPU and "
                    "queue alarms and scale out (llmkit:models[].replicas.max) if they are saturated; "
                    "otherwise find slow requests in the ALB access logs (target_processing_time) and "
                    "the model server's logs on the hosts."
                ),
                namespace=ALB_NAMESPACE,
                metric_name="TargetResponseTime",
                dimensions={"LoadBalancer": lb},
                extended_statistic="p99",
                period=PERIOD_SECONDS,
                evaluation_periods=SLO_EVALUATION_PERIODS,
                datapoints_to_alarm=SLO_DATAPOINTS_TO_ALARM,
                comparison_operator="GreaterThanThreshold",
                threshold=args.p99_latency_seconds,
                # A p99 of a handful of requests is one slow request: keep the state instead.
                evaluate_low_sample_count_percentiles="ignore",
            )
            self._alarm(
                label,
                "5xx-rate",
                description=(
                    f"More than {args.error_rate_percent:g} % of the requests to the {label} load balancer "
                    f"were answered 5xx in {slo_window}. ELB 5xx (502/503/504) with unhealthy targets: "
                    "see the unhealthy-targets alarm and the hosts' health; target 5xx: read the app or "
                    "model server logs. The ALB access logs name the failing requests."
                ),
                metric_queries=self._error_rate_queries(lb),
                evaluation_periods=SLO_EVALUATION_PERIODS,
                datapoints_to_alarm=SLO_DATAPOINTS_TO_ALARM,
                comparison_operator="GreaterThanThreshold",
                threshold=args.error_rate_percent,
            )

        for label, target_group, lb in args.target_groups:
            self._alarm(
                label,
                "unhealthy-targets",
                description=(
                    f"Target group {label} has had unhealthy targets for {UNHEALTHY_MINUTES} minutes. "
                    "Look at the target group's health check reasons, then at the host (SSM Session "
                    "Manager): is the model server up and the model loaded? The Auto Scaling group "
                    "replaces hosts that stay unhealthy; if it keeps replacing them, check the launch "
                    "(user data log) and the model bundle."
                ),
                namespace=ALB_NAMESPACE,
                metric_name="UnHealthyHostCount",
                dimensions={"TargetGroup": target_group, "LoadBalancer": lb},
                statistic="Maximum",
                period=PERIOD_SECONDS,
                evaluation_periods=UNHEALTHY_MINUTES,
                datapoints_to_alarm=UNHEALTHY_MINUTES,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
            )

        for label, asg in args.asg_names:
            gpu = {
                "namespace": metrics.NAMESPACE,
                "metric_name": metrics.GPU_UTILIZATION,
                "dimensions": {metrics.DIMENSION: asg},
                "statistic": "Average",
                "period": PERIOD_SECONDS,
                "evaluation_periods": minutes,
                "datapoints_to_alarm": minutes,
            }
            self._alarm(
                label,
                "gpu-low",
                description=(
                    f"GPU utilization of the {label} hosts has been under {low} % for {minutes} minutes: "
                    "the fleet is larger than its load. Check that scale-in works (Auto Scaling activity), "
                    "then lower llmkit:models[].replicas.min or choose a smaller instance type."
                ),
                comparison_operator="LessThanThreshold",
                threshold=low,
                **gpu,
            )
            self._alarm(
                label,
                "gpu-high",
                description=(
                    f"GPU utilization of the {label} hosts has been over {high} % for {minutes} minutes: "
                    "the fleet is saturated and requests queue. Check that scale-out works (Auto Scaling "
                    "activity, EC2 GPU quota, replicas.max reached?), then raise "
                    "llmkit:models[].replicas.max or lower the model's concurrency."
                ),
                comparison_operator="GreaterThanThreshold",
                threshold=high,
                **gpu,
            )

        self.register_outputs({"alarm_arns": {key: alarm.arn for key, alarm in self.alarms.items()}})

    @staticmethod
    def _error_rate_queries(lb: pulumi.Input[str]) -> list[dict[str, Any]]:
        def metric(query_id: str, metric_name: str) -> dict[str, Any]:
            return {
                "id": query_id,
                "return_data": False,
                "metric": {
                    "namespace": ALB_NAMESPACE,
                    "metric_name": metric_name,
                    "dimensions": {"LoadBalancer": lb},
                    "stat": "Sum",
                    "period": PERIOD_SECONDS,
                },
            }

        return [
            {
                "id": "errorrate",
                "expression": ERROR_RATE_EXPRESSION,
                "label": "5xx share of requests (%)",
                "return_data": True,
            },
            metric("requests", "RequestCount"),
            metric("target5xx", "HTTPCode_Target_5XX_Count"),
            metric("elb5xx", "HTTPCode_ELB_5XX_Count"),
        ]

    def _alarm(self, label: str, alarm: str, *, description: str, **properties: Any) -> None:
        key = f"{label}-{alarm}"
        self.alarms[key] = aws.cloudwatch.MetricAlarm(
            self.child_name(key),
            name=alarm_name(self.args.stack, label, alarm),
            alarm_description=description,
            alarm_actions=[self.args.topic_arn],
            ok_actions=[self.args.topic_arn],
            treat_missing_data=TREAT_MISSING_DATA[alarm],
            tags=dict(self.args.tags),
            opts=self.child_opts(),
            **properties,
        )
