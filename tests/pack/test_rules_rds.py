"""Database rules: RDS storage encryption under a customer key, no public access, backup retention."""

from __future__ import annotations

from typing import Any

import pytest

from llmkit.policy import UNKNOWN, Resource
from policies.rules.aws_rds_instance_configure_backup_retention import RULE as BACKUPS
from policies.rules.aws_rds_instance_disallow_public_access import RULE as PUBLIC
from policies.rules.aws_rds_instance_enforce_encryption import RULE as ENCRYPTION
from tests.pack.fixtures import messages, res, skipped

INSTANCE = "aws:rds/instance:Instance"
CLUSTER = "aws:rds/cluster:Cluster"
CMK = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def database(type_: str = INSTANCE, name: str = "db", **overrides: Any) -> Resource:
    """A compliant database (what Gateway plans), with ``overrides`` applied; None removes a prop."""
    props: dict[str, Any] = {
        "engine": "postgres",
        "storageEncrypted": True,
        "kmsKeyId": CMK,
        "publiclyAccessible": False,
        "backupRetentionPeriod": 14,
    }
    props.update(overrides)
    return res(type_, name, **{k: v for k, v in props.items() if v is not None})


@pytest.mark.parametrize("type_", [INSTANCE, CLUSTER])
def test_the_gateway_database_passes_every_rule(type_: str) -> None:
    for rule in (ENCRYPTION, PUBLIC, BACKUPS):
        assert messages(rule, database(type_)) == [], rule.name


# --- aws-rds-instance-enforce-encryption ------------------------------------------------------


@pytest.mark.parametrize("value", [False, "false", None])
def test_unencrypted_storage_fails(value: Any) -> None:
    assert messages(ENCRYPTION, database(storageEncrypted=value)) == [
        (
            "db",
            "storageEncrypted is not true (the database, its snapshots and backups are stored "
            "unencrypted): set storageEncrypted: true with a customer-managed kmsKeyId",
        )
    ]


def test_encryption_as_a_string_passes() -> None:
    assert messages(ENCRYPTION, database(storageEncrypted="true")) == []


def test_encryption_under_the_aws_managed_key_fails() -> None:
    assert messages(ENCRYPTION, database(kmsKeyId=None)) == [
        (
            "db",
            "kmsKeyId is not set, so the AWS managed key alias/aws/rds encrypts it: "
            "name a customer-managed KMS key",
        )
    ]
    for key in ("alias/aws/rds", "arn:aws:kms:eu-central-1:123456789012:alias/aws/rds"):
        assert messages(ENCRYPTION, database(CLUSTER, kmsKeyId=key)) == [
            ("db", f"kmsKeyId {key} is an AWS managed key: name a customer-managed KMS key")
        ]


def test_unknown_key_is_skipped_not_judged() -> None:
    db = database(kmsKeyId=UNKNOWN)
    assert messages(ENCRYPTION, db) == []
    assert skipped(ENCRYPTION, db) == [(ENCRYPTION.name, db.urn)]


# --- aws-rds-instance-disallow-public-access --------------------------------------------------


@pytest.mark.parametrize("value", [True, "true"])
def test_a_publicly_accessible_instance_fails(value: Any) -> None:
    assert messages(PUBLIC, database(publiclyAccessible=value)) == [
        (
            "db",
            "publiclyAccessible is true (the instance gets a public address): set it to false and reach "
            "the database from the app tier inside the VPC",
        )
    ]


def test_an_instance_that_does_not_say_is_private() -> None:
    # RDS's API default is false: not publicly accessible.
    assert messages(PUBLIC, database(publiclyAccessible=None)) == []


def test_clusters_are_not_judged_by_the_public_access_rule() -> None:
    assert messages(PUBLIC, database(CLUSTER, publiclyAccessible=True)) == []


# --- aws-rds-instance-configure-backup-retention ----------------------------------------------


@pytest.mark.parametrize("days", [7, 14, 35])
def test_retention_at_or_above_the_minimum_passes(days: int) -> None:
    assert messages(BACKUPS, database(backupRetentionPeriod=days)) == []


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (None, "backupRetentionPeriod is not set (RDS keeps backups for 1 day): set it to at least 7 days"),
        (0, "backupRetentionPeriod is 0, which turns automated backups off: set it to at least 7 days"),
        (1, "backupRetentionPeriod 1 is under the minimum of 7 days"),
        (6, "backupRetentionPeriod 6 is under the minimum of 7 days"),
    ],
)
def test_short_or_missing_retention_fails(days: int | None, message: str) -> None:
    assert messages(BACKUPS, database(backupRetentionPeriod=days)) == [("db", message)]
    assert messages(BACKUPS, database(CLUSTER, backupRetentionPeriod=days)) == [("db", message)]


def test_the_minimum_is_a_setting() -> None:
    db = database(backupRetentionPeriod=14)
    assert messages(BACKUPS, db, min_retention_days=30) == [
        ("db", "backupRetentionPeriod 14 is under the minimum of 30 days")
    ]
    assert messages(BACKUPS, database(backupRetentionPeriod=3), min_retention_days=3) == []
