"""Every S3 bucket has a bucket policy that denies every request made without TLS.

The policy is an ``aws.s3.BucketPolicy`` linked by its ``bucket``, or the bucket's inline
``policy``. It must hold one statement with Effect ``Deny``, Principal ``"*"`` (or
``{"AWS": "*"}``), an Action covering ``s3:*``, exactly the condition ``Bool``
``aws:SecureTransport = "false"`` (a second condition would narrow the deny), and Resources covering
the bucket (a bucket ARN) and all its objects (``<bucket ARN>/*``).

Resources are judged by their shape, not by the bucket's name: S3 refuses a bucket policy whose
Resource names another bucket ("Policy has invalid resource"), and the bucket's name or ARN is
often not known before it exists (auto-naming; the offline plan's mock ARNs).

A policy whose text holds an unknown value (an ARN not known at preview) and no complete statement
is not judged: the rule is skipped, not passed or failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Stack, Unknown
from policies.support import BUCKET_POLICY, BUCKETS, policy_document, statements

WANTED = (
    "Effect Deny, Principal *, Action s3:*, Resource the bucket ARN and <bucket ARN>/*, "
    "Condition Bool aws:SecureTransport false"
)


def _items(value: Any) -> list[Any]:
    """A policy element as a list, without judging unknown values (they match nothing)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _has_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return value == UNKNOWN or (isinstance(value, str) and UNKNOWN in value)


def _s3_part(resource: Any) -> str | None:
    """The resource part of an S3 ARN (``bucket``, ``bucket/key``), ``*`` for ``*``, else None."""
    if resource == "*":
        return "*"
    if not isinstance(resource, str):
        return None
    parts = resource.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "s3":
        return parts[5]
    return None


def _covers_bucket(part: str) -> bool:
    return "/" not in part


def _covers_objects(part: str) -> bool:
    name, slash, key = part.partition("/")
    if slash:
        return key == "*" and "/" not in name
    return name.endswith("*")  # an IAM wildcard also matches the "/<key>" of every object


def _everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    return isinstance(principal, Mapping) and set(principal) == {"AWS"} and _items(principal["AWS"]) == ["*"]


def _insecure_transport_only(condition: Any) -> bool:
    if not isinstance(condition, Mapping) or set(condition) != {"Bool"}:
        return False
    block = condition["Bool"]
    if not isinstance(block, Mapping) or len(block) != 1:
        return False
    ((key, value),) = block.items()
    values = _items(value)
    return (
        str(key).lower() == "aws:securetransport"
        and bool(values)
        and all(str(v).lower() == "false" for v in values)
    )


def _faults(statement: Mapping[str, Any]) -> list[str]:
    """Why a statement does not deny every request without TLS ([] when it does)."""
    faults: list[str] = []
    if statement.get("Effect") != "Deny":
        faults.append(f"Effect is {statement.get('Effect')}, not Deny")
    if "NotPrincipal" in statement or not _everyone(statement.get("Principal")):
        faults.append(
            f"Principal is {json.dumps(statement.get('Principal', statement.get('NotPrincipal')))}, not *"
        )
    actions = [str(a).lower() for a in _items(statement.get("Action"))]
    if "NotAction" in statement or not ({"s3:*", "*"} & set(actions)):
        faults.append(
            f"Action {json.dumps(statement.get('Action', statement.get('NotAction')))} does not cover s3:*"
        )
    if not _insecure_transport_only(statement.get("Condition")):
        faults.append(
            f"Condition {json.dumps(statement.get('Condition'))} is not exactly "
            "Bool aws:SecureTransport false"
        )
    parts = [p for p in (_s3_part(r) for r in _items(statement.get("Resource"))) if p is not None]
    if "NotResource" in statement or not (
        any(map(_covers_bucket, parts)) and any(map(_covers_objects, parts))
    ):
        faults.append(
            f"Resource {json.dumps(statement.get('Resource', statement.get('NotResource')))} does not cover "
            "the bucket and its objects"
        )
    return faults


def _mentions_transport(statement: Mapping[str, Any]) -> bool:
    return "aws:securetransport" in json.dumps(statement.get("Condition")).lower()


def _problem(document: Mapping[str, Any]) -> str | None:
    """None when the policy denies requests without TLS; else what is wrong (Unknown when unknowable)."""
    found = list(statements(document))
    if any(not _faults(s) for s in found):
        return None
    if _has_unknown(document):
        raise Unknown
    for index, statement in enumerate(found):
        if _mentions_transport(statement):
            sid = statement.get("Sid") or f"#{index}"
            return (
                f"statement {sid} does not deny every request without TLS: {'; '.join(_faults(statement))} "
                f"(wanted: {WANTED})"
            )
    return f"bucket policy has no statement denying requests without TLS (wanted: {WANTED})"


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    policies = stack.of_type(*BUCKET_POLICY)
    for bucket in stack.of_type(*BUCKETS):
        sources = [p for p in policies if stack.refers_to(p.get("bucket"), bucket)]
        if bucket.get("policy"):
            sources.append(bucket)
        if not sources:
            yield bucket, f"bucket has no bucket policy: add an aws.s3.BucketPolicy with a statement {WANTED}"
            continue
        problems = [(source, _problem(policy_document(source.get("policy")))) for source in sources]
        if any(problem is None for _, problem in problems):
            continue
        for source, problem in problems:
            assert problem is not None
            yield source, problem


RULE = Rule(
    name="aws-s3-bucket-missing-tls-policy",
    description="Every S3 bucket has a bucket policy that denies all S3 actions to everyone when "
    "aws:SecureTransport is false, on the bucket and its objects.",
    why="Without it S3 accepts plain-HTTP requests: model weights, logs and the credentials that sign the "
    "requests' payloads cross the network unencrypted and can be read or altered in transit.",
    severity="high",
    remediation="Add a bucket policy statement: Effect Deny, Principal *, Action s3:*, Resource the bucket "
    "ARN and <bucket ARN>/*, Condition Bool aws:SecureTransport false (SecureBucket, LogBucket and "
    "ModelStore add it, together with a deny for TLS older than 1.2).",
    frameworks=(
        "CIS AWS Foundations 2.1.1",
        "AWS FSBP S3.5",
        "HIPAA 164.312(e)(1)",
        "HIPAA 164.312(e)(2)(ii)",
        "GDPR Art. 32(1)(a)",
    ),
    check_stack=check,
)
