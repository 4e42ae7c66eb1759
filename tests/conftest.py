"""Shared fixtures: run Pulumi code on the same recording mock runtime as `llmkit plan`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from llmkit.config import StackConfig, load_stack
from llmkit.lab import builds, prereqs
from llmkit.lab import lab as labmod
from llmkit.mirror import wheels
from llmkit.mirror.bundle import HOST_REQUIREMENTS
from llmkit.plan import PlannedResource, record

ROOT = Path(__file__).resolve().parent.parent
AWS_REGION = "eu-central-1"


# --- prerequisites: one behaviour, one message -------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*items): programs, absolute file paths, python3.X or root the test needs; a missing one "
        "fails the test with the one message that names `llmkit lab prereqs` (never a skip)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    wanted = dict.fromkeys(arg for mark in item.iter_markers("needs") for arg in mark.args)
    lacking = prereqs.missing(wanted)
    if lacking:
        pytest.fail(prereqs.missing_message(lacking), pytrace=False)


#: What building Ollama and node_exporter from their Go modules needs.
NEEDS_BUILDS = pytest.mark.needs("go", "gcc", "g++", *(f"/usr/include/{h}" for h in builds.OLLAMA_HEADERS))
#: What a lab (nspawn hosts, their services and the builds published to its mirror) needs.
NEEDS_LAB = pytest.mark.needs("root", *labmod.REQUIRED_PROGRAMS, *NEEDS_BUILDS.args)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """No test skips silently: a skip (a test's own or a plugin's) is reported as a failure with
    its reason, so a run that cannot test something says so and fails."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"a test may not skip here; it was skipped: {reason}"
    return report


@pytest.fixture(scope="session")
def terminal_progress(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Progress of the lab's long first steps (debootstrap, the Go builds) on the terminal, past
    pytest's capture, so a first run that takes minutes is never silent."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            sys.stderr.write(f"\nlab: {message}\n")
            sys.stderr.flush()

    return say


class Recorded:
    """What a program registered: look resources up by type and name, read their inputs."""

    def __init__(self, resources: list[PlannedResource], outputs: dict[str, Any]) -> None:
        self.resources = resources
        self.outputs = outputs

    def of_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> PlannedResource:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]

    def by_urn(self, urn: str) -> PlannedResource:
        return next(r for r in self.resources if r.urn == urn)


@pytest.fixture
def run_pulumi() -> Callable[..., Recorded]:
    """``run_pulumi(lambda: Component(...))`` -> Recorded; a fresh mock runtime per call."""

    def run(program: Callable[[], Any], **kwargs: Any) -> Recorded:
        return Recorded(*record(program, **kwargs))

    return run


@pytest.fixture(params=["dev", "staging", "prod"])
def stack_config(request: pytest.FixtureRequest) -> StackConfig:
    """Each real stack's validated config."""
    return load_stack(request.param, ROOT)


# --- AWS APIs: a real moto server on 127.0.0.1 ----------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server (every AWS API moto has) on 127.0.0.1 for the whole run."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """An emptied moto server, and an environment in which every boto3 client goes to it only
    (no profile, config file, credentials file or instance metadata of this machine)."""
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:  # 127.0.0.1 only
        assert answer.status == 200
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


# --- the hosts' locked wheels (llmkit mirror bundle) --------------------------------------------

HOST_PYTHONS = wheels.DEFAULT_PYTHONS
WHEEL_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmkit-tests" / "host-wheels"
)


def pip_download(dest: Path, *args: str) -> None:
    """``pip download`` of wheels only into ``dest`` (pip, a pinned dev dependency)."""
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest)]
    subprocess.run([*pip, *args], check=True, timeout=600)


def fetched_once(cache: Path, fill: Callable[[Path], None]) -> Path:
    """``cache``, filled by ``fill(directory)`` the first time (in a side directory, renamed when
    complete, so an interrupted fetch is started over rather than half used)."""
    if (cache / ".complete").is_file():
        return cache
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fill(partial)
    (partial / ".complete").touch()
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(cache)
    return cache


@pytest.fixture(scope="session")
def host_wheels() -> Path:
    """The lock's wheels for every default target, fetched once with pip --require-hashes."""
    lock = HOST_REQUIREMENTS.read_bytes()
    pins = wheels.read_requirements(HOST_REQUIREMENTS)

    def fill(directory: Path) -> None:
        for target in wheels.targets(HOST_PYTHONS, ["amd64"], wheels.DEFAULT_GLIBC):
            # pip evaluates markers with the running interpreter: give it each target's pins.
            req = directory / f"{target.abi}.txt"
            req.write_text(
                "".join(
                    f"{p}" + "".join(f" --hash=sha256:{h}" for h in sorted(p.hashes)) + "\n"
                    for p in pins
                    if wheels.applies(p, target)
                ),
                encoding="utf-8",
            )
            platforms = [arg for platform in target.platforms() for arg in ("--platform", platform)]
            version = f"{target.python[0]}.{target.python[1]}"
            pick = [*platforms, "--implementation", "cp", "--abi", target.abi, "--python-version", version]
            pip_download(directory, "--require-hashes", "--no-deps", *pick, "--requirement", str(req))
            req.unlink()

    return fetched_once(WHEEL_CACHE / hashlib.sha256(lock).hexdigest()[:16], fill)
