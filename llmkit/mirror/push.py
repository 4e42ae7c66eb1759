"""``llmkit mirror push``: publish a pulled model or the bootstrap bundle, its manifest last.

Targets:

- **S3** (the model store): every object with ``ServerSideEncryption=aws:kms`` and the key
  (``--kms-key-id``, the key's ARN as the bucket policy demands; without it, the bucket's default
  KMS key read from its encryption configuration). Each object carries its sha256 in metadata
  (``x-amz-meta-sha256``) and, for single-part uploads, as ``ChecksumSHA256``. A file is skipped
  when the manifest already published under the prefix lists it with the same sha256 and size
  and the listing shows the object at that size: publishers read the published manifests and no
  other object (the model store's bucket policy), so no HeadObject. Objects a push left without
  its manifest (an interruption) are uploaded again. Files of at least ``part_size`` go up as
  multipart uploads, parts in parallel. An interrupted multipart upload of the same key is
  resumed: each part already uploaded is kept when its checksum (``ChecksumSHA256``, or an MD5
  ETag) equals the local part's, and re-sent otherwise; other uploads of that key are aborted.
  ``abort_incomplete`` aborts every incomplete upload under the prefix instead.
- **a directory** (``--to-dir``) or **an HTTP server that accepts PUT** (``--to-http``, e.g.
  nginx with WebDAV): the same layout under the same prefix.

Everywhere: the local directory is verified against its manifest first, ``manifest.json`` is
written only after every file is in place, and then objects under the prefix that the manifest
no longer lists are deleted (the hosts refuse a bootstrap bundle with unlisted files).

Staged files are read, and a ``--to-dir`` mirror is written, through :mod:`llmkit.files`'s
``*_inside`` operations: a link in the staged directory (a file, or a parent like ``etc -> /etc``)
or in the mirror (the prefix's directories, a file, a temporary name) is refused, never followed.
``--to-dir`` writes and deletes only in ``<DIR>/<prefix>`` that is new, empty, a directory llmkit
published (its ``manifest.json``, of the same kind), a push that was interrupted
(:data:`PUSH_MARK`), or the kit's own place for what is pushed (``models/<slug>/``, ``bootstrap/``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit import net
from llmkit.files import (
    UnsafePathError,
    atomic_write_inside,
    copy_inside,
    hash_inside,
    iter_files_inside,
    lstat_inside,
    makedirs_inside,
    open_inside,
    read_inside,
    reading_inside,
    regular_inside,
    remove_inside,
    require_plain_tree,
)
from llmkit.mirror.auth import redact_url
from llmkit.mirror.layout import default_prefix, normalize_prefix
from llmkit.mirror.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    MirrorError,
    verify_dir,
)
from llmkit.untrusted import printable

MIN_PART = 5 << 20
DEFAULT_PART = 64 << 20
DEFAULT_WORKERS = 8
META_SHA256 = "sha256"
# Marks a --to-dir prefix as a push in progress (a first push that was interrupted has no manifest).
PUSH_MARK = ".llmkit-push"


@dataclass
class PushResult:
    target: str
    prefix: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    resumed_parts: int = 0
    aborted_uploads: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _checked(directory: Path) -> Manifest:
    manifest = Manifest.read(directory)
    bad = verify_dir(directory, manifest)
    if bad:
        raise MirrorError(
            f"{directory}: refusing to publish, {bad[0].path}: {bad[0].problem}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
        )
    return manifest


def _b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


# --- S3 ----------------------------------------------------------------------------------------


@dataclass
class S3Target:
    client: Any
    bucket: str
    kms_key_id: str | None = None
    part_size: int = DEFAULT_PART
    workers: int = DEFAULT_WORKERS
    abort_incomplete: bool = False
    # Called after each part is uploaded (tests interrupt an upload here).
    on_part: Callable[[str, int], None] | None = None


def _client_error(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {})
    return f"{err.get('Code', type(exc).__name__)}: {err.get('Message', exc)}"


def resolve_kms_key(client: Any, bucket: str, kms_key_id: str | None) -> str:
    """The key to encrypt under: the given one, else the bucket's default SSE-KMS key."""
    if kms_key_id:
        return kms_key_id
    from botocore.exceptions import ClientError

    try:
        conf = client.get_bucket_encryption(Bucket=bucket)
        for rule in conf["ServerSideEncryptionConfiguration"]["Rules"]:
            default = rule.get("ApplyServerSideEncryptionByDefault", {})
            if default.get("SSEAlgorithm") == "aws:kms" and default.get("KMSMasterKeyID"):
                return str(default["KMSMasterKeyID"])
    except ClientError as exc:
        raise MirrorError(
            f"s3://{bucket}: cannot read the bucket's default KMS key ({_client_error(exc)}); "
            "give --kms-key-id (the data key's ARN)"
        ) from None
    raise MirrorError(
        f"s3://{bucket}: the bucket has no default SSE-KMS key; give --kms-key-id (the data key's ARN)"
    )


def _sse(key: str) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}


def push_s3(directory: Path, target: S3Target, prefix: str | None = None) -> PushResult:
    from botocore.exceptions import ClientError

    manifest = _checked(directory)
    prefix = normalize_prefix(prefix) if prefix is not None else default_prefix(manifest)
    key_id = resolve_kms_key(target.client, target.bucket, target.kms_key_id)
    if target.part_size < MIN_PART:
        raise MirrorError(f"--part-size must be at least {MIN_PART} bytes (S3's minimum part size)")
    result = PushResult(f"s3://{target.bucket}/{prefix}", prefix)
    s3 = target.client
    try:
        existing = _list_keys(s3, target.bucket, prefix)
        uploads = _incomplete_uploads(s3, target.bucket, prefix)
        if target.abort_incomplete:
            for key, upload_id in uploads:
                s3.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload_id)
                result.aborted_uploads += 1
            uploads = []
        published = _published_files(s3, target.bucket, prefix) if existing else {}
        for entry in manifest.files:
            key = prefix + entry.path
            there = existing.get(key)
            if (
                there is not None
                and there.get("Size") == entry.size
                and published.get(entry.path) == (entry.sha256, entry.size)
            ):
                result.skipped.append(entry.path)
                continue
            pending = [u for k, u in uploads if k == key]
            _upload(s3, target, directory, key, entry, key_id, pending, result)
            result.uploaded.append(entry.path)
        # the manifest last: readers never see a manifest whose files are not all there
        body = manifest.dumps()
        s3.put_object(
            Bucket=target.bucket,
            Key=prefix + MANIFEST_NAME,
            Body=body,
            ContentType="application/json",
            Metadata={META_SHA256: hashlib.sha256(body).hexdigest()},
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
            **_sse(key_id),
        )
        listed = {prefix + e.path for e in manifest.files} | {prefix + MANIFEST_NAME}
        for key in sorted(set(existing) - listed):
            s3.delete_object(Bucket=target.bucket, Key=key)
            result.deleted.append(key[len(prefix) :])
    except ClientError as exc:
        raise MirrorError(f"s3://{target.bucket}/{prefix}: {_client_error(exc)}") from None
    return result


def _published_files(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, size) from the manifest already published under ``prefix`` (none: empty).

    Only the manifest is read, never a model or bundle object: the model store's bucket policy
    lets publishers read the published manifests and nothing else (HeadObject needs
    ``s3:GetObject`` on the object itself).
    """
    from botocore.exceptions import ClientError

    key = prefix + MANIFEST_NAME
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return {}
        raise
    try:
        published = Manifest.loads(body, f"s3://{bucket}/{key}")
    except MirrorError:
        return {}  # not a manifest we can trust to skip by: upload everything again
    return {f.path: (f.sha256, f.size) for f in published.files}


def _list_keys(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def _incomplete_uploads(s3: Any, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(key, upload id) of every incomplete multipart upload under the prefix, oldest first."""
    found: list[tuple[Any, str, str]] = []
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            found.append((upload.get("Initiated"), upload["Key"], upload["UploadId"]))
    found.sort(key=lambda t: (t[0] is None, t[0]))
    return [(k, u) for _, k, u in found]


def _read_part(fd: int, number: int, part_size: int) -> bytes:
    offset, chunks, left = (number - 1) * part_size, [], part_size
    while left > 0 and (block := os.pread(fd, left, offset)):
        chunks.append(block)
        offset += len(block)
        left -= len(block)
    return b"".join(chunks)


def _part_matches(part: dict[str, Any], data: bytes) -> bool:
    if part.get("Size") != len(data):
        return False
    if part.get("ChecksumSHA256"):
        return bool(part["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode())
    etag = str(part.get("ETag", "")).strip('"')
    return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()


def _upload(
    s3: Any,
    target: S3Target,
    directory: Path,
    key: str,
    entry: FileEntry,
    key_id: str,
    pending: list[str],
    result: PushResult,
) -> None:
    """Upload the staged ``directory/entry.path``, read without following a link."""
    meta = {META_SHA256: entry.sha256}
    if entry.size < target.part_size:
        for stale in pending:
            s3.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=stale)
            result.aborted_uploads += 1
        with reading_inside(directory, entry.path) as f:
            s3.put_object(
                Bucket=target.bucket,
                Key=key,
                Body=f,
                Metadata=meta,
                ChecksumSHA256=_b64(entry.sha256),
                **_sse(key_id),
            )
        result.bytes_sent += entry.size
        return
    count = -(-entry.size // target.part_size)
    upload_id: str | None = None
    have: dict[int, dict[str, Any]] = {}
    # resume the newest incomplete upload of this key; abort the others
    for candidate in reversed(pending):
        if upload_id is None:
            parts = {}
            for page in s3.get_paginator("list_parts").paginate(
                Bucket=target.bucket, Key=key, UploadId=candidate
            ):
                for p in page.get("Parts", []):
                    parts[p["PartNumber"]] = p
            if all(1 <= n <= count for n in parts):
                upload_id, have = candidate, parts
                continue
        s3.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=candidate)
        result.aborted_uploads += 1
    if upload_id is None:
        upload_id = s3.create_multipart_upload(
            Bucket=target.bucket, Key=key, Metadata=meta, ChecksumAlgorithm="SHA256", **_sse(key_id)
        )["UploadId"]

    def send(number: int) -> dict[str, Any]:
        data = _read_part(fd, number, target.part_size)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        old = have.get(number)
        if old is not None and _part_matches(old, data):
            with result.lock:
                result.resumed_parts += 1
            return {"PartNumber": number, "ETag": old["ETag"], "ChecksumSHA256": checksum}
        resp = s3.upload_part(
            Bucket=target.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=checksum,
        )
        with result.lock:
            result.bytes_sent += len(data)
        if target.on_part is not None:
            target.on_part(key, number)
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}

    stop = threading.Event()

    def guarded(number: int) -> dict[str, Any]:
        if stop.is_set():
            raise MirrorError(f"{key}: part {number} not sent, another part failed")
        try:
            return send(number)
        except BaseException:
            stop.set()  # the parts not yet started are not sent
            raise

    fd = open_inside(directory, entry.path, os.O_RDONLY)  # one descriptor: every part from one file
    try:
        with ThreadPoolExecutor(max_workers=max(1, target.workers), thread_name_prefix="push") as pool:
            sent = list(pool.map(guarded, range(1, count + 1)))
    finally:
        os.close(fd)
    # The upload stays (for a later resume) when a part fails: nothing above catches.
    s3.complete_multipart_upload(
        Bucket=target.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": sent}
    )


# --- a directory -------------------------------------------------------------------------------


def _check_dest(dest_root: Path, prefix: str, manifest: Manifest) -> bool:
    """``<dest_root>/<prefix>`` may be written and cleaned (see the module's docstring); True if
    it holds a published manifest. A link in it or on the way to it is refused."""
    dest = dest_root / prefix
    rel = prefix.rstrip("/")
    if rel:
        st = lstat_inside(dest_root, rel)  # no link among the prefix's directories
        if st is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise UnsafePathError(
                dest, f"{kind}; refused (--to-dir writes only into directories, never a link)"
            )
    elif not dest_root.exists():
        return False
    elif not dest_root.is_dir():
        raise MirrorError(f"--to-dir {dest_root}: not a directory")
    published = regular_inside(dest_root, prefix + MANIFEST_NAME) is not None
    marked = regular_inside(dest_root, prefix + PUSH_MARK) is not None
    require_plain_tree(dest_root, prefix)
    if published:
        there = Manifest.loads(read_inside(dest_root, prefix + MANIFEST_NAME), str(dest / MANIFEST_NAME))
        if there.kind != manifest.kind:
            raise MirrorError(
                f"--to-dir {dest}: holds a {there.kind}, not a {manifest.kind}; give another --prefix"
            )
        return True
    empty = next(iter_files_inside(dest_root, prefix), None) is None
    if marked or empty or prefix == default_prefix(manifest):
        return False
    raise MirrorError(
        f"--to-dir {dest}: not empty and not a mirror directory llmkit published (no {MANIFEST_NAME}, "
        f"no {PUSH_MARK}); refusing to write or delete there (give a new or empty directory or --prefix)"
    )


def push_dir(directory: Path, dest_root: Path, prefix: str | None = None) -> PushResult:
    manifest = _checked(directory)
    prefix = normalize_prefix(prefix) if prefix is not None else default_prefix(manifest)
    dest = dest_root / prefix
    result = PushResult(str(dest), prefix)
    published = _check_dest(dest_root, prefix, manifest)
    makedirs_inside(dest_root, prefix)
    if not published:  # until the manifest is there, the mark says whose directory this is
        atomic_write_inside(dest_root, prefix + PUSH_MARK, b"")
    for entry in manifest.files:
        rel = prefix + entry.path
        there = regular_inside(dest_root, rel)
        if there and there.st_size == entry.size and hash_inside(dest_root, rel)[0] == entry.sha256:
            result.skipped.append(entry.path)
            continue

        def check(digest: str, size: int, entry: FileEntry = entry) -> None:
            if (digest, size) != (entry.sha256, entry.size):
                raise MirrorError(f"{dest / entry.path}: the copy does not match the manifest's sha256")

        with reading_inside(directory, entry.path) as src:
            copy_inside(src, dest_root, rel, check)
        result.uploaded.append(entry.path)
        result.bytes_sent += entry.size
    atomic_write_inside(dest_root, prefix + MANIFEST_NAME, manifest.dumps())
    listed = {e.path for e in manifest.files} | {MANIFEST_NAME, PUSH_MARK}
    for extra in sorted(set(iter_files_inside(dest_root, prefix)) - listed):
        remove_inside(dest_root, prefix + extra)  # a link is removed itself, never followed
        result.deleted.append(extra)
    remove_inside(dest_root, prefix + PUSH_MARK)
    return result


# --- an HTTP server that accepts PUT -----------------------------------------------------------

_HTTP_OPENER = net.opener()


def _http(
    method: str, url: str, body: Any = None, length: int | None = None, auth: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """(status, body of a GET, at most MAX_MANIFEST_BYTES); the kit's HTTP policy (:mod:`llmkit.net`)."""
    headers = {"User-Agent": "llmkit-mirror/1", **(auth or {})}
    if length is not None:
        headers["Content-Length"] = str(length)
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _HTTP_OPENER.open(req, timeout=300) as resp:
            if method != "GET":
                return resp.status, b""
            return resp.status, net.read_bounded(
                resp, MAX_MANIFEST_BYTES, f"GET {redact_url(url)}", MirrorError
            )
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise MirrorError(f"{method} {redact_url(url)}: {printable(exc)}") from None


def push_http(directory: Path, base_url: str, prefix: str | None = None, retries: int = 3) -> PushResult:
    """PUT every file, then the manifest, under ``base_url``/``prefix``.

    User info in ``base_url`` (``https://user:token@mirror/``) becomes a Basic header for that
    origin only, and only over https (or to loopback); a PUT is never redirected.
    """
    clean, auth = net.split_credentials(base_url, "--to-http")
    manifest = _checked(directory)
    prefix = normalize_prefix(prefix) if prefix is not None else default_prefix(manifest)
    base = clean.rstrip("/") + "/" + prefix
    result = PushResult(base, prefix)
    status, body = _http("GET", base + MANIFEST_NAME, auth=auth)
    published: dict[str, FileEntry] = {}
    if status == 200:
        try:
            published = {e.path: e for e in Manifest.loads(body, base + MANIFEST_NAME).files}
        except MirrorError:
            published = {}
    for entry in manifest.files:
        url = base + entry.path
        old = published.get(entry.path)
        if old is not None and old.sha256 == entry.sha256 and old.size == entry.size:
            result.skipped.append(entry.path)
            continue
        for attempt in range(retries + 1):
            with reading_inside(directory, entry.path) as f:  # a link is refused, not followed
                status, _ = _http("PUT", url, f, entry.size, auth)
            if status in (200, 201, 204):
                break
            if attempt == retries or status < 500:
                raise MirrorError(f"PUT {redact_url(url)}: HTTP {status}")
            time.sleep(0.5 * 2**attempt)
        result.uploaded.append(entry.path)
        result.bytes_sent += entry.size
    status, _ = _http("PUT", base + MANIFEST_NAME, manifest.dumps(), auth=auth)
    if status not in (200, 201, 204):
        raise MirrorError(f"PUT {base}{MANIFEST_NAME}: HTTP {status}")
    return result
