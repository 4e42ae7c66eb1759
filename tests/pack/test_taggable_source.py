"""The tagging rule reads pulumi-aws's classes from their source, and agrees with importing them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from policies.rules import aws_tagging_resource_missing_required_tags as tagging

# Every AWS type `llmkit plan prod` registers, and the four whose file name is not the token's
# name in snake case (found by looking through the service's directory).
TYPES = (
    "aws:autoscaling/group:Group",
    "aws:autoscaling/policy:Policy",
    "aws:budgets/budget:Budget",
    "aws:cloudtrail/trail:Trail",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
    "aws:ec2/eip:Eip",
    "aws:ec2/flowLog:FlowLog",
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/networkAcl:NetworkAcl",
    "aws:ec2/route:Route",
    "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/vpc:Vpc",
    "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:ecs/cluster:Cluster",
    "aws:ecs/service:Service",
    "aws:ecs/taskDefinition:TaskDefinition",
    "aws:iam/instanceProfile:InstanceProfile",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/serviceLinkedRole:ServiceLinkedRole",
    "aws:kms/alias:Alias",
    "aws:kms/key:Key",
    "aws:lambda/function:Function",
    "aws:lambda/invocation:Invocation",
    "aws:lambda/permission:Permission",
    "aws:lb/listener:Listener",
    "aws:lb/listenerRule:ListenerRule",
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:lb/targetGroup:TargetGroup",
    "aws:lb/trustStore:TrustStore",
    "aws:networkfirewall/firewall:Firewall",
    "aws:networkfirewall/firewallPolicy:FirewallPolicy",
    "aws:networkfirewall/loggingConfiguration:LoggingConfiguration",
    "aws:networkfirewall/ruleGroup:RuleGroup",
    "aws:rds/instance:Instance",
    "aws:rds/parameterGroup:ParameterGroup",
    "aws:rds/subnetGroup:SubnetGroup",
    "aws:route53/record:Record",
    "aws:route53/zone:Zone",
    "aws:s3/bucket:Bucket",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketLogging:BucketLogging",
    "aws:s3/bucketObjectv2:BucketObjectv2",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:secretsmanager/secret:Secret",
    "aws:secretsmanager/secretPolicy:SecretPolicy",
    "aws:secretsmanager/secretRotation:SecretRotation",
    "aws:sns/topic:Topic",
    "aws:sns/topicPolicy:TopicPolicy",
    "aws:sns/topicSubscription:TopicSubscription",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:wafv2/webAcl:WebAcl",
    "aws:wafv2/webAclAssociation:WebAclAssociation",
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration",
    "aws:appsync/graphQLApi:GraphQLApi",
    "aws:cognito/userPoolUICustomization:UserPoolUICustomization",
    "aws:glue/mLTransform:MLTransform",
    "aws:guardduty/iPSet:IPSet",
)


def _module(type_: str) -> str:
    service = type_.split(":")[1].split("/", 1)[0]
    return tagging.MODULES.get(service, f"pulumi_aws.{service}")


@pytest.mark.parametrize("type_", TYPES)
def test_the_source_gives_the_parameters_that_importing_gives(type_: str) -> None:
    source = tagging._source(type_, _module(type_))
    assert source is not None, type_
    from_source = tagging._init_parameters(source)
    assert from_source is not None
    assert from_source == tagging._imported_parameters(_module(type_), type_.split(":")[2])


def test_every_pulumi_aws_resource_is_found_in_its_source() -> None:
    """Every class pulumi-aws registers: a source file, and an ``_internal_init`` read from it."""
    root = tagging._package_dir("pulumi_aws")
    assert root is not None
    text = (root / "__init__.py").read_text(encoding="utf-8")
    registered = re.search(r'resource_modules="""(.*?)"""', text, re.DOTALL)
    assert registered is not None
    types = [t for module in json.loads(registered.group(1)) for t in module["classes"]]
    assert len(types) > 1000
    unread = [
        t for t in types if (s := tagging._source(t, _module(t))) is None or not tagging._init_parameters(s)
    ]
    assert not unread


def test_a_type_pulumi_aws_does_not_have_is_none() -> None:
    assert tagging._source("aws:nosuchservice/thing:Thing", "pulumi_aws.nosuchservice") is None
    assert tagging._source("aws:ec2/noSuchThing:NoSuchThing", "pulumi_aws.ec2") is None
    assert tagging.taggable("aws:ec2/noSuchThing:NoSuchThing") is None


def test_the_package_is_found_without_importing_it() -> None:
    root = tagging._package_dir("pulumi_aws")
    assert root is not None and (root / "ec2" / "vpc.py").is_file()
    assert tagging._package_dir("no_such_package_here") is None
    assert isinstance(root, Path)
