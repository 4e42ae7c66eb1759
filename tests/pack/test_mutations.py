"""Mutation tests: break one security property of the prod graph at a time.

Each mutation starts from the graph `llmkit plan prod` records (which passes the pack), breaks
one property, and asserts that exactly the rules about that property fire. Together the
mutations cover every rule of the pack (the last test checks that), so a rule that stops
firing, or one that fires on unrelated changes, fails here.

The Kubernetes rules are exercised by adding a compliant model-tier workload (namespace,
default-deny NetworkPolicy, hardened Deployment) to the graph and breaking that.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from llmkit.plan import run_plan
from llmkit.policy import evaluate, resources_from_graph
from policies.rules import load_rules

ROOT = Path(__file__).resolve().parent.parent.parent
Graph = dict[str, Any]
Mutation = Callable[[Graph], None]

MODEL_NS = "llmkit-model"


@cache
def prod_graph() -> Graph:
    return run_plan("prod", ROOT).to_graph()


def _entry(g: Graph, name: str) -> dict[str, Any]:
    (found,) = [e for e in g["resources"] if e["name"] == name]
    return found


def _inputs(g: Graph, name: str) -> dict[str, Any]:
    inputs: dict[str, Any] = _entry(g, name)["inputs"]
    return inputs


def _delete(g: Graph, name: str) -> None:
    g["resources"] = [e for e in g["resources"] if e["name"] != name]


def _add(g: Graph, type_: str, name: str, inputs: dict[str, Any]) -> None:
    provider = _entry(g, "fleet-alb")["provider"] if type_.startswith("aws:") else None
    g["resources"].append(
        {
            "urn": f"urn:pulumi:prod::llmkit::{type_}::{name}",
            "id": f"{name}-id",
            "type": type_,
            "name": name,
            "parent": None,
            "custom": True,
            "provider": provider,
            "dependencies": [],
            "inputs": inputs,
        }
    )


def _set_policy(g: Graph, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    inputs = _inputs(g, name)
    doc = json.loads(inputs["policy"])
    edit(doc)
    inputs["policy"] = json.dumps(doc)


# --- Kubernetes: a compliant model-tier workload ------------------------------------------------


def _container() -> dict[str, Any]:
    return {
        "name": "ollama",
        "image": "ollama/ollama@sha256:" + "a" * 64,
        "securityContext": {
            "privileged": False,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {
            "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
            "requests": {"cpu": "4", "memory": "48Gi", "nvidia.com/gpu": "1"},
        },
    }


def _with_k8s(g: Graph) -> None:
    labels = {"app.kubernetes.io/name": "ollama", "app.kubernetes.io/component": "model-server"}
    _add(g, "kubernetes:core/v1:Namespace", "model-ns", {"metadata": {"name": MODEL_NS}})
    _add(
        g,
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "model-default-deny",
        {
            "metadata": {"name": "default-deny", "namespace": MODEL_NS},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    )
    _add(
        g,
        "kubernetes:apps/v1:Deployment",
        "model-server",
        {
            "metadata": {"name": "ollama", "namespace": MODEL_NS, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "automountServiceAccountToken": False,
                        "containers": [_container()],
                    },
                },
            },
        },
    )


def _container_of(g: Graph) -> dict[str, Any]:
    container: dict[str, Any] = _inputs(g, "model-server")["spec"]["template"]["spec"]["containers"][0]
    return container


def _k8s(edit: Callable[[Graph], None]) -> Mutation:
    def mutate(g: Graph) -> None:
        _with_k8s(g)
        edit(g)

    return mutate


# --- the mutations ------------------------------------------------------------------------------


def _sse_s3(g: Graph) -> None:
    rule = _inputs(g, "models-encryption")["rules"][0]["applyServerSideEncryptionByDefault"]
    rule["sseAlgorithm"] = "AES256"
    rule.pop("kmsMasterKeyId")


def _drop_tls_statement(doc: dict[str, Any]) -> None:
    doc["Statement"] = [s for s in doc["Statement"] if s.get("Sid") != "DenyInsecureTransport"]


def _world_ssh(g: Graph) -> None:
    rule = _inputs(g, "fw-model-in-11434-models_lb")
    rule.pop("referencedSecurityGroupId")
    rule.update(cidrIpv4="0.0.0.0/0", fromPort=22, toPort=22)


def _public_alb_without_waf(g: Graph) -> None:
    _inputs(g, "edge-alb")["internal"] = False
    _delete(g, "edge-waf-alb")
    _delete(g, "edge-waf-logs")


def _model_route_to_nat(g: Graph) -> None:
    _add(
        g,
        "aws:ec2/route:Route",
        "net-model-sneaky-default-0",
        {
            "routeTableId": "net-model-rt-0-id",
            "destinationCidrBlock": "0.0.0.0/0",
            "natGatewayId": "net-natgw-0-id",
        },
    )


def _untagged_provider(g: Graph) -> None:
    provider = _inputs(g, "aws")
    tags = json.loads(provider["defaultTags"])
    del tags["tags"]["owner"]
    provider["defaultTags"] = json.dumps(tags)


def _world_open_provider(g: Graph) -> None:
    provider = _inputs(g, "aws")
    tags = json.loads(provider["defaultTags"])
    tags["tags"]["llmkit:allow-world-open"] = "gateway.admin_cidrs"
    provider["defaultTags"] = json.dumps(tags)


def _unencrypted_volume(g: Graph) -> None:
    _add(
        g,
        "aws:ebs/volume:Volume",
        "scratch",
        {"availabilityZone": "eu-central-1a", "size": 100, "encrypted": False},
    )


def _foreign_instance_type(g: Graph) -> None:
    group = _inputs(g, "fleet-asg-deepseek-r1-32b")
    group["mixedInstancesPolicy"]["launchTemplate"]["overrides"][0]["instanceType"] = "t3.micro"


def _no_vpc(g: Graph) -> None:
    _delete(g, "net-vpc")
    _delete(g, "net-flow-log")


MUTATIONS: dict[str, tuple[Mutation, set[str]]] = {
    "key rotation off": (
        lambda g: _inputs(g, "keys-data").update(enableKeyRotation=False),
        {"aws-kms-key-enable-rotation"},
    ),
    "model store on SSE-S3": (_sse_s3, {"aws-s3-bucket-enforce-sse-kms"}),
    "a public access flag off": (
        lambda g: _inputs(g, "models-public-access-block").update(restrictPublicBuckets=False),
        {"aws-s3-bucket-missing-public-access-block"},
    ),
    "no TLS-only statement": (
        lambda g: _set_policy(g, "trust-policy", _drop_tls_statement),
        {"aws-s3-bucket-missing-tls-policy"},
    ),
    "model store versioning suspended": (
        lambda g: _inputs(g, "models-versioning").update(versioningConfiguration={"status": "Suspended"}),
        {"aws-s3-bucket-enable-model-versioning"},
    ),
    "an unencrypted EBS volume": (_unencrypted_volume, {"aws-ebs-volume-enforce-encryption"}),
    "an unencrypted launch template volume": (
        lambda g: _inputs(g, "fleet-lt-deepseek-r1-70b")["blockDeviceMappings"][1]["ebs"].update(
            encrypted="false"
        ),
        {"aws-ec2-launchtemplate-enforce-encryption"},
    ),
    "IMDSv1 allowed": (
        lambda g: _inputs(g, "fleet-lt-deepseek-r1-32b")["metadataOptions"].update(httpTokens="optional"),
        {"aws-ec2-instance-enforce-imdsv2"},
    ),
    "a public IP on GPU hosts": (
        lambda g: _inputs(g, "fleet-lt-deepseek-r1-32b")["networkInterfaces"][0].update(
            associatePublicIpAddress="true"
        ),
        {"aws-ec2-instance-disallow-public-ip"},
    ),
    "an instance type off the allow-list": (
        _foreign_instance_type,
        {"aws-ec2-instancetype-enforce-allowlist"},
    ),
    "SSH open to the world": (
        _world_ssh,
        {"aws-ec2-securitygroup-disallow-public-ingress", "aws-ec2-securitygroup-disallow-admin-ports"},
    ),
    "443 open to the world on an internal load balancer": (
        lambda g: _inputs(g, "fw-lb-in-443-10.0.0.0_8").update(cidrIpv4="0.0.0.0/0"),
        {"aws-ec2-securitygroup-disallow-public-ingress"},
    ),
    "RDP from a private network": (
        lambda g: _inputs(g, "fw-lb-in-80-10.0.0.0_8").update(fromPort=3389, toPort=3389),
        {"aws-ec2-securitygroup-disallow-admin-ports"},
    ),
    "a TLS 1.2 listener policy": (
        lambda g: _inputs(g, "edge-https").update(sslPolicy="ELBSecurityPolicy-2016-08"),
        {"aws-alb-listener-enforce-tls13"},
    ),
    "plain HTTP forwarded": (
        lambda g: _inputs(g, "edge-http").update(
            defaultActions=[
                {"type": "forward", "targetGroupArn": "arn:aws:lb:eu-central-1:123456789012:edge-app"}
            ]
        ),
        {"aws-alb-listener-disallow-plain-http"},
    ),
    "invalid headers passed on": (
        lambda g: _inputs(g, "edge-alb").update(dropInvalidHeaderFields=False),
        {"aws-alb-loadbalancer-enable-drop-invalid-headers"},
    ),
    "access logs off": (
        lambda g: _inputs(g, "fleet-alb")["accessLogs"].update(enabled=False),
        {"aws-alb-loadbalancer-enable-access-logs"},
    ),
    "a public load balancer without WAF": (
        _public_alb_without_waf,
        {"aws-alb-loadbalancer-missing-waf", "aws-wafv2-stack-missing-edge-association"},
    ),
    "the internal edge without WAF": (
        lambda g: _delete(g, "edge-waf-alb"),
        {"aws-wafv2-stack-missing-edge-association"},
    ),
    "a single-region trail": (
        lambda g: _inputs(g, "audit-trail").update(isMultiRegionTrail=False),
        {"aws-cloudtrail-trail-configure-integrity"},
    ),
    "a log group without KMS": (
        lambda g: _inputs(g, "audit-proxy-logs").pop("kmsKeyId"),
        {"aws-cloudwatch-loggroup-enforce-kms"},
    ),
    "30 days of logs": (
        lambda g: _inputs(g, "audit-proxy-logs").update(retentionInDays=30),
        {"aws-cloudwatch-loggroup-configure-retention"},
    ),
    "a secret under the AWS managed key": (
        lambda g: _inputs(g, "secrets-master-key").pop("kmsKeyId"),
        {"aws-secretsmanager-secret-enforce-kms"},
    ),
    "the master key never rotates": (
        lambda g: _delete(g, "secrets-master-key-rotation"),
        {"aws-secretsmanager-secret-missing-rotation"},
    ),
    "no flow logs": (
        lambda g: _delete(g, "net-flow-log"),
        {"aws-ec2-vpc-missing-flowlog", "aws-ec2-stack-missing-flowlog"},
    ),
    "no VPC and no flow logs": (_no_vpc, {"aws-ec2-stack-missing-flowlog"}),
    "no trail": (lambda g: _delete(g, "audit-trail"), {"aws-cloudtrail-stack-missing-trail"}),
    "a trail that does not log": (
        lambda g: _inputs(g, "audit-trail").update(enableLogging=False),
        {"aws-cloudtrail-stack-missing-trail"},
    ),
    "no budget": (lambda g: _delete(g, "budget-budget"), {"aws-budgets-stack-missing-budget"}),
    "no logs key": (lambda g: _delete(g, "keys-logs"), {"aws-kms-stack-missing-keys"}),
    "an unencrypted gateway database": (
        lambda g: _inputs(g, "gateway-db").update(storageEncrypted=False),
        {"aws-rds-instance-enforce-encryption"},
    ),
    "a public gateway database": (
        lambda g: _inputs(g, "gateway-db").update(publiclyAccessible=True),
        {"aws-rds-instance-disallow-public-access"},
    ),
    "one day of database backups": (
        lambda g: _inputs(g, "gateway-db").update(backupRetentionPeriod=1),
        {"aws-rds-instance-configure-backup-retention"},
    ),
    "a region outside the allow-list": (
        lambda g: _inputs(g, "aws").update(region="us-east-1"),
        {"aws-provider-region-enforce-allowlist"},
    ),
    "the owner tag gone": (_untagged_provider, {"aws-tagging-resource-missing-required-tags"}),
    "a world-open override": (_world_open_provider, {"aws-provider-config-disallow-world-open-override"}),
    "a NAT route from the model tier": (_model_route_to_nat, {"aws-ec2-routetable-disallow-model-egress"}),
    "a privileged container": (
        _k8s(lambda g: _container_of(g)["securityContext"].update(privileged=True)),
        {"k8s-core-pod-disallow-privileged"},
    ),
    "a container as root": (
        _k8s(lambda g: _container_of(g)["securityContext"].update(runAsNonRoot=False, runAsUser=0)),
        {"k8s-core-pod-enforce-nonroot"},
    ),
    "privilege escalation allowed": (
        _k8s(lambda g: _container_of(g)["securityContext"].update(allowPrivilegeEscalation=True)),
        {"k8s-core-pod-disallow-privilege-escalation"},
    ),
    "a model server without a GPU limit": (
        _k8s(lambda g: _container_of(g)["resources"]["limits"].pop("nvidia.com/gpu")),
        {"k8s-core-pod-enforce-resource-limits"},
    ),
    "an image on :latest": (
        _k8s(lambda g: _container_of(g).update(image="ollama/ollama:latest")),
        {"k8s-core-pod-disallow-latest-image"},
    ),
    "no default-deny in the model namespace": (
        _k8s(lambda g: _delete(g, "model-default-deny")),
        {"k8s-networking-networkpolicy-missing-default-deny"},
    ),
}


def _fired(g: Graph) -> set[str]:
    return {v.rule for v in evaluate(resources_from_graph(g), load_rules()).violations}


def test_the_unmutated_graphs_pass() -> None:
    assert _fired(prod_graph()) == set()
    with_k8s = copy.deepcopy(prod_graph())
    _with_k8s(with_k8s)
    assert _fired(with_k8s) == set()


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_mutation_fires_exactly_its_rules(mutation: str) -> None:
    mutate, expected = MUTATIONS[mutation]
    g = copy.deepcopy(prod_graph())
    mutate(g)
    assert _fired(g) == expected


def test_the_mutations_cover_every_rule() -> None:
    covered = set().union(*(expected for _, expected in MUTATIONS.values()))
    assert covered == {rule.name for rule in load_rules()}
