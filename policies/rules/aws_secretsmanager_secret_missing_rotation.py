"""Every Secrets Manager secret rotates automatically, often enough; one documented exception by tag."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Setting, Stack, known
from policies.support import truthy

SECRETS = ("aws:secretsmanager/secret:Secret",)
ROTATIONS = ("aws:secretsmanager/secretRotation:SecretRotation",)
EXCEPTION_TAG = ("llmkit:rotation", "disabled")
RATE = re.compile(r"rate\((\d+) (day|days|hour|hours)\)")


def _names(stack: Stack, ref: Any, secret: Resource) -> bool:
    """Whether a rotation's secretId (the secret's id, name or ARN) names ``secret``."""
    if stack.refers_to(ref, secret):
        return True
    if not isinstance(ref, str) or not ref.startswith("arn:"):
        return False
    parts = ref.split(":", 5)
    if len(parts) < 6 or parts[2] != "secretsmanager":
        return False
    resource = parts[5]
    name = secret.props.get("name")
    if resource.startswith("secret:") and isinstance(name, str) and name != UNKNOWN:
        # a real secret ARN: arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 random characters>
        pattern = re.escape(name) + r"(-[A-Za-z0-9]{6})?"
        return re.fullmatch(pattern, resource.removeprefix("secret:")) is not None
    # the offline plan's mocked ARNs: arn:aws:<service>:<region>:<account>:<logical name>
    return resource == secret.name


def _exempt(secret: Resource) -> bool:
    key, value = EXCEPTION_TAG
    tags = known(secret.props.get("tags"))
    return isinstance(tags, Mapping) and known(tags.get(key)) == value


def _rotation_problem(rotation: Resource, max_days: int) -> str | None:
    """Why ``rotation`` does not rotate its secret often enough, or None when it does."""
    enabled = rotation.get("rotationEnabled")
    if enabled is not None and not truthy(enabled):
        return f"rotationEnabled is {str(enabled).lower()}: automatic rotation is off"
    days = rotation.get("rotationRules", "automaticallyAfterDays")
    schedule = rotation.get("rotationRules", "scheduleExpression")
    if schedule:
        rate = RATE.fullmatch(str(schedule).strip())
        if rate and rate.group(2).startswith("day") and int(rate.group(1)) > max_days:
            return f"scheduleExpression {schedule} rotates less often than every {max_days} days"
        return None
    if days is None:
        return "rotationRules sets neither automaticallyAfterDays nor scheduleExpression"
    if int(days) > max_days:
        return f"rotationRules.automaticallyAfterDays {days} is over the allowed {max_days}"
    return None


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    max_days = config["max_rotation_days"]
    wanted = (
        f"add an aws.secretsmanager.SecretRotation with rotationRules.automaticallyAfterDays <= {max_days} "
        f"or a scheduleExpression (or tag it {EXCEPTION_TAG[0]}={EXCEPTION_TAG[1]} if rotating it breaks "
        "what it protects)"
    )
    rotations = [(r, r.get("secretId"), _rotation_problem(r, max_days)) for r in stack.of_type(*ROTATIONS)]
    for rotation, _, problem in rotations:
        if problem:
            yield rotation, problem
    for secret in stack.of_type(*SECRETS):
        if _exempt(secret):
            continue  # the documented exception: see why
        if not any(_names(stack, ref, secret) for _, ref, _ in rotations):
            yield secret, f"secret has no rotation: {wanted}"


RULE = Rule(
    name="aws-secretsmanager-secret-missing-rotation",
    description="Every Secrets Manager secret has an enabled SecretRotation at most max_rotation_days apart, "
    "unless tagged llmkit:rotation=disabled.",
    why="A secret that never changes stays valid for as long as any copy of it leaked (logs, laptops, former "
    "staff); rotation bounds that window. Exception, compliant and visible in the plan: a secret tagged "
    "llmkit:rotation=disabled is not required to rotate. llmkit tags exactly one: the gateway's salt key "
    "(LITELLM_SALT_KEY), which encrypts the provider credentials the gateway stores in its database; "
    "rotating it would make every stored credential undecryptable. It stays KMS-encrypted, "
    "access-restricted and audited; any other secret carrying the tag should be questioned in review.",
    severity="high",
    remediation="Attach an aws.secretsmanager.SecretRotation (rotationLambdaArn, rotationRules."
    "automaticallyAfterDays within the limit or a scheduleExpression) to the secret: Secrets does this for "
    "the gateway master key; only a secret that must never change may carry llmkit:rotation=disabled.",
    frameworks=(
        "AWS FSBP SecretsManager.1",
        "AWS FSBP SecretsManager.4",
        "HIPAA 164.308(a)(5)(ii)(D)",
        "GDPR Art. 32(1)(b)",
    ),
    check_stack=check,
    settings={
        "max_rotation_days": Setting(
            {"type": "integer", "minimum": 1, "maximum": 1000},
            90,
            "the longest time allowed between rotations, in days (Secrets Manager accepts 1..1000)",
        )
    },
)
