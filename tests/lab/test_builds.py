"""End to end: the lab's own Ollama build really serves the tiny R1-style model; node_exporter works.

Builds through the lab cache (``$LLMKIT_LAB_CACHE`` or /var/cache/llmkit/lab): the first run
compiles Ollama with cgo (minutes), later runs reuse it. Every process is started on 127.0.0.1
and stopped by its fixture.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmkit.artifacts import artifact
from llmkit.files import sha256_file
from llmkit.lab import builds, tiny_model
from playbooks.deploys.models import merged_modelfile, parse_directives
from tests.conftest import NEEDS_BUILDS

pytestmark = [pytest.mark.e2e, NEEDS_BUILDS]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: dict[str, Any] | None = None, timeout: float = 120) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            pytest.fail(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        try:
            if http(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # Its own process group, so stopping it also stops the runners `ollama serve` spawns.
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    else:  # the server is gone; make sure no runner of its group outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    return builds.default_cache_dir()


@pytest.fixture(scope="module")
def ollama_build(cache_dir: Path, terminal_progress: Callable[[str], None]) -> builds.Build:
    return builds.build_ollama(cache_dir, terminal_progress)


@pytest.fixture(scope="module")
def node_exporter_build(cache_dir: Path, terminal_progress: Callable[[str], None]) -> builds.Build:
    return builds.build_node_exporter(cache_dir, terminal_progress)


def extract(tgz: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(tgz, "r:gz") as tar:
        tar.extractall(dest, filter="tar")
    return dest


@dataclass
class Ollama:
    url: str
    host: str
    binary: Path
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def ollama(ollama_build: builds.Build, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ollama]:
    root = tmp_path_factory.mktemp("ollama")
    install = extract(ollama_build.path, root / "install")
    binary = install / "bin" / "ollama"
    (root / "home").mkdir()
    host = f"127.0.0.1:{free_port()}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root / "home"),
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": str(root / "models"),
        "OLLAMA_NOPRUNE": "1",
    }
    log = root / "serve.log"
    proc = start([str(binary), "serve"], env, log)
    try:
        wait_http(f"http://{host}/api/version", proc, log)
        yield Ollama(url=f"http://{host}", host=host, binary=binary, env=env, log=log)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def tiny(ollama: Ollama, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model, created from its mirror Modelfile through the built CLI."""
    model_dir = tmp_path_factory.mktemp("tiny-r1")
    _, modelfile = tiny_model.write_model(model_dir)
    created = subprocess.run(
        [str(ollama.binary), "create", tiny_model.MODEL_NAME, "-f", str(modelfile)],
        cwd=model_dir,
        env=ollama.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert created.returncode == 0, created.stdout + created.stderr + ollama.log.read_text(errors="replace")
    return tiny_model.MODEL_NAME


def test_the_build_reports_its_pinned_version(ollama: Ollama) -> None:
    status, body = http(f"{ollama.url}/api/version")
    assert status == 200
    assert json.loads(body)["version"] == artifact("ollama").version


def test_generate_really_infers_on_the_cpu(ollama: Ollama, tiny: str) -> None:
    request = {
        "model": tiny,
        "prompt": "hello world",
        "stream": False,
        "think": False,
        "options": {"num_predict": 8, "seed": 7, "temperature": 0.8},
    }
    status, body = http(f"{ollama.url}/api/generate", request)
    assert status == 200, body
    reply = json.loads(body)
    assert reply["response"].strip(), reply
    assert reply["eval_count"] > 0 and reply["done"] is True
    # the same seed gives the same tokens
    assert json.loads(http(f"{ollama.url}/api/generate", request)[1])["response"] == reply["response"]
    # it ran in llama.cpp's runner on the CPU backend compiled into the binary
    log = ollama.log.read_text(errors="replace")
    assert "qwen2" in log and "id=cpu library=cpu" in log


def test_chat_answers_through_the_r1_template(ollama: Ollama, tiny: str) -> None:
    request = {
        "model": tiny,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": False,
        "think": False,
        "options": {"num_predict": 8, "seed": 7},
    }
    status, body = http(f"{ollama.url}/api/chat", request)
    assert status == 200, body
    reply = json.loads(body)
    assert reply["message"]["role"] == "assistant"
    assert reply["message"]["content"].strip(), reply
    assert reply["eval_count"] > 0


def test_the_models_deploy_modelfile_merge_creates_a_working_model(ollama: Ollama, tmp_path: Path) -> None:
    """What playbooks/deploys/models.py gives a host: its FROM + the mirror Modelfile's directives."""
    stage = tmp_path / "staging"
    gguf_path, mirror_modelfile = tiny_model.write_model(stage)
    merged = stage / "Modelfile.merged"
    ours = parse_directives("PARAMETER num_ctx 256", from_allowed=False)
    merged.write_text(merged_modelfile(str(gguf_path), mirror_modelfile.read_text(), ours))
    lines = merged.read_text().splitlines()
    assert lines[0] == f"FROM {gguf_path}" and sum(line.startswith("FROM ") for line in lines) == 1
    created = subprocess.run(
        [str(ollama.binary), "create", "tiny-r1-deployed", "-f", str(merged)],
        env=ollama.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    request = {"model": "tiny-r1-deployed", "prompt": "the lab", "stream": False, "think": False}
    status, body = http(f"{ollama.url}/api/generate", request | {"options": {"num_predict": 4, "seed": 1}})
    assert status == 200, body
    assert json.loads(body)["eval_count"] > 0
    status, body = http(f"{ollama.url}/api/show", {"model": "tiny-r1-deployed"})
    shown = json.loads(body)
    # the mirror Modelfile's TEMPLATE survived the merge
    assert shown["template"].strip() == tiny_model.TEMPLATE.strip()
    parameters = shown["parameters"]
    # the deploy's directive (from context_length) wins over the mirror Modelfile's num_ctx 512
    assert re.search(r"^num_ctx\s+256$", parameters, re.M), parameters
    assert "512" not in parameters


def test_the_model_is_listed_with_the_r1_capabilities(ollama: Ollama, tiny: str) -> None:
    listed = subprocess.run(
        [str(ollama.binary), "list"], env=ollama.env, capture_output=True, text=True, timeout=60
    )
    assert tiny in listed.stdout
    status, body = http(f"{ollama.url}/api/show", {"model": tiny})
    assert status == 200
    shown = json.loads(body)
    assert shown["details"]["family"] == "qwen2"
    assert set(shown["capabilities"]) >= {"completion", "thinking"}


def test_ollama_tarball_layout_and_checksum(ollama_build: builds.Build) -> None:
    with tarfile.open(ollama_build.path, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {"bin/ollama", "lib/ollama"} <= set(members)
    assert members["bin/ollama"].isfile() and members["bin/ollama"].mode & 0o111
    assert members["lib/ollama"].isdir()
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
    sidecar = ollama_build.path.with_name(ollama_build.file + ".sha256")
    assert sidecar.read_text() == f"{sha256_file(ollama_build.path)}  {ollama_build.file}\n"
    assert ollama_build.file == artifact("ollama").file("amd64")


def test_second_publish_is_a_cache_hit_and_reproducible(
    ollama_build: builds.Build,
    node_exporter_build: builds.Build,
    cache_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llmkit.lab.builds")
    started = time.monotonic()
    first = builds.publish(tmp_path / "m1", cache_dir)
    second = builds.publish(tmp_path / "m2", cache_dir)
    took = time.monotonic() - started
    assert first == second
    assert first["ollama"]["sha256"] == ollama_build.sha256
    assert first["node_exporter"]["sha256"] == node_exporter_build.sha256
    messages = [r.getMessage() for r in caplog.records]
    assert sum("ollama 0.13.3: cached" in m for m in messages) == 2, messages
    assert sum("node_exporter 1.9.1: cached" in m for m in messages) == 2, messages
    assert not any(": building" in m for m in messages)
    assert took < 60
    for mirror in (tmp_path / "m1", tmp_path / "m2"):
        assert json.loads((mirror / "artifacts.json").read_text()) == first
        for entry in (first["ollama"], first["node_exporter"]):
            assert sha256_file(mirror / entry["file"]) == entry["sha256"]
        assert sha256_file(mirror / "models" / first["models"][0]["file"]) == first["models"][0]["sha256"]


def test_the_gguf_written_twice_has_the_same_sha256(tmp_path: Path) -> None:
    a = tiny_model.write_gguf(tmp_path / "a" / tiny_model.GGUF_FILE)
    b = tiny_model.write_gguf(tmp_path / "b" / tiny_model.GGUF_FILE)
    assert sha256_file(a) == sha256_file(b)


@pytest.fixture
def node_exporter_binary(node_exporter_build: builds.Build, tmp_path: Path) -> Path:
    install = extract(node_exporter_build.path, tmp_path / "ne")
    version = artifact("node_exporter").version
    return install / f"node_exporter-{version}.linux-amd64" / "node_exporter"


def test_node_exporter_reports_its_version(node_exporter_binary: Path) -> None:
    out = subprocess.run([str(node_exporter_binary), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert f"node_exporter, version {artifact('node_exporter').version} " in out.stdout + out.stderr


def test_node_exporter_serves_metrics(node_exporter_binary: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "node_exporter.log"
    proc = start(
        [str(node_exporter_binary), f"--web.listen-address=127.0.0.1:{port}"],
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc, log)
        status, body = http(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        text = body.decode()
        assert 'node_exporter_build_info{branch="HEAD"' in text
        assert f'version="{artifact("node_exporter").version}"' in text
        assert "node_cpu_seconds_total" in text
    finally:
        stop(proc)
