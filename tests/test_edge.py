"""The DMZ edge (components/edge.py) on the recording mock runtime: what the engine would get."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from components.edge import (
    MANAGED_RULE_GROUPS,
    TLS_POLICY,
    TRUST_STORE_KEY,
    ReverseProxy,
    ReverseProxyArgs,
)
from llmkit.catalog import load_catalog
from llmkit.config import load_stack

if TYPE_CHECKING:
    from tests.conftest import Recorded

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CA = ROOT / "stacks" / "certs" / "prod-clients-ca.pem"
CERT_ARN = "arn:aws:acm:eu-central-1:123456789012:certificate/5b7d9f1a-3c5e-4d7f-8a9b-0c1d2e3f4a5b"
WAF_LOG_GROUP = "arn:aws:logs:eu-central-1:123456789012:log-group:aws-waf-logs-llmkit-test"
MOCK_ARN = "arn:aws:{service}:eu-central-1:123456789012:{name}"

LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
TRUST_STORE = "aws:lb/trustStore:TrustStore"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
WEB_ACL = "aws:wafv2/webAcl:WebAcl"
ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
WAF_LOGGING = "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration"

RunPulumi = Callable[..., "Recorded"]


def make_args(**overrides: Any) -> ReverseProxyArgs:
    values: dict[str, Any] = {
        "vpc_id": "vpc-0123",
        "dmz_subnet_ids": ["subnet-dmz-a", "subnet-dmz-b"],
        "lb_security_group_id": "sg-lb",
        "public": False,
        "certificate_arn": CERT_ARN,
        "access_log_bucket": "llmkit-test-logs",
        "access_log_prefix": "edge",
        "deletion_protection": True,
        "rate_limit": 777,
        "rate_window_seconds": 120,
        "stack": "test",
        "mtls_ca_bundle": SAMPLE_CA,
        "trust_store_bucket": "llmkit-test-trust",
        "waf_log_group_arn": WAF_LOG_GROUP,
    }
    values.update(overrides)
    return ReverseProxyArgs(**values)


def deploy(run_pulumi: RunPulumi, **overrides: Any) -> Recorded:
    return run_pulumi(lambda: ReverseProxy("edge", make_args(**overrides)))


@pytest.fixture
def edge(run_pulumi: RunPulumi) -> Recorded:
    return deploy(run_pulumi)


def arn(service: str, name: str) -> str:
    return MOCK_ARN.format(service=service, name=name)


def test_every_child_is_parented_to_the_component(edge: Recorded) -> None:
    (component,) = edge.of_type(ReverseProxy.TYPE)
    children = [r for r in edge.resources if r is not component]
    assert {r.parent for r in children} == {component.urn}
    assert all(r.name.startswith("edge-") for r in children)


def test_https_listener_is_tls13_only_with_the_certificate(edge: Recorded) -> None:
    https = edge.named("edge-https")
    assert https.type == LISTENER
    assert https.inputs["sslPolicy"] == TLS_POLICY == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    assert https.inputs["protocol"] == "HTTPS"
    assert https.inputs["port"] == 443
    assert https.inputs["certificateArn"] == CERT_ARN
    assert https.inputs["loadBalancerArn"] == arn("lb", "edge-alb")
    assert https.inputs["defaultActions"] == [{"type": "forward", "targetGroupArn": arn("lb", "edge-app")}]


def test_http_listener_only_redirects_to_https(edge: Recorded) -> None:
    http = edge.named("edge-http")
    assert http.inputs["port"] == 80
    assert http.inputs["protocol"] == "HTTP"
    assert http.inputs["defaultActions"] == [
        {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}
    ]
    assert "sslPolicy" not in http.inputs and "certificateArn" not in http.inputs
    # Exactly two listeners: 443 serves, 80 redirects.
    assert sorted(r.inputs["port"] for r in edge.of_type(LISTENER)) == [80, 443]


def test_mtls_trust_store_is_built_from_the_uploaded_bundle_and_enforced(edge: Recorded) -> None:
    (upload,) = edge.of_type(OBJECT)
    assert upload.inputs["bucket"] == "llmkit-test-trust"
    assert upload.inputs["key"] == TRUST_STORE_KEY.format(stack="test") == "trust-stores/test/ca-bundle.pem"
    assert upload.inputs["source"] == {"$asset": str(SAMPLE_CA)}
    # The hardened bucket's default encryption applies; nothing weaker is asked for.
    assert "serverSideEncryption" not in upload.inputs

    (store,) = edge.of_type(TRUST_STORE)
    assert store.inputs["caCertificatesBundleS3Bucket"] == "llmkit-test-trust"
    assert store.inputs["caCertificatesBundleS3Key"] == "trust-stores/test/ca-bundle.pem"
    assert upload.urn in store.dependencies

    https = edge.named("edge-https")
    assert https.inputs["mutualAuthentication"] == {
        "mode": "verify",
        "trustStoreArn": arn("lb", store.name),
        "ignoreClientCertificateExpiry": False,
    }
    assert store.urn in https.dependencies


def test_without_a_bundle_there_is_no_trust_store(run_pulumi: RunPulumi) -> None:
    recorded = deploy(run_pulumi, mtls_ca_bundle=None, trust_store_bucket=None)
    assert recorded.of_type(TRUST_STORE) == []
    assert recorded.of_type(OBJECT) == []
    https = recorded.named("edge-https")
    assert "mutualAuthentication" not in https.inputs
    assert https.inputs["sslPolicy"] == TLS_POLICY


def test_load_balancer_is_hardened_and_logs(edge: Recorded) -> None:
    alb = edge.named("edge-alb")
    assert alb.type == LB
    assert alb.inputs["loadBalancerType"] == "application"
    assert alb.inputs["internal"] is True
    assert alb.inputs["dropInvalidHeaderFields"] is True
    assert alb.inputs["desyncMitigationMode"] == "strictest"
    assert alb.inputs["enableDeletionProtection"] is True
    assert alb.inputs["enableWafFailOpen"] is False
    assert alb.inputs["ipAddressType"] == "ipv4"
    assert alb.inputs["idleTimeout"] == 300
    assert alb.inputs["subnets"] == ["subnet-dmz-a", "subnet-dmz-b"]
    assert alb.inputs["securityGroups"] == ["sg-lb"]
    assert alb.inputs["accessLogs"] == {"enabled": True, "bucket": "llmkit-test-logs", "prefix": "edge"}


@pytest.mark.parametrize(("public", "deletion_protection"), [(True, False), (False, False), (True, True)])
def test_scheme_and_deletion_protection_follow_the_args(
    run_pulumi: RunPulumi, public: bool, deletion_protection: bool
) -> None:
    recorded = deploy(run_pulumi, public=public, deletion_protection=deletion_protection)
    alb = recorded.named("edge-alb")
    assert alb.inputs["internal"] is (not public)
    assert alb.inputs["enableDeletionProtection"] is deletion_protection
    # The WAF guards internal and internet-facing load balancers alike.
    (association,) = recorded.of_type(ASSOCIATION)
    assert association.inputs["resourceArn"] == arn("lb", "edge-alb")


def test_waf_is_associated_with_the_load_balancer(edge: Recorded) -> None:
    (acl,) = edge.of_type(WEB_ACL)
    (association,) = edge.of_type(ASSOCIATION)
    assert association.inputs["resourceArn"] == arn("lb", "edge-alb")
    assert association.inputs["webAclArn"] == arn("wafv2", acl.name)
    assert {edge.named("edge-alb").urn, acl.urn} <= set(association.dependencies)


def test_waf_rules(edge: Recorded) -> None:
    (acl,) = edge.of_type(WEB_ACL)
    assert acl.inputs["scope"] == "REGIONAL"
    assert acl.inputs["defaultAction"] == {"allow": {}}
    rules = acl.inputs["rules"]
    assert len({r["priority"] for r in rules}) == len(rules)
    for rule in [*rules, acl.inputs]:
        visibility = rule["visibilityConfig"]
        assert visibility["cloudwatchMetricsEnabled"] is True
        assert visibility["sampledRequestsEnabled"] is True
        assert visibility["metricName"]

    (rate,) = [r for r in rules if "rateBasedStatement" in r["statement"]]
    assert rate["statement"]["rateBasedStatement"] == {
        "limit": 777,
        "evaluationWindowSec": 120,
        "aggregateKeyType": "IP",
    }
    assert rate["action"] == {"block": {}}

    managed = {
        r["statement"]["managedRuleGroupStatement"]["name"]: r
        for r in rules
        if "managedRuleGroupStatement" in r["statement"]
    }
    assert (
        set(managed)
        == set(MANAGED_RULE_GROUPS)
        == {
            "AWSManagedRulesCommonRuleSet",
            "AWSManagedRulesKnownBadInputsRuleSet",
            "AWSManagedRulesAmazonIpReputationList",
        }
    )
    for rule in managed.values():
        assert rule["statement"]["managedRuleGroupStatement"]["vendorName"] == "AWS"
        assert rule["overrideAction"] == {"none": {}}
    # Long prompts exceed the common rule set's 8 KB body limit: that one rule only counts.
    common = managed["AWSManagedRulesCommonRuleSet"]["statement"]["managedRuleGroupStatement"]
    assert common["ruleActionOverrides"] == [{"name": "SizeRestrictions_BODY", "actionToUse": {"count": {}}}]


def test_waf_logs_to_the_given_group_without_credentials(edge: Recorded) -> None:
    (acl,) = edge.of_type(WEB_ACL)
    (logging,) = edge.of_type(WAF_LOGGING)
    assert logging.inputs["resourceArn"] == arn("wafv2", acl.name)
    assert logging.inputs["logDestinationConfigs"] == [WAF_LOG_GROUP]
    redacted = {f["singleHeader"]["name"] for f in logging.inputs["redactedFields"]}
    assert redacted == {"authorization", "cookie"}


def test_waf_logging_is_skipped_without_a_group(run_pulumi: RunPulumi) -> None:
    recorded = deploy(run_pulumi, waf_log_group_arn=None)
    assert recorded.of_type(WAF_LOGGING) == []
    assert len(recorded.of_type(WEB_ACL)) == 1


def test_target_group_is_the_app_tier_only(edge: Recorded) -> None:
    (tg,) = edge.of_type(TARGET_GROUP)
    assert tg.name == "edge-app"
    assert tg.inputs["port"] == 8443
    assert tg.inputs["protocol"] == "HTTPS"
    assert tg.inputs["targetType"] == "ip"
    assert tg.inputs["vpcId"] == "vpc-0123"
    assert 0 < tg.inputs["deregistrationDelay"] <= 300
    health = tg.inputs["healthCheck"]
    assert health["enabled"] is True
    assert health["protocol"] == "HTTPS"
    assert health["path"] == "/healthz"
    assert health["matcher"] == "200"


def test_no_model_port_is_ever_a_target(edge: Recorded) -> None:
    model_ports = {rt.port for rt in load_catalog().runtimes.values()}
    assert model_ports  # ollama 11434, vllm 8000
    assert all(tg.inputs["port"] not in model_ports for tg in edge.of_type(TARGET_GROUP))


@pytest.mark.parametrize("runtime", sorted(load_catalog().runtimes))
def test_a_model_port_is_refused_as_app_port(run_pulumi: RunPulumi, runtime: str) -> None:
    port = load_catalog().runtimes[runtime].port
    with pytest.raises(ValueError, match=f"app_port {port} is the {runtime} model port"):
        deploy(run_pulumi, app_port=port)


def test_custom_app_port_and_health_path(run_pulumi: RunPulumi) -> None:
    recorded = deploy(run_pulumi, app_port=9443, health_check_path="/ready")
    (tg,) = recorded.of_type(TARGET_GROUP)
    assert tg.inputs["port"] == 9443
    assert tg.inputs["healthCheck"]["path"] == "/ready"


def test_child_handles_are_exposed(run_pulumi: RunPulumi) -> None:
    seen: list[ReverseProxy] = []
    run_pulumi(lambda: seen.append(ReverseProxy("edge", make_args())))
    (proxy,) = seen
    assert proxy.load_balancer is not None and proxy.dns_name is not None
    assert proxy.https_listener is not None and proxy.target_group is not None
    assert proxy.web_acl is not None and proxy.trust_store is not None


# --- refused args ------------------------------------------------------------------------------


def test_missing_bundle_file_is_refused(run_pulumi: RunPulumi, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match=r"nope\.pem: cannot read it"):
        deploy(run_pulumi, mtls_ca_bundle=missing)


def test_non_pem_bundle_is_refused(run_pulumi: RunPulumi, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("just some text\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"not-a-cert\.pem holds no PEM certificate"):
        deploy(run_pulumi, mtls_ca_bundle=bogus)


def test_bundle_with_a_private_key_is_refused(run_pulumi: RunPulumi, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.pem"
    leaky.write_text(SAMPLE_CA.read_text() + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match=r"leaky\.pem holds a private key"):
        deploy(run_pulumi, mtls_ca_bundle=leaky)


def test_bundle_without_trust_store_bucket_is_refused(run_pulumi: RunPulumi) -> None:
    with pytest.raises(ValueError, match="needs trust_store_bucket"):
        deploy(run_pulumi, trust_store_bucket=None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate_limit": 5}, "rate_limit must be 10"),
        ({"rate_window_seconds": 30}, "rate_window_seconds must be one of 60, 120, 300, 600"),
        ({"dmz_subnet_ids": ["subnet-dmz-a"]}, "at least two AZs"),
        ({"waf_log_group_arn": "arn:aws:logs:eu-central-1:1:log-group:waf"}, "aws-waf-logs-"),
    ],
)
def test_bad_args_are_refused(run_pulumi: RunPulumi, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deploy(run_pulumi, **overrides)


def test_refused_args_register_nothing(run_pulumi: RunPulumi) -> None:
    """Validation runs before the component registers, so a bad stack leaves no half-built edge."""
    registered: list[str] = []

    def program() -> None:
        try:
            ReverseProxy("edge", make_args(trust_store_bucket=None))
        except ValueError:
            registered.append("refused")

    recorded = run_pulumi(program)
    assert registered == ["refused"]
    assert recorded.resources == []


# --- the stack's config ------------------------------------------------------------------------


def test_from_config_reads_the_stack(run_pulumi: RunPulumi) -> None:
    cfg = load_stack("prod", ROOT)
    args = ReverseProxyArgs.from_config(
        cfg,
        ROOT,
        vpc_id="vpc-0123",
        dmz_subnet_ids=["a", "b", "c"],
        lb_security_group_id="sg-lb",
        access_log_bucket="logs",
    )
    assert args.public is cfg.endpoint.public
    assert args.certificate_arn == cfg.endpoint.tls_certificate_arn
    assert args.deletion_protection is cfg.endpoint.deletion_protection
    assert args.rate_limit == cfg.rate_limits.requests_per_window
    assert args.rate_window_seconds == cfg.rate_limits.window_seconds
    assert args.stack == "prod"
    expected = ROOT / cfg.endpoint.mtls_ca_bundle if cfg.endpoint.mtls_ca_bundle else None
    assert args.mtls_ca_bundle == expected


def test_from_config_resolves_the_bundle_against_the_project(run_pulumi: RunPulumi) -> None:
    cfg = load_stack("prod", ROOT)
    endpoint = cfg.endpoint.model_copy(update={"mtls_ca_bundle": "stacks/certs/prod-clients-ca.pem"})
    cfg = cfg.model_copy(update={"endpoint": endpoint})
    args = ReverseProxyArgs.from_config(
        cfg,
        ROOT,
        vpc_id="vpc-0123",
        dmz_subnet_ids=["a", "b"],
        lb_security_group_id="sg-lb",
        access_log_bucket="logs",
        trust_store_bucket="trust",
    )
    assert args.mtls_ca_bundle == SAMPLE_CA
    recorded = run_pulumi(lambda: ReverseProxy("edge", args))
    (upload,) = recorded.of_type(OBJECT)
    assert upload.inputs["key"] == "trust-stores/prod/ca-bundle.pem"
    assert upload.inputs["source"] == {"$asset": str(SAMPLE_CA)}


def test_sample_ca_bundle_is_a_public_ca_certificate() -> None:
    text = SAMPLE_CA.read_text(encoding="utf-8")
    assert "-----BEGIN CERTIFICATE-----" in text
    assert "PRIVATE KEY" not in text
