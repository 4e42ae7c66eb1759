"""``ls`` and ``verify`` of a mirror: a local directory or an S3 prefix (``s3://BUCKET/PREFIX``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.mirror.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Finding,
    Manifest,
    MirrorError,
    verify_dir,
)

MAX_DEPTH = 4


@dataclass(frozen=True)
class Listed:
    where: str  # the directory or s3:// prefix holding the manifest
    manifest: Manifest


def parse_s3(url: str) -> tuple[str, str]:
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise MirrorError(f"{url!r}: expected s3://BUCKET[/PREFIX]")
    return bucket, prefix


def ls_dir(root: Path) -> list[Listed]:
    if not root.is_dir():
        raise MirrorError(f"{root}: no such directory")
    found: list[Listed] = []
    for path in sorted(root.rglob(MANIFEST_NAME)):
        if len(path.relative_to(root).parts) <= MAX_DEPTH + 1:
            found.append(Listed(str(path.parent), Manifest.read(path.parent)))
    return found


def _s3_manifest(s3: Any, bucket: str, key: str) -> Manifest:
    """The manifest at ``key``: a larger object than a manifest may be is refused, not read."""
    where = f"s3://{bucket}/{key}"
    obj = s3.get_object(Bucket=bucket, Key=key)
    length = obj.get("ContentLength")
    if isinstance(length, int) and length > MAX_MANIFEST_BYTES:
        obj["Body"].close()
        raise MirrorError(f"{where}: {length} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
    with obj["Body"] as body:
        data = body.read(MAX_MANIFEST_BYTES + 1)
    return Manifest.loads(data, where)


def ls_s3(s3: Any, bucket: str, prefix: str) -> list[Listed]:
    from botocore.exceptions import BotoCoreError, ClientError

    found: list[Listed] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key == MANIFEST_NAME or key.endswith("/" + MANIFEST_NAME):
                    where = f"s3://{bucket}/{key[: -len(MANIFEST_NAME)]}"
                    found.append(Listed(where, _s3_manifest(s3, bucket, key)))
    except (ClientError, BotoCoreError) as exc:
        raise MirrorError(f"s3://{bucket}/{prefix}: {exc}") from None
    return found


def verify_s3(s3: Any, bucket: str, prefix: str) -> tuple[Manifest, list[Finding]]:
    """Re-hash every object the manifest under ``prefix`` lists (streamed, not stored)."""
    from botocore.exceptions import ClientError

    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    try:
        manifest = _s3_manifest(s3, bucket, prefix + MANIFEST_NAME)
    except ClientError as exc:
        raise MirrorError(f"s3://{bucket}/{prefix}{MANIFEST_NAME}: {exc}") from None
    findings: list[Finding] = []
    for entry in manifest.files:
        try:
            stream = s3.get_object(Bucket=bucket, Key=prefix + entry.path)["Body"]
        except ClientError:
            findings.append(Finding(entry.path, "missing"))
            continue
        h, size = hashlib.sha256(), 0
        while block := stream.read(1 << 20):
            h.update(block)
            size += len(block)
        if size != entry.size:
            findings.append(Finding(entry.path, f"size {size} differs from the manifest's {entry.size}"))
        elif h.hexdigest() != entry.sha256:
            findings.append(
                Finding(entry.path, f"sha256 {h.hexdigest()} differs from the manifest's {entry.sha256}")
            )
    return manifest, findings


def verify_local(directory: Path) -> tuple[Manifest, list[Finding]]:
    manifest = Manifest.read(directory)
    return manifest, verify_dir(directory, manifest)
