"""The AWS model hosts' path: the models deploy reads the model store (``s3://``) itself.

``llmkit mirror push`` publishes a model to a real moto server on 127.0.0.1; the host-side
commands (the MirrorManifest fact's, verified_download's) run in a real shell with the real AWS
CLI (``awscli``, a pinned dev dependency) pointed at it by ``AWS_ENDPOINT_URL``, as the hosts'
CLI reaches the bucket through the S3 gateway endpoint with the instance role. The deploy itself
runs on pyinfra's ``@fake`` connector with those facts' output canned.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest

from llmkit.mirror.manifest import Manifest
from llmkit.mirror.pull import pull_local
from llmkit.mirror.push import S3Target, push_s3
from playbooks.deploys.models import MirrorBytes
from playbooks.facts import mirror as mf
from playbooks.operations import download as dl
from tests.playbooks.test_models_manifest import FREE_PLENTY, GGUF, MODELFILE, STAGE, run_deploy, served

BUCKET = "llmkit-prod-models-123456789012-eu-central-1"
PREFIX = "models/tiny-r1-latest/"


@pytest.fixture
def store(aws_env: str, tmp_path: Path) -> Manifest:
    """tiny-r1:latest published to the model store by `llmkit mirror push` (SSE-KMS)."""
    assert shutil.which("aws"), "the AWS CLI is missing: run uv sync --frozen"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    key = boto3.client("kms").create_key(Description="data")["KeyMetadata"]["Arn"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny-r1.gguf").write_bytes(GGUF)
    (src / "Modelfile").write_text(MODELFILE)
    staging = tmp_path / "staging"
    pull_local("tiny-r1:latest", staging, [src / "tiny-r1.gguf"], src / "Modelfile")
    assert push_s3(staging, S3Target(s3, BUCKET, key)).prefix == PREFIX
    return Manifest.read(staging)


def host_shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)


def test_the_host_reads_the_published_manifest_from_the_store(store: Manifest) -> None:
    fact = mf.MirrorManifest()
    out = host_shell(fact.command(url=f"s3://{BUCKET}/{PREFIX}manifest.json"))
    assert out.returncode == 0, out.stderr
    text = fact.process(out.stdout.splitlines())
    assert text is not None
    assert Manifest.loads(text, "store").files == store.files
    missing = host_shell(fact.command(url=f"s3://{BUCKET}/models/nothing-here/manifest.json"))
    assert missing.returncode == 0
    assert fact.process(missing.stdout.splitlines()) is None


def test_verified_download_from_the_store(store: Manifest, tmp_path: Path) -> None:
    gguf = store.by_role("gguf")
    assert gguf is not None
    dest = tmp_path / "stage" / "tiny-r1.gguf"
    url = f"s3://{BUCKET}/{PREFIX}tiny-r1.gguf"
    ok = host_shell(dl.download_script(url, str(dest), gguf.sha256))
    assert ok.returncode == 0, ok.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == gguf.sha256
    assert not Path(f"{dest}.part").exists()
    # a wrong digest: the download is deleted and named, the old file stays
    wrong = host_shell(dl.download_script(url, str(tmp_path / "other.gguf"), "0" * 64))
    assert wrong.returncode == 1
    assert "checksum mismatch for" in wrong.stderr and "the download was deleted" in wrong.stderr
    assert not (tmp_path / "other.gguf").exists() and not (tmp_path / "other.gguf.part").exists()


def test_a_missing_object_fails_after_the_attempts(store: Manifest, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    result = host_shell(dl.download_script(f"s3://{BUCKET}/{PREFIX}gone.gguf", str(tmp_path / "x"), "1" * 64))
    assert result.returncode == 1
    assert "(aws exit 1 after 1 attempts)" in result.stderr


def test_s3_sources_must_name_a_bucket_and_key() -> None:
    assert dl.source_url(f"s3://{BUCKET}/{PREFIX}a.gguf") == f"s3://{BUCKET}/{PREFIX}a.gguf"
    for bad in ("s3://", "s3://Bucket_Name/x", f"s3://{BUCKET}", "gs://b/k"):
        with pytest.raises(dl.OperationValueError):
            dl.source_url(bad)


def test_the_deploy_takes_the_model_from_the_store_by_its_manifest(store: Manifest) -> None:
    """Host data as the fleet writes it: models_mirror_url s3://<store>/, manifest models/<slug>/."""
    gguf, modelfile = store.by_role("gguf"), store.by_role("modelfile")
    assert gguf is not None and modelfile is not None
    entry = {"name": "tiny-r1", "source": "mirror", "manifest": f"{PREFIX}manifest.json"}
    manifest_url = f"s3://{BUCKET}/{PREFIX}manifest.json"
    read = {
        re.compile(rf"aws s3 cp .*{re.escape(shlex.quote(manifest_url))}"): [
            mf.OK_MARKER,
            *store.dumps().decode().splitlines(),
        ]
    }
    modelfile_url = f"s3://{BUCKET}/{PREFIX}Modelfile"
    fact = MirrorBytes()
    sent = host_shell(fact.command(url=modelfile_url))  # the host's read of the store, for real
    assert sent.returncode == 0, sent.stderr
    assert fact.process(sent.stdout.splitlines()) == MODELFILE.encode()
    read[re.compile(rf"aws s3 cp .*{re.escape(modelfile_url)}")] = sent.stdout.splitlines()
    commands = run_deploy(
        {"models": [entry], "models_mirror_url": f"s3://{BUCKET}/"}, {**served(), **FREE_PLENTY, **read}
    )
    (fetch,) = [c for c in commands if 'aws s3 cp --only-show-errors "$url" "$part"' in c]
    assert f"url=s3://{BUCKET}/{PREFIX}tiny-r1.gguf;" in fetch
    assert f"expected={gguf.sha256};" in fetch and f"dest={STAGE}/tiny-r1.gguf;" in fetch
    assert any(f"aws s3 cp --only-show-errors {modelfile_url}" in c and "base64" in c for c in commands)
    assert not [c for c in commands if "curl" in c]


def test_an_unreadable_store_manifest_says_how_to_look_on_the_host() -> None:
    from llmkit.errors import ConfigError
    from playbooks.deploys.models import model_specs, resolve_manifest

    entry = {"name": "tiny-r1", "source": "mirror", "manifest": f"{PREFIX}manifest.json"}
    (spec,) = model_specs({"models": [entry], "models_mirror_url": f"s3://{BUCKET}/"})
    url = f"s3://{BUCKET}/{PREFIX}manifest.json"
    with pytest.raises(ConfigError) as err:
        resolve_manifest(spec, None, url, "@local")
    assert f"run `aws s3 cp {url} -` there" in str(err.value)
