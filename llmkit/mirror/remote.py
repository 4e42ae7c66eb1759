"""``ls`` and ``verify`` of a mirror: a local directory or an S3 prefix (``s3://BUCKET/PREFIX``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.mirror.manifest import MANIFEST_NAME, Finding, Manifest, MirrorError, verify_dir

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


def ls_s3(s3: Any, bucket: str, prefix: str) -> list[Listed]:
    found: list[Listed] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key == MANIFEST_NAME or key.endswith("/" + MANIFEST_NAME):
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                where = f"s3://{bucket}/{key[: -len(MANIFEST_NAME)]}"
                found.append(Listed(where, Manifest.loads(body, f"s3://{bucket}/{key}")))
    return found


def verify_s3(s3: Any, bucket: str, prefix: str) -> tuple[Manifest, list[Finding]]:
    """Re-hash every object the manifest under ``prefix`` lists (streamed, not stored)."""
    from botocore.exceptions import ClientError

    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    try:
        body = s3.get_object(Bucket=bucket, Key=prefix + MANIFEST_NAME)["Body"].read()
    except ClientError as exc:
        raise MirrorError(f"s3://{bucket}/{prefix}{MANIFEST_NAME}: {exc}") from None
    manifest = Manifest.loads(body, f"s3://{bucket}/{prefix}{MANIFEST_NAME}")
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
