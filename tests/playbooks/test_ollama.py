"""Ollama and its models: pinned artefacts, the verified download, the unit, the deploys.

Facts in (canned command output on pyinfra's ``@fake`` connector), commands out. The download
script itself is also run for real with ``bash`` against ``file://`` sources in a temporary
directory (no network), so resume, mismatch and atomic rename are exercised, not just spelled.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from llmkit.artifacts import artifact, canonical_arch, is_sha256, load_artifacts
from llmkit.errors import ConfigError
from playbooks.deploys import models as md
from playbooks.deploys import ollama as ol
from playbooks.facts import mirror as mf
from playbooks.facts.ollama import (
    FreeDiskSpace,
    InstalledModel,
    OllamaModels,
    normalize_model_name,
    parse_free_bytes,
    parse_ollama_list,
)
from playbooks.operations import download as dl

OLLAMA = artifact("ollama")
AMD64_SHA = "70a3d0f4cccd003641c5531d564a3494ed9a422e397c437d40f802ec1003c6eb"
ARM64_SHA = "b9af11f08ef278f719070c000344417677350810b8fcf87617a242ae91701da7"
GGUF_SHA = "a" * 64
FREE_PLENTY = {"--output=avail": ["Avail", str(500 * 2**30)]}

# `ollama list` as Ollama 0.13 prints it (two-space column gaps, sizes with a space inside).
OLLAMA_LIST = """\
NAME                               ID              SIZE      MODIFIED
llama3.1:8b                        46e0c10c039e    4.9 GB    2 weeks ago
qwen2.5:7b-instruct-q4_K_M         845dbda0ea48    4.7 GB    3 days ago
hf.co/bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M    0d39b9f1e3a2    2.4 GB    About a minute ago
old-experiment:latest              5f3c1ad1b7e0    7.2 GB    5 months ago
"""


# --- artefacts --------------------------------------------------------------------------------


def test_every_artifact_has_real_looking_checksums_and_a_source() -> None:
    arts = load_artifacts()
    assert set(arts) == {"ollama", "node_exporter", "nvidia_gpu_exporter"}
    for art in arts.values():
        assert art.source.strip()
        for arch in ("amd64", "arm64"):
            digest = art.sha256(arch)
            assert digest is None or is_sha256(digest)
            assert art.url(arch).startswith("https://github.com/")
            assert f"v{art.version}/" in art.url(arch)


def test_ollama_pin_is_the_last_tgz_release() -> None:
    assert OLLAMA.version == "0.13.3"
    assert OLLAMA.url("x86_64") == (
        "https://github.com/ollama/ollama/releases/download/v0.13.3/ollama-linux-amd64.tgz"
    )
    assert OLLAMA.url("aarch64").endswith("/v0.13.3/ollama-linux-arm64.tgz")
    assert OLLAMA.sha256("amd64") == AMD64_SHA
    assert OLLAMA.sha256("arm64") == ARM64_SHA


def test_exporter_urls_use_each_projects_arch_names() -> None:
    gpu = artifact("nvidia_gpu_exporter")
    assert gpu.url("amd64").endswith("/v1.3.2/nvidia_gpu_exporter_1.3.2_linux_x86_64.tar.gz")
    assert gpu.url("arm64").endswith("/v1.3.2/nvidia_gpu_exporter_1.3.2_linux_arm64.tar.gz")
    node = artifact("node_exporter")
    assert node.url("amd64").endswith("/v1.9.1/node_exporter-1.9.1.linux-amd64.tar.gz")
    assert node.mirror_url("https://mirror.example/", "arm64") == (
        "https://mirror.example/node_exporter/v1.9.1/node_exporter-1.9.1.linux-arm64.tar.gz"
    )


def test_unknown_arch_and_artifact_are_refused() -> None:
    with pytest.raises(ConfigError, match="riscv64"):
        canonical_arch("riscv64")
    with pytest.raises(ConfigError, match="unknown pinned artefact"):
        artifact("ollama-nightly")


# --- settings, download source ----------------------------------------------------------------


def test_official_and_mirror_urls_per_arch() -> None:
    official = ol.ollama_download(ol.ollama_settings({}), "x86_64")
    assert official.url == OLLAMA.url("amd64")
    assert official.sha256 == AMD64_SHA
    mirror = ol.ollama_download(
        ol.ollama_settings({"ollama_mirror_url": "https://mirror.example/llm/"}), "aarch64"
    )
    assert mirror.url == "https://mirror.example/llm/ollama/v0.13.3/ollama-linux-arm64.tgz"
    assert mirror.sha256 == ARM64_SHA
    own = ol.ollama_download(
        ol.ollama_settings({"ollama_mirror_url": "file:///srv/mirror", "ollama_sha256": "B" * 64}), "amd64"
    )
    assert own.url == "file:///srv/mirror/ollama/v0.13.3/ollama-linux-amd64.tgz"
    assert own.sha256 == "b" * 64
    template = ol.ollama_download(
        ol.ollama_settings({"ollama_mirror_url": "https://m.example/ollama-{version}/{arch}/{file}"}),
        "x86_64",
    )
    assert template.url == "https://m.example/ollama-0.13.3/amd64/ollama-linux-amd64.tgz"


def test_unpinned_version_needs_a_checksum() -> None:
    with pytest.raises(
        ConfigError, match=r"ollama_sha256.*no published checksum is pinned for Ollama 0\.12\.0"
    ):
        ol.ollama_download(ol.ollama_settings({"ollama_version": "0.12.0"}), "amd64")
    chosen = ol.ollama_download(
        ol.ollama_settings({"ollama_version": "0.12.0", "ollama_sha256": "c" * 64}), "amd64"
    )
    assert chosen.url.endswith("/v0.12.0/ollama-linux-amd64.tgz")
    assert chosen.sha256 == "c" * 64


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_wildcard_bind_is_refused_unless_explicitly_allowed(bind: str) -> None:
    with pytest.raises(ConfigError, match="ollama_allow_any_address"):
        ol.ollama_settings({"ollama_bind": bind})
    with pytest.raises(ConfigError):
        ol.ollama_settings({"ollama_bind": bind, "ollama_allow_any_address": "yes"})
    allowed = ol.ollama_settings({"ollama_bind": bind, "ollama_allow_any_address": True})
    # Local clients and the readiness check still use loopback.
    assert allowed.api_version_url in ("http://127.0.0.1:11434/api/version", "http://[::1]:11434/api/version")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"ollama_bind": "localhost; rm -rf /"}, "ollama_bind"),
        ({"ollama_port": 0}, "ollama_port"),
        ({"ollama_keep_alive": "5 minutes"}, "ollama_keep_alive"),
        ({"ollama_num_parallel": 0}, "ollama_num_parallel"),
        ({"ollama_models_path": "relative/models"}, "ollama_models_path"),
        ({"ollama_sha256": "abc"}, "ollama_sha256"),
        ({"ollama_mirror_url": "ftp://x"}, "ollama_mirror_url"),
    ],
)
def test_bad_settings_name_their_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ol.ollama_settings(data)


# --- the unit ---------------------------------------------------------------------------------


def unit_lines(data: dict[str, Any]) -> list[str]:
    text = ol.render_unit(ol.ollama_settings(data))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_unit_is_hardened() -> None:
    body = unit_lines({})
    for line in (
        "User=ollama",
        "Group=ollama",
        "ExecStart=/opt/ollama/0.13.3/bin/ollama serve",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/ollama",
        "ProtectHome=true",
        "PrivateTmp=true",
        "ProtectKernelTunables=true",
        "ProtectKernelModules=true",
        "ProtectKernelLogs=true",
        "ProtectControlGroups=true",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "Restart=on-failure",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        "LimitNOFILE=65536",
        'Environment="OLLAMA_HOST=127.0.0.1:11434"',
        'Environment="OLLAMA_MODELS=/var/lib/ollama/models"',
    ):
        assert line in body, line
    # The GPU must stay reachable (only the NVIDIA devices), and nothing optional is set unless asked.
    assert "DevicePolicy=closed" in body
    assert [line for line in body if line.startswith("DeviceAllow=")] == [
        "DeviceAllow=char-nvidia-frontend rw",
        "DeviceAllow=char-nvidia-uvm rw",
        "DeviceAllow=char-nvidia-caps r",
    ]
    assert not any(line.startswith(("PrivateDevices", "MemoryDenyWriteExecute")) for line in body)
    assert not any("OLLAMA_NUM_PARALLEL" in line or "OLLAMA_KEEP_ALIVE" in line for line in body)


def test_unit_environment_from_host_data() -> None:
    body = unit_lines(
        {
            "ollama_bind": "::1",
            "ollama_port": 11500,
            "ollama_models_path": "/mnt/model-cache/ollama",
            "ollama_max_loaded_models": 2,
            "ollama_keep_alive": "24h",
            "models": [{"name": "llama-3.1-8b", "tag": "llama3.1:8b", "concurrency": 4}],
        }
    )
    assert 'Environment="OLLAMA_HOST=[::1]:11500"' in body
    assert 'Environment="OLLAMA_MODELS=/mnt/model-cache/ollama"' in body
    assert 'Environment="OLLAMA_NUM_PARALLEL=4"' in body  # from models[0].concurrency
    assert 'Environment="OLLAMA_MAX_LOADED_MODELS=2"' in body
    assert 'Environment="OLLAMA_KEEP_ALIVE=24h"' in body
    assert "ReadWritePaths=/var/lib/ollama /mnt/model-cache/ollama" in body
    explicit = unit_lines({"ollama_num_parallel": 8, "models": [{"name": "x", "concurrency": 4}]})
    assert 'Environment="OLLAMA_NUM_PARALLEL=8"' in explicit


# --- facts ------------------------------------------------------------------------------------


def test_ollama_list_parser_on_real_output() -> None:
    found = parse_ollama_list(OLLAMA_LIST.splitlines())
    assert [m.name for m in found] == [
        "llama3.1:8b",
        "qwen2.5:7b-instruct-q4_K_M",
        "hf.co/bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M",
        "old-experiment:latest",
    ]
    assert found[0] == InstalledModel("llama3.1:8b", "46e0c10c039e", "4.9 GB", "2 weeks ago")
    assert found[2].modified == "About a minute ago"
    assert parse_ollama_list(["NAME    ID    SIZE    MODIFIED"]) == []


def test_ollama_models_fact_states() -> None:
    fact = OllamaModels()
    assert fact.process(["@@llmkit-ollama-not-installed"]) == []
    assert fact.process(["@@llmkit-ollama-unreachable"]) is None
    parsed = fact.process(OLLAMA_LIST.splitlines()) or []
    assert parsed[0].name == "llama3.1:8b"
    assert "OLLAMA_HOST=127.0.0.1:11434 ollama list" in fact.command("127.0.0.1:11434")


def test_model_names_normalize() -> None:
    assert normalize_model_name("llama3") == "llama3:latest"
    assert normalize_model_name("llama3:8b") == "llama3:8b"
    assert normalize_model_name("registry.local:5000/team/model") == "registry.local:5000/team/model:latest"


def test_free_bytes_parser() -> None:
    assert parse_free_bytes(["     Avail", "1234567"]) == 1234567
    assert parse_free_bytes(["df: /nope: No such file or directory"]) is None


def test_free_disk_space_fact_runs_with_the_real_df(tmp_path: Path) -> None:
    """The fact's command through a real shell and GNU df, for a path that does not exist yet."""
    fact = FreeDiskSpace()
    target = tmp_path / "not" / "yet" / "there.gguf"
    result = subprocess.run(
        ["sh", "-c", fact.command(path=str(target))], capture_output=True, text=True, check=True
    )
    free = fact.process(result.stdout.splitlines())
    expected = shutil.disk_usage(tmp_path).free
    assert free is not None, result.stdout + result.stderr
    assert abs(free - expected) <= 64 * 1024 * 1024  # the same filesystem, give or take other writers


# --- the download script, run for real ----------------------------------------------------------

needs_tools = pytest.mark.needs("bash", "curl", "sha256sum")


def run_script(src: str, dest: Path, sha: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", dl.download_script(src, str(dest), sha)], capture_output=True, text=True, timeout=60
    )


@needs_tools
def test_script_downloads_verifies_and_renames(tmp_path: Path) -> None:
    payload = b"GGUF" + bytes(range(256)) * 64
    src = tmp_path / "mirror" / "model.gguf"
    src.parent.mkdir()
    src.write_bytes(payload)
    dest = tmp_path / "stage" / "model.gguf"
    result = run_script(str(src), dest, hashlib.sha256(payload).hexdigest())  # a local path
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == payload
    assert not Path(f"{dest}.part").exists()


@needs_tools
def test_script_resumes_a_partial_download(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 256
    src = tmp_path / "blob"
    src.write_bytes(payload)
    dest = tmp_path / "out"
    Path(f"{dest}.part").write_bytes(payload[:10000])  # left by an interrupted run
    result = run_script(f"file://{src}", dest, hashlib.sha256(payload).hexdigest())
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == payload


@needs_tools
def test_script_mismatch_deletes_the_part_and_keeps_the_old_file(tmp_path: Path) -> None:
    src = tmp_path / "tampered.gguf"
    src.write_bytes(b"not what was published")
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"the model being served")
    expected = "0" * 64
    result = run_script(f"file://{src}", dest, expected)
    actual = hashlib.sha256(b"not what was published").hexdigest()
    assert result.returncode == 1
    assert f"checksum mismatch for {dest}" in result.stderr
    assert f"expected sha256 {expected}, actual {actual}" in result.stderr
    assert not Path(f"{dest}.part").exists()
    assert dest.read_bytes() == b"the model being served"


@needs_tools
def test_script_failed_transfer_keeps_the_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    dest = tmp_path / "out"
    Path(f"{dest}.part").write_bytes(b"half")
    result = run_script(f"file://{tmp_path}/missing", dest, "1" * 64)
    assert result.returncode == 1
    assert "failed (curl exit" in result.stderr
    assert Path(f"{dest}.part").read_bytes() == b"half"
    assert not dest.exists()


def test_script_uses_the_mandated_curl_flags() -> None:
    script = dl.download_script("https://example.invalid/x", "/var/cache/x", "1" * 64)
    assert "curl --fail --location --continue-at - --retry 5 --retry-delay 2 --retry-all-errors" in script
    assert '--output "$part"' in script and "part=/var/cache/x.part" in script
    assert script.index("sha256sum") < script.index('mv -f "$part" "$dest"')


def test_disk_preflight_message() -> None:
    with pytest.raises(
        dl.InsufficientDiskError, match=r"/data/m\.gguf: need 1200 bytes \(1\.2 x 1000\), 999 bytes free"
    ):
        dl.check_free_space("/data/m.gguf", 1000, 999)
    dl.check_free_space("/data/m.gguf", 1000, 1200)
    with pytest.raises(dl.InsufficientDiskError, match="could not be read"):
        dl.check_free_space("/data/m.gguf", 1000, None)


def test_source_url_forms() -> None:
    assert dl.source_url("/srv/mirror/a b.gguf") == "file:///srv/mirror/a%20b.gguf"
    assert dl.source_url("https://m.example/x") == "https://m.example/x"
    with pytest.raises(dl.OperationValueError):
        dl.source_url("m.example/x")


# --- deploys on the @fake connector ---------------------------------------------------------------


def run_deploy(deploy_func: Any, data: dict[str, Any], responses: dict[Any, Any]) -> list[str]:
    name = "@fake/gpu-1"
    hdata = {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": responses, **data}
    inventory = Inventory(([name], {}), gpu=([(name, hdata)], {}))
    state = State(inventory, Config())
    connect_all(state)
    add_deploy(state, deploy_func, host=inventory.get_host(name))
    run_ops(state)
    host = inventory.get_host(name)
    assert host not in state.failed_hosts
    connector = host.connector
    assert isinstance(connector, FakeConnector)
    return list(connector.executed_commands)


def arch(machine: str) -> dict[Any, Any]:
    return {
        re.compile(r"^uname -m$"): machine,
        re.compile(r"^uname -s$"): "Linux",
        "command -v useradd": "/usr/sbin/useradd",
    }


def present(path: str, mode: str = "-rwxr-xr-x") -> dict[Any, Any]:
    """``path`` exists, owned by root, with ``mode`` (the File/Directory facts' stat line)."""
    return {
        re.compile(rf"stat -c .* {re.escape(path)} 2>"): (
            f"user=root group=root mode={mode} atime=0 mtime=0 ctime=0 size=1 '{path}'"
        )
    }


def sha_of(path: str, digest: str) -> dict[Any, Any]:
    return {f"sha256sum {path} ": f"{digest}  {path}"}


def curls(commands: list[str]) -> list[str]:
    return [c for c in commands if "curl --fail --location --continue-at -" in c]


@pytest.mark.parametrize(
    ("machine", "file", "sha"),
    [("x86_64", "ollama-linux-amd64.tgz", AMD64_SHA), ("aarch64", "ollama-linux-arm64.tgz", ARM64_SHA)],
)
def test_ollama_first_install(machine: str, file: str, sha: str) -> None:
    commands = run_deploy(ol.ollama, {}, {**arch(machine), **FREE_PLENTY})
    assert "groupadd -r ollama" in commands
    assert "useradd -d /var/lib/ollama -s /usr/sbin/nologin -g ollama -r -M ollama" in commands
    (fetch,) = curls(commands)
    assert f"url=https://github.com/ollama/ollama/releases/download/v0.13.3/{file}" in fetch
    assert f"expected={sha}" in fetch
    (extract,) = [c for c in commands if "tar -xzf" in c]
    assert f"echo '{sha}  /var/cache/llmkit/downloads/ollama-v0.13.3/{file}' | sha256sum --check" in extract
    assert extract.index("sha256sum --check") < extract.index("tar -xzf")
    assert 'mv "$tmp" /opt/ollama/0.13.3' in extract
    assert commands.index(fetch) < commands.index(extract)
    assert any("ln -s /opt/ollama/0.13.3/bin/ollama /usr/local/bin/ollama" in c for c in commands)
    assert "systemctl daemon-reload" in commands
    assert any(
        c.endswith("http://127.0.0.1:11434/api/version") and "--retry-max-time 120" in c for c in commands
    )
    start = next(i for i, c in enumerate(commands) if re.search(r"systemctl (re)?start ollama\.service", c))
    assert start < next(i for i, c in enumerate(commands) if "/api/version" in c)


def test_ollama_from_mirror() -> None:
    commands = run_deploy(
        ol.ollama, {"ollama_mirror_url": "https://mirror.internal/llm"}, {**arch("x86_64"), **FREE_PLENTY}
    )
    (fetch,) = curls(commands)
    assert "url=https://mirror.internal/llm/ollama/v0.13.3/ollama-linux-amd64.tgz" in fetch
    assert f"expected={AMD64_SHA}" in fetch
    assert "github.com" not in fetch


def test_ollama_download_is_refused_when_the_disk_is_short() -> None:
    short = {"--output=avail": ["Avail", "1048576"]}
    with pytest.raises(
        dl.InsufficientDiskError, match=r"ollama-linux-amd64\.tgz: need \d+ bytes .*1048576 bytes free"
    ):
        run_deploy(ol.ollama, {}, {**arch("x86_64"), **short})


def test_ollama_cached_archive_with_right_checksum_is_not_downloaded_again() -> None:
    archive = "/var/cache/llmkit/downloads/ollama-v0.13.3/ollama-linux-amd64.tgz"
    commands = run_deploy(ol.ollama, {}, {**arch("x86_64"), **sha_of(archive, AMD64_SHA)})
    assert curls(commands) == []
    assert any("tar -xzf" in c for c in commands)


def test_ollama_already_installed_downloads_nothing() -> None:
    responses = {
        **arch("x86_64"),
        **present("/opt/ollama/0.13.3/bin/ollama"),
    }
    commands = run_deploy(ol.ollama, {}, responses)
    assert curls(commands) == []
    assert not any("tar -xzf" in c for c in commands)


def test_ollama_unchanged_host_is_not_restarted() -> None:
    unit = ol.render_unit(ol.ollama_settings({}))
    link = re.compile(rf"stat -c .* {re.escape(ol.BIN_LINK)} 2>")
    responses = {
        **arch("x86_64"),
        link: (
            "user=root group=root mode=lrwxrwxrwx atime=0 mtime=0 ctime=0 size=1 "
            f"'{ol.BIN_LINK}' -> '/opt/ollama/0.13.3/bin/ollama'"
        ),
        **present("/opt/ollama/0.13.3/bin/ollama"),
        f"sha1sum {ol.UNIT_PATH} ": f"{hashlib.sha1(unit.encode()).hexdigest()}  {ol.UNIT_PATH}",
        **present(ol.UNIT_PATH, "-rw-r--r--"),
        **present("/etc/systemd/system", "drwxr-xr-x"),
        "--property SubState ollama.service": ["Id=ollama.service", "SubState=running"],
        "--property UnitFileState ollama.service": ["Id=ollama.service", "UnitFileState=enabled"],
    }
    commands = run_deploy(ol.ollama, {}, responses)
    assert not any("systemctl restart" in c or "daemon-reload" in c or "ln -s" in c for c in commands)
    # Nothing (re)started, so nothing to wait for: an unchanged host reports no change.
    assert not any(c.endswith("/api/version") for c in commands)
    stopped = {**responses, "--property SubState ollama.service": ["Id=ollama.service", "SubState=dead"]}
    commands = run_deploy(ol.ollama, {}, stopped)
    start = next(i for i, c in enumerate(commands) if "systemctl start ollama.service" in c)
    assert start < next(i for i, c in enumerate(commands) if c.endswith("/api/version"))


def test_ollama_refuses_a_wildcard_bind_before_running_anything() -> None:
    with pytest.raises(ConfigError, match="ollama_allow_any_address"):
        run_deploy(ol.ollama, {"ollama_bind": "0.0.0.0"}, arch("x86_64"))


def test_ollama_unknown_checksum_is_refused() -> None:
    with pytest.raises(ConfigError, match="refusing to install it unverified"):
        run_deploy(ol.ollama, {"ollama_version": "0.14.0"}, arch("x86_64"))


# --- models -------------------------------------------------------------------------------------

MIRROR_MODEL = {
    "name": "phi35-local",
    "source": "mirror",
    "file": "gguf/Phi-3.5-mini-instruct-Q4_K_M.gguf",
    "sha256": GGUF_SHA,
    "size": 2_393_232_672,
    "context_length": 8192,
}


def listed(text: str = OLLAMA_LIST) -> dict[Any, Any]:
    return {"ollama list": text.splitlines()}


def test_registry_models_are_pulled_only_when_absent() -> None:
    data = {
        "models": [{"name": "llama-3.1-8b", "tag": "llama3.1:8b"}, {"name": "mistral", "source": "registry"}]
    }
    commands = run_deploy(md.models, data, listed())
    assert "OLLAMA_HOST=127.0.0.1:11434 ollama pull mistral:latest" in commands
    assert not any("pull llama3.1:8b" in c for c in commands)
    assert not any(" ollama rm " in c for c in commands)  # prune_models defaults to off


def test_mirror_model_is_verified_then_created() -> None:
    data = {"models": [MIRROR_MODEL], "models_mirror_url": "https://mirror.internal/models/"}
    commands = run_deploy(md.models, data, {**listed(), **FREE_PLENTY})
    stage = "/var/lib/ollama/llmkit-staging/phi35-local_latest"
    (fetch,) = curls(commands)
    assert "url=https://mirror.internal/models/gguf/Phi-3.5-mini-instruct-Q4_K_M.gguf" in fetch
    assert f"dest={stage}/Phi-3.5-mini-instruct-Q4_K_M.gguf" in fetch
    assert f"expected={GGUF_SHA}" in fetch
    create = f"OLLAMA_HOST=127.0.0.1:11434 ollama create phi35-local:latest -f {stage}/Modelfile"
    assert create in commands
    assert commands.index(fetch) < commands.index(create) < commands.index(f"rm -rf {stage}")
    text = md.modelfile_text(f"{stage}/Phi-3.5-mini-instruct-Q4_K_M.gguf", md.model_specs(data)[0].directives)
    assert text == f"FROM {stage}/Phi-3.5-mini-instruct-Q4_K_M.gguf\nPARAMETER num_ctx 8192\n"


def test_mirror_model_disk_preflight_names_the_file() -> None:
    data = {"models": [MIRROR_MODEL], "models_mirror_url": "https://mirror.internal/models"}
    short = {"--output=avail": ["Avail", "1000000000"]}
    with pytest.raises(
        dl.InsufficientDiskError,
        match=(
            r"Phi-3\.5-mini-instruct-Q4_K_M\.gguf: need 2871879207 bytes "
            r"\(1\.2 x 2393232672\), 1000000000 bytes free"
        ),
    ):
        run_deploy(md.models, data, {**listed(), **short})


def test_mirror_model_already_served_is_left_alone() -> None:
    data = {"models": [MIRROR_MODEL], "models_mirror_url": "https://mirror.internal/models"}
    text = OLLAMA_LIST + "phi35-local:latest    1a2b3c4d5e6f    2.4 GB    1 day ago\n"
    commands = run_deploy(
        md.models, data, {**listed(text), **present(f"/var/lib/ollama/models/blobs/sha256-{GGUF_SHA}")}
    )
    assert curls(commands) == []
    assert not any("ollama create" in c for c in commands)


def host_sends(url: str, data: bytes | None) -> dict[Any, Any]:
    """The MirrorBytes fact's output on the host for ``url`` (None: the host could not read it)."""
    lines = [mf.UNAVAILABLE_MARKER] if data is None else [mf.OK_MARKER, base64.b64encode(data).decode()]
    where = mf.local_path(url) or url
    return {re.compile(rf"t=\$\(mktemp\) .*{re.escape(shlex.quote(where))}"): lines}


MIRROR_MODELFILE = (
    b'FROM ./elsewhere.gguf\nTEMPLATE """{{ .Prompt }}"""\nfrom /etc/shadow\nPARAMETER stop "<|end|>"\n'
)


def test_mirror_modelfile_is_verified_and_its_from_replaced(uploads: dict[str, str]) -> None:
    digest = hashlib.sha256(MIRROR_MODELFILE).hexdigest()
    model = {**MIRROR_MODEL, "modelfile": {"file": "gguf/phi35.Modelfile", "sha256": digest}}
    data = {"models": [model], "models_mirror_url": "file:///srv/mirror"}
    url = "file:///srv/mirror/gguf/phi35.Modelfile"
    commands = run_deploy(md.models, data, {**listed(), **FREE_PLENTY, **host_sends(url, MIRROR_MODELFILE)})
    (read,) = [c for c in commands if "phi35.Modelfile" in c]
    assert "cat -- /srv/mirror/gguf/phi35.Modelfile" in read  # read on the host, checked here
    stage = "/var/lib/ollama/llmkit-staging/phi35-local_latest"
    assert uploads[f"{stage}/Modelfile"] == (
        f"FROM {stage}/Phi-3.5-mini-instruct-Q4_K_M.gguf\n"
        'TEMPLATE """{{ .Prompt }}"""\nPARAMETER stop <|end|>\nPARAMETER num_ctx 8192\n'
    )
    create = f"OLLAMA_HOST=127.0.0.1:11434 ollama create phi35-local:latest -f {stage}/Modelfile"
    assert commands.index(read) < commands.index(create)


def test_a_mirror_modelfile_with_another_checksum_is_refused_before_any_change() -> None:
    model = {**MIRROR_MODEL, "modelfile": {"file": "gguf/phi35.Modelfile", "sha256": "b" * 64}}
    data = {"models": [model], "models_mirror_url": "file:///srv/mirror"}
    url = "file:///srv/mirror/gguf/phi35.Modelfile"
    with pytest.raises(
        ConfigError, match=r"models\[0\]\.modelfile: the mirror Modelfile has sha256 .* not b{64}"
    ):
        run_deploy(md.models, data, {**listed(), **FREE_PLENTY, **host_sends(url, MIRROR_MODELFILE)})
    with pytest.raises(ConfigError, match="could not fetch the mirror Modelfile"):
        run_deploy(md.models, data, {**listed(), **FREE_PLENTY, **host_sends(url, None)})


def test_merged_modelfile_drops_the_mirror_from() -> None:
    text = md.merged_modelfile(
        "/stage/m.gguf",
        MIRROR_MODELFILE.decode(),
        md.parse_directives("PARAMETER num_ctx 8192", from_allowed=False),
    )
    assert text == (
        'FROM /stage/m.gguf\nTEMPLATE """{{ .Prompt }}"""\nPARAMETER stop <|end|>\nPARAMETER num_ctx 8192\n'
    )


def test_prune_removes_only_unconfigured_models_and_only_last() -> None:
    data = {
        "prune_models": True,
        "models": [{"name": "llama-3.1-8b", "tag": "llama3.1:8b"}, {"name": "gemma3:4b"}],
    }
    commands = run_deploy(md.models, data, listed())
    removed = [c for c in commands if " ollama rm " in c]
    assert removed == [
        "OLLAMA_HOST=127.0.0.1:11434 ollama rm qwen2.5:7b-instruct-q4_K_M",
        "OLLAMA_HOST=127.0.0.1:11434 ollama rm hf.co/bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M",
        "OLLAMA_HOST=127.0.0.1:11434 ollama rm old-experiment:latest",
    ]
    pull = commands.index("OLLAMA_HOST=127.0.0.1:11434 ollama pull gemma3:4b")
    assert all(commands.index(c) > pull for c in removed)


def test_prune_is_skipped_when_the_server_did_not_answer() -> None:
    data = {"prune_models": True, "models": [{"name": "gemma3:4b"}]}
    commands = run_deploy(md.models, data, {"ollama list": ["@@llmkit-ollama-unreachable"]})
    assert not any(" ollama rm " in c for c in commands)
    assert "OLLAMA_HOST=127.0.0.1:11434 ollama pull gemma3:4b" in commands


@pytest.mark.parametrize(
    ("entry", "extra", "key"),
    [
        ({"name": "x", "source": "torrent"}, {}, r"models\[0\]\.source"),
        (
            {"name": "x", "source": "mirror", "file": "a.gguf", "sha256": GGUF_SHA, "size": 1},
            {},
            "models_mirror_url",
        ),
        (
            {"name": "x", "source": "mirror", "file": "a.gguf", "size": 1},
            {"models_mirror_url": "https://m"},
            r"models\[0\]\.sha256",
        ),
        (
            {"name": "x", "source": "mirror", "file": "../a.gguf", "sha256": GGUF_SHA, "size": 1},
            {"models_mirror_url": "https://m"},
            r"models\[0\]\.file",
        ),
        (
            {"name": "x", "source": "mirror", "file": "a.gguf", "sha256": GGUF_SHA},
            {"models_mirror_url": "https://m"},
            r"models\[0\]\.size",
        ),
        ({"name": "x; rm -rf /"}, {}, r"models\[0\]\.name"),
        (
            {"name": "x", "source": "mirror", "file": "a.gguf", "sha256": GGUF_SHA, "size": 1},
            {"models_mirror_url": "ftp://mirror/models"},
            "models_mirror_url",
        ),
        (
            {
                "name": "x",
                "source": "mirror",
                "file": "a.gguf",
                "sha256": GGUF_SHA,
                "size": 1,
                "modelfile": "FROM /etc/passwd",
            },
            {"models_mirror_url": "https://m"},
            r"models\[0\]\.modelfile",
        ),
    ],
)
def test_bad_model_entries_name_the_entry(entry: dict[str, Any], extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        md.model_specs({"models": [entry], **extra})


def test_to_prune() -> None:
    installed = parse_ollama_list(OLLAMA_LIST.splitlines())
    specs = md.model_specs({"models": [{"name": "llama3.1:8b"}, {"name": "old-experiment"}]})
    assert md.to_prune(installed, specs) == [
        "qwen2.5:7b-instruct-q4_K_M",
        "hf.co/bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M",
    ]
