"""`llmkit mirror pull` from a real registry: distribution's registry (built from its Go module)
holding the tiny model that real Ollama (the lab build) pushed into it, all on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkit.lab import builds, tiny_model
from llmkit.mirror.manifest import verify_dir
from llmkit.mirror.pull import pull_registry

pytestmark = pytest.mark.e2e

REGISTRY_MODULE = "github.com/distribution/distribution/v3/cmd/registry"
REGISTRY_VERSION = "v3.1.2"


def build_registry() -> Path:
    """``go install`` of the pinned registry into ``<lab cache>/builds/registry-<version>/``."""
    tc = builds.go_toolchain()
    dest = builds.default_cache_dir() / "builds" / f"registry-{REGISTRY_VERSION}-{tc.version}"
    binary = dest / "registry"
    if binary.is_file():
        return binary
    env = {k: v for k, v in os.environ.items() if k != "GOFLAGS"}
    env |= {"GOBIN": str(dest), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [tc.go, "install", f"{REGISTRY_MODULE}@{REGISTRY_VERSION}"], env=env, check=True, timeout=1800
    )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    binary = build_registry()
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "log:\n  level: warn\n"
    )
    proc = subprocess.Popen(
        [str(binary), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def ollama(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    build = builds.build_ollama()
    root = tmp_path / "ollama"
    with tarfile.open(build.path) as tar:
        tar.extractall(root, filter="data")
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
    }
    (tmp_path / "home").mkdir()
    binary = root / "bin" / "ollama"
    log = (tmp_path / "ollama.log").open("wb")
    proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield binary, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_pull_from_a_registry_that_ollama_pushed_to(registry: str, ollama, tmp_path: Path) -> None:
    binary, env = ollama
    gguf, modelfile = tiny_model.write_model(tmp_path / "tiny")
    name = f"{registry}/library/tiny-r1:latest"
    run = {"env": env, "check": True, "capture_output": True, "timeout": 300, "cwd": tmp_path / "tiny"}
    subprocess.run([str(binary), "create", name, "-f", str(modelfile)], **run)
    subprocess.run([str(binary), "push", "--insecure", name], **run)

    out = tmp_path / "mirror"
    result = pull_registry("tiny-r1:latest", out, registry=f"http://{registry}")
    m = result.manifest
    assert (m.model, m.tag, m.source["type"], m.source["repository"]) == (
        "tiny-r1",
        "latest",
        "registry",
        "library/tiny-r1",
    )
    model = m.by_role("gguf")
    assert model is not None and model.sha256 == tiny_model.sha256_file(gguf)
    assert (out / model.path).read_bytes() == gguf.read_bytes()
    paths = {f.path for f in m.files}
    assert {"config.json", "template", "Modelfile", "ollama-manifest.json"} <= paths
    assert (out / "Modelfile").read_text().startswith("FROM ./model.gguf\n")
    assert verify_dir(out, strict=True) == []
    # the mirror's Modelfile recreates the model in Ollama
    subprocess.run(
        [str(binary), "create", "tiny-r1-mirrored", "-f", str(out / "Modelfile")], **{**run, "cwd": out}
    )
