"""Every container image is pinned: by digest, or by an explicit tag that is not ``latest``.

An image reference is ``[registry[:port]/]repository[:tag][@digest]``; the tag is what follows the
last ``:`` after the last ``/`` (so a registry port is not a tag). For every container kind
(``containers``, ``initContainers``, ``ephemeralContainers``):

- a digest ``@sha256:<64 hex digits>`` (or ``@sha512:<128 hex digits>``) pins the image, whatever
  the tag says (the runtime pulls by digest); a malformed digest is a violation;
- otherwise the image needs an explicit tag, and the tag may not be ``latest`` (any case): a
  missing tag means ``latest``;
- with the setting ``require_digest`` on, only a digest pins the image.

``require_digest`` defaults to false: a version tag in a registry with immutable tags (ECR
``imageTagMutability: IMMUTABLE``) is a reviewable pin, and the kit's images are referenced by
version. A digest is stronger (a mutable tag can be re-pushed): turn it on for production stacks
whose images are resolved to digests. A container without an image is a violation too (the
kubelet cannot run it, and nothing says what it would have run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Setting
from policies.k8s import WORKLOADS, pod_template, show

DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
ACCEPTED_TAG = "accepted: an explicit tag other than latest, or an @sha256: digest"
ACCEPTED_DIGEST = "accepted: an @sha256: digest (require_digest is on)"


def parse(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference; tag and digest None when absent."""
    reference, at, digest = image.partition("@")
    head, slash, last = reference.rpartition("/")
    name, colon, tag = last.partition(":")
    return f"{head}{slash}{name}", (tag if colon else None), (digest if at else None)


def check(workload: Resource, config: Mapping[str, Any]) -> Iterator[str]:
    accepted = ACCEPTED_DIGEST if config["require_digest"] else ACCEPTED_TAG
    for container in pod_template(workload).containers():
        image = container.get("image")
        if image in (None, ""):
            yield f"{container}: no image is set; {accepted}"
            continue
        if not isinstance(image, str):
            yield f"{container}: image {show(image)} is not an image reference; {accepted}"
            continue
        _, tag, digest = parse(image.strip())
        if digest is not None:
            if not DIGEST.fullmatch(digest):
                yield f"{container}: image {image} has a malformed digest {digest}; {accepted}"
            continue
        if config["require_digest"]:
            yield f"{container}: image {image} is not pinned by digest; {accepted}"
        elif not tag:
            yield f"{container}: image {image} has no tag, so it pulls latest; {accepted}"
        elif tag.lower() == "latest":
            yield f"{container}: image {image} uses the mutable tag {tag}; {accepted}"


RULE = Rule(
    name="k8s-core-pod-disallow-latest-image",
    description="Every container image is pinned by digest or by an explicit tag other than latest.",
    why="A latest or tag-less image changes under a running deployment: a re-pushed or poisoned image "
    "reaches the model tier on the next pod restart without review, and no two nodes are sure to run "
    "the same code.",
    severity="medium",
    remediation="Reference images as registry/repository:version or, better, "
    "registry/repository@sha256:<digest> (set require_digest to insist on digests), from a registry "
    "with immutable tags.",
    frameworks=("NSA-CISA Kubernetes Hardening Guidance v1.2: Building secure container images",),
    resource_types=WORKLOADS,
    check=check,
    settings={
        "require_digest": Setting(
            {"type": "boolean"},
            False,
            "accept only images pinned by @sha256: digest (a version tag is not enough)",
        )
    },
)
