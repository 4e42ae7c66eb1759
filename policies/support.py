"""What several rules share: type tokens and small predicates over properties."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Stack, as_list, known

# Type tokens: pulumi-aws has both aws:alb/... and aws:lb/... for the same load balancer
# resources, and S3 both the V2 and the current bucket resources.
LOAD_BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
TARGET_GROUPS = ("aws:lb/targetGroup:TargetGroup", "aws:alb/targetGroup:TargetGroup")
BUCKETS = ("aws:s3/bucketV2:BucketV2", "aws:s3/bucket:Bucket")
BUCKET_SSE = (
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
)
BUCKET_VERSIONING = (
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
    "aws:s3/bucketVersioning:BucketVersioning",
)
BUCKET_PAB = ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",)
BUCKET_POLICY = ("aws:s3/bucketPolicy:BucketPolicy",)
SECURITY_GROUPS = ("aws:ec2/securityGroup:SecurityGroup",)
SG_RULES = (
    "aws:ec2/securityGroupRule:SecurityGroupRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
)
LAUNCH_TEMPLATES = ("aws:ec2/launchTemplate:LaunchTemplate",)
INSTANCES = ("aws:ec2/instance:Instance",)
MODEL_STORE = "llmkit:aws:ModelStore"
EDGE = "llmkit:aws:ReverseProxy"  # the DMZ edge component: the load balancer clients reach
WORLD = ("0.0.0.0/0", "::/0")


def truthy(value: Any) -> bool:
    """A boolean property: pulumi-aws sometimes carries booleans as strings ("true")."""
    value = known(value)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def policy_document(value: Any) -> Mapping[str, Any]:
    """An IAM policy property (JSON text or a mapping) as a mapping; {} when absent."""
    value = known(value)
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, Mapping) else {}
    return value if isinstance(value, Mapping) else {}


def statements(document: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for statement in as_list(document.get("Statement")):
        if isinstance(statement, Mapping):
            yield statement


def label(resource: Resource) -> str:
    return f"{resource.type.rsplit(':', 1)[-1]} {resource.name}"


def kubernetes_only(stack: Stack) -> bool:
    """Whether the stack deploys Kubernetes resources and nothing on AWS.

    Such a stack (the gateway on an existing cluster, docs/kubernetes.md) has no AWS account of
    its own to audit, so the rules about what an AWS stack must have (``aws-*-stack-missing-*``)
    do not apply to it. Every other stack, an empty one included, must have what they require.
    """
    kubernetes = aws = False
    for r in stack.resources:
        kubernetes = kubernetes or r.type.startswith(("kubernetes:", "pulumi:providers:kubernetes"))
        aws = aws or r.type.startswith(("aws:", "pulumi:providers:aws"))
    return kubernetes and not aws
