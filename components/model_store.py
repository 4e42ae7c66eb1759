"""The model store: the internal mirror of model files and the host bootstrap bundle.

Hosts never fetch weights (or anything else) from the internet. ``llmkit mirror push`` uploads
the model files under ``models/`` and the bootstrap bundle (playbooks, wheels, the runtime
release) under ``bootstrap/``; the fleet's instances read both through the VPC's S3 gateway
endpoint.

:class:`ModelStore` is a :class:`~components.storage.SecureBucket` (nothing is re-implemented):
SSE-KMS under the ``data`` key with the S3 bucket key on, versioning, all four public access block
flags, ``BucketOwnerEnforced``, TLS >= 1.2 only, server access logs to the log bucket, noncurrent
versions expired after ``noncurrent_days`` and incomplete multipart uploads aborted.

Bucket policy decisions. The policy holds **only Deny statements**; allowing is left to IAM in
this account (the fleet's instance role, the publishers' roles, administrators). So the policy
never names a principal in ``Principal`` (which S3 checks for existence): principals appear only
as ``aws:PrincipalArn`` condition values, and the policy can be written before the fleet's roles
exist.

- **Object reads** (``s3:GetObject*``) are denied unless the caller is one of the reader roles
  (``aws:PrincipalArn``) **and** the request comes through the S3 gateway endpoint
  (``aws:SourceVpce``). IAM conditions are ANDed within a statement, so "deny unless A and B" is
  two statements, "deny if not A" and "deny if not B". A negated operator is true when the key is
  missing, so requests from outside any endpoint (no ``aws:SourceVpce``) and anonymous requests
  (no ``aws:PrincipalArn``) are denied too.
- **The one exception: publishers read the published manifests**, ``models/*/manifest.json``
  and ``bootstrap/manifest.json`` (:func:`manifest_object_arns`), from anywhere, and no other
  object. ``llmkit mirror push`` decides what it may skip by comparing its files with the
  published manifest (plus the ``ListObjectsV2`` sizes); a manifest holds file names, sizes and
  sha256 digests, never weights or bundle contents. Three statements: reads by anyone but the
  readers and publishers are denied (``DenyObjectReadsByOtherPrincipals``); reads by anyone but
  the readers of any object that is not a manifest are denied (a ``NotResource`` statement,
  ``DenyObjectReadsBeyondTheManifestsByNonReaders``); and reads from outside the endpoint are
  denied unless the caller is a publisher (``DenyObjectReadsOutsideTheEndpoint``: both
  ``StringNotEquals`` keys must hold, the way ``DenyListingOutsideTheEndpoint`` exempts them).
  ``*`` in an S3 resource ARN matches across ``/``, so ``models/a/b/manifest.json`` counts as a
  manifest too: acceptable, since only publishers write and the name says what it is. Without
  ``publisher_role_arns`` neither exemption exists and reads are exactly the readers' alone.
- **Listing** (``s3:ListBucket``, ``s3:ListBucketVersions``) is denied to everyone but the readers
  and the publishers, and to readers outside the endpoint. Publishers list from anywhere, so
  ``llmkit mirror push`` can compare what is already there (``ListObjectsV2`` sizes and ETags).
- **Object writes** (``s3:PutObject*``, ``s3:DeleteObject*``, ``s3:RestoreObject``,
  ``s3:AbortMultipartUpload``) are always denied to the readers: a compromised host cannot
  poison the models another host will load. With ``publisher_role_arns`` given, they are denied to
  everyone but the publishers; without, writing is left to IAM (administrators).
- Uploads that ask for another encryption (SSE-S3, DSSE, SSE-KMS without a key id, which means
  the AWS managed ``aws/s3`` key, or another key) are denied; no header means the bucket default,
  the ``data`` key. A key id given must be the key's ARN.

Lockout: no statement denies bucket administration (``s3:PutBucketPolicy``,
``s3:DeleteBucketPolicy``, configuration), so administrators keep the bucket manageable through
IAM, and the account root can always delete the policy. What administrators cannot do is read
objects from outside the VPC: that is the point. Publishers write, and read nothing but the
manifests; to inspect a model or bundle file, read it on a host (Session Manager). Publishers
must be IAM roles or users of this account
(a cross-account publisher would need an Allow statement, which this policy does not have).

Naming and dependencies: the S3 gateway endpoint's policy (:func:`s3_endpoint_policy`) must name
this bucket, and this bucket's policy names the endpoint. So the bucket gets a deterministic
name (:func:`model_store_bucket_name`, unique by account and region) and the endpoint policy
names it by that name's ARN: the endpoint is created first, with its final policy, and the
model store after it, with the endpoint's id. ``aws:ResourceAccount`` in the endpoint policy
makes a bucket of the same name in another account (bucket squatting) useless.

:func:`s3_endpoint_policy` is the policy of the S3 gateway endpoint that the model, data and
app tiers route through. It is an allow-list; everything else through the endpoint is denied:

- the model store: ``s3:GetObject``/``s3:GetObjectVersion`` under ``models/`` and
  ``bootstrap/``, and ``s3:ListBucket``, for principals of this account
  (``aws:PrincipalAccount``) on the bucket of this account (``aws:ResourceAccount``);
- ECR image layers: ``s3:GetObject`` on ``prod-<region>-starport-layer-bucket``;
- Systems Manager (SSM Agent updates, Distributor, patching, document modules):
  ``s3:GetObject`` on the AWS-owned buckets that AWS documents for the region.

The AWS-owned buckets carry no ``aws:PrincipalAccount`` condition, because the caller is not
always our role: ECR answers a layer request with a URL that ECR itself presigned, and SSM Agent
falls back to unsigned HTTP downloads. Both are read-only on buckets AWS owns, so the condition
would only break pulls. Only buckets AWS documents for the region are named: a documented name
that does not exist in a region (``<region>-birdwatcher-prod`` in af-south-1, say) could be
registered by anyone and become a channel out of the VPC. Windows- and macOS-only buckets and
``amazon-ssm-packages-<region>`` (SSM Agent before 2.2.45.0 only) are left out: the hosts are
Linux with a current agent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.storage import SecureBucket, SecureBucketArgs
from llmkit.config import StackConfig
from llmkit.store_layout import BOOTSTRAP_PREFIX, MANIFEST_NAME, MODELS_PREFIX

# Layout of the bucket (llmkit/store_layout.py): the model files, and the bundle a host bootstraps from.
READ_PREFIXES = (MODELS_PREFIX, BOOTSTRAP_PREFIX)

# What the bucket policy restricts (Deny statements, so wildcards only widen the deny).
OBJECT_READ_ACTIONS = ["s3:GetObject*"]
LIST_ACTIONS = ["s3:ListBucket", "s3:ListBucketVersions"]
OBJECT_WRITE_ACTIONS = ["s3:PutObject*", "s3:DeleteObject*", "s3:RestoreObject", "s3:AbortMultipartUpload"]

# What the S3 gateway endpoint lets the tiers do with the model store.
ENDPOINT_READ_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion"]
ENDPOINT_LIST_ACTIONS = ["s3:ListBucket"]

# AWS-owned buckets, aws partition; names from the AWS documentation:
# Systems Manager User Guide, "SSM Agent communications with AWS managed S3 buckets" and
# "Reference: Amazon S3 buckets for patching operations"; ECR User Guide, "Minimum Amazon S3
# bucket permissions for Amazon ECR".
ECR_LAYER_BUCKET = "prod-{region}-starport-layer-bucket"
SSM_BUCKETS = (
    "amazon-ssm-{region}",  # SSM Agent installation packages and update manifests
    "aws-ssm-{region}",  # modules of SSM documents (Linux and Windows Server)
    "aws-ssm-document-attachments-{region}",  # AWS-owned Distributor packages
)
# AWS-ConfigureAWSPackage's distribution service: "<region>-birdwatcher-prod" everywhere except
# in these regions, which use "aws-ssm-distributor-file-<region>" instead.
SSM_DISTRIBUTOR_FILE_REGIONS = frozenset({"af-south-1", "eu-south-1"})
# AWS managed patch baseline snapshots: "patch-baseline-snapshot-<region>", with a suffix here.
PATCH_BASELINE_SNAPSHOT_SUFFIXES = {
    "af-south-1": "tbxdb5b9",
    "ap-south-2": "50209442",
    "ap-southeast-3": "be0a3174",
    "ap-southeast-4": "dc6f76ce",
    "eu-south-2": "df2c9d70",
    "me-south-1": "uduvl7q8",
}
# The SSM documents for patching Linux and Windows Server: "aws-patch-manager-<region>-<suffix>".
PATCH_MANAGER_SUFFIXES = {
    "us-east-2": "552881074",
    "us-east-1": "1970c647d",
    "us-west-1": "8badb4304",
    "us-west-2": "34d7f99f8",
    "af-south-1": "bdd5f65a9",
    "ap-east-1": "632356271",
    "ap-south-2": "32f4b4128",
    "ap-southeast-3": "aa48fc462",
    "ap-southeast-4": "01e2c40d3",
    "ap-south-1": "cb7c62ff9",
    "ap-northeast-3": "67373598a",
    "ap-northeast-2": "10467995c",
    "ap-southeast-1": "7fdfd9ef7",
    "ap-southeast-2": "17283a275",
    "ap-northeast-1": "4849fa78f",
    "ca-central-1": "3148e69e3",
    "ca-west-1": "9e3a4b2f9",
    "eu-central-1": "9163fdaaf",
    "eu-west-1": "5522fb710",
    "eu-west-2": "902a2bc74",
    "eu-south-1": "c52f3f594",
    "eu-west-3": "29bf85721",
    "eu-south-2": "a4cf248b1",
    "eu-north-1": "795879e9b",
    "eu-central-2": "184ce43c8",
    "il-central-1": "e221cb57b",
    "me-south-1": "a53fc9dce",
    "me-central-1": "2932f2f80",
    "sa-east-1": "ddf4b6a09",
}

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_STACK = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_BUCKET_NAME_PREFIX = "llmkit-{stack}-models-"
_ACCOUNT_ID_LENGTH = 12


def _check_region(region: str) -> None:
    if not _REGION.fullmatch(region):
        raise ValueError(f"region {region!r} is not an AWS region name such as eu-central-1")


def _check_principal_arns(what: str, arns: Any, *, required: bool) -> None:
    """IAM role/user ARNs as aws:PrincipalArn compares them: exact, no wildcards, not sessions."""
    if isinstance(arns, str):
        raise ValueError(f"{what} must be a list of IAM role ARNs, got the single string {arns!r}")
    if required and not arns:
        raise ValueError(f"{what} must name at least one IAM role (the fleet's instance roles)")
    for arn in arns:
        if not isinstance(arn, str):
            continue  # an Output: checked again when the policy is built
        parts = arn.split(":")
        if len(parts) < 6 or parts[0] != "arn" or parts[2] != "iam":
            hint = " (give the role's ARN, not an assumed-role session's)" if arn.startswith("arn:") else ""
            raise ValueError(f"{what}: {arn!r} is not an IAM role or user ARN{hint}")
        if "*" in arn or "?" in arn:
            raise ValueError(
                f"{what}: {arn!r} has a wildcard; the policy compares aws:PrincipalArn exactly, "
                "so name each role"
            )


def _check_disjoint(readers: Sequence[Any], publishers: Sequence[Any]) -> None:
    both = sorted({a for a in readers if isinstance(a, str)} & {a for a in publishers if isinstance(a, str)})
    if both:
        raise ValueError(
            f"ModelStoreArgs: {', '.join(both)} is both a reader and a publisher; hosts never write"
        )


def model_store_bucket_name(stack: str, region: str, account_id: pulumi.Input[str]) -> pulumi.Output[str]:
    """``llmkit-<stack>-models-<account>-<region>``: known before the bucket exists.

    Unique per account and region; the endpoint policy's ``aws:ResourceAccount`` condition makes a
    bucket of the same name in another account useless to a squatter.
    """
    _check_region(region)
    if not _STACK.fullmatch(stack):
        raise ValueError(
            f"stack {stack!r} cannot be part of a bucket name (lowercase letters, digits and '-')"
        )
    prefix = _BUCKET_NAME_PREFIX.format(stack=stack)
    length = len(prefix) + _ACCOUNT_ID_LENGTH + 1 + len(region)
    if length > 63:
        raise ValueError(
            f"the model store's bucket name for stack {stack!r} would be {length} characters, over 63"
        )
    return pulumi.Output.concat(prefix, account_id, "-", region)


def bucket_arn(bucket_name: pulumi.Input[str], partition: str = "aws") -> pulumi.Output[str]:
    """The ARN of an S3 bucket by its name (``arn:<partition>:s3:::<name>``)."""
    return pulumi.Output.concat(f"arn:{partition}:s3:::", bucket_name)


def aws_owned_bucket_names(region: str) -> dict[str, list[str]]:
    """The AWS-owned buckets the tiers read through the S3 endpoint, by purpose (``ecr``, ``ssm``)."""
    _check_region(region)
    ssm = [b.format(region=region) for b in SSM_BUCKETS]
    if region in SSM_DISTRIBUTOR_FILE_REGIONS:
        ssm.append(f"aws-ssm-distributor-file-{region}")
    else:
        ssm.append(f"{region}-birdwatcher-prod")
    suffix = PATCH_BASELINE_SNAPSHOT_SUFFIXES.get(region)
    ssm.append(f"patch-baseline-snapshot-{region}" + (f"-{suffix}" if suffix else ""))
    if region in PATCH_MANAGER_SUFFIXES:
        ssm.append(f"aws-patch-manager-{region}-{PATCH_MANAGER_SUFFIXES[region]}")
    return {"ecr": [ECR_LAYER_BUCKET.format(region=region)], "ssm": ssm}


def s3_endpoint_policy_document(
    *, region: str, model_store_arn: str, account_id: str, partition: str = "aws"
) -> dict[str, Any]:
    """The S3 gateway endpoint's policy from plain values (see the module doc)."""
    if partition != "aws":
        raise ValueError(
            "s3_endpoint_policy: the AWS-owned bucket names are documented for the aws partition, "
            f"not {partition!r}"
        )
    if not re.fullmatch(r"\d{12}", account_id):
        raise ValueError(f"s3_endpoint_policy: account_id {account_id!r} is not a 12-digit AWS account id")
    owned = aws_owned_bucket_names(region)
    own_account = {"StringEquals": {"aws:PrincipalAccount": account_id, "aws:ResourceAccount": account_id}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadModelStore",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ENDPOINT_READ_ACTIONS,
                "Resource": [f"{model_store_arn}/{prefix}*" for prefix in READ_PREFIXES],
                "Condition": own_account,
            },
            {
                "Sid": "ListModelStore",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ENDPOINT_LIST_ACTIONS,
                "Resource": model_store_arn,
                "Condition": own_account,
            },
            {
                "Sid": "EcrImageLayers",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": [f"arn:{partition}:s3:::{b}/*" for b in owned["ecr"]],
            },
            {
                "Sid": "SystemsManagerBuckets",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": [f"arn:{partition}:s3:::{b}/*" for b in owned["ssm"]],
            },
        ],
    }


def s3_endpoint_policy(
    *,
    region: str,
    model_store_arn: pulumi.Input[str],
    account_id: pulumi.Input[str],
    partition: str = "aws",
) -> pulumi.Output[str]:
    """The S3 gateway endpoint's policy as JSON (see the module doc).

    ``model_store_arn`` is best ``bucket_arn(model_store_bucket_name(...))``: known before the
    model store exists, so the endpoint can be created first, with this policy.
    """
    _check_region(region)  # fail at once, not inside apply

    def document(v: list[str]) -> str:
        return json.dumps(
            s3_endpoint_policy_document(
                region=region, model_store_arn=v[0], account_id=v[1], partition=partition
            )
        )

    return pulumi.Output.all(model_store_arn, account_id).apply(document)


def manifest_object_arns(bucket_arn: str) -> list[str]:
    """The published mirror manifests, the only objects publishers read (see the module doc).

    ``*`` in an S3 resource ARN also matches ``/``, so the first also covers
    ``models/a/b/manifest.json``; any such object is a manifest by name, written by a publisher.
    """
    return [
        f"{bucket_arn}/{MODELS_PREFIX}*/{MANIFEST_NAME}",
        f"{bucket_arn}/{BOOTSTRAP_PREFIX}{MANIFEST_NAME}",
    ]


def model_store_policy_statements(
    *,
    bucket_arn: str,
    s3_endpoint_id: str,
    kms_key_arn: str,
    reader_role_arns: Sequence[str],
    publisher_role_arns: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The model store's own bucket policy statements from plain values (see the module doc)."""
    readers, publishers = list(reader_role_arns), list(publisher_role_arns)
    _check_principal_arns("ModelStoreArgs.reader_role_arns", readers, required=True)
    _check_principal_arns("ModelStoreArgs.publisher_role_arns", publishers, required=False)
    _check_disjoint(readers, publishers)
    objects = f"{bucket_arn}/*"
    not_publisher: dict[str, Any] = {"aws:PrincipalArn": publishers} if publishers else {}
    statements: list[dict[str, Any]] = [
        {
            "Sid": "DenyObjectReadsByOtherPrincipals",
            "Effect": "Deny",
            "Principal": "*",
            "Action": OBJECT_READ_ACTIONS,
            "Resource": objects,
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": [*readers, *publishers]}},
        },
    ]
    if publishers:
        # Without publishers the statement above already denies every non-reader every object.
        statements.append(
            {
                "Sid": "DenyObjectReadsBeyondTheManifestsByNonReaders",
                "Effect": "Deny",
                "Principal": "*",
                "Action": OBJECT_READ_ACTIONS,
                "NotResource": manifest_object_arns(bucket_arn),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": readers}},
            }
        )
    statements += [
        {
            "Sid": "DenyObjectReadsOutsideTheEndpoint",
            "Effect": "Deny",
            "Principal": "*",
            "Action": OBJECT_READ_ACTIONS,
            "Resource": objects,
            "Condition": {"StringNotEquals": {"aws:SourceVpce": s3_endpoint_id, **not_publisher}},
        },
        {
            "Sid": "DenyListingByOtherPrincipals",
            "Effect": "Deny",
            "Principal": "*",
            "Action": LIST_ACTIONS,
            "Resource": bucket_arn,
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": [*readers, *publishers]}},
        },
        {
            "Sid": "DenyListingOutsideTheEndpoint",
            "Effect": "Deny",
            "Principal": "*",
            "Action": LIST_ACTIONS,
            "Resource": bucket_arn,
            "Condition": {"StringNotEquals": {"aws:SourceVpce": s3_endpoint_id, **not_publisher}},
        },
        {
            "Sid": "DenyWritesByReaders",
            "Effect": "Deny",
            "Principal": "*",
            "Action": OBJECT_WRITE_ACTIONS,
            "Resource": objects,
            "Condition": {"StringEquals": {"aws:PrincipalArn": readers}},
        },
    ]
    if publishers:
        statements.append(
            {
                "Sid": "DenyWritesByOtherPrincipals",
                "Effect": "Deny",
                "Principal": "*",
                "Action": OBJECT_WRITE_ACTIONS,
                "Resource": objects,
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": publishers}},
            }
        )
    sse, key_id = "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id"
    statements += [
        {
            "Sid": "DenyUploadsWithOtherEncryption",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"Null": {sse: "false"}, "StringNotEquals": {sse: "aws:kms"}},
        },
        {
            "Sid": "DenyUploadsUnderTheAwsManagedKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"Null": {sse: "false", key_id: "true"}},
        },
        {
            "Sid": "DenyUploadsUnderOtherKeys",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"Null": {key_id: "false"}, "StringNotEquals": {key_id: kms_key_arn}},
        },
    ]
    return statements


@dataclass
class ModelStoreArgs:
    """What :class:`ModelStore` needs.

    ``reader_role_arns``: the fleet's instance role ARNs (a list of Inputs, or an Output of a
    list). ``publisher_role_arns``: the roles/users that ``llmkit mirror push`` runs as; when
    given, only they write, and they read the published manifests and nothing else.
    ``bucket_name``: best :func:`model_store_bucket_name` (see the module doc); None means
    Pulumi's auto-name.
    """

    kms_key_arn: pulumi.Input[str]
    access_log_bucket: pulumi.Input[str]
    s3_endpoint_id: pulumi.Input[str]
    reader_role_arns: pulumi.Input[Sequence[pulumi.Input[str]]]
    publisher_role_arns: Sequence[pulumi.Input[str]] = ()
    noncurrent_days: int = 30
    bucket_name: pulumi.Input[str] | None = None
    force_destroy: bool = False
    tags: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kms_key_arn is None or self.kms_key_arn == "":
            raise ValueError("ModelStoreArgs: kms_key_arn is required (the data key, KmsKeys.data.arn)")
        if self.noncurrent_days < 1:
            raise ValueError(f"ModelStoreArgs: noncurrent_days must be >= 1, got {self.noncurrent_days}")
        readers = self.reader_role_arns
        # A list is checked now (its Outputs, and an Output of a list, when the policy is built).
        if isinstance(readers, str | Sequence):
            _check_principal_arns("ModelStoreArgs.reader_role_arns", readers, required=True)
        _check_principal_arns("ModelStoreArgs.publisher_role_arns", self.publisher_role_arns, required=False)
        if isinstance(readers, Sequence) and not isinstance(readers, str):
            _check_disjoint(readers, self.publisher_role_arns)

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        *,
        account_id: pulumi.Input[str],
        kms_key_arn: pulumi.Input[str],
        access_log_bucket: pulumi.Input[str],
        s3_endpoint_id: pulumi.Input[str],
        reader_role_arns: pulumi.Input[Sequence[pulumi.Input[str]]],
        **overrides: Any,
    ) -> ModelStoreArgs:
        """The stack's model store, named :func:`model_store_bucket_name` (stack, region, account)."""
        values: dict[str, Any] = {
            "kms_key_arn": kms_key_arn,
            "access_log_bucket": access_log_bucket,
            "s3_endpoint_id": s3_endpoint_id,
            "reader_role_arns": reader_role_arns,
            "bucket_name": model_store_bucket_name(cfg.stack or pulumi.get_stack(), cfg.region, account_id),
            "tags": dict(cfg.tags),
        }
        return cls(**{**values, **overrides})


class ModelStore(SecureBucket):
    """The internal model mirror (see the module doc)."""

    TYPE = "llmkit:aws:ModelStore"

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        self.store_args = args

        def statements(arn: pulumi.Output[str]) -> pulumi.Output[list[dict[str, Any]]]:
            # Everything is resolved first; the apply only builds dicts (no resources).
            resolved = pulumi.Output.all(
                arn,
                args.s3_endpoint_id,
                args.kms_key_arn,
                pulumi.Output.from_input(args.reader_role_arns),
                pulumi.Output.from_input(list(args.publisher_role_arns)),
            )
            return resolved.apply(
                lambda v: model_store_policy_statements(
                    bucket_arn=v[0],
                    s3_endpoint_id=v[1],
                    kms_key_arn=v[2],
                    reader_role_arns=list(v[3]),
                    publisher_role_arns=list(v[4]),
                )
            )

        super().__init__(
            name,
            SecureBucketArgs(
                kms_key_arn=args.kms_key_arn,
                versioning=True,
                noncurrent_days=args.noncurrent_days,
                access_log_bucket=args.access_log_bucket,
                extra_policy_statements=statements,
                force_destroy=args.force_destroy,
                tags=args.tags,
                bucket_name=args.bucket_name,
            ),
            opts,
        )

    @property
    def kms_key_arn(self) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self.store_args.kms_key_arn)

    @property
    def models_arn_prefix(self) -> pulumi.Output[str]:
        """``<bucket ARN>/models/``: append ``*`` (or a model's path) for IAM resources."""
        return pulumi.Output.concat(self.arn, "/", MODELS_PREFIX)

    @property
    def bootstrap_arn_prefix(self) -> pulumi.Output[str]:
        """``<bucket ARN>/bootstrap/``."""
        return pulumi.Output.concat(self.arn, "/", BOOTSTRAP_PREFIX)

    @property
    def read_object_arns(self) -> list[pulumi.Output[str]]:
        """The objects the fleet reads, for its role's ``s3:GetObject`` statement."""
        return [pulumi.Output.concat(self.arn, "/", prefix, "*") for prefix in READ_PREFIXES]

    def _outputs(self) -> dict[str, Any]:
        return {
            **super()._outputs(),
            "kms_key_arn": self.kms_key_arn,
            "models_arn_prefix": self.models_arn_prefix,
            "bootstrap_arn_prefix": self.bootstrap_arn_prefix,
        }
