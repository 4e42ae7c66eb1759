"""`llmkit mirror push` against a real moto server on 127.0.0.1 (S3 + KMS), a directory and HTTP PUT."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmkit.commands.mirror import mirror
from llmkit.mirror.manifest import MANIFEST_NAME, Manifest
from llmkit.mirror.pull import pull_local
from llmkit.mirror.push import S3Target, push_dir, push_http, push_s3

MIB = 1 << 20
PREFIX = "models/tiny-r1-latest/"


def model_dir(tmp_path: Path, size: int = 12 * MIB, seed: int = 1) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    gguf = src / "tiny-r1.gguf"
    gguf.write_bytes(random.Random(seed).randbytes(size))
    (src / "Modelfile").write_text("FROM ./tiny-r1.gguf\n")
    out = tmp_path / "staged"
    pull_local("tiny-r1:latest", out, [gguf], src / "Modelfile")
    return out


def record_writes(client: Any) -> list[str]:
    """The keys of PutObject / CompleteMultipartUpload calls, in the order they were made."""
    order: list[str] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        order.append(params["Key"])

    client.meta.events.register("provide-client-params.s3.PutObject", note)
    client.meta.events.register("provide-client-params.s3.CompleteMultipartUpload", note)
    return order


def test_push_encrypts_every_object_writes_the_manifest_last_and_skips_on_repush(s3, tmp_path: Path) -> None:
    staged = model_dir(tmp_path)
    order = record_writes(s3.client)
    target = S3Target(s3.client, s3.bucket, s3.key_arn, part_size=5 * MIB)
    first = push_s3(staged, target)
    assert first.prefix == PREFIX
    assert sorted(first.uploaded) == ["Modelfile", "tiny-r1.gguf"] and not first.skipped
    assert order[-1] == PREFIX + MANIFEST_NAME and len(order) == 3
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert sorted(keys) == sorted(PREFIX + p for p in ("Modelfile", "tiny-r1.gguf", MANIFEST_NAME))
    manifest = Manifest.read(staged)
    for key in keys:
        head = s3.client.head_object(Bucket=s3.bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"] == s3.key_arn, key
        path = key.removeprefix(PREFIX)
        if path != MANIFEST_NAME:
            assert head["Metadata"]["sha256"] == next(f.sha256 for f in manifest.files if f.path == path)
    assert s3.client.head_object(Bucket=s3.bucket, Key=PREFIX + "tiny-r1.gguf")["ETag"].endswith('-3"')
    # re-push: nothing but the manifest is written
    order.clear()
    again = push_s3(staged, target)
    assert sorted(again.skipped) == ["Modelfile", "tiny-r1.gguf"] and not again.uploaded
    assert order == [PREFIX + MANIFEST_NAME]
    # and the CLI verifies the bucket: ok, then a corrupted object is named, exit 1
    env = {"AWS_ENDPOINT_URL_S3": s3.endpoint}
    ok = CliRunner().invoke(mirror, ["verify", f"s3://{s3.bucket}/{PREFIX}"], env=env)
    assert ok.exit_code == 0, ok.output
    s3.client.put_object(
        Bucket=s3.bucket,
        Key=PREFIX + "Modelfile",
        Body=b"FROM ./evil.gguf\n",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=s3.key_arn,
    )
    bad = CliRunner().invoke(mirror, ["verify", f"s3://{s3.bucket}/{PREFIX}"], env=env)
    assert bad.exit_code == 1 and "Modelfile" in bad.output and "tiny-r1.gguf" not in bad.output
    listed = CliRunner().invoke(mirror, ["ls", f"s3://{s3.bucket}/models/"], env=env)
    assert listed.exit_code == 0 and "tiny-r1:latest" in listed.output


def test_interrupted_multipart_upload_resumes_without_resending_parts(s3, tmp_path: Path) -> None:
    staged = model_dir(tmp_path, size=21 * MIB, seed=2)

    class Cut(Exception):
        pass

    def cut(key: str, number: int) -> None:
        if number == 3:
            raise Cut

    order = record_writes(s3.client)
    with pytest.raises(Cut):
        push_s3(staged, S3Target(s3.client, s3.bucket, s3.key_arn, part_size=5 * MIB, workers=1, on_part=cut))
    # interrupted before the manifest: readers see no manifest, an incomplete upload waits
    assert PREFIX + MANIFEST_NAME not in order
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=PREFIX + MANIFEST_NAME)
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]
    assert [u["Key"] for u in uploads] == [PREFIX + "tiny-r1.gguf"]
    result = push_s3(staged, S3Target(s3.client, s3.bucket, s3.key_arn, part_size=5 * MIB, workers=1))
    assert result.resumed_parts == 3  # parts 1-3 were there; 4 and 5 were sent
    assert result.bytes_sent == 21 * MIB - 15 * MIB + len(b"FROM ./tiny-r1.gguf\n")
    assert "Uploads" not in s3.client.list_multipart_uploads(Bucket=s3.bucket)
    body = s3.client.get_object(Bucket=s3.bucket, Key=PREFIX + "tiny-r1.gguf")["Body"].read()
    assert body == (staged / "tiny-r1.gguf").read_bytes()
    assert order[-1] == PREFIX + MANIFEST_NAME


def test_abort_incomplete_uploads_cleanly(s3, tmp_path: Path) -> None:
    staged = model_dir(tmp_path, size=11 * MIB, seed=3)

    def cut(key: str, number: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        push_s3(staged, S3Target(s3.client, s3.bucket, s3.key_arn, part_size=5 * MIB, workers=1, on_part=cut))
    assert len(s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]) == 1
    result = push_s3(
        staged, S3Target(s3.client, s3.bucket, s3.key_arn, part_size=5 * MIB, abort_incomplete=True)
    )
    assert result.aborted_uploads == 1 and result.resumed_parts == 0
    assert "Uploads" not in s3.client.list_multipart_uploads(Bucket=s3.bucket)


def record_reads(client: Any) -> list[tuple[str, str]]:
    """(operation, key) of every call that reads an object (GetObject*, HeadObject)."""
    reads: list[tuple[str, str]] = []

    def note(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name.startswith(("GetObject", "HeadObject")):
            reads.append((model.name, params.get("Key", "")))

    client.meta.events.register("provide-client-params.s3.*", note)
    return reads


def test_a_repush_reads_no_object_but_the_published_manifest(s3, tmp_path: Path) -> None:
    """The bucket policy lets publishers read the published manifests only (no HeadObject)."""
    staged = model_dir(tmp_path, size=MIB)
    target = S3Target(s3.client, s3.bucket, s3.key_arn, part_size=5 * MIB)
    reads = record_reads(s3.client)
    push_s3(staged, target)
    assert reads == []  # nothing under the prefix yet: nothing to compare with
    again = push_s3(staged, target)
    assert sorted(again.skipped) == ["Modelfile", "tiny-r1.gguf"]
    assert reads == [("GetObject", PREFIX + MANIFEST_NAME)]
    # an object that differs from what the published manifest lists (here: its size) goes up again
    s3.client.put_object(
        Bucket=s3.bucket, Key=PREFIX + "Modelfile", Body=b"FROM x\n", ServerSideEncryption="aws:kms"
    )
    third = push_s3(staged, target)
    assert third.uploaded == ["Modelfile"] and third.skipped == ["tiny-r1.gguf"]
    # files a push uploaded before it was cut off (no manifest yet) are not trusted: sent again
    s3.client.delete_object(Bucket=s3.bucket, Key=PREFIX + MANIFEST_NAME)
    fourth = push_s3(staged, target)
    assert sorted(fourth.uploaded) == ["Modelfile", "tiny-r1.gguf"] and not fourth.skipped
    assert {op for op, _ in reads} == {"GetObject"}
    assert {key for _, key in reads} == {PREFIX + MANIFEST_NAME}


def test_push_deletes_what_the_manifest_no_longer_lists_and_uses_the_bucket_key(s3, tmp_path: Path) -> None:
    s3.client.put_bucket_encryption(
        Bucket=s3.bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": s3.key_arn,
                    }
                }
            ]
        },
    )
    s3.client.put_object(Bucket=s3.bucket, Key=PREFIX + "old.gguf", Body=b"old")
    staged = model_dir(tmp_path, size=MIB)
    res = CliRunner().invoke(
        mirror,
        ["push", str(staged), "--bucket", s3.bucket, "--endpoint-url", s3.endpoint],
    )
    assert res.exit_code == 0, res.output
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert PREFIX + "old.gguf" not in keys and PREFIX + MANIFEST_NAME in keys
    head = s3.client.head_object(Bucket=s3.bucket, Key=PREFIX + "tiny-r1.gguf")
    assert head["SSEKMSKeyId"] == s3.key_arn


def test_push_refuses_a_staging_dir_that_does_not_match_its_manifest(s3, tmp_path: Path) -> None:
    staged = model_dir(tmp_path, size=MIB)
    (staged / "Modelfile").write_text("FROM ./other.gguf\n")
    res = CliRunner().invoke(
        mirror,
        [
            "push",
            str(staged),
            "--bucket",
            s3.bucket,
            "--endpoint-url",
            s3.endpoint,
            "--kms-key-id",
            s3.key_arn,
        ],
    )
    assert res.exit_code == 2 and "refusing to publish, Modelfile" in res.output
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket)


def test_push_to_dir_and_http(file_server, tmp_path: Path) -> None:
    staged = model_dir(tmp_path, size=MIB)
    mirror_root = tmp_path / "onprem"
    (mirror_root / PREFIX).mkdir(parents=True)
    (mirror_root / PREFIX / "stale.bin").write_bytes(b"x")
    first = push_dir(staged, mirror_root)
    assert sorted(first.uploaded) == ["Modelfile", "tiny-r1.gguf"] and first.deleted == ["stale.bin"]
    assert push_dir(staged, mirror_root).uploaded == []
    assert CliRunner().invoke(mirror, ["verify", str(mirror_root / PREFIX)]).exit_code == 0

    sent = push_http(staged, file_server.url + "/mirror")
    puts = [r[1] for r in file_server.requests if r[0] == "PUT"]
    assert puts[-1] == f"mirror/{PREFIX}{MANIFEST_NAME}" and len(puts) == 3
    assert file_server.files[f"mirror/{PREFIX}tiny-r1.gguf"] == (staged / "tiny-r1.gguf").read_bytes()
    assert sorted(sent.uploaded) == ["Modelfile", "tiny-r1.gguf"]
    again = push_http(staged, file_server.url + "/mirror")
    assert again.uploaded == [] and sorted(again.skipped) == ["Modelfile", "tiny-r1.gguf"]
