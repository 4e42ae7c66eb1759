"""What several rules share: type tokens and small predicates over properties."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, as_list, known

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
