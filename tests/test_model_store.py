"""ModelStore and the S3 gateway endpoint policy: the model mirror only the fleet can read."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from components.model_store import (
    BOOTSTRAP_PREFIX,
    MODELS_PREFIX,
    ModelStore,
    ModelStoreArgs,
    aws_owned_bucket_names,
    bucket_arn,
    manifest_object_arns,
    model_store_bucket_name,
    model_store_policy_statements,
    s3_endpoint_policy,
    s3_endpoint_policy_document,
)
from llmkit.config import StackConfig
from llmkit.mirror.manifest import MANIFEST_NAME
from llmkit.plan import MOCK_ACCOUNT_ID
from tests.conftest import Recorded

ACCOUNT = MOCK_ACCOUNT_ID
DATA_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/0b5c1a9e-1111-2222-3333-444455556666"
OTHER_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/99999999-1111-2222-3333-444455556666"
READER = f"arn:aws:iam::{ACCOUNT}:role/llmkit-test-model-host"
READER_2 = f"arn:aws:iam::{ACCOUNT}:role/llmkit-test-gateway-host"
PUBLISHER = f"arn:aws:iam::{ACCOUNT}:role/llmkit-mirror-publisher"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/platform-admin"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
STRANGER = "arn:aws:iam::210987654321:role/someone-else"
VPCE = "vpce-0123456789abcdef0"
OTHER_VPCE = "vpce-0fedcba9876543210"
# The mock runtime's ARN of the bucket (a real one is arn:aws:s3:::<name>).
STORE_ARN = f"arn:aws:s3:eu-central-1:{ACCOUNT}:models-bucket"


# --- a small evaluator of IAM policy statements ---------------------------------------------------
# Enough of IAM's evaluation logic for these policies: wildcard actions and resources (NotResource
# too; "*" matches across "/", as in IAM), Principal "*" / {"AWS": ...}, and the condition
# operators they use. A negated operator (StringNotEquals)
# is true when the key is missing from the request; "...IfExists" is true when it is missing;
# keys of one operator and operators of one statement are ANDed, the values of one key ORed.


@dataclass
class Request:
    action: str
    resource: str
    principal: str | None = None  # None: anonymous
    vpce: str | None = None  # None: not through a VPC endpoint
    account: str | None = None  # aws:PrincipalAccount; derived from `principal` when None
    resource_account: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def context(self) -> dict[str, str]:
        ctx = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.3", **self.headers}
        if self.principal is not None:
            ctx["aws:PrincipalArn"] = self.principal
            ctx["aws:PrincipalAccount"] = self.account or self.principal.split(":")[4]
        elif self.account is not None:
            ctx["aws:PrincipalAccount"] = self.account
        if self.vpce is not None:
            ctx["aws:SourceVpce"] = self.vpce
        if self.resource_account is not None:
            ctx["aws:ResourceAccount"] = self.resource_account
        return ctx


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, key: str, expected: list[str], ctx: dict[str, str]) -> bool:
    present = key in ctx
    if operator == "Null":
        return (not present) == (expected[0] == "true")
    if operator.endswith("IfExists") and not present:
        return True
    base = operator.removesuffix("IfExists")
    actual = ctx.get(key, "")
    if base in ("StringEquals", "ArnEquals"):
        return present and actual in expected
    if base in ("StringNotEquals", "ArnNotEquals"):
        return not present or actual not in expected
    if base in ("StringLike", "ArnLike"):
        return present and any(fnmatchcase(actual, e) for e in expected)
    if base == "Bool":
        return present and actual == expected[0]
    if base == "NumericLessThan":
        return present and float(actual) < float(expected[0])
    raise AssertionError(f"the test evaluator does not model {operator}")


def applies(statement: dict[str, Any], request: Request) -> bool:
    if not any(fnmatchcase(request.action.lower(), a.lower()) for a in _as_list(statement["Action"])):
        return False
    if "NotResource" in statement:
        if any(fnmatchcase(request.resource, r) for r in _as_list(statement["NotResource"])):
            return False
    elif not any(fnmatchcase(request.resource, r) for r in _as_list(statement["Resource"])):
        return False
    principal = statement["Principal"]
    if principal != "*" and request.principal not in _as_list(principal.get("AWS", [])):
        return False
    ctx = request.context()
    return all(
        _condition_holds(operator, key, _as_list(expected), ctx)
        for operator, block in statement.get("Condition", {}).items()
        for key, expected in block.items()
    )


def denied(statements: list[dict[str, Any]], request: Request) -> bool:
    """An explicit Deny matches (what a bucket policy of only Deny statements can decide)."""
    return any(s["Effect"] == "Deny" and applies(s, request) for s in statements)


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    """Some Allow matches and no Deny does (an endpoint policy: allow-listed or refused)."""
    return not denied(statements, request) and any(
        s["Effect"] == "Allow" and applies(s, request) for s in statements
    )


def _policy(rec: Recorded, name: str = "models") -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = json.loads(rec.named(f"{name}-policy").inputs["policy"])["Statement"]
    return statements


def _store(name: str = "models", **overrides: Any) -> ModelStore:
    values: dict[str, Any] = {
        "kms_key_arn": DATA_KEY,
        "access_log_bucket": "logs-bucket-id",
        "s3_endpoint_id": VPCE,
        "reader_role_arns": [READER, READER_2],
        "publisher_role_arns": [PUBLISHER],
        "tags": {"owner": "ml-platform"},
    }
    return ModelStore(name, ModelStoreArgs(**{**values, **overrides}))


@pytest.fixture
def store(run_pulumi: Callable[..., Recorded]) -> Recorded:
    return run_pulumi(_store)


@pytest.fixture
def statements(store: Recorded) -> list[dict[str, Any]]:
    return _policy(store)


# --- the bucket ----------------------------------------------------------------------------------


def test_sse_kms_under_the_data_key_with_the_bucket_key(store: Recorded) -> None:
    assert store.named("models").type == "llmkit:aws:ModelStore"
    encryption = store.named("models-encryption").inputs
    assert encryption["bucket"] == "models-bucket-id"
    assert encryption["rules"] == [
        {
            "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": DATA_KEY},
            "bucketKeyEnabled": True,
        }
    ]


def test_public_access_blocked_acls_off_and_versioned(store: Recorded) -> None:
    block = store.named("models-public-access-block").inputs
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[flag] is True, flag
    assert store.named("models-ownership").inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    assert store.named("models-versioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    bucket = store.named("models-bucket").inputs
    assert bucket["tags"] == {"owner": "ml-platform"}
    assert bucket["forceDestroy"] is False


def test_lifecycle_expires_noncurrent_versions_and_aborts_uploads(
    store: Recorded, run_pulumi: Callable[..., Recorded]
) -> None:
    rules = {r["id"]: r for r in store.named("models-lifecycle").inputs["rules"]}
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 30}
    assert rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"] == {
        "daysAfterInitiation": 7
    }
    assert all(r["status"] == "Enabled" for r in rules.values())
    assert "expire-current-versions" not in rules  # current models never expire
    custom = run_pulumi(lambda: _store("m2", noncurrent_days=90))
    rules = {r["id"]: r for r in custom.named("m2-lifecycle").inputs["rules"]}
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 90}


def test_access_logs_go_to_the_log_bucket(store: Recorded) -> None:
    logging = store.named("models-logging").inputs
    assert logging["bucket"] == "models-bucket-id"
    assert logging["targetBucket"] == "logs-bucket-id"
    assert logging["targetPrefix"] == "s3/models/"  # under the s3/ prefix the log bucket admits


def test_every_child_is_parented_to_the_store(store: Recorded) -> None:
    parent = store.named("models")
    children = [r for r in store.resources if r.name.startswith("models-")]
    assert {c.name for c in children} == {
        f"models-{role}"
        for role in (
            "bucket",
            "public-access-block",
            "ownership",
            "encryption",
            "versioning",
            "lifecycle",
            "policy",
            "logging",
        )
    }
    assert all(c.parent == parent.urn for c in children)


# --- the bucket policy ---------------------------------------------------------------------------


def test_policy_is_deny_only_and_names_principals_only_in_conditions(
    statements: list[dict[str, Any]],
) -> None:
    assert statements, "no policy"
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in statements)
    sids = [s["Sid"] for s in statements]
    assert len(sids) == len(set(sids))
    assert {"DenyInsecureTransport", "DenyOutdatedTls"} <= set(sids)  # SecureBucket's, kept


def test_read_deny_statements_name_the_readers_and_the_endpoint(statements: list[dict[str, Any]]) -> None:
    by_sid = {s["Sid"]: s for s in statements}
    principals = by_sid["DenyObjectReadsByOtherPrincipals"]
    assert principals["Resource"] == f"{STORE_ARN}/*"
    assert principals["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": [READER, READER_2, PUBLISHER]}}
    beyond = by_sid["DenyObjectReadsBeyondTheManifestsByNonReaders"]
    assert "Resource" not in beyond
    assert beyond["NotResource"] == [
        f"{STORE_ARN}/{MODELS_PREFIX}*/{MANIFEST_NAME}",
        f"{STORE_ARN}/{BOOTSTRAP_PREFIX}{MANIFEST_NAME}",
    ]
    assert beyond["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": [READER, READER_2]}}
    endpoint = by_sid["DenyObjectReadsOutsideTheEndpoint"]
    assert endpoint["Resource"] == f"{STORE_ARN}/*"
    assert endpoint["Condition"] == {
        "StringNotEquals": {"aws:SourceVpce": VPCE, "aws:PrincipalArn": [PUBLISHER]}
    }
    listing = by_sid["DenyListingOutsideTheEndpoint"]
    assert listing["Resource"] == STORE_ARN
    assert listing["Condition"] == {
        "StringNotEquals": {"aws:SourceVpce": VPCE, "aws:PrincipalArn": [PUBLISHER]}
    }


@pytest.mark.parametrize("action", ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes"])
@pytest.mark.parametrize(
    ("principal", "vpce", "expect_denied"),
    [
        (READER, VPCE, False),  # the fleet, through the endpoint: the one way in
        (READER_2, VPCE, False),
        (READER, None, True),  # the fleet's credentials used from outside the VPC
        (READER, OTHER_VPCE, True),  # ... or through another VPC's endpoint
        (ADMIN, VPCE, True),  # a principal that is not a reader, even inside the VPC
        (ADMIN, None, True),
        (PUBLISHER, None, True),  # publishers write, and read only the manifests (below)
        (PUBLISHER, VPCE, True),
        (ROOT, None, True),
        (STRANGER, VPCE, True),
        (None, VPCE, True),  # anonymous
        (None, None, True),
    ],
)
def test_object_reads_only_by_readers_through_the_endpoint(
    statements: list[dict[str, Any]],
    action: str,
    principal: str | None,
    vpce: str | None,
    expect_denied: bool,
) -> None:
    for key in (f"{MODELS_PREFIX}deepseek/model.gguf", f"{BOOTSTRAP_PREFIX}bundle.tar.gz", "elsewhere"):
        request = Request(action, f"{STORE_ARN}/{key}", principal, vpce)
        assert denied(statements, request) is expect_denied, (principal, vpce, key)


@pytest.mark.parametrize("action", ["s3:ListBucket", "s3:ListBucketVersions"])
@pytest.mark.parametrize(
    ("principal", "vpce", "expect_denied"),
    [
        (READER, VPCE, False),
        (READER, None, True),
        (PUBLISHER, None, False),  # `llmkit mirror push` compares with what is there, from outside
        (PUBLISHER, VPCE, False),
        (ADMIN, None, True),
        (ADMIN, VPCE, True),
        (STRANGER, VPCE, True),
        (None, VPCE, True),
    ],
)
def test_listing_by_readers_through_the_endpoint_and_by_publishers(
    statements: list[dict[str, Any]],
    action: str,
    principal: str | None,
    vpce: str | None,
    expect_denied: bool,
) -> None:
    assert denied(statements, Request(action, STORE_ARN, principal, vpce)) is expect_denied


@pytest.mark.parametrize(
    "action",
    ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging", "s3:RestoreObject"],
)
@pytest.mark.parametrize(
    ("principal", "vpce", "expect_denied"),
    [
        (PUBLISHER, None, False),  # the publisher, from outside the VPC
        (READER, VPCE, True),  # a host never writes
        (READER, None, True),
        (ADMIN, None, True),  # with publishers named, only they write
        (STRANGER, None, True),
    ],
)
def test_writes_only_by_publishers(
    statements: list[dict[str, Any]],
    action: str,
    principal: str | None,
    vpce: str | None,
    expect_denied: bool,
) -> None:
    assert (
        denied(statements, Request(action, f"{STORE_ARN}/{MODELS_PREFIX}m.gguf", principal, vpce))
        is expect_denied
    )


def test_without_publishers_admins_write_and_readers_still_cannot(
    run_pulumi: Callable[..., Recorded],
) -> None:
    statements = _policy(run_pulumi(lambda: _store(publisher_role_arns=())))
    objects = f"{STORE_ARN}/{MODELS_PREFIX}m.gguf"
    assert not denied(statements, Request("s3:PutObject", objects, ADMIN))
    assert denied(statements, Request("s3:PutObject", objects, READER, VPCE))
    assert denied(statements, Request("s3:DeleteObject", objects, READER, VPCE))
    # Reads stay limited; listing is the readers' alone, through the endpoint.
    assert denied(statements, Request("s3:GetObject", objects, ADMIN))
    assert denied(statements, Request("s3:ListBucket", STORE_ARN, ADMIN))
    assert denied(statements, Request("s3:ListBucket", STORE_ARN, READER))
    assert not denied(statements, Request("s3:ListBucket", STORE_ARN, READER, VPCE))
    listing = next(s for s in statements if s["Sid"] == "DenyListingOutsideTheEndpoint")
    assert listing["Condition"] == {"StringNotEquals": {"aws:SourceVpce": VPCE}}
    assert "DenyWritesByOtherPrincipals" not in {s["Sid"] for s in statements}


@pytest.mark.parametrize(
    ("headers", "expect_denied"),
    [
        ({}, False),  # the bucket default: the data key
        (
            {
                "s3:x-amz-server-side-encryption": "aws:kms",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": DATA_KEY,
            },
            False,
        ),
        ({"s3:x-amz-server-side-encryption": "AES256"}, True),
        (
            {
                "s3:x-amz-server-side-encryption": "aws:kms:dsse",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": DATA_KEY,
            },
            True,
        ),
        ({"s3:x-amz-server-side-encryption": "aws:kms"}, True),  # no key id: the AWS managed aws/s3 key
        (
            {
                "s3:x-amz-server-side-encryption": "aws:kms",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": OTHER_KEY,
            },
            True,
        ),
    ],
)
def test_uploads_are_encrypted_under_the_data_key(
    statements: list[dict[str, Any]], headers: dict[str, str], expect_denied: bool
) -> None:
    request = Request("s3:PutObject", f"{STORE_ARN}/{MODELS_PREFIX}m.gguf", PUBLISHER, headers=headers)
    assert denied(statements, request) is expect_denied
    # A multipart part carries no encryption headers; it is not refused for that.
    assert not denied(statements, Request("s3:PutObject", f"{STORE_ARN}/{MODELS_PREFIX}m.gguf", PUBLISHER))


@pytest.mark.parametrize(
    "action",
    [
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:GetBucketPolicy",
        "s3:PutBucketVersioning",
        "s3:PutLifecycleConfiguration",
        "s3:PutEncryptionConfiguration",
        "s3:PutBucketLogging",
        "s3:GetBucketLocation",
    ],
)
@pytest.mark.parametrize("principal", [ADMIN, ROOT, PUBLISHER])
def test_administration_is_never_locked_out(
    statements: list[dict[str, Any]], action: str, principal: str
) -> None:
    assert not denied(statements, Request(action, STORE_ARN, principal))  # from outside the VPC


def test_tls_is_still_required(statements: list[dict[str, Any]]) -> None:
    plain = Request(
        "s3:GetObject",
        f"{STORE_ARN}/{MODELS_PREFIX}m",
        READER,
        VPCE,
        headers={"aws:SecureTransport": "false"},
    )
    assert denied(statements, plain)
    old = Request(
        "s3:GetObject", f"{STORE_ARN}/{MODELS_PREFIX}m", READER, VPCE, headers={"s3:TlsVersion": "1.1"}
    )
    assert denied(statements, old)


def test_reader_roles_may_be_outputs_of_roles_created_elsewhere(run_pulumi: Callable[..., Recorded]) -> None:
    def program() -> None:
        role = aws.iam.Role("fleet-role", assume_role_policy="{}")
        other = aws.iam.Role("gateway-role", assume_role_policy="{}")
        _store("list-of-outputs", reader_role_arns=[role.arn, other.arn], publisher_role_arns=[])
        _store(
            "output-of-list", reader_role_arns=pulumi.Output.all(role.arn, other.arn), publisher_role_arns=[]
        )

    rec = run_pulumi(program)
    mock_arns = [f"arn:aws:iam:eu-central-1:{ACCOUNT}:{name}" for name in ("fleet-role", "gateway-role")]
    for name in ("list-of-outputs", "output-of-list"):
        reads = next(s for s in _policy(rec, name) if s["Sid"] == "DenyObjectReadsByOtherPrincipals")
        assert reads["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": mock_arns}}, name
        assert rec.named("fleet-role").urn in rec.named(f"{name}-policy").dependencies, name


def test_outputs_name_the_layout(run_pulumi: Callable[..., Recorded]) -> None:
    def program() -> None:
        s = _store()
        pulumi.export("bucket_name", s.bucket_name)
        pulumi.export("arn", s.arn)
        pulumi.export("models", s.models_arn_prefix)
        pulumi.export("bootstrap", s.bootstrap_arn_prefix)
        pulumi.export("reads", s.read_object_arns)
        pulumi.export("key", s.kms_key_arn)

    out = run_pulumi(program).outputs
    assert out["bucket_name"] == "models-bucket-id"
    assert out["arn"] == STORE_ARN
    assert out["models"] == f"{STORE_ARN}/models/"
    assert out["bootstrap"] == f"{STORE_ARN}/bootstrap/"
    assert out["reads"] == [f"{STORE_ARN}/models/*", f"{STORE_ARN}/bootstrap/*"]
    assert out["key"] == DATA_KEY
    assert (MODELS_PREFIX, BOOTSTRAP_PREFIX) == ("models/", "bootstrap/")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reader_role_arns": []}, "at least one"),
        ({"reader_role_arns": READER}, "single string"),
        ({"reader_role_arns": [f"arn:aws:iam::{ACCOUNT}:role/fleet-*"]}, "wildcard"),
        ({"reader_role_arns": [f"arn:aws:sts::{ACCOUNT}:assumed-role/fleet/i-0abc"]}, "assumed-role"),
        ({"reader_role_arns": ["llmkit-fleet"]}, "not an IAM role"),
        ({"publisher_role_arns": ["arn:aws:s3:::bucket"]}, "not an IAM role"),
        ({"publisher_role_arns": [READER]}, "both a reader and a publisher"),
        ({"noncurrent_days": 0}, "noncurrent_days"),
        ({"kms_key_arn": ""}, "kms_key_arn"),
    ],
)
def test_bad_args_are_refused(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {
        "kms_key_arn": DATA_KEY,
        "access_log_bucket": "logs",
        "s3_endpoint_id": VPCE,
        "reader_role_arns": [READER],
    }
    with pytest.raises(ValueError, match=message):
        ModelStoreArgs(**{**values, **overrides})


def test_readers_resolved_later_are_checked_when_the_policy_is_built() -> None:
    # What ModelStore runs once an Output of readers resolves (an Output cannot be checked earlier).
    base: dict[str, Any] = {"bucket_arn": STORE_ARN, "s3_endpoint_id": VPCE, "kms_key_arn": DATA_KEY}
    with pytest.raises(ValueError, match="at least one"):
        model_store_policy_statements(**base, reader_role_arns=[])
    with pytest.raises(ValueError, match="both a reader and a publisher"):
        model_store_policy_statements(**base, reader_role_arns=[READER], publisher_role_arns=[READER])
    with pytest.raises(ValueError, match="wildcard"):
        model_store_policy_statements(**base, reader_role_arns=["arn:aws:iam::1:role/*"])


# --- publishers read the published manifests, and nothing else ------------------------------------

READ_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectTagging"]
MANIFEST_KEYS = [f"{MODELS_PREFIX}x/{MANIFEST_NAME}", f"{BOOTSTRAP_PREFIX}{MANIFEST_NAME}"]
OTHER_KEYS = [
    f"{MODELS_PREFIX}x/model.gguf",
    f"{BOOTSTRAP_PREFIX}wheels/a.whl",
    f"{BOOTSTRAP_PREFIX}bundle.tar.gz",
    f"{MODELS_PREFIX}{MANIFEST_NAME}",  # not under a model's prefix
    f"{MODELS_PREFIX}x/{MANIFEST_NAME}.bak",
    f"{BOOTSTRAP_PREFIX}wheels/{MANIFEST_NAME}",  # only the bundle's own manifest
    MANIFEST_NAME,
    f"elsewhere/{MANIFEST_NAME}",
]
VPCES = [VPCE, OTHER_VPCE, None]


def _plain_statements(publishers: list[str]) -> list[dict[str, Any]]:
    return model_store_policy_statements(
        bucket_arn=STORE_ARN,
        s3_endpoint_id=VPCE,
        kms_key_arn=DATA_KEY,
        reader_role_arns=[READER, READER_2],
        publisher_role_arns=publishers,
    )


def test_the_manifest_keys_are_the_mirror_layout() -> None:
    assert manifest_object_arns(STORE_ARN) == [
        f"{STORE_ARN}/models/*/manifest.json",
        f"{STORE_ARN}/bootstrap/manifest.json",
    ]


@pytest.mark.parametrize("action", READ_ACTIONS)
@pytest.mark.parametrize("vpce", VPCES)
@pytest.mark.parametrize("key", MANIFEST_KEYS)
def test_publishers_read_the_manifests_from_anywhere(
    statements: list[dict[str, Any]], action: str, vpce: str | None, key: str
) -> None:
    # `llmkit mirror push` compares with the published manifest, from outside the VPC.
    assert not denied(statements, Request(action, f"{STORE_ARN}/{key}", PUBLISHER, vpce))


def test_a_nested_manifest_key_matches_too(statements: list[dict[str, Any]]) -> None:
    # "*" in an S3 ARN matches across "/" (documented as acceptable).
    nested = Request("s3:GetObject", f"{STORE_ARN}/{MODELS_PREFIX}a/b/{MANIFEST_NAME}", PUBLISHER)
    assert not denied(statements, nested)


@pytest.mark.parametrize("action", READ_ACTIONS)
@pytest.mark.parametrize("vpce", VPCES)
@pytest.mark.parametrize("key", OTHER_KEYS)
def test_publishers_read_nothing_but_the_manifests(
    statements: list[dict[str, Any]], action: str, vpce: str | None, key: str
) -> None:
    assert denied(statements, Request(action, f"{STORE_ARN}/{key}", PUBLISHER, vpce)), (key, vpce)


@pytest.mark.parametrize("action", READ_ACTIONS)
@pytest.mark.parametrize("key", MANIFEST_KEYS + OTHER_KEYS)
def test_readers_read_everything_through_the_endpoint_only(
    statements: list[dict[str, Any]], action: str, key: str
) -> None:
    for reader in (READER, READER_2):
        assert not denied(statements, Request(action, f"{STORE_ARN}/{key}", reader, VPCE))
        assert denied(statements, Request(action, f"{STORE_ARN}/{key}", reader, OTHER_VPCE))
        assert denied(statements, Request(action, f"{STORE_ARN}/{key}", reader, None))


@pytest.mark.parametrize("action", READ_ACTIONS)
@pytest.mark.parametrize("principal", [ADMIN, ROOT, STRANGER, None])
@pytest.mark.parametrize("key", MANIFEST_KEYS + OTHER_KEYS)
def test_other_principals_read_nothing_not_even_the_manifests(
    statements: list[dict[str, Any]], action: str, principal: str | None, key: str
) -> None:
    for vpce in VPCES:
        assert denied(statements, Request(action, f"{STORE_ARN}/{key}", principal, vpce)), (principal, vpce)


def test_without_publishers_reads_are_exactly_as_strict_as_before() -> None:
    statements = _plain_statements([])
    reads = [s for s in statements if "s3:GetObject*" in s["Action"]]
    # The object-read statements as they were before publishers could read the manifests.
    assert reads == [
        {
            "Sid": "DenyObjectReadsByOtherPrincipals",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:GetObject*"],
            "Resource": f"{STORE_ARN}/*",
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": [READER, READER_2]}},
        },
        {
            "Sid": "DenyObjectReadsOutsideTheEndpoint",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:GetObject*"],
            "Resource": f"{STORE_ARN}/*",
            "Condition": {"StringNotEquals": {"aws:SourceVpce": VPCE}},
        },
    ]
    assert not any("NotResource" in s for s in statements)
    # The decision matrix: readers through the endpoint, and no one else (manifests included; a
    # would-be publisher that is not named is just another principal).
    for action in READ_ACTIONS:
        for key in MANIFEST_KEYS + OTHER_KEYS:
            for principal in (READER, READER_2, PUBLISHER, ADMIN, ROOT, STRANGER, None):
                for vpce in VPCES:
                    request = Request(action, f"{STORE_ARN}/{key}", principal, vpce)
                    expected = principal in (READER, READER_2) and vpce == VPCE
                    assert denied(statements, request) is not expected, (action, key, principal, vpce)


def test_publishers_change_no_one_elses_reads_or_listing() -> None:
    # (Writes do change: with publishers named, only they write; see test_writes_only_by_publishers.)
    without, with_publishers = _plain_statements([]), _plain_statements([PUBLISHER])
    for action in [*READ_ACTIONS, "s3:ListBucket", "s3:ListBucketVersions"]:
        for key in MANIFEST_KEYS + OTHER_KEYS:
            resource = STORE_ARN if action.startswith("s3:ListBucket") else f"{STORE_ARN}/{key}"
            for principal in (READER, READER_2, ADMIN, ROOT, STRANGER, None):
                for vpce in VPCES:
                    request = Request(action, resource, principal, vpce)
                    decision = denied(with_publishers, request)
                    assert decision is denied(without, request), (action, key, principal, vpce)


# --- naming --------------------------------------------------------------------------------------


def test_bucket_name_is_deterministic(run_pulumi: Callable[..., Recorded]) -> None:
    name = run_pulumi(
        lambda: pulumi.export("value", model_store_bucket_name("prod", "eu-central-1", ACCOUNT))
    ).outputs["value"]
    assert name == f"llmkit-prod-models-{ACCOUNT}-eu-central-1"
    arn = run_pulumi(lambda: pulumi.export("value", bucket_arn(name))).outputs["value"]
    assert arn == f"arn:aws:s3:::{name}"


@pytest.mark.parametrize(
    ("stack", "region", "message"),
    [
        ("Prod", "eu-central-1", "bucket name"),
        ("prod_1", "eu-central-1", "bucket name"),
        ("a-very-long-stack-name-for-a-bucket", "ap-southeast-4", "over 63"),
        ("prod", "Frankfurt", "region"),
    ],
)
def test_bad_bucket_names_are_refused(stack: str, region: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_store_bucket_name(stack, region, ACCOUNT)


def test_from_config_names_the_bucket_and_tags_it(
    stack_config: StackConfig, run_pulumi: Callable[..., Recorded]
) -> None:
    def program() -> None:
        args = ModelStoreArgs.from_config(
            stack_config,
            account_id=ACCOUNT,
            kms_key_arn=DATA_KEY,
            access_log_bucket="logs",
            s3_endpoint_id=VPCE,
            reader_role_arns=[READER],
        )
        ModelStore("models", args)

    rec = run_pulumi(program, stack=stack_config.stack or "test")
    bucket = rec.named("models-bucket").inputs
    stack = stack_config.stack or "test"
    assert bucket["bucket"] == f"llmkit-{stack}-models-{ACCOUNT}-{stack_config.region}"
    assert bucket["tags"] == dict(stack_config.tags)


# --- the S3 gateway endpoint's policy ------------------------------------------------------------

REGION = "eu-central-1"
NAMED_STORE = f"arn:aws:s3:::llmkit-prod-models-{ACCOUNT}-{REGION}"
ECR_ACCOUNT = "605812595337"  # some AWS-owned account that presigns layer URLs


@pytest.fixture
def endpoint() -> list[dict[str, Any]]:
    document = s3_endpoint_policy_document(region=REGION, model_store_arn=NAMED_STORE, account_id=ACCOUNT)
    assert document["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = document["Statement"]
    return statements


def test_endpoint_policy_has_no_wildcard_action_or_resource(endpoint: list[dict[str, Any]]) -> None:
    assert all(s["Effect"] == "Allow" for s in endpoint)
    for statement in endpoint:
        for action in _as_list(statement["Action"]):
            assert "*" not in action and action.startswith("s3:"), action
        for resource in _as_list(statement["Resource"]):
            bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
            assert resource.startswith("arn:aws:s3:::") and "*" not in bucket and "?" not in bucket, resource
            assert "*" not in key.removesuffix("*"), resource  # only a trailing object wildcard
        assert "NotAction" not in statement and "NotResource" not in statement


def test_endpoint_policy_names_exactly_the_documented_buckets(endpoint: list[dict[str, Any]]) -> None:
    by_sid = {s["Sid"]: s for s in endpoint}
    assert set(by_sid) == {"ReadModelStore", "ListModelStore", "EcrImageLayers", "SystemsManagerBuckets"}
    assert by_sid["ReadModelStore"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert by_sid["ReadModelStore"]["Resource"] == [f"{NAMED_STORE}/models/*", f"{NAMED_STORE}/bootstrap/*"]
    assert by_sid["ListModelStore"]["Action"] == ["s3:ListBucket"]
    assert by_sid["ListModelStore"]["Resource"] == NAMED_STORE
    own = {"StringEquals": {"aws:PrincipalAccount": ACCOUNT, "aws:ResourceAccount": ACCOUNT}}
    assert by_sid["ReadModelStore"]["Condition"] == own
    assert by_sid["ListModelStore"]["Condition"] == own
    assert by_sid["EcrImageLayers"]["Resource"] == ["arn:aws:s3:::prod-eu-central-1-starport-layer-bucket/*"]
    assert sorted(by_sid["SystemsManagerBuckets"]["Resource"]) == sorted(
        f"arn:aws:s3:::{b}/*"
        for b in (
            "amazon-ssm-eu-central-1",
            "aws-ssm-eu-central-1",
            "aws-ssm-document-attachments-eu-central-1",
            "eu-central-1-birdwatcher-prod",
            "patch-baseline-snapshot-eu-central-1",
            "aws-patch-manager-eu-central-1-9163fdaaf",
        )
    )
    for owned in ("EcrImageLayers", "SystemsManagerBuckets"):
        assert by_sid[owned]["Action"] == "s3:GetObject"
        assert "Condition" not in by_sid[owned]  # presigned by ECR / unsigned agent downloads


@pytest.mark.parametrize(
    ("request_", "expect_allowed"),
    [
        (Request("s3:GetObject", f"{NAMED_STORE}/models/m.gguf", READER, resource_account=ACCOUNT), True),
        (
            Request(
                "s3:GetObjectVersion", f"{NAMED_STORE}/bootstrap/b.tgz", READER, resource_account=ACCOUNT
            ),
            True,
        ),
        (Request("s3:ListBucket", NAMED_STORE, READER, resource_account=ACCOUNT), True),
        # the model store, but writing, or outside the two prefixes
        (Request("s3:PutObject", f"{NAMED_STORE}/models/m.gguf", READER, resource_account=ACCOUNT), False),
        (Request("s3:DeleteObject", f"{NAMED_STORE}/models/m.gguf", READER, resource_account=ACCOUNT), False),
        (Request("s3:GetObject", f"{NAMED_STORE}/other/x", READER, resource_account=ACCOUNT), False),
        # credentials of another account (a stolen key from elsewhere), or a squatted bucket of the name
        (Request("s3:GetObject", f"{NAMED_STORE}/models/m.gguf", STRANGER, resource_account=ACCOUNT), False),
        (
            Request("s3:GetObject", f"{NAMED_STORE}/models/m.gguf", READER, resource_account="210987654321"),
            False,
        ),
        (Request("s3:GetObject", f"{NAMED_STORE}/models/m.gguf", None, resource_account=ACCOUNT), False),
        # any other bucket: the way out of the VPC stays shut
        (Request("s3:GetObject", "arn:aws:s3:::attacker-bucket/x", READER), False),
        (Request("s3:PutObject", "arn:aws:s3:::attacker-bucket/x", READER), False),
        (Request("s3:GetObject", "arn:aws:s3:::eu-central-1-birdwatcher-prod-evil/x", READER), False),
        (Request("s3:GetObject", "arn:aws:s3:::prod-eu-west-1-starport-layer-bucket/x", READER), False),
        # AWS-owned buckets: read by whoever signs (ECR presigns; the agent may not sign)
        (
            Request(
                "s3:GetObject",
                "arn:aws:s3:::prod-eu-central-1-starport-layer-bucket/sha256/abc",
                f"arn:aws:iam::{ECR_ACCOUNT}:role/ecr",
            ),
            True,
        ),
        (Request("s3:GetObject", "arn:aws:s3:::amazon-ssm-eu-central-1/latest/VERSION", None), True),
        (Request("s3:PutObject", "arn:aws:s3:::amazon-ssm-eu-central-1/x", READER), False),
        (Request("s3:ListBucket", "arn:aws:s3:::amazon-ssm-eu-central-1", READER), False),
    ],
)
def test_endpoint_allows_only_what_the_tiers_need(
    endpoint: list[dict[str, Any]], request_: Request, expect_allowed: bool
) -> None:
    assert allowed(endpoint, request_) is expect_allowed


@pytest.mark.parametrize(
    ("region", "present", "absent"),
    [
        ("eu-south-1", ["aws-ssm-distributor-file-eu-south-1"], ["eu-south-1-birdwatcher-prod"]),
        ("af-south-1", ["patch-baseline-snapshot-af-south-1-tbxdb5b9"], ["af-south-1-birdwatcher-prod"]),
        (
            "me-south-1",
            ["patch-baseline-snapshot-me-south-1-uduvl7q8", "aws-patch-manager-me-south-1-a53fc9dce"],
            [],
        ),
        ("us-east-1", ["us-east-1-birdwatcher-prod", "patch-baseline-snapshot-us-east-1"], []),
        # A region AWS has not documented a patching bucket for: no guessed name.
        ("mx-central-1", ["amazon-ssm-mx-central-1"], ["aws-patch-manager-mx-central-1"]),
    ],
)
def test_aws_owned_buckets_follow_the_documented_regional_exceptions(
    region: str, present: list[str], absent: list[str]
) -> None:
    names = aws_owned_bucket_names(region)
    assert names["ecr"] == [f"prod-{region}-starport-layer-bucket"]
    for name in present:
        assert name in names["ssm"]
    for name in absent:
        assert not any(n.startswith(name) for n in names["ssm"])
    for unneeded in ("aws-windows-downloads", "aws-patchmanager-macos", "amazon-ssm-packages"):
        assert not any(n.startswith(unneeded) for n in names["ssm"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"partition": "aws-cn"}, "partition"),
        ({"account_id": "12345"}, "account_id"),
        ({"region": "europe"}, "region"),
    ],
)
def test_endpoint_policy_bad_args_are_refused(kwargs: dict[str, str], message: str) -> None:
    values = {"region": REGION, "model_store_arn": NAMED_STORE, "account_id": ACCOUNT, **kwargs}
    with pytest.raises(ValueError, match=message):
        s3_endpoint_policy_document(**values)


def test_endpoint_and_store_wire_up_without_a_cycle(run_pulumi: Callable[..., Recorded]) -> None:
    """The way __main__ wires them: endpoint first (naming the store by name), then the store."""

    def program() -> None:
        account = aws.get_caller_identity_output().account_id
        name = model_store_bucket_name("prod", REGION, account)
        gateway = aws.ec2.VpcEndpoint(
            "vpce-s3",
            vpc_id="vpc-1",
            service_name=f"com.amazonaws.{REGION}.s3",
            vpc_endpoint_type="Gateway",
            policy=s3_endpoint_policy(region=REGION, model_store_arn=bucket_arn(name), account_id=account),
        )
        _store(bucket_name=name, s3_endpoint_id=gateway.id)

    rec = run_pulumi(program, region=REGION)
    gateway = rec.named("vpce-s3")
    store_urns = {r.urn for r in rec.resources if r.name.startswith("models")}
    assert not store_urns & set(gateway.dependencies)  # the endpoint needs nothing of the store
    assert gateway.urn in rec.named("models-policy").dependencies
    name = f"llmkit-prod-models-{ACCOUNT}-{REGION}"
    assert rec.named("models-bucket").inputs["bucket"] == name
    policy = json.loads(gateway.inputs["policy"])
    reads = next(s for s in policy["Statement"] if s["Sid"] == "ReadModelStore")
    assert reads["Resource"][0] == f"arn:aws:s3:::{name}/models/*"
    endpoint_deny = next(s for s in _policy(rec) if s["Sid"] == "DenyObjectReadsOutsideTheEndpoint")
    assert endpoint_deny["Condition"] == {
        "StringNotEquals": {"aws:SourceVpce": "vpce-s3-id", "aws:PrincipalArn": [PUBLISHER]}
    }
