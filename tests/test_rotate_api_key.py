"""The rotation function's real handler against a real moto server on 127.0.0.1.

Secrets Manager runs a rotation by staging a new version id ``AWSPENDING`` (without a value) and
then calling the function's four steps with that id as ``ClientRequestToken``. moto's RotateSecret
can only do that through a Lambda function run in Docker, so :func:`stage_rotation` does that
staging in the server's backend (the server runs in this process) and the test calls the steps,
as Secrets Manager would, through the handler. Everything else goes through boto3 to the server:
no request leaves 127.0.0.1.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.secretsmanager.models import FakeSecret, secretsmanager_backends

from components.lambdas import rotate_api_key as fn

REGION = "eu-central-1"
KEY_LENGTH = len(fn.VALUE_PREFIX) + fn.RANDOM_LENGTH


@pytest.fixture
def endpoint(aws_env: str) -> str:
    return aws_env


@pytest.fixture
def client(aws_env: str) -> Any:
    """A Secrets Manager client of an empty moto server; the handler's own clients go there too."""
    sm = boto3.client("secretsmanager")
    assert sm.meta.endpoint_url == aws_env
    return sm


def make_secret(client: Any, name: str = "llmkit/test/gateway/master-key", rotation: str = "enabled") -> str:
    """A secret as components/secrets.py creates it (no value), given its first key by the function."""
    arn = str(client.create_secret(Name=name, Tags=[{"Key": fn.ROTATION_TAG, "Value": rotation}])["ARN"])
    answer = fn.handler({"Action": "initialize", "SecretId": arn})
    assert answer["Created"] is True and answer["SecretId"] == arn
    return arn


def backend_secret(arn: str) -> FakeSecret:
    secret = secretsmanager_backends[DEFAULT_ACCOUNT_ID][REGION].describe_secret(arn)
    assert isinstance(secret, FakeSecret)
    return secret


def stage_rotation(arn: str) -> str:
    """What RotateSecret does before it calls the function: a new version id staged AWSPENDING, no value."""
    secret = backend_secret(arn)
    token = str(uuid.uuid4())
    secret.remove_version_stages_from_old_versions([fn.PENDING])
    secret.versions[token] = {
        "createdate": int(time.time()),
        "version_id": token,
        "version_stages": [fn.PENDING],
    }
    # what RotateSecret records, and DescribeSecret then reports (RotationEnabled, the function)
    secret.rotation_requested = True
    secret.rotation_enabled = True
    secret.rotation_lambda_arn = (
        f"arn:aws:lambda:{REGION}:{DEFAULT_ACCOUNT_ID}:function:llmkit-test-rotate-api-key"
    )
    secret.auto_rotate_after_days = 30
    return token


def step(arn: str, token: str, name: str) -> None:
    fn.handler({"Step": name, "SecretId": arn, "ClientRequestToken": token})


def stages(client: Any, arn: str) -> dict[str, list[str]]:
    versions: dict[str, list[str]] = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    return {version: sorted(labels) for version, labels in versions.items()}


def current(client: Any, arn: str) -> tuple[str, str]:
    answer = client.get_secret_value(SecretId=arn, VersionStage=fn.CURRENT)
    return str(answer["VersionId"]), str(answer["SecretString"])


def assert_api_key(value: str) -> None:
    assert value.startswith("sk-")
    assert len(value) == KEY_LENGTH >= 48
    assert value[3:].isascii() and value[3:].isalnum()


def test_initialize_gives_a_first_key_once(client: Any) -> None:
    arn = make_secret(client)
    version, value = current(client, arn)
    assert_api_key(value)
    assert stages(client, arn) == {version: [fn.CURRENT]}
    again = fn.handler({"Action": "initialize", "SecretId": arn})
    assert again == {"SecretId": arn, "VersionId": version, "Created": False}
    assert current(client, arn) == (version, value)  # never replaced
    assert value not in repr(again)


def test_four_steps_rotate_the_key(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=fn.__name__)
    arn = make_secret(client)
    old_version, old_value = current(client, arn)
    token = stage_rotation(arn)
    for name in fn.STEPS:
        step(arn, token, name)
    new_version, new_value = current(client, arn)
    assert new_version == token
    assert_api_key(new_value)
    assert new_value != old_value
    # AWSCURRENT moved, the old key is AWSPREVIOUS, and AWSPENDING is gone from every version
    assert stages(client, arn) == {old_version: ["AWSPREVIOUS"], token: [fn.CURRENT]}
    # the function logged what it did, never a key
    assert "finishSecret" in caplog.text
    assert old_value not in caplog.text and new_value not in caplog.text


def test_every_step_is_idempotent(client: Any) -> None:
    arn = make_secret(client)
    old_version, _ = current(client, arn)
    token = stage_rotation(arn)

    step(arn, token, "createSecret")
    pending = client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=fn.PENDING)["SecretString"]
    step(arn, token, "createSecret")  # a retry keeps the key it made
    assert client.get_secret_value(SecretId=arn, VersionId=token)["SecretString"] == pending
    for name in ("setSecret", "setSecret", "testSecret", "testSecret"):
        step(arn, token, name)
    assert current(client, arn)[0] == old_version  # nothing is current before finishSecret

    step(arn, token, "finishSecret")
    after = stages(client, arn)
    for name in (*fn.STEPS, "finishSecret"):  # everything again, once finished: no change, no error
        step(arn, token, name)
    assert stages(client, arn) == after
    assert current(client, arn) == (token, pending)


def test_finish_cleans_a_pending_label_left_on_the_current_version(client: Any) -> None:
    arn = make_secret(client)
    token = stage_rotation(arn)
    for name in fn.STEPS[:3]:
        step(arn, token, name)
    old_version, _ = current(client, arn)
    # a finishSecret that stopped after moving AWSCURRENT, before removing AWSPENDING
    client.update_secret_version_stage(
        SecretId=arn, VersionStage=fn.CURRENT, MoveToVersionId=token, RemoveFromVersionId=old_version
    )
    assert fn.PENDING in stages(client, arn)[token]
    step(arn, token, "finishSecret")
    assert stages(client, arn)[token] == [fn.CURRENT]


def test_a_token_that_is_not_staged_pending_is_refused(client: Any) -> None:
    arn = make_secret(client)
    old_version, old_value = current(client, arn)
    token = stage_rotation(arn)
    with pytest.raises(fn.RotationError, match="no version"):
        step(arn, str(uuid.uuid4()), "createSecret")
    for name in fn.STEPS:
        step(arn, token, name)
    # the version that was current before is AWSPREVIOUS now: not a version to rotate to
    with pytest.raises(fn.RotationError, match="not staged AWSPENDING"):
        step(arn, old_version, "createSecret")
    with pytest.raises(fn.RotationError, match="unknown rotation step"):
        step(arn, token, "deleteSecret")
    assert current(client, arn)[0] == token
    assert old_value != current(client, arn)[1]


def test_rotation_must_be_enabled(client: Any) -> None:
    arn = make_secret(client)
    token = stage_rotation(arn)
    backend_secret(arn).rotation_enabled = False
    with pytest.raises(fn.RotationError, match="rotation enabled"):
        step(arn, token, "createSecret")


def test_a_malformed_pending_value_fails_the_test_step(client: Any) -> None:
    arn = make_secret(client)
    before = current(client, arn)
    token = stage_rotation(arn)
    client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString="sk-short", VersionStages=[fn.PENDING]
    )
    step(arn, token, "createSecret")  # keeps what is there
    with pytest.raises(fn.RotationError, match="not an API key"):
        step(arn, token, "testSecret")
    assert current(client, arn) == before  # nothing was promoted


def test_the_salt_key_is_never_rotated(client: Any) -> None:
    arn = make_secret(client, "llmkit/test/gateway/salt-key", rotation=fn.ROTATION_DISABLED)
    before = current(client, arn)
    assert_api_key(before[1])
    token = stage_rotation(arn)
    for name in fn.STEPS:
        with pytest.raises(fn.RotationError, match="never rotated"):
            step(arn, token, name)
    assert current(client, arn) == before


def test_unknown_events_are_refused(client: Any) -> None:
    with pytest.raises(fn.RotationError, match="unknown event"):
        fn.handler({"SecretId": "x"})
    with pytest.raises(fn.RotationError, match="ClientRequestToken"):
        fn.handler({"Step": "createSecret", "SecretId": "x"})
    with pytest.raises(fn.RotationError, match="SecretId"):
        fn.handler({"Action": "initialize"})


def test_is_api_key() -> None:
    assert fn.is_api_key("sk-" + "a1" * 24)
    assert not fn.is_api_key("sk-" + "a" * 47)
    assert not fn.is_api_key("pk-" + "a" * 64)
    assert not fn.is_api_key("sk-" + "a" * 63 + "!")
    assert not fn.is_api_key("sk-" + "é" * 64)


class _DeniedClient:
    """Denies `denials` times, as IAM does until a new role policy has propagated."""

    def __init__(self, denials: int, code: str = "AccessDeniedException") -> None:
        self.denials, self.code, self.puts = denials, code, 0

    def describe_secret(self, SecretId: str) -> dict[str, Any]:
        if self.denials:
            self.denials -= 1
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "DescribeSecret")
        return {"ARN": SecretId, "VersionIdsToStages": {}}

    def get_random_password(self, **_: Any) -> dict[str, str]:
        return {"RandomPassword": "a" * fn.RANDOM_LENGTH}

    def put_secret_value(self, **_: Any) -> dict[str, Any]:
        self.puts += 1
        return {}


def test_initialize_waits_for_iam_to_propagate() -> None:
    waits: list[float] = []
    client = _DeniedClient(denials=fn.ACCESS_DENIED_ATTEMPTS - 1)
    answer = fn.initialize(client, "arn:secret", sleep=waits.append)
    assert answer["Created"] is True and client.puts == 1
    assert waits == [2.0, 4.0, 8.0, 16.0]

    with pytest.raises(ClientError):
        fn.initialize(_DeniedClient(denials=fn.ACCESS_DENIED_ATTEMPTS), "arn:secret", sleep=waits.append)
    waits.clear()
    with pytest.raises(ClientError):  # any other error is not retried
        fn.initialize(
            _DeniedClient(denials=1, code="ResourceNotFoundException"), "arn:secret", sleep=waits.append
        )
    assert waits == []
