"""The DMZ edge: an Application Load Balancer with TLS 1.3 (and optional mTLS), a WAF and a rate limit.

Clients reach the deployment only through this reverse proxy::

    clients --TLS 1.3 (+ mTLS)--> ALB :443 (WAF: IP reputation, rate limit, managed rules)
                                   --HTTPS--> app tier target group (app_port)

Decisions, for reviewers:

- **TLS 1.3 only** on 443 (``ELBSecurityPolicy-TLS13-1-3-2021-06``); port 80 exists only to
  answer ``301`` to ``https://…:443`` and never forwards a request.
- **mTLS** when a CA bundle is given: the bundle is uploaded to an existing hardened bucket
  (its default encryption applies) and an ``aws.lb.TrustStore`` is built from it; the
  listener runs in ``verify`` mode, so a client without a certificate from that CA never
  completes the handshake. Expired client certificates are refused.
- **Idle timeout 300 s**: an LLM answer is streamed token by token, and a reasoning model
  (DeepSeek-R1) may spend a long time on prompt processing and "thinking" before bytes
  flow; a non-streaming request holds the connection open for the whole completion. The
  ALB default (60 s) cuts such requests off with a 504; 300 s covers long completions
  without keeping dead connections for long.
- **One target group, for the app tier only** (HTTPS on ``app_port``). The model tier is
  never a target: clients reach a model only through the app tier, and the component
  refuses an ``app_port`` that is a model runtime's port (from ``llmkit.catalog``).
  ``target_type="ip"`` by default: it serves containers with their own ENIs (ECS/EKS
  ``awsvpc``) as well as instances registered by private IP, and only addresses inside
  the VPC's private ranges can be registered. An EC2 Auto Scaling group attaches by
  instance id and needs ``target_type="instance"``.
- **The WAF is attached to internal load balancers too** (defence in depth: a compromised
  host or a misbehaving client inside the corporate network is rate-limited and filtered
  like an internet client). Rules, in evaluation order: per-IP rate limit, Amazon IP
  reputation list, known bad inputs, the common rule set. The common rule set's
  ``SizeRestrictions_BODY`` (blocks bodies over 8 KB) is set to *count*: LLM prompts with
  long context are routinely larger than that.
- **Logs**: ALB access logs go to the given bucket; WAF logs (when a log group is given) go
  to a CloudWatch log group named ``aws-waf-logs-…``, with the ``authorization`` and
  ``cookie`` headers redacted so API keys and session tokens never reach the logs.
- ``drop_invalid_header_fields`` and ``desync_mitigation_mode="strictest"`` stop request
  smuggling through malformed headers; ``enable_waf_fail_open=False`` means requests are
  refused, not waved through, if the WAF cannot be reached.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pulumi
import pulumi_aws as aws

from components.base import Component
from llmkit.catalog import load_catalog
from llmkit.config import DEFAULT_APP_PORT, WAF_EVALUATION_WINDOWS, WAF_RATE_LIMIT_RANGE
from llmkit.tls import ALB_TLS_POLICY

if TYPE_CHECKING:
    from llmkit.config import StackConfig

# TLS 1.3 only (no TLS 1.2 fallback): llmkit.tls holds the policy's name for every listener.
TLS_POLICY = ALB_TLS_POLICY
HTTPS_PORT = 443
HTTP_PORT = 80
# Long enough for a streamed or long-running LLM completion (see the module docstring).
IDLE_TIMEOUT_SECONDS = 300
# Time for in-flight requests (a streamed answer can take minutes) to finish before a
# target that is being removed stops getting traffic.
DEREGISTRATION_DELAY_SECONDS = 120
# AWS managed rule groups, in evaluation order after the rate limit.
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesCommonRuleSet",
)
# Rules of the managed groups set to count instead of block, with the reason.
COUNT_ONLY_RULES = {
    # Blocks request bodies over 8 KB: an LLM prompt with long context is larger than that.
    "AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",),
}
# Headers never written to the WAF logs (API keys, bearer tokens, session cookies).
WAF_REDACTED_HEADERS = ("authorization", "cookie")
WAF_LOG_GROUP_PREFIX = "aws-waf-logs-"
# Clients that once reached the endpoint over HTTPS never fall back to plain HTTP.
HSTS = "max-age=31536000; includeSubDomains"
TRUST_STORE_KEY = "trust-stores/{stack}/ca-bundle.pem"
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


@dataclass
class ReverseProxyArgs:
    """What the edge needs: where it lives, how clients authenticate, and its limits."""

    vpc_id: pulumi.Input[str]
    dmz_subnet_ids: Sequence[pulumi.Input[str]]
    lb_security_group_id: pulumi.Input[str]
    public: bool
    certificate_arn: pulumi.Input[str]
    access_log_bucket: pulumi.Input[str]
    deletion_protection: bool
    rate_limit: int
    rate_window_seconds: int
    stack: str
    mtls_ca_bundle: Path | None = None
    trust_store_bucket: pulumi.Input[str] | None = None
    waf_log_group_arn: pulumi.Input[str] | None = None
    access_log_prefix: str = "alb"
    app_port: int = DEFAULT_APP_PORT
    health_check_path: str = "/healthz"
    target_type: Literal["ip", "instance"] = "ip"

    @classmethod
    def from_config(cls, cfg: StackConfig, project_dir: Path, **resource_inputs: Any) -> ReverseProxyArgs:
        """Args from the stack's config plus the resources other components made.

        ``resource_inputs`` are the remaining fields: ``vpc_id``, ``dmz_subnet_ids``,
        ``lb_security_group_id``, ``access_log_bucket`` and, as needed,
        ``trust_store_bucket``, ``waf_log_group_arn``, ``app_port``, … .
        """
        endpoint = cfg.endpoint
        values: dict[str, Any] = {
            "public": endpoint.public,
            "certificate_arn": endpoint.tls_certificate_arn,
            "mtls_ca_bundle": project_dir / endpoint.mtls_ca_bundle if endpoint.mtls_ca_bundle else None,
            "deletion_protection": endpoint.deletion_protection,
            "rate_limit": cfg.rate_limits.requests_per_window,
            "rate_window_seconds": cfg.rate_limits.window_seconds,
            "stack": cfg.stack or pulumi.get_stack(),
        }
        return cls(**{**values, **resource_inputs})

    def validate(self) -> None:
        """Raise ValueError for args that would make an unsafe or undeployable edge."""
        low, high = WAF_RATE_LIMIT_RANGE
        if not low <= self.rate_limit <= high:
            raise ValueError(f"rate_limit must be {low}..{high} requests per window, got {self.rate_limit}")
        if self.rate_window_seconds not in WAF_EVALUATION_WINDOWS:
            windows = ", ".join(map(str, WAF_EVALUATION_WINDOWS))
            raise ValueError(f"rate_window_seconds must be one of {windows}, got {self.rate_window_seconds}")
        if isinstance(self.dmz_subnet_ids, Sequence) and len(self.dmz_subnet_ids) < 2:
            raise ValueError("an application load balancer needs dmz_subnet_ids in at least two AZs")
        if not self.health_check_path.startswith("/"):
            raise ValueError(f"health_check_path must start with '/', got {self.health_check_path!r}")
        model_ports = {name: rt.port for name, rt in load_catalog().runtimes.items()}
        if self.app_port in model_ports.values():
            runtime = next(n for n, p in model_ports.items() if p == self.app_port)
            raise ValueError(
                f"app_port {self.app_port} is the {runtime} model port: the model tier is never a "
                "load balancer target; point the load balancer at the app tier"
            )
        if isinstance(self.waf_log_group_arn, str) and f":log-group:{WAF_LOG_GROUP_PREFIX}" not in (
            self.waf_log_group_arn
        ):
            raise ValueError(
                f"waf_log_group_arn must be a CloudWatch log group named {WAF_LOG_GROUP_PREFIX}…, "
                f"got {self.waf_log_group_arn!r}"
            )
        if self.mtls_ca_bundle is not None:
            check_ca_bundle(self.mtls_ca_bundle)
            if self.trust_store_bucket is None:
                raise ValueError(
                    f"mtls_ca_bundle {self.mtls_ca_bundle} needs trust_store_bucket: the bucket the "
                    "CA bundle is uploaded to for the load balancer's trust store"
                )


def check_ca_bundle(path: Path) -> None:
    """The file must exist and hold PEM certificates only (never a private key)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"mTLS CA bundle {path}: cannot read it ({exc.strerror})") from exc
    if not _PEM_CERT.search(text):
        raise ValueError(f"mTLS CA bundle {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if "PRIVATE KEY" in text:
        raise ValueError(f"mTLS CA bundle {path} holds a private key; it must hold public certificates only")


def _visibility(metric: str) -> dict[str, Any]:
    return {"cloudwatch_metrics_enabled": True, "metric_name": metric, "sampled_requests_enabled": True}


class ReverseProxy(Component):
    """The DMZ reverse proxy: ALB + listeners + app target group + WAF (+ mTLS trust store)."""

    TYPE = "llmkit:aws:ReverseProxy"

    def __init__(self, name: str, args: ReverseProxyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args.validate()  # before anything is registered
        super().__init__(name, opts)

        self.load_balancer = aws.lb.LoadBalancer(
            self.child_name("alb"),
            load_balancer_type="application",
            internal=not args.public,
            subnets=list(args.dmz_subnet_ids),
            security_groups=[args.lb_security_group_id],
            ip_address_type="ipv4",
            drop_invalid_header_fields=True,
            desync_mitigation_mode="strictest",
            enable_waf_fail_open=False,
            enable_deletion_protection=args.deletion_protection,
            idle_timeout=IDLE_TIMEOUT_SECONDS,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(
                bucket=args.access_log_bucket, prefix=args.access_log_prefix, enabled=True
            ),
            opts=self.child_opts(),
        )
        self.dns_name: pulumi.Output[str] = self.load_balancer.dns_name

        self.target_group = aws.lb.TargetGroup(
            self.child_name("app"),
            vpc_id=args.vpc_id,
            target_type=args.target_type,
            protocol="HTTPS",
            port=args.app_port,
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                protocol="HTTPS",
                port="traffic-port",
                path=args.health_check_path,
                matcher="200",
                interval=15,
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=3,
            ),
            opts=self.child_opts(),
        )

        self.trust_store: aws.lb.TrustStore | None = None
        self.ca_bundle_object: aws.s3.BucketObjectv2 | None = None
        mutual_authentication = None
        if args.mtls_ca_bundle is not None:
            assert args.trust_store_bucket is not None  # validate() checked it
            key = TRUST_STORE_KEY.format(stack=args.stack)
            # No server_side_encryption here: the hardened bucket's default (its KMS key) applies.
            self.ca_bundle_object = aws.s3.BucketObjectv2(
                self.child_name("ca-bundle"),
                bucket=args.trust_store_bucket,
                key=key,
                source=pulumi.FileAsset(str(args.mtls_ca_bundle)),
                content_type="application/x-pem-file",
                opts=self.child_opts(),
            )
            self.trust_store = aws.lb.TrustStore(
                self.child_name("clients"),
                ca_certificates_bundle_s3_bucket=self.ca_bundle_object.bucket,
                ca_certificates_bundle_s3_key=self.ca_bundle_object.key,
                # A new bundle (a new object version in a versioned bucket) updates the store.
                ca_certificates_bundle_s3_object_version=self.ca_bundle_object.version_id,
                opts=self.child_opts(),
            )
            mutual_authentication = aws.lb.ListenerMutualAuthenticationArgs(
                mode="verify",
                trust_store_arn=self.trust_store.arn,
                ignore_client_certificate_expiry=False,
            )

        self.https_listener = aws.lb.Listener(
            self.child_name("https"),
            load_balancer_arn=self.load_balancer.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=args.certificate_arn,
            mutual_authentication=mutual_authentication,
            routing_http_response_strict_transport_security_header_value=HSTS,
            routing_http_response_server_enabled=False,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)
            ],
            opts=self.child_opts(),
        )

        self.http_listener = aws.lb.Listener(
            self.child_name("http"),
            load_balancer_arn=self.load_balancer.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                        protocol="HTTPS", port=str(HTTPS_PORT), status_code="HTTP_301"
                    ),
                )
            ],
            opts=self.child_opts(),
        )

        self.web_acl = aws.wafv2.WebAcl(
            self.child_name("waf"),
            scope="REGIONAL",
            description=f"llmkit edge of {args.stack}: rate limit, IP reputation, managed rules",
            default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
            rules=self._waf_rules(args),
            visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(**_visibility(self.child_name("waf"))),
            opts=self.child_opts(),
        )
        self.web_acl_association = aws.wafv2.WebAclAssociation(
            self.child_name("waf-alb"),
            resource_arn=self.load_balancer.arn,
            web_acl_arn=self.web_acl.arn,
            opts=self.child_opts(),
        )

        self.waf_logging: aws.wafv2.WebAclLoggingConfiguration | None = None
        if args.waf_log_group_arn is not None:
            self.waf_logging = aws.wafv2.WebAclLoggingConfiguration(
                self.child_name("waf-logs"),
                resource_arn=self.web_acl.arn,
                log_destination_configs=[args.waf_log_group_arn],
                redacted_fields=[
                    aws.wafv2.WebAclLoggingConfigurationRedactedFieldArgs(
                        single_header=aws.wafv2.WebAclLoggingConfigurationRedactedFieldSingleHeaderArgs(
                            name=header
                        )
                    )
                    for header in WAF_REDACTED_HEADERS
                ],
                opts=self.child_opts(),
            )

        self.register_outputs({"dns_name": self.dns_name})

    def _waf_rules(self, args: ReverseProxyArgs) -> list[aws.wafv2.WebAclRuleArgs]:
        rules = [
            aws.wafv2.WebAclRuleArgs(
                name="rate-limit-per-ip",
                priority=0,
                action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs()),
                statement=aws.wafv2.WebAclRuleStatementArgs(
                    rate_based_statement=aws.wafv2.WebAclRuleStatementRateBasedStatementArgs(
                        aggregate_key_type="IP",
                        limit=args.rate_limit,
                        evaluation_window_sec=args.rate_window_seconds,
                    )
                ),
                visibility_config=aws.wafv2.WebAclRuleVisibilityConfigArgs(
                    **_visibility(self.child_name("rate-limit"))
                ),
            )
        ]
        for priority, group in enumerate(MANAGED_RULE_GROUPS, start=1):
            overrides = [
                aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideArgs(
                    name=rule,
                    action_to_use=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseArgs(
                        count=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseCountArgs()
                    ),
                )
                for rule in COUNT_ONLY_RULES.get(group, ())
            ]
            rules.append(
                aws.wafv2.WebAclRuleArgs(
                    name=group,
                    priority=priority,
                    override_action=aws.wafv2.WebAclRuleOverrideActionArgs(
                        none=aws.wafv2.WebAclRuleOverrideActionNoneArgs()
                    ),
                    statement=aws.wafv2.WebAclRuleStatementArgs(
                        managed_rule_group_statement=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgs(
                            vendor_name="AWS", name=group, rule_action_overrides=overrides or None
                        )
                    ),
                    visibility_config=aws.wafv2.WebAclRuleVisibilityConfigArgs(
                        **_visibility(self.child_name(group))
                    ),
                )
            )
        return rules
