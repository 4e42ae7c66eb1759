"""The model store's buckets keep every version of every object (S3 versioning Enabled).

Applies to the buckets inside an ``llmkit:aws:ModelStore`` component. Versioning comes from an
``aws.s3.BucketVersioning`` resource (either type token) linked by its ``bucket``, with
``versioningConfiguration.status = Enabled``, or from the deprecated inline form on the bucket
(``versioning.enabled`` of ``aws.s3.Bucket``, ``versionings[].enabled`` of ``aws.s3.BucketV2``).

A versioning resource that names a model-store bucket with another status (``Suspended``,
``Disabled``) is reported on that resource; a bucket with no versioning at all, or only an inline
``enabled: false``, on the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Stack, as_list, known
from policies.support import BUCKET_VERSIONING, BUCKETS, MODEL_STORE, truthy

FIX = "add an aws.s3.BucketVersioning with versioningConfiguration.status Enabled (ModelStore does)"


def _inline(bucket: Resource) -> list[Mapping[str, Any]]:
    blocks = [*as_list(bucket.get("versioning")), *as_list(bucket.get("versionings"))]
    return [b for b in blocks if isinstance(known(b), Mapping)]


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    versionings = stack.of_type(*BUCKET_VERSIONING)
    for bucket in stack.of_type(*BUCKETS):
        if not bucket.within(MODEL_STORE):
            continue
        separate = [v for v in versionings if stack.refers_to(v.get("bucket"), bucket)]
        inline = _inline(bucket)
        enabled = any(v.get("versioningConfiguration", "status") == "Enabled" for v in separate) or any(
            truthy(b.get("enabled", False)) for b in inline
        )
        for versioning in separate:
            status = versioning.get("versioningConfiguration", "status")
            if status != "Enabled":
                shown = "is not set" if status is None else f"is {status}"
                yield (
                    versioning,
                    f"versioning status {shown}, not Enabled: model weights would lose earlier versions",
                )
        if enabled:
            continue
        if inline:
            value = inline[0].get("enabled", False)
            yield bucket, f"versioning.enabled is {json.dumps(value)}: set it to true, or {FIX}"
        elif not separate:
            yield bucket, f"model store bucket has no versioning: {FIX}"


RULE = Rule(
    name="aws-s3-bucket-enable-model-versioning",
    description="Buckets of the ModelStore component have S3 versioning Enabled.",
    why="Without versioning an overwritten or deleted model file is gone: a tampered or broken upload cannot "
    "be rolled back, and hosts may load weights nobody can compare with the reviewed ones.",
    severity="medium",
    remediation="Give the model store bucket an aws.s3.BucketVersioning with versioningConfiguration.status "
    "Enabled (ModelStore, through SecureBucket, does; noncurrent versions then expire by lifecycle).",
    frameworks=("HIPAA 164.312(c)(1)", "GDPR Art. 32(1)(b)", "GDPR Art. 32(1)(c)"),
    check_stack=check,
)
