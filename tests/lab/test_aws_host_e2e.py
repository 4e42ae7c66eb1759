"""An AWS model host's launch, for real, on a lab machine: the fleet's user data end to end.

What is real: the user data as ``components/fleet.py`` renders it for the prod stack's
deepseek-r1:32b hosts; a Debian 12 machine with systemd (the lab) and its own Python 3.11; the
model store as a moto server (S3 with SSE-KMS) on the lab's controller address, holding the
bootstrap bundle that ``llmkit mirror bundle`` made from the hosts' locked wheels and the lab's
Ollama and node_exporter builds, and the tiny R1 model under ``models/deepseek-r1-32b/`` that
``llmkit mirror push`` published; the AWS CLI (the dev dependencies' awscli, installed on the
machine from wheels) for every S3 read, the bundle's and the models deploy's; pyinfra from the bundle running
``site.py`` against ``@local``; Ollama serving the model behind the TLS terminator.

Stand-ins, each for something this machine cannot have: the instance role's credentials and the
VPC endpoint are moto's (``AWS_ENDPOINT_URL`` and test keys in the environment); the instance
metadata service (``imds``: the instance id and the machine's address) and the lifecycle call
(``complete_lifecycle``: moto has no CompleteLifecycleAction; the result is recorded) are shell
functions; the host data gets the lab controller as an admin and load-balancer address (so the
test keeps SSH and can call the model port as the load balancer would) and the checksums of the
lab's own Ollama and node_exporter builds (a mirror's own build, as the deploys allow), and loses
its model cache volume (an nspawn machine has no extra disk; test_model_cache.py covers it).

Every address is the lab's own. The lab is torn down even when a check fails.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import pytest

from components.fleet import host_data, render_user_data
from llmkit.artifacts import artifact, load_artifacts
from llmkit.config import load_stack
from llmkit.lab import builds, tiny_model
from llmkit.lab import lab as labmod
from llmkit.mirror.bundle import BundleOptions, build_bundle
from llmkit.mirror.manifest import Manifest
from llmkit.mirror.pull import pull_local
from llmkit.mirror.push import S3Target, push_s3
from llmkit.placement import place_models
from tests.conftest import NEEDS_LAB, WHEEL_CACHE, fetched_once, pip_download

pytestmark = [pytest.mark.e2e, NEEDS_LAB]

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.93.0.0/24"  # its own: never another test's lab or an admin's
HOST = "gpu1"
REGION = "eu-central-1"
BUCKET = "llmkit-prod-models-123456789012-eu-central-1"
MODEL = "deepseek-r1:32b"
SLUG = "deepseek-r1-32b"
INSTANCE_ID = "i-0123456789abcdef0"
# the AWS CLI of the dev dependencies (pyproject.toml / uv.lock), installed on the machine too
AWSCLI = f"awscli=={metadata.version('awscli')}"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lab",
    "AWS_SECRET_ACCESS_KEY": "lab",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def awscli_wheels() -> Path:
    """awscli and its dependencies for the machine's CPython 3.11, fetched once with pip."""
    target = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    target += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"]
    cache = WHEEL_CACHE.parent / f"awscli-{AWSCLI.split('==')[1]}-cp311"
    return fetched_once(cache, lambda directory: pip_download(directory, *target, AWSCLI))


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, terminal_progress: Callable[[str], None]
) -> Iterator[labmod.Lab]:
    labmod.preflight()  # NEEDS_LAB has failed the test already when a program is missing
    state_dir = tmp_path_factory.mktemp("lab")
    try:
        made = labmod.up([HOST], state_dir, subnet=SUBNET, progress=terminal_progress)
        builds.publish(made.mirror_dir, progress=terminal_progress)
        yield made
    finally:
        labmod.down(state_dir)


@pytest.fixture(scope="module")
def store(lab: labmod.Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto on the lab's controller address: the model store (and KMS), as the host reaches it."""
    port = free_port(lab.controller_address)
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", lab.controller_address, "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://{lab.controller_address}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="lab",
        aws_secret_access_key="lab",
    )


@pytest.fixture(scope="module")
def published(
    lab: labmod.Lab,
    store: str,
    host_wheels: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The bundle in bootstrap/ and the model in models/deepseek-r1-32b/, as an operator publishes them."""
    work = tmp_path_factory.mktemp("publish")
    artifacts = json.loads((lab.mirror_dir / "artifacts.json").read_text())
    # The lab builds no GPU exporter (the machine has no GPU, the deploy skips it): a stand-in file
    # with its checksum given, so that the bundle holds every pinned release.
    pinned = load_artifacts()["nvidia_gpu_exporter"]
    gpu_exporter = lab.mirror_dir / pinned.name / f"v{pinned.version}" / pinned.file("amd64")
    gpu_exporter.parent.mkdir(parents=True, exist_ok=True)
    gpu_exporter.write_bytes(b"not installed on a host without a GPU\n")
    overrides = {
        "ollama:amd64": artifacts["ollama"]["sha256"],
        "node_exporter:amd64": artifacts["node_exporter"]["sha256"],
        "nvidia_gpu_exporter:amd64": hashlib.sha256(gpu_exporter.read_bytes()).hexdigest(),
    }
    bundle = work / "bundle"
    options = BundleOptions(
        pythons=("3.11",),
        find_links=host_wheels,
        artifacts_from=str(lab.mirror_dir),
        artifact_sha256=overrides,
    )
    build_bundle(bundle, options)
    s3 = aws_client("s3", store)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    key = aws_client("kms", store).create_key(Description="data")["KeyMetadata"]["Arn"]
    push_s3(bundle, S3Target(s3, BUCKET, key))
    model_dir = lab.mirror_dir / "models" / tiny_model.SLUG
    staged = work / "model"
    pull_local(MODEL, staged, [model_dir / tiny_model.GGUF_FILE], model_dir / tiny_model.MODELFILE)
    assert push_s3(staged, S3Target(s3, BUCKET, key)).prefix == f"models/{SLUG}/"
    return {
        "model": Manifest.read(staged),
        "bundle": Manifest.read(bundle),
        "bundle_dir": bundle,
        "artifacts": artifacts,
    }


def user_data(lab: labmod.Lab, store: str, artifacts: dict[str, Any]) -> str:
    cfg = load_stack("prod", REPO)
    placement = next(p for p in place_models(cfg) if p.spec.name == MODEL)
    data = host_data(
        placement,
        stack="prod",
        region=REGION,
        runtime="ollama",
        bucket=BUCKET,
        log_groups={"model-server": "/llmkit/prod/model-server"},
        cache_gib=40,
        lb_subnet_cidrs=[str(n) for n in cfg.subnet_plan()["model"]],
        admin_cidrs=[str(cfg.network.vpc_cidr)],
    )
    controller = f"{lab.controller_address}/32"
    data["admin_cidrs"] = [*data["admin_cidrs"], controller]
    data["gateway_hosts"] = [*data["gateway_hosts"], controller]
    # nspawn machines get no extra block device: no model cache volume here (test_model_cache.py
    # formats a real loop device and checks the deploy's commands)
    del data["model_cache"]
    data["ollama_sha256"] = artifacts["ollama"]["sha256"]
    data["node_exporter_sha256"] = artifacts["node_exporter"]["sha256"]
    return render_user_data(data, s3_endpoint=store, ready_timeout_seconds=600)


@pytest.fixture(scope="module")
def launched(
    lab: labmod.Lab, store: str, published: dict[str, Any], awscli_wheels: Path
) -> subprocess.CompletedProcess[str]:
    """The user data's first boot on the machine, as cloud-init would run it (root, bash)."""
    root = lab.host(HOST).root
    wheels = root / "root" / "awscli-wheels"
    shutil.copytree(awscli_wheels, wheels, dirs_exist_ok=True)
    # the bundle's own pip wheel installs the CLI: Debian's python3 comes without pip
    pip = published["bundle_dir"] / next(f.path for f in published["bundle"].files if f.role == "pip-wheel")
    shutil.copy(pip, wheels / pip.name)
    lab.ssh(
        HOST,
        "python3 -m venv --without-pip /opt/awscli && "
        f"/opt/awscli/bin/python /root/awscli-wheels/{pip.name}/pip install --quiet --no-index "
        f"--find-links /root/awscli-wheels {AWSCLI} && ln -sf /opt/awscli/bin/aws /usr/local/bin/aws",
        timeout=600,
    )
    (root / "root" / "user-data.sh").write_text(user_data(lab, store, published["artifacts"]))
    stubs = (
        f"imds() {{ case $1 in instance-id) echo {INSTANCE_ID};; local-ipv4) echo {lab.host(HOST).address};; "
        "*) return 1;; esac; }; "
        'complete_lifecycle() { echo "$1" >>/root/lifecycle-results; }'
    )
    env = " ".join(f"{k}={v}" for k, v in {**CREDENTIALS, "AWS_ENDPOINT_URL": store}.items())
    command = f"env {env} bash -c {shlex.quote(f'source /root/user-data.sh; {stubs}; main')}"
    return lab.ssh(HOST, command, check=False, timeout=1800)


def test_the_host_boots_from_the_store_and_serves_the_model(
    lab: labmod.Lab, launched: subprocess.CompletedProcess[str], published: dict[str, Any]
) -> None:
    if launched.returncode != 0:
        journal = lab.ssh(HOST, "journalctl -n 60 --no-pager -u ollama.service -u nginx.service", check=False)
        output = (launched.stdout + launched.stderr)[-6000:]
        pytest.fail(f"{output}\n--- journal ---\n{journal.stdout[-4000:]}")
    root = lab.host(HOST).root
    assert (root / "root/lifecycle-results").read_text().split() == ["CONTINUE"]
    bundle = published["bundle"]
    assert f"bootstrap bundle verified: {len(bundle.files)} files" in launched.stderr
    assert (root / "var/lib/llmkit/bootstrapped").is_file()
    # pyinfra ran from the bundle's wheels with the machine's own Python
    version = lab.ssh(
        HOST, "/opt/llmkit/venv/bin/python -c 'import sys, pyinfra; print(sys.version_info[:2])'"
    )
    assert version.stdout.strip() == "(3, 11)"
    # the model came from the store, checked against the manifest published there
    gguf = published["model"].by_role("gguf")
    assert gguf is not None
    assert (root / f"var/lib/ollama/models/blobs/sha256-{gguf.sha256}").is_file()
    tags = lab.ssh(HOST, "curl -sS http://127.0.0.1:11434/api/tags")
    assert MODEL in {m["name"] for m in json.loads(tags.stdout)["models"]}
    # Ollama is the lab build from the bundle, at the pinned version
    version = lab.ssh(HOST, "ollama --version")
    assert artifact("ollama").version in version.stdout + version.stderr


def test_the_model_port_answers_the_load_balancer_over_tls(
    lab: labmod.Lab, launched: subprocess.CompletedProcess[str]
) -> None:
    assert launched.returncode == 0
    address = lab.host(HOST).address
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the load balancer does not check target certificates either
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    body = json.dumps({"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}})
    conn = http.client.HTTPSConnection(address, 11434, context=context, timeout=120)
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 200, answer.read()[:500]
    assert json.loads(answer.read())["done"] is True


def test_a_second_boot_only_waits_and_continues(
    lab: labmod.Lab, launched: subprocess.CompletedProcess[str], store: str
) -> None:
    assert launched.returncode == 0
    stubs = (
        f"imds() {{ case $1 in instance-id) echo {INSTANCE_ID};; local-ipv4) echo {lab.host(HOST).address};; "
        "*) return 1;; esac; }; "
        'complete_lifecycle() { echo "$1" >>/root/lifecycle-results; }'
    )
    per_boot = "/var/lib/cloud/scripts/per-boot/llmkit-model-host.sh"
    env = " ".join(f"{k}={v}" for k, v in {**CREDENTIALS, "AWS_ENDPOINT_URL": store}.items())
    again = lab.ssh(
        HOST,
        f"env {env} bash -c {shlex.quote(f'source {per_boot}; {stubs}; main')}",
        check=False,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "bootstrap bundle verified" not in again.stderr
    assert lab.ssh(HOST, "cat /root/lifecycle-results").stdout.split() == ["CONTINUE", "CONTINUE"]
