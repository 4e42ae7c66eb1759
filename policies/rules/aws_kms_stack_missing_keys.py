"""The stack has its customer-managed KMS keys: one for data, one for logs, one for secrets.

llmkit's KmsKeys component (components/keys.py) makes three symmetric keys and tags each with
``llmkit:key-purpose``: ``data`` (model store, EBS volumes, the gateway's database), ``logs``
(CloudWatch log groups, VPC flow logs, CloudTrail) and ``secrets`` (Secrets Manager, the alert
topic). A purpose is present when an ``aws.kms.Key`` of the stack carries the tag with that value,
is an encryption key (``keyUsage`` ENCRYPT_DECRYPT, the default) and is not disabled
(``isEnabled`` not false).

The rules that require encryption check that a resource names *a* key; this one checks that the
keys the stack's resources are meant to name exist, so that a graph with a key removed (its users
pointing at a key the stack no longer manages, rotates or restricts) does not pass. Only a stack
of Kubernetes resources alone is out of scope (``policies.support.kubernetes_only``); an empty
stack lacks all three keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import UNKNOWN, Resource, Rule, Stack
from policies.support import kubernetes_only

KEYS = ("aws:kms/key:Key",)
PURPOSE_TAG = "llmkit:key-purpose"
# components/keys.py PURPOSES, and what each key protects (a test keeps them equal).
PURPOSES = {
    "data": "model data at rest: the model store, the GPU hosts' EBS volumes, the gateway's database",
    "logs": "CloudWatch log groups, VPC flow logs and CloudTrail",
    "secrets": "Secrets Manager secrets and the alert topic",
}


def purpose(key: Resource) -> str | None:
    """The key's ``llmkit:key-purpose`` tag, from its own tags (or tagsAll); None when absent or unknown."""
    for source in ("tags", "tagsAll"):
        tags = key.props.get(source)
        if isinstance(tags, Mapping):
            value = tags.get(PURPOSE_TAG)
            if isinstance(value, str) and value != UNKNOWN:
                return value
    return None


def _off(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def _problem(key: Resource) -> str | None:
    """Why ``key`` cannot serve its purpose, or None when it can."""
    usage = key.props.get("keyUsage")
    if isinstance(usage, str) and usage not in ("ENCRYPT_DECRYPT", UNKNOWN):
        return f"keyUsage is {usage}, not ENCRYPT_DECRYPT"
    if _off(key.props.get("isEnabled")):
        return "it is disabled (isEnabled false)"
    return None


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource | None, str]]:
    if kubernetes_only(stack):
        return
    by_purpose: dict[str, list[Resource]] = {}
    for key in stack.of_type(*KEYS):
        found = purpose(key)
        if found is not None:
            by_purpose.setdefault(found, []).append(key)
    for name, protects in PURPOSES.items():
        keys = by_purpose.get(name, [])
        if not keys:
            yield (
                None,
                f"the stack has no {name} key (an aws.kms.Key tagged {PURPOSE_TAG}={name}), the "
                f"customer-managed key of {protects}",
            )
            continue
        problems = [(key, _problem(key)) for key in keys]
        if all(problem is not None for _, problem in problems):
            for key, problem in problems:
                yield key, f"the stack's {name} key cannot be used: {problem}"


RULE = Rule(
    name="aws-kms-stack-missing-keys",
    description="The stack has its three customer-managed KMS keys, tagged llmkit:key-purpose data, logs "
    "and secrets, enabled for encryption.",
    why="Each tier's encryption rests on its key: without the stack's own key, model data, logs and "
    "secrets fall back to AWS managed keys (no key policy of the stack's, no separation of duties) or "
    "name a key that no one rotates or restricts. A graph with a key removed still names key ARNs, "
    "so only a check that the keys exist catches it.",
    severity="high",
    remediation="Keep the KmsKeys component in the program: it makes the data, logs and secrets keys, "
    "rotating, with least-privilege key policies, tagged llmkit:key-purpose.",
    frameworks=(
        "NIST SP 800-53 Rev. 5 SC-12",
        "NIST SP 800-53 Rev. 5 SC-28",
        "HIPAA 164.312(a)(2)(iv)",
        "GDPR Art. 32(1)(a)",
    ),
    check_stack=check,
)
