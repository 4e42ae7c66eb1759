"""Storage and compute rules: S3 encryption, TLS-only bucket policies, model versioning, EBS, IMDS, types."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from llmkit.catalog import load_catalog
from llmkit.plan import run_plan
from llmkit.policy import UNKNOWN, Resource, evaluate, resources_from_graph
from policies.rules.aws_ebs_volume_enforce_encryption import RULE as EBS
from policies.rules.aws_ec2_instance_disallow_public_ip import RULE as PUBLIC_IP
from policies.rules.aws_ec2_instance_enforce_imdsv2 import RULE as IMDS
from policies.rules.aws_ec2_instancetype_enforce_allowlist import RULE as TYPES
from policies.rules.aws_ec2_launchtemplate_enforce_encryption import RULE as LT_ENCRYPTION
from policies.rules.aws_s3_bucket_enable_model_versioning import RULE as VERSIONING
from policies.rules.aws_s3_bucket_enforce_sse_kms import RULE as SSE
from policies.rules.aws_s3_bucket_missing_tls_policy import RULE as TLS
from tests.pack.fixtures import messages, res, skipped

ROOT = Path(__file__).resolve().parents[2]
RULES = [SSE, TLS, VERSIONING, EBS, LT_ENCRYPTION, IMDS, PUBLIC_IP, TYPES]

BUCKET = "aws:s3/bucketV2:BucketV2"
BUCKET_V1 = "aws:s3/bucket:Bucket"
SSE_V2 = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
SSE_V1 = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
POLICY = "aws:s3/bucketPolicy:BucketPolicy"
VERSIONING_V1 = "aws:s3/bucketVersioning:BucketVersioning"
VERSIONING_V2 = "aws:s3/bucketVersioningV2:BucketVersioningV2"
VOLUME = "aws:ebs/volume:Volume"
INSTANCE = "aws:ec2/instance:Instance"
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
GROUP = "aws:autoscaling/group:Group"
MODEL_STORE = ("llmkit:aws:ModelStore",)

CMK = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EXEMPT = {"llmkit:sse-exception": "alb-access-logs"}
ALLOWED = ", ".join(sorted(load_catalog().instances))


def sse(
    name: str, bucket: str, algorithm: str = "aws:kms", key: str | None = CMK, type_: str = SSE_V1
) -> Resource:
    default: dict[str, Any] = {"sseAlgorithm": algorithm}
    if key is not None:
        default["kmsMasterKeyId"] = key
    return res(
        type_,
        name,
        bucket=bucket,
        rules=[{"applyServerSideEncryptionByDefault": default, "bucketKeyEnabled": True}],
    )


# --- aws-s3-bucket-enforce-sse-kms ----------------------------------------------------------

NOT_KMS = (
    "sseAlgorithm AES256 is not SSE-KMS (accepted: aws:kms or aws:kms:dsse with a customer-managed "
    "kmsMasterKeyId; AES256 only for a bucket tagged llmkit:sse-exception=alb-access-logs)"
)


def test_kms_buckets_in_every_form_pass() -> None:
    assert messages(SSE, res(BUCKET, "b"), sse("enc", "b-id", type_=SSE_V2)) == []
    assert messages(SSE, res(BUCKET_V1, "b"), sse("enc", "b-id", algorithm="aws:kms:dsse")) == []
    inline_v1 = {
        "rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": CMK}}
    }
    assert messages(SSE, res(BUCKET_V1, "b", serverSideEncryptionConfiguration=inline_v1)) == []
    inline_v2 = [
        {
            "rules": [
                {"applyServerSideEncryptionByDefaults": [{"sseAlgorithm": "aws:kms", "kmsMasterKeyId": CMK}]}
            ]
        }
    ]
    assert messages(SSE, res(BUCKET, "b", serverSideEncryptionConfigurations=inline_v2)) == []
    # A configuration is linked by the bucket's name as well as by its id.
    assert messages(SSE, res(BUCKET, "b", bucket="my-bucket"), sse("enc", "my-bucket")) == []


def test_bucket_without_encryption_fails_on_the_bucket() -> None:
    assert messages(SSE, res(BUCKET, "b"), sse("other", "c-id")) == [
        (
            "b",
            "bucket has no default encryption configuration (S3 falls back to SSE-S3): add an "
            "aws.s3.BucketServerSideEncryptionConfiguration with aws:kms or aws:kms:dsse with a "
            "customer-managed kmsMasterKeyId; AES256 only for a bucket tagged "
            "llmkit:sse-exception=alb-access-logs",
        )
    ]


def test_sse_s3_fails_once_on_the_configuration() -> None:
    assert messages(SSE, res(BUCKET, "b"), sse("enc", "b-id", algorithm="AES256", key=None)) == [
        ("enc", NOT_KMS)
    ]


def test_inline_sse_s3_fails_on_the_bucket() -> None:
    inline = {"rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}}
    assert messages(SSE, res(BUCKET_V1, "b", serverSideEncryptionConfiguration=inline)) == [("b", NOT_KMS)]


def test_kms_without_a_customer_key_fails() -> None:
    assert messages(SSE, res(BUCKET, "b"), sse("enc", "b-id", key=None)) == [
        (
            "enc",
            "sseAlgorithm aws:kms without a kmsMasterKeyId uses the AWS managed key aws/s3: "
            "name a customer-managed KMS key",
        )
    ]
    for key in ("alias/aws/s3", "arn:aws:kms:eu-central-1:123456789012:alias/aws/s3"):
        assert messages(SSE, res(BUCKET, "b"), sse("enc", "b-id", key=key)) == [
            ("enc", f"kmsMasterKeyId {key} is an AWS managed key: name a customer-managed KMS key")
        ]


def test_configuration_without_a_default_rule_fails() -> None:
    empty = res(SSE_V1, "enc", bucket="b-id", rules=[{"bucketKeyEnabled": True}])
    assert messages(SSE, res(BUCKET, "b"), empty) == [
        (
            "enc",
            "encryption configuration sets no default encryption (accepted: aws:kms or aws:kms:dsse with a "
            "customer-managed kmsMasterKeyId; AES256 only for a bucket tagged "
            "llmkit:sse-exception=alb-access-logs)",
        )
    ]


def test_alb_log_bucket_exception_allows_sse_s3() -> None:
    assert (
        messages(SSE, res(BUCKET, "logs", tags=EXEMPT), sse("enc", "logs-id", algorithm="AES256", key=None))
        == []
    )
    # The tag also counts when it comes from the provider's default tags.
    provider = {"region": "eu-central-1", "defaultTags": {"tags": EXEMPT}}
    logs = res(BUCKET, "logs", provider=provider)
    assert messages(SSE, logs, sse("enc", "logs-id", algorithm="AES256", key=None)) == []
    # The exception widens what is accepted; it does not excuse a missing configuration.
    assert messages(SSE, res(BUCKET, "logs", tags=EXEMPT)) == [
        (
            "logs",
            "bucket has no default encryption configuration (S3 falls back to SSE-S3): add an "
            "aws.s3.BucketServerSideEncryptionConfiguration with aws:kms or aws:kms:dsse with a "
            "customer-managed kmsMasterKeyId, or AES256 (llmkit:sse-exception)",
        )
    ]


def test_other_exception_values_fail_and_grant_nothing() -> None:
    bucket = res(BUCKET, "b", tags={"llmkit:sse-exception": "legacy"})
    assert messages(SSE, bucket, sse("enc", "b-id", algorithm="AES256", key=None)) == [
        ("b", "tag llmkit:sse-exception=legacy is not an accepted exception (one of: alb-access-logs)"),
        ("enc", NOT_KMS),
    ]
    assert messages(SSE, bucket, sse("enc", "b-id")) == [
        ("b", "tag llmkit:sse-exception=legacy is not an accepted exception (one of: alb-access-logs)")
    ]


def test_configuration_of_a_bucket_outside_the_stack_gets_no_exception() -> None:
    assert messages(SSE, sse("enc", "someone-elses-bucket", algorithm="AES256", key=None)) == [
        ("enc", NOT_KMS)
    ]


def test_unknown_key_is_skipped_not_judged() -> None:
    found = [res(BUCKET, "b"), sse("enc", "b-id", key=UNKNOWN)]
    assert messages(SSE, *found) == []
    assert skipped(SSE, *found) == [(SSE.name, "(stack)")]


# --- aws-s3-bucket-missing-tls-policy -------------------------------------------------------

ARN = "arn:aws:s3:::b"
DENY_HTTP: dict[str, Any] = {
    "Sid": "DenyInsecureTransport",
    "Effect": "Deny",
    "Principal": "*",
    "Action": "s3:*",
    "Resource": [ARN, f"{ARN}/*"],
    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
}
WANTED = (
    "Effect Deny, Principal *, Action s3:*, Resource the bucket ARN and <bucket ARN>/*, "
    "Condition Bool aws:SecureTransport false"
)


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_tls_only_policies_pass() -> None:
    assert messages(TLS, res(BUCKET, "b"), res(POLICY, "p", bucket="b-id", policy=document(DENY_HTTP))) == []
    inline = document(
        {
            **DENY_HTTP,
            "Principal": {"AWS": ["*"]},
            "Action": ["S3:*"],
            "Condition": {"Bool": {"aws:SecureTransport": False}},
        }
    )
    assert messages(TLS, res(BUCKET_V1, "b", policy=inline)) == []
    # A single statement (not a list) and a mapping instead of JSON text; "*" covers bucket and objects.
    single = {"Statement": {**DENY_HTTP, "Action": "*", "Resource": "*"}}
    assert messages(TLS, res(BUCKET, "b"), res(POLICY, "p", bucket="b-id", policy=single)) == []


def test_bucket_without_a_policy_fails() -> None:
    assert messages(TLS, res(BUCKET, "b"), res(POLICY, "p", bucket="c-id", policy=document(DENY_HTTP))) == [
        ("b", f"bucket has no bucket policy: add an aws.s3.BucketPolicy with a statement {WANTED}")
    ]


def test_policy_without_a_tls_statement_fails_on_the_policy() -> None:
    allow = {
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": f"{ARN}/*",
    }
    assert messages(TLS, res(BUCKET, "b"), res(POLICY, "p", bucket="b-id", policy=document(allow))) == [
        ("p", f"bucket policy has no statement denying requests without TLS (wanted: {WANTED})")
    ]


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        ({"Effect": "Allow"}, "Effect is Allow, not Deny"),
        (
            {"Principal": {"AWS": "arn:aws:iam::123456789012:root"}},
            'Principal is {"AWS": "arn:aws:iam::123456789012:root"}, not *',
        ),
        (
            {"Action": ["s3:GetObject", "s3:PutObject"]},
            'Action ["s3:GetObject", "s3:PutObject"] does not cover s3:*',
        ),
        (
            {"Condition": {"Bool": {"aws:SecureTransport": "true"}}},
            'Condition {"Bool": {"aws:SecureTransport": "true"}} '
            "is not exactly Bool aws:SecureTransport false",
        ),
        (
            {
                "Condition": {
                    "Bool": {"aws:SecureTransport": "false"},
                    "StringEquals": {"aws:PrincipalAccount": "1"},
                }
            },
            'Condition {"Bool": {"aws:SecureTransport": "false"}, '
            '"StringEquals": {"aws:PrincipalAccount": "1"}} '
            "is not exactly Bool aws:SecureTransport false",
        ),
        ({"Resource": f"{ARN}/*"}, 'Resource "arn:aws:s3:::b/*" does not cover the bucket and its objects'),
        (
            {"Resource": [ARN, f"{ARN}/logs/*"]},
            'Resource ["arn:aws:s3:::b", "arn:aws:s3:::b/logs/*"] does not cover the bucket and its objects',
        ),
    ],
)
def test_incomplete_tls_statement_fails_naming_what_is_off(change: dict[str, Any], fault: str) -> None:
    policy = res(POLICY, "p", bucket="b-id", policy=document({**DENY_HTTP, **change}))
    assert messages(TLS, res(BUCKET, "b"), policy) == [
        (
            "p",
            f"statement DenyInsecureTransport does not deny every request without TLS: {fault} "
            f"(wanted: {WANTED})",
        )
    ]


def test_inline_policy_without_tls_statement_fails_on_the_bucket() -> None:
    statement = {k: v for k, v in DENY_HTTP.items() if k != "Sid"}
    bucket = res(BUCKET_V1, "b", policy=document({**statement, "Effect": "Allow"}))
    assert messages(TLS, bucket) == [
        (
            "b",
            "statement #0 does not deny every request without TLS: Effect is Allow, not Deny "
            f"(wanted: {WANTED})",
        )
    ]


def test_unknown_policy_text_is_skipped_not_judged() -> None:
    partly = res(
        POLICY, "p", bucket="b-id", policy=document({**DENY_HTTP, "Resource": [UNKNOWN, f"{UNKNOWN}/*"]})
    )
    assert messages(TLS, res(BUCKET, "b"), partly) == []
    assert skipped(TLS, res(BUCKET, "b"), partly) == [(TLS.name, "(stack)")]
    wholly = res(POLICY, "p", bucket="b-id", policy=UNKNOWN)
    assert skipped(TLS, res(BUCKET, "b"), wholly) == [(TLS.name, "(stack)")]
    # An unknown elsewhere does not matter once a complete statement is there.
    other = {
        "Effect": "Allow",
        "Principal": {"AWS": UNKNOWN},
        "Action": "s3:GetObject",
        "Resource": f"{ARN}/*",
    }
    known_enough = res(POLICY, "p", bucket="b-id", policy=document(DENY_HTTP, other))
    assert skipped(TLS, res(BUCKET, "b"), known_enough) == []
    assert messages(TLS, res(BUCKET, "b"), known_enough) == []


# --- aws-s3-bucket-enable-model-versioning --------------------------------------------------


def versioning(
    name: str, bucket: str, status: str | None = "Enabled", type_: str = VERSIONING_V1
) -> Resource:
    config = {} if status is None else {"status": status}
    return res(type_, name, bucket=bucket, versioningConfiguration=config)


def test_versioned_model_store_passes() -> None:
    models = res(BUCKET_V1, "models", components=MODEL_STORE)
    assert messages(VERSIONING, models, versioning("v", "models-id")) == []
    assert messages(VERSIONING, models, versioning("v", "models-id", type_=VERSIONING_V2)) == []
    assert (
        messages(VERSIONING, res(BUCKET_V1, "models", components=MODEL_STORE, versioning={"enabled": True}))
        == []
    )
    assert (
        messages(VERSIONING, res(BUCKET, "models", components=MODEL_STORE, versionings=[{"enabled": "true"}]))
        == []
    )


def test_buckets_outside_the_model_store_are_out_of_scope() -> None:
    assert messages(VERSIONING, res(BUCKET, "other", components=("llmkit:aws:SecureBucket",))) == []


def test_model_store_without_versioning_fails() -> None:
    models = res(BUCKET_V1, "models", components=MODEL_STORE)
    assert messages(VERSIONING, models, versioning("v", "other-id")) == [
        (
            "models",
            "model store bucket has no versioning: add an aws.s3.BucketVersioning with "
            "versioningConfiguration.status Enabled (ModelStore does)",
        )
    ]


def test_suspended_versioning_fails_on_the_versioning_resource() -> None:
    models = res(BUCKET_V1, "models", components=MODEL_STORE)
    assert messages(VERSIONING, models, versioning("v", "models-id", "Suspended")) == [
        ("v", "versioning status is Suspended, not Enabled: model weights would lose earlier versions")
    ]
    assert messages(VERSIONING, models, versioning("v", "models-id", None)) == [
        ("v", "versioning status is not set, not Enabled: model weights would lose earlier versions")
    ]


def test_inline_versioning_off_fails_on_the_bucket() -> None:
    models = res(BUCKET_V1, "models", components=MODEL_STORE, versioning={"enabled": False})
    assert messages(VERSIONING, models) == [
        (
            "models",
            "versioning.enabled is false: set it to true, or add an aws.s3.BucketVersioning with "
            "versioningConfiguration.status Enabled (ModelStore does)",
        )
    ]


def test_unknown_versioning_status_is_skipped() -> None:
    found = [res(BUCKET_V1, "models", components=MODEL_STORE), versioning("v", "models-id", UNKNOWN)]
    assert messages(VERSIONING, *found) == []
    assert skipped(VERSIONING, *found) == [(VERSIONING.name, "(stack)")]


# --- aws-ebs-volume-enforce-encryption ------------------------------------------------------

ROOT_DEVICE = {"encrypted": True, "volumeSize": 100}
DATA_DEVICE = {"deviceName": "/dev/sdf", "encrypted": "true"}


def test_encrypted_volumes_and_instances_pass() -> None:
    assert messages(EBS, res(VOLUME, encrypted=True), res(VOLUME, "w", encrypted="true")) == []
    assert messages(EBS, res(INSTANCE, rootBlockDevice=ROOT_DEVICE, ebsBlockDevices=[DATA_DEVICE])) == []


def test_unencrypted_volume_fails() -> None:
    assert messages(EBS, res(VOLUME, "v")) == [("v", "encrypted is not set: set encrypted: true")]
    assert messages(EBS, res(VOLUME, "v", encrypted=False)) == [
        ("v", "encrypted is false: set encrypted: true")
    ]


def test_instance_with_unencrypted_devices_fails() -> None:
    assert messages(EBS, res(INSTANCE, "i")) == [
        (
            "i",
            "rootBlockDevice is not set (the root volume is encrypted only if the AMI's snapshot is): "
            "declare rootBlockDevice with encrypted: true",
        )
    ]
    bad = res(
        INSTANCE,
        "i",
        rootBlockDevice={"volumeSize": 100},
        ebsBlockDevices=[DATA_DEVICE, {"deviceName": "/dev/sdg", "encrypted": False}],
    )
    assert messages(EBS, bad) == [
        ("i", "rootBlockDevice.encrypted is not set: set it to true"),
        ("i", "ebsBlockDevices[1] (/dev/sdg) encrypted is false: set it to true"),
    ]


def test_unknown_encryption_is_skipped() -> None:
    volume = res(VOLUME, "v", encrypted=UNKNOWN)
    assert messages(EBS, volume) == []
    assert skipped(EBS, volume) == [(EBS.name, volume.urn)]


# --- aws-ec2-launchtemplate-enforce-encryption ----------------------------------------------


def mapping(device: str = "/dev/sda1", **ebs: Any) -> dict[str, Any]:
    return {
        "deviceName": device,
        "ebs": {"deleteOnTermination": "true", "encrypted": "true", "kmsKeyId": CMK, **ebs},
    }


def test_template_with_encrypted_cmk_volumes_passes() -> None:
    ephemeral = {"deviceName": "/dev/sdb", "virtualName": "ephemeral0"}
    template = res(
        TEMPLATE, "lt", blockDeviceMappings=[mapping(), mapping("/dev/sdf", encrypted=True), ephemeral]
    )
    assert messages(LT_ENCRYPTION, template) == []


def test_template_with_unencrypted_volume_fails() -> None:
    template = res(TEMPLATE, "lt", blockDeviceMappings=[mapping(), mapping("/dev/sdf", encrypted="false")])
    assert messages(LT_ENCRYPTION, template) == [
        ("lt", 'blockDeviceMappings[1] (/dev/sdf) ebs.encrypted is "false": set it to true')
    ]
    unset = res(TEMPLATE, "lt", blockDeviceMappings=[{"deviceName": "/dev/sda1", "ebs": {"kmsKeyId": CMK}}])
    assert messages(LT_ENCRYPTION, unset) == [
        ("lt", "blockDeviceMappings[0] (/dev/sda1) ebs.encrypted is not set: set it to true")
    ]


def test_template_without_a_customer_key_fails_unless_the_setting_allows_it() -> None:
    no_key = res(TEMPLATE, "lt", blockDeviceMappings=[mapping(kmsKeyId=None)])
    assert messages(LT_ENCRYPTION, no_key) == [
        (
            "lt",
            "blockDeviceMappings[0] (/dev/sda1) has no ebs.kmsKeyId "
            "(EBS would use the AWS managed key aws/ebs): "
            "name a customer-managed KMS key",
        )
    ]
    aws_key = res(TEMPLATE, "lt", blockDeviceMappings=[mapping(kmsKeyId="alias/aws/ebs")])
    assert messages(LT_ENCRYPTION, aws_key) == [
        (
            "lt",
            "blockDeviceMappings[0] (/dev/sda1) ebs.kmsKeyId alias/aws/ebs is an AWS managed key: "
            "name a customer-managed KMS key",
        )
    ]
    assert messages(LT_ENCRYPTION, no_key, require_customer_key=False) == []
    assert messages(LT_ENCRYPTION, aws_key, require_customer_key=False) == []


def test_unknown_template_encryption_is_skipped() -> None:
    template = res(TEMPLATE, "lt", blockDeviceMappings=[mapping(kmsKeyId=UNKNOWN)])
    assert messages(LT_ENCRYPTION, template) == []
    assert skipped(LT_ENCRYPTION, template) == [(LT_ENCRYPTION.name, template.urn)]


# --- aws-ec2-instance-enforce-imdsv2 --------------------------------------------------------

IMDSV2 = {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}


def test_imdsv2_with_hop_limit_one_passes() -> None:
    assert (
        messages(IMDS, res(TEMPLATE, metadataOptions=IMDSV2), res(INSTANCE, "i", metadataOptions=IMDSV2))
        == []
    )
    assert messages(IMDS, res(INSTANCE, metadataOptions={"httpEndpoint": "disabled"})) == []


def test_imdsv1_fails() -> None:
    optional = res(TEMPLATE, "lt", metadataOptions={**IMDSV2, "httpTokens": "optional"})
    assert messages(IMDS, optional) == [
        ("lt", "metadataOptions.httpTokens is optional: set it to required (IMDSv2 only)")
    ]
    assert messages(IMDS, res(INSTANCE, "i")) == [
        (
            "i",
            "metadataOptions.httpTokens is not set (the AMI or account default may allow IMDSv1): "
            "set it to required (IMDSv2 only)",
        ),
        (
            "i",
            "metadataOptions.httpPutResponseHopLimit is not set (an AMI with ImdsSupport v2.0 defaults "
            "to 2): set it to at most 1",
        ),
    ]


def test_hop_limit_over_the_setting_fails() -> None:
    two = res(TEMPLATE, "lt", metadataOptions={**IMDSV2, "httpPutResponseHopLimit": 2})
    assert messages(IMDS, two) == [("lt", "metadataOptions.httpPutResponseHopLimit 2 is over the allowed 1")]
    assert messages(IMDS, two, max_hop_limit=2) == []
    odd = res(TEMPLATE, "lt", metadataOptions={**IMDSV2, "httpPutResponseHopLimit": "many"})
    assert messages(IMDS, odd) == [
        ("lt", "metadataOptions.httpPutResponseHopLimit 'many' is not a number: set it to at most 1")
    ]


def test_unknown_metadata_options_are_skipped() -> None:
    template = res(TEMPLATE, "lt", metadataOptions={**IMDSV2, "httpTokens": UNKNOWN})
    assert messages(IMDS, template) == []
    assert skipped(IMDS, template) == [(IMDS.name, template.urn)]


# --- aws-ec2-instance-disallow-public-ip ----------------------------------------------------


def test_private_templates_and_instances_pass() -> None:
    template = res(TEMPLATE, networkInterfaces=[{"associatePublicIpAddress": "false", "deviceIndex": 0}])
    assert (
        messages(PUBLIC_IP, template, res(INSTANCE, "i", associatePublicIpAddress=False), res(INSTANCE, "j"))
        == []
    )


def test_public_ips_fail() -> None:
    template = res(
        TEMPLATE,
        "lt",
        networkInterfaces=[{"deviceIndex": 0}, {"associatePublicIpAddress": "true", "deviceIndex": 1}],
    )
    gpu_host = res(INSTANCE, "gpu", instanceType="g6.xlarge", associatePublicIpAddress=True)
    fix = "set it to false (instances reach AWS through VPC endpoints and egress through the firewall)"
    assert messages(PUBLIC_IP, template, gpu_host) == [
        ("lt", f"networkInterfaces[1].associatePublicIpAddress is true: {fix}"),
        ("gpu", f"associatePublicIpAddress is true: {fix}"),
    ]


def test_unknown_public_ip_is_skipped() -> None:
    instance = res(INSTANCE, "i", associatePublicIpAddress=UNKNOWN)
    assert messages(PUBLIC_IP, instance) == []
    assert skipped(PUBLIC_IP, instance) == [(PUBLIC_IP.name, instance.urn)]


# --- aws-ec2-instancetype-enforce-allowlist -------------------------------------------------


def group(*overrides: dict[str, Any]) -> Resource:
    policy = {
        "launchTemplate": {
            "launchTemplateSpecification": {"launchTemplateId": "lt-id"},
            "overrides": list(overrides),
        }
    }
    return res(GROUP, "asg", mixedInstancesPolicy=policy)


def test_default_allowlist_is_the_catalog() -> None:
    assert TYPES.settings["allowed_instance_types"].default == sorted(load_catalog().instances)


def test_catalog_types_pass() -> None:
    assert (
        messages(
            TYPES,
            res(TEMPLATE, "lt", instanceType="g6.xlarge"),
            res(TEMPLATE, "lt-typeless"),
            res(INSTANCE, "i", instanceType="p5.48xlarge"),
            group({"instanceType": "g5.12xlarge"}, {"instanceType": "g6e.xlarge"}),
            res(GROUP, "plain", launchTemplate={"id": "lt-id", "version": "$Latest"}),
        )
        == []
    )


def test_types_off_the_allowlist_fail() -> None:
    assert messages(
        TYPES, res(TEMPLATE, "lt", instanceType="t3.micro"), res(INSTANCE, "i", instanceType="m5.large")
    ) == [
        ("lt", f"instance type t3.micro is not allowed (one of: {ALLOWED})"),
        ("i", f"instance type m5.large is not allowed (one of: {ALLOWED})"),
    ]
    assert messages(TYPES, group({"instanceType": "g6.xlarge"}, {"instanceType": "x2iedn.32xlarge"})) == [
        (
            "asg",
            "mixedInstancesPolicy override 1 instance type x2iedn.32xlarge is not allowed "
            f"(one of: {ALLOWED})",
        )
    ]


def test_attribute_based_selection_fails() -> None:
    requirements = {"vcpuCount": {"min": 4}, "memoryMib": {"min": 16384}}
    unbounded = (
        "uses instanceRequirements (attribute-based selection), which the allowlist cannot bound: "
        "name instanceType"
    )
    assert messages(TYPES, group({"instanceRequirements": requirements})) == [
        ("asg", f"mixedInstancesPolicy override 0 {unbounded}")
    ]
    assert messages(TYPES, res(TEMPLATE, "lt", instanceRequirements=requirements)) == [
        ("lt", f"launch template {unbounded}")
    ]


def test_allowlist_setting_replaces_the_catalog() -> None:
    small = res(INSTANCE, "i", instanceType="t3.micro")
    assert messages(TYPES, small, allowed_instance_types=["t3.micro"]) == []
    assert messages(
        TYPES, res(INSTANCE, "g", instanceType="g6.xlarge"), allowed_instance_types=["t3.micro"]
    ) == [("g", "instance type g6.xlarge is not allowed (one of: t3.micro)")]


def test_unknown_instance_type_is_skipped() -> None:
    instance = res(INSTANCE, "i", instanceType=UNKNOWN)
    assert messages(TYPES, instance) == []
    assert skipped(TYPES, instance) == [(TYPES.name, instance.urn)]


# --- our own stacks ---------------------------------------------------------------------------


@cache
def _graph(stack: str) -> dict[str, Any]:
    return run_plan(stack, ROOT).to_graph()


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_our_stacks_pass_every_rule(stack: str) -> None:
    resources = resources_from_graph(_graph(stack))
    report = evaluate(resources, RULES)
    assert report.violations == []
    assert report.skipped == []
    # Not vacuous: the stacks hold what these rules judge.
    types = {r.type for r in resources}
    assert {BUCKET_V1, SSE_V1, POLICY, VERSIONING_V1, TEMPLATE, GROUP} <= types
    assert any(r.within("llmkit:aws:ModelStore") and r.type == BUCKET_V1 for r in resources)


def test_rules_catch_a_weakened_prod_stack() -> None:
    graph = copy.deepcopy(_graph("prod"))
    exempt = [
        e for e in graph["resources"] if "llmkit:sse-exception" in (e.get("inputs") or {}).get("tags", {})
    ]
    assert [e["name"] for e in exempt] == ["logs-bucket"]
    del exempt[0]["inputs"]["tags"]["llmkit:sse-exception"]  # the log bucket loses its documented exception
    for entry in graph["resources"]:
        if entry["type"] == TEMPLATE:
            entry["inputs"]["metadataOptions"]["httpTokens"] = "optional"
    report = evaluate(resources_from_graph(graph), RULES)
    assert {(v.rule, v.resource_name) for v in report.violations} == {
        (SSE.name, "logs-encryption"),
        (IMDS.name, "fleet-lt-deepseek-r1-32b"),
        (IMDS.name, "fleet-lt-deepseek-r1-70b"),
    }
    assert [v.message for v in report.violations if v.rule == SSE.name] == [NOT_KMS]
