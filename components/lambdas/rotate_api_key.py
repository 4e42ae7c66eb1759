"""Creates and rotates the gateway's API keys in AWS Secrets Manager (an AWS Lambda function).

Packaged alone (components/secrets.py zips this one file) and run on Lambda's Python runtime, so it
uses the standard library and the runtime's boto3 only. It never logs or returns a secret value.

Two kinds of events:

- **Rotation**, sent by Secrets Manager: ``{"Step": ..., "SecretId": ..., "ClientRequestToken": ...}``
  with the four steps of Secrets Manager's rotation protocol, each safe to run again:

  - ``createSecret``: unless the version ``ClientRequestToken`` (staged ``AWSPENDING`` by
    ``RotateSecret``) already holds a value, put a new key there, still ``AWSPENDING``;
  - ``setSecret``: nothing to push: LiteLLM has no API that accepts a new master key, it reads
    ``LITELLM_MASTER_KEY`` when a gateway task starts; the step checks that the pending key exists;
  - ``testSecret``: the pending key has the format LiteLLM accepts (``sk-`` and at least
    :data:`MIN_RANDOM_LENGTH` letters and digits);
  - ``finishSecret``: move ``AWSCURRENT`` to the new version (Secrets Manager then marks the old one
    ``AWSPREVIOUS``) and remove ``AWSPENDING`` from it.

  As in AWS's rotation templates, every step first checks that rotation is enabled on the secret
  and that the token names a version staged ``AWSPENDING`` (a version already ``AWSCURRENT`` means
  the rotation finished: nothing to do). A secret tagged ``llmkit:rotation = disabled`` (the
  LiteLLM salt key, whose change would make every credential LiteLLM stored unreadable) is never
  rotated, whatever its rotation settings say.

- **Initialization**, sent once by the deployment (``aws.lambda_.Invocation``):
  ``{"Action": "initialize", "SecretId": ...}``. If the secret has no ``AWSCURRENT`` version, put a
  new key as its first, current version; otherwise change nothing. The answer (stored in the Pulumi
  state by the Invocation) names the version, never the value. Right after deployment IAM may not
  yet have propagated the function's new permissions, so access denials are retried a few times.

A key is ``sk-`` followed by :data:`RANDOM_LENGTH` letters and digits from Secrets Manager's
``GetRandomPassword`` (no punctuation, no space: the key goes into HTTP headers and shell
environments); LiteLLM requires master keys to start with ``sk-``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.exceptions import ClientError

VALUE_PREFIX = "sk-"
RANDOM_LENGTH = 64
MIN_RANDOM_LENGTH = 48
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
INITIALIZE = "initialize"
ROTATION_TAG = "llmkit:rotation"
ROTATION_DISABLED = "disabled"
CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
# Access denials right after deployment: IAM is eventually consistent. Waits 2, 4, 8, 16 s.
ACCESS_DENIED_ATTEMPTS = 5
ACCESS_DENIED_FIRST_WAIT_S = 2.0

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

T = TypeVar("T")


class RotationError(ValueError):
    """The event or the secret's state does not allow this step."""


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda's entry point: a rotation step or an initialization (see the module doc)."""
    client = boto3.client("secretsmanager")
    if "Step" in event:
        for key in ("SecretId", "ClientRequestToken"):
            if not event.get(key):
                raise RotationError(f"rotation event without {key}")
        rotate(client, event["SecretId"], event["ClientRequestToken"], event["Step"])
        return {"Step": event["Step"], "ClientRequestToken": event["ClientRequestToken"]}
    if event.get("Action") == INITIALIZE:
        if not event.get("SecretId"):
            raise RotationError("initialize event without SecretId")
        return initialize(client, event["SecretId"])
    raise RotationError(f"unknown event: expected a rotation Step or Action {INITIALIZE!r}")


# --- the value ---------------------------------------------------------------------------------


def new_value(client: Any) -> str:
    """A new API key: ``sk-`` + RANDOM_LENGTH letters and digits from GetRandomPassword."""
    answer = client.get_random_password(
        PasswordLength=RANDOM_LENGTH,
        ExcludePunctuation=True,
        IncludeSpace=False,
        RequireEachIncludedType=True,
    )
    return VALUE_PREFIX + str(answer["RandomPassword"])


def is_api_key(value: str) -> bool:
    random_part = value.removeprefix(VALUE_PREFIX)
    return (
        value.startswith(VALUE_PREFIX)
        and len(random_part) >= MIN_RANDOM_LENGTH
        and random_part.isascii()
        and random_part.isalnum()
    )


# --- rotation ----------------------------------------------------------------------------------


def rotate(client: Any, secret_id: str, token: str, step: str) -> None:
    """Run one step of the rotation protocol for version `token` of `secret_id`."""
    if step not in STEPS:
        raise RotationError(f"unknown rotation step {step!r}: expected one of {', '.join(STEPS)}")
    metadata = client.describe_secret(SecretId=secret_id)
    arn = metadata["ARN"]
    tags = {t["Key"]: t["Value"] for t in metadata.get("Tags", [])}
    if tags.get(ROTATION_TAG) == ROTATION_DISABLED:
        raise RotationError(f"secret {arn} is tagged {ROTATION_TAG}={ROTATION_DISABLED}: it is never rotated")
    if not metadata.get("RotationEnabled"):
        raise RotationError(f"secret {arn} does not have rotation enabled")
    stages = metadata.get("VersionIdsToStages", {}).get(token)
    if stages is None:
        raise RotationError(f"secret {arn} has no version {token} to rotate to")
    if CURRENT in stages:
        logger.info("%s: version %s of %s is already %s", step, token, arn, CURRENT)
        if step == "finishSecret":
            _drop_pending(client, arn, token)
        return
    if PENDING not in stages:
        raise RotationError(f"version {token} of secret {arn} is not staged {PENDING}")
    _STEPS[step](client, arn, token)


def _pending_value(client: Any, arn: str, token: str) -> str:
    answer = client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
    return str(answer["SecretString"])


def step_create(client: Any, arn: str, token: str) -> None:
    try:
        _pending_value(client, arn, token)
    except client.exceptions.ResourceNotFoundException:
        client.put_secret_value(
            SecretId=arn, ClientRequestToken=token, SecretString=new_value(client), VersionStages=[PENDING]
        )
        logger.info("createSecret: put a new key in version %s of %s", token, arn)
    else:
        logger.info("createSecret: version %s of %s already holds a key", token, arn)


def step_set(client: Any, arn: str, token: str) -> None:
    # LiteLLM reads LITELLM_MASTER_KEY when a task starts; there is no service to update.
    _pending_value(client, arn, token)
    logger.info("setSecret: nothing to push for %s; the gateway reads the key when a task starts", arn)


def step_test(client: Any, arn: str, token: str) -> None:
    if not is_api_key(_pending_value(client, arn, token)):
        raise RotationError(
            f"testSecret: version {token} of {arn} is not an API key ({VALUE_PREFIX!r} and at least "
            f"{MIN_RANDOM_LENGTH} letters and digits)"
        )
    logger.info("testSecret: version %s of %s is a well-formed key", token, arn)


def step_finish(client: Any, arn: str, token: str) -> None:
    versions = client.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
    current = next((v for v, stages in versions.items() if CURRENT in stages), None)
    moved: dict[str, str] = {"RemoveFromVersionId": current} if current else {}
    client.update_secret_version_stage(SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token, **moved)
    logger.info("finishSecret: %s moved from %s to %s of %s", CURRENT, current, token, arn)
    _drop_pending(client, arn, token)


def _drop_pending(client: Any, arn: str, token: str) -> None:
    versions = client.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
    if PENDING in versions.get(token, []):
        client.update_secret_version_stage(SecretId=arn, VersionStage=PENDING, RemoveFromVersionId=token)
        logger.info("finishSecret: removed %s from %s of %s", PENDING, token, arn)


_STEPS: dict[str, Callable[[Any, str, str], None]] = {
    "createSecret": step_create,
    "setSecret": step_set,
    "testSecret": step_test,
    "finishSecret": step_finish,
}


# --- initialization ----------------------------------------------------------------------------


def _retry_access_denied(call: Callable[[], T], sleep: Callable[[float], None]) -> T:
    wait = ACCESS_DENIED_FIRST_WAIT_S
    for attempt in range(1, ACCESS_DENIED_ATTEMPTS + 1):
        try:
            return call()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code != "AccessDeniedException" or attempt == ACCESS_DENIED_ATTEMPTS:
                raise
            logger.info(
                "access denied (attempt %d), IAM may not have propagated yet: retry in %.0fs", attempt, wait
            )
            sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def initialize(client: Any, secret_id: str, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Give `secret_id` its first key unless it has a current version; never replaces a value."""

    def run() -> dict[str, Any]:
        metadata = client.describe_secret(SecretId=secret_id)
        arn = metadata["ARN"]
        versions = metadata.get("VersionIdsToStages", {})
        current = next((v for v, stages in versions.items() if CURRENT in stages), None)
        if current is not None:
            logger.info("initialize: %s already has a current version %s; unchanged", arn, current)
            return {"SecretId": arn, "VersionId": current, "Created": False}
        token = str(uuid.uuid4())
        client.put_secret_value(
            SecretId=arn, ClientRequestToken=token, SecretString=new_value(client), VersionStages=[CURRENT]
        )
        logger.info("initialize: put the first key of %s as version %s", arn, token)
        return {"SecretId": arn, "VersionId": token, "Created": True}

    return _retry_access_denied(run, sleep)
