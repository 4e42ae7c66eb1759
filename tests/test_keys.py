"""KmsKeys: three rotating customer-managed keys with least-privilege key policies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from components.keys import ADMIN_ACTIONS, PURPOSES, KmsKeys, KmsKeysArgs
from llmkit.config import load_stack
from llmkit.plan import MOCK_ACCOUNT_ID
from tests.conftest import ROOT, Recorded

KEY = "aws:kms/key:Key"
ALIAS = "aws:kms/alias:Alias"
ROOT_ARN = f"arn:aws:iam::{MOCK_ACCOUNT_ID}:root"


def _args(**overrides: Any) -> KmsKeysArgs:
    values: dict[str, Any] = {
        "rotation_period_days": 180,
        "deletion_window_days": 14,
        "region": "eu-central-1",
    }
    return KmsKeysArgs(**{**values, **overrides})


@pytest.fixture
def keys(run_pulumi: Callable[..., Recorded]) -> Recorded:
    return run_pulumi(lambda: KmsKeys("keys", _args()), stack="prod")


def _policy(rec: Recorded, purpose: str) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(rec.named(f"keys-{purpose}").inputs["policy"])
    return policy


def _principals(statement: dict[str, Any]) -> list[str]:
    principal = statement["Principal"]
    assert principal != "*" and isinstance(principal, dict), statement
    found = []
    for value in principal.values():
        found += value if isinstance(value, list) else [value]
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_three_rotating_symmetric_keys_with_configured_periods(keys: Recorded) -> None:
    assert sorted(r.name for r in keys.of_type(KEY)) == ["keys-data", "keys-logs", "keys-secrets"]
    for key in keys.of_type(KEY):
        assert key.inputs["enableKeyRotation"] is True
        assert key.inputs["rotationPeriodInDays"] == 180
        assert key.inputs["deletionWindowInDays"] == 14
        assert key.inputs["customerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
        assert key.inputs["keyUsage"] == "ENCRYPT_DECRYPT"
        assert "bypassPolicyLockoutSafetyCheck" not in key.inputs


def test_aliases_name_stack_and_purpose_and_target_their_key(keys: Recorded) -> None:
    aliases = {a.name: a.inputs for a in keys.of_type(ALIAS)}
    assert {a["name"] for a in aliases.values()} == {f"alias/llmkit-prod-{p}" for p in PURPOSES}
    for purpose in PURPOSES:
        alias = aliases[f"keys-{purpose}-alias"]
        assert alias["name"] == f"alias/llmkit-prod-{purpose}"
        assert alias["targetKeyId"].endswith(f":keys-{purpose}")  # the mock ARN of that key


@pytest.mark.parametrize("purpose", PURPOSES)
def test_key_policy_is_least_privilege(keys: Recorded, purpose: str) -> None:
    policy = _policy(keys, purpose)
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "*" not in _principals(statement)
        assert "kms:*" not in _actions(statement)
    admin = next(s for s in policy["Statement"] if s["Sid"] == "KeyAdministration")
    assert admin["Principal"] == {"AWS": ROOT_ARN}
    assert admin["Action"] == ADMIN_ACTIONS
    assert not any(
        a.startswith(("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")) for a in admin["Action"]
    )
    # Use by the account's IAM principals only, and only through AWS services.
    for statement in policy["Statement"]:
        if ROOT_ARN in _principals(statement) and statement is not admin:
            condition = statement["Condition"]["StringEquals"]
            assert condition["kms:CallerAccount"] == MOCK_ACCOUNT_ID
            assert condition["kms:ViaService"]
            assert all(s.endswith(".eu-central-1.amazonaws.com") for s in condition["kms:ViaService"])


def test_via_services_per_purpose(keys: Recorded) -> None:
    def via(purpose: str) -> list[str]:
        use = next(s for s in _policy(keys, purpose)["Statement"] if "kms:Decrypt" in _actions(s))
        services: list[str] = use["Condition"]["StringEquals"]["kms:ViaService"]
        return services

    assert via("data") == ["s3.eu-central-1.amazonaws.com", "ec2.eu-central-1.amazonaws.com"]
    assert via("logs") == ["logs.eu-central-1.amazonaws.com", "s3.eu-central-1.amazonaws.com"]
    assert via("secrets") == [
        "secretsmanager.eu-central-1.amazonaws.com",
        "sns.eu-central-1.amazonaws.com",
    ]


def test_data_key_admits_rds_only_when_asked(run_pulumi: Callable[..., Recorded]) -> None:
    """The gateway's PostgreSQL (RDS) encrypts with the data key: use and grants through RDS too."""
    rec = run_pulumi(lambda: KmsKeys("keys", _args(rds=True)), stack="prod")
    rds = "rds.eu-central-1.amazonaws.com"
    for statement in _policy(rec, "data")["Statement"]:
        if ROOT_ARN in _principals(statement) and statement["Sid"] != "KeyAdministration":
            assert statement["Condition"]["StringEquals"]["kms:ViaService"] == [
                "s3.eu-central-1.amazonaws.com",
                "ec2.eu-central-1.amazonaws.com",
                rds,
            ]
    for purpose in ("logs", "secrets"):
        assert rds not in json.dumps(_policy(rec, purpose))
    without = run_pulumi(lambda: KmsKeys("keys", _args()), stack="prod")
    assert rds not in json.dumps([_policy(without, p) for p in PURPOSES])
    # A stack asks for it exactly when it has a gateway.
    assert KmsKeysArgs.from_config(load_stack("prod", ROOT)).rds is True
    assert KmsKeysArgs.from_config(load_stack("dev", ROOT)).rds is False


def test_grants_only_for_aws_resources(keys: Recorded) -> None:
    for purpose in PURPOSES:
        grants = [s for s in _policy(keys, purpose)["Statement"] if "kms:CreateGrant" in _actions(s)]
        assert grants
        for statement in grants:
            assert statement["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}


def test_logs_key_admits_cloudwatch_logs_and_cloudtrail_by_encryption_context(keys: Recorded) -> None:
    statements = _policy(keys, "logs")["Statement"]
    logs = next(s for s in statements if s["Principal"] == {"Service": "logs.eu-central-1.amazonaws.com"})
    assert logs["Condition"] == {
        "ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:eu-central-1:{MOCK_ACCOUNT_ID}:*"}
    }
    assert "kms:GenerateDataKey*" in logs["Action"]
    trail = [s for s in statements if s["Principal"] == {"Service": "cloudtrail.amazonaws.com"}]
    encrypt = next(s for s in trail if "kms:GenerateDataKey*" in _actions(s))
    assert encrypt["Condition"]["StringLike"] == {
        "kms:EncryptionContext:aws:cloudtrail:arn": f"arn:aws:cloudtrail:*:{MOCK_ACCOUNT_ID}:trail/*",
        "aws:SourceArn": f"arn:aws:cloudtrail:eu-central-1:{MOCK_ACCOUNT_ID}:trail/*",
    }
    assert encrypt["Condition"]["StringEquals"] == {"aws:SourceAccount": MOCK_ACCOUNT_ID}
    for statement in trail:
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": MOCK_ACCOUNT_ID}
    assert not any("delivery.logs.amazonaws.com" in _principals(s) for s in statements)


def _services(rec: Recorded, purpose: str) -> set[str]:
    return {
        s["Principal"]["Service"] for s in _policy(rec, purpose)["Statement"] if "Service" in s["Principal"]
    }


def test_service_principals_per_key(keys: Recorded) -> None:
    assert _services(keys, "data") == set()
    assert _services(keys, "logs") == {"logs.eu-central-1.amazonaws.com", "cloudtrail.amazonaws.com"}
    assert _services(keys, "secrets") == {"budgets.amazonaws.com", "cloudwatch.amazonaws.com"}


def test_secrets_key_lets_budgets_and_alarms_publish_to_the_encrypted_topic(keys: Recorded) -> None:
    statements = _policy(keys, "secrets")["Statement"]
    by_service = {s["Principal"]["Service"]: s for s in statements if "Service" in s["Principal"]}
    expected_source = {
        "budgets.amazonaws.com": f"arn:aws:budgets::{MOCK_ACCOUNT_ID}:*",
        "cloudwatch.amazonaws.com": f"arn:aws:cloudwatch:eu-central-1:{MOCK_ACCOUNT_ID}:alarm:*",
    }
    for service, source_arn in expected_source.items():
        statement = by_service[service]
        assert statement["Effect"] == "Allow"
        # Only what SNS needs from a publisher: no Encrypt, no ReEncrypt, no grants, no admin.
        assert sorted(_actions(statement)) == ["kms:Decrypt", "kms:GenerateDataKey*"]
        assert statement["Resource"] == "*"
        # On behalf of this account's budgets / this region's alarms only (confused deputy).
        assert statement["Condition"] == {
            "StringEquals": {"aws:SourceAccount": MOCK_ACCOUNT_ID},
            "ArnLike": {"aws:SourceArn": source_arn},
        }
    # The other keys never admit the alert publishers.
    for purpose in ("data", "logs"):
        assert not _services(keys, purpose) & set(expected_source)


def test_explicit_account_admins_and_service_linked_roles(run_pulumi: Callable[..., Recorded]) -> None:
    admin = "arn:aws:iam::210987654321:role/kms-admin"
    slr = (
        "arn:aws:iam::210987654321:role/aws-service-role/autoscaling.amazonaws.com/"
        + "AWSServiceRoleForAutoScaling"
    )
    rec = run_pulumi(
        lambda: KmsKeys(
            "keys",
            _args(account_id="210987654321", admin_role_arns=[admin], service_linked_role_arns=[slr]),
        )
    )
    data = json.loads(rec.named("keys-data").inputs["policy"])["Statement"]
    administration = next(s for s in data if s["Sid"] == "KeyAdministration")
    assert administration["Principal"] == {"AWS": ["arn:aws:iam::210987654321:root", admin]}
    slr_statements = [s for s in data if slr in _principals(s)]
    assert {a for s in slr_statements for a in _actions(s)} >= {"kms:Decrypt", "kms:CreateGrant"}
    grant = next(s for s in slr_statements if "kms:CreateGrant" in _actions(s))
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    secrets = json.loads(rec.named("keys-secrets").inputs["policy"])["Statement"]
    assert not any(slr in _principals(s) for s in secrets)
    # The alert publishers are limited to the given account, not the caller's.
    publishers = [s for s in secrets if "Service" in s["Principal"]]
    assert len(publishers) == 2
    for statement in publishers:
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "210987654321"}
        assert ":210987654321:" in statement["Condition"]["ArnLike"]["aws:SourceArn"]


def test_children_are_parented_and_outputs_registered(run_pulumi: Callable[..., Recorded]) -> None:
    exported: dict[str, Any] = {}

    def program() -> None:
        import pulumi

        keys = KmsKeys("keys", _args())
        assert set(keys.arns) == set(PURPOSES)
        assert keys.data is keys.keys["data"] and keys.logs is keys.keys["logs"]
        for purpose, arn in keys.arns.items():
            pulumi.export(purpose, arn)
        exported["ok"] = True

    rec = run_pulumi(program)
    assert exported["ok"]
    component = rec.named("keys")
    assert component.type == "llmkit:aws:KmsKeys"
    children = [r for r in rec.resources if r.custom]
    assert len(children) == 6
    for child in children:
        assert child.parent == component.urn
    assert rec.outputs == {p: f"arn:aws:kms:eu-central-1:{MOCK_ACCOUNT_ID}:keys-{p}" for p in PURPOSES}


def test_args_from_stack_config() -> None:
    cfg = load_stack("prod", ROOT)
    args = KmsKeysArgs.from_config(cfg)
    assert args.rotation_period_days == cfg.kms.rotation_period_days
    assert args.deletion_window_days == cfg.kms.deletion_window_days
    assert args.region == cfg.region
    assert dict(args.tags) == cfg.tags
    assert args.account_id is None
