"""Monitoring: exporters' units and install commands, Prometheus scrape config and SLO alert rules.

Templates are rendered and parsed as YAML (and checked by ``promtool`` where it is installed:
``apt-get install --no-install-recommends prometheus``); the alert thresholds are compared with
``llmkit.config.Alarms``' defaults; the extraction script runs for real on tarballs laid out like
the two releases; the deploy runs against pyinfra's ``@fake`` connector: facts in, commands out.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from llmkit.artifacts import Artifact, artifact
from llmkit.config import Alarms
from llmkit.errors import ConfigError
from playbooks.deploys import monitoring as mon
from playbooks.deploys import reverse_proxy as rp

PORTS = {"node_exporter_port": 9100, "gpu_exporter_port": 9835, "proxy_metrics_port": 3903}


def member(name: str, groups: list[str], **data: Any) -> mon.InventoryHost:
    return mon.InventoryHost(name=name, groups=groups, data={**PORTS, **data})


FLEET = [
    member("gpu-1", ["gpu"], ssh_hostname="10.20.1.11"),
    member("llama-a", ["model_llama3_8b"], ssh_hostname="10.20.2.7"),
    member("proxy-1", ["proxy"], ssh_hostname="proxy.lab.example"),
    member("mon-1", ["monitoring"], ssh_hostname="2001:db8::9", node_exporter_port=9101),
]


# --- alert rules ----------------------------------------------------------------------------------


def rules(alarms: Alarms | None = None) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(mon.render_rules(alarms))
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"]}


def threshold(expr: str) -> tuple[str, float]:
    match = re.search(r"([<>])\s*([0-9.e-]+)\s*$", expr)
    assert match, expr
    return match.group(1), float(match.group(2))


def test_alert_thresholds_are_the_config_defaults() -> None:
    fields = Alarms.model_fields
    p99 = fields["p99_latency_seconds"].default
    error_pct = fields["error_rate_percent"].default
    low, high = fields["gpu_utilization_band_percent"].default
    sustained = fields["sustained_minutes"].default
    assert (p99, error_pct, (low, high), sustained) == (2.0, 0.1, (70, 90), 15)  # the brief's targets

    by_name = rules()
    assert threshold(by_name["LlmkitP99LatencyHigh"]["expr"]) == (">", p99)
    assert "histogram_quantile(0.99," in by_name["LlmkitP99LatencyHigh"]["expr"]
    assert threshold(by_name["LlmkitErrorRateHigh"]["expr"]) == (">", pytest.approx(error_pct / 100))
    assert 'status=~"5.."' in by_name["LlmkitErrorRateHigh"]["expr"]
    assert threshold(by_name["LlmkitGpuUtilizationHigh"]["expr"]) == (">", high / 100)
    assert threshold(by_name["LlmkitGpuUtilizationLow"]["expr"]) == ("<", low / 100)
    for name in (
        "LlmkitP99LatencyHigh",
        "LlmkitErrorRateHigh",
        "LlmkitGpuUtilizationHigh",
        "LlmkitGpuUtilizationLow",
    ):
        assert by_name[name]["for"] == f"{sustained}m"
    assert mon.GPU_UTILIZATION_METRIC in by_name["LlmkitGpuUtilizationHigh"]["expr"]
    assert by_name["LlmkitExporterDown"]["expr"] == 'up{job=~"node|nvidia_gpu|proxy"} == 0'
    # The latency alert reads the first-byte histogram the proxy's mtail program exports.
    assert f"{mon.LATENCY_METRIC}_bucket" in by_name["LlmkitP99LatencyHigh"]["expr"]
    assert mon.REQUESTS_METRIC in by_name["LlmkitErrorRateHigh"]["expr"]


def test_alert_thresholds_follow_the_alarms_model() -> None:
    custom = Alarms(
        p99_latency_seconds=0.5,
        error_rate_percent=2,
        gpu_utilization_band_percent=(40, 60),
        sustained_minutes=3,
    )
    by_name = rules(custom)
    assert threshold(by_name["LlmkitP99LatencyHigh"]["expr"]) == (">", 0.5)
    assert threshold(by_name["LlmkitErrorRateHigh"]["expr"]) == (">", 0.02)
    assert threshold(by_name["LlmkitGpuUtilizationLow"]["expr"]) == ("<", 0.4)
    assert by_name["LlmkitGpuUtilizationHigh"]["for"] == "3m"


needs_promtool = pytest.mark.needs("promtool")


@needs_promtool
def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(mon.render_rules())
    config = tmp_path / "prometheus.yml"
    config.write_text(mon.render_prometheus(FLEET, rules_path=str(rules_file)))
    for args in (["check", "rules", str(rules_file)], ["check", "config", str(config)]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


# --- scrape configuration -------------------------------------------------------------------------


def jobs(hosts: list[mon.InventoryHost]) -> dict[str, list[tuple[str, str]]]:
    doc = yaml.safe_load(mon.render_prometheus(hosts))
    assert doc["rule_files"] == [mon.PROMETHEUS_RULES]
    return {
        job["job_name"]: [
            (t, sc.get("labels", {}).get("host", "")) for sc in job["static_configs"] for t in sc["targets"]
        ]
        for job in doc["scrape_configs"]
    }


def test_scrape_targets_come_from_the_inventory() -> None:
    by_job = jobs(FLEET)
    assert by_job["node"] == [
        ("10.20.1.11:9100", "gpu-1"),
        ("10.20.2.7:9100", "llama-a"),
        ("proxy.lab.example:9100", "proxy-1"),
        ("[2001:db8::9]:9101", "mon-1"),
    ]
    assert by_job["nvidia_gpu"] == [("10.20.1.11:9835", "gpu-1"), ("10.20.2.7:9835", "llama-a")]
    assert by_job["proxy"] == [("proxy.lab.example:3903", "proxy-1")]
    assert by_job["prometheus"] == [(mon.PROMETHEUS_LISTEN, "")]


def test_scrape_config_without_gpu_hosts_is_valid_yaml() -> None:
    by_job = jobs([member("proxy-1", ["proxy"], ssh_hostname="10.0.0.1")])
    assert by_job["nvidia_gpu"] == []


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (member("@local", ["gpu"]), "cannot scrape"),
        (member("gpu-1", ["gpu"], ssh_hostname="10.0.0.1", gpu_exporter_port=70000), "gpu_exporter_port"),
        (member("x", ["gpu"], ssh_hostname="bad host\nname"), "cannot scrape"),
    ],
)
def test_scrape_config_refusals(host: mon.InventoryHost, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mon.render_prometheus([host])


def test_prometheus_listens_on_loopback_only() -> None:
    text = mon.render_prometheus_defaults()
    (args,) = [line for line in text.splitlines() if line.startswith("ARGS=")]
    assert "--web.listen-address=127.0.0.1:9090" in args
    assert "--storage.tsdb.retention.time=30d" in args


# --- exporter units -------------------------------------------------------------------------------

HARDENING = (
    "DynamicUser=true",
    "NoNewPrivileges=true",
    "ProtectSystem=strict",
    "CapabilityBoundingSet=",
    "PrivateTmp=true",
    "ProtectKernelModules=true",
    "RestrictSUIDSGID=true",
)


def unit_lines(text: str) -> list[str]:
    return [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("#")]


def test_node_exporter_unit_is_hardened_and_bound_to_the_host() -> None:
    body = unit_lines(mon.render_unit(mon.NODE_EXPORTER, "1.9.1", "10.20.1.11:9100"))
    for line in (*HARDENING, "PrivateDevices=true", "MemoryDenyWriteExecute=true"):
        assert line in body
    assert (
        "ExecStart=/opt/llmkit/node_exporter/1.9.1/node_exporter --web.listen-address=10.20.1.11:9100" in body
    )
    assert not any("User=" in x and not x.startswith("DynamicUser") for x in body)


def test_gpu_exporter_unit_keeps_devices() -> None:
    body = unit_lines(mon.render_unit(mon.GPU_EXPORTER, "1.3.2", "[2001:db8::5]:9835"))
    for line in HARDENING:
        assert line in body
    assert "PrivateDevices=true" not in body  # nvidia-smi needs /dev/nvidia*
    (exec_start,) = [x for x in body if x.startswith("ExecStart=")]
    assert "--web.listen-address=[2001:db8::5]:9835" in exec_start
    assert "--nvidia-smi-command=/usr/bin/nvidia-smi" in exec_start


def test_listen_address() -> None:
    assert mon.listen_address("gpu-1", {"ssh_hostname": "10.0.0.5"}, None) == "10.0.0.5"
    assert mon.listen_address("10.0.0.6", {}, None) == "10.0.0.6"
    # an AWS host runs against @local: its model-tier address (from the instance metadata) first
    assert mon.listen_address("@local", {"model_bind_address": "10.40.12.7"}, "10.40.12.8") == "10.40.12.7"
    assert mon.listen_address("@local", {}, "10.40.12.8") == "10.40.12.8"
    assert mon.needs_route_fact("gpu-1.lab", {}) and not mon.needs_route_fact(
        "gpu-1", {"ssh_hostname": "10.0.0.5"}
    )
    assert mon.listen_address("gpu-1.lab", {}, "10.0.0.7") == "10.0.0.7"
    with pytest.raises(ConfigError, match="cannot tell"):
        mon.listen_address("@local", {}, None)
    with pytest.raises(ConfigError, match="every interface"):
        mon.listen_address("x", {"ssh_hostname": "0.0.0.0"}, None)


def test_release_refuses_an_unpinned_checksum() -> None:
    pinned = artifact("node_exporter")
    unpinned = pinned.model_copy(update={"sha256s": {"amd64": None, "arm64": pinned.sha256("arm64")}})
    with pytest.raises(ConfigError, match="refusing to install it unverified"):
        mon.release(unpinned, "x86_64")
    rel = mon.release(pinned, "aarch64")
    assert rel.sha256 == pinned.sha256("arm64") and rel.url == pinned.url("arm64")


# --- the extraction script, run for real -----------------------------------------------------------

FAKE_BINARY = b'#!/bin/sh\n[ "$1" = --version ] && echo "fake 1.0" && exit 0\nexit 3\n'


def tarball(path: Path, member_name: str) -> str:
    src = path.parent / "payload"
    src.write_bytes(FAKE_BINARY)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname=member_name)
        tar.add(src, arcname="LICENSE")
    return hashlib.sha256(path.read_bytes()).hexdigest()


needs_tools = pytest.mark.needs("bash", "tar", "sha256sum", "install")


@needs_tools
@pytest.mark.parametrize(
    ("exporter", "member_name"),
    [
        (mon.NODE_EXPORTER, "node_exporter-1.9.1.linux-amd64/node_exporter"),  # a top directory
        (mon.GPU_EXPORTER, "nvidia_gpu_exporter"),  # flat
    ],
)
def test_extract_installs_only_the_verified_binary(
    tmp_path: Path, exporter: mon.Exporter, member_name: str
) -> None:
    archive = tmp_path / "release.tar.gz"
    sha = tarball(archive, member_name)
    install_dir = tmp_path / "opt" / exporter.artifact_name / "1.0"
    script = mon.extract_command(str(archive), sha, str(install_dir), exporter.binary_name)
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    assert sorted(p.name for p in install_dir.iterdir()) == [exporter.binary_name]
    assert (install_dir / exporter.binary_name).stat().st_mode & 0o777 == 0o755
    assert not archive.exists()
    assert [p.name for p in install_dir.parent.iterdir()] == ["1.0"]  # no temporary directory left


@needs_tools
def test_extract_refuses_a_tampered_archive(tmp_path: Path) -> None:
    archive = tmp_path / "release.tar.gz"
    tarball(archive, "nvidia_gpu_exporter")
    install_dir = tmp_path / "opt" / "x" / "1.0"
    script = mon.extract_command(str(archive), "0" * 64, str(install_dir), "nvidia_gpu_exporter")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "refusing to extract" in result.stderr
    assert not install_dir.exists()


# --- the deploy on pyinfra's @fake connector -------------------------------------------------------

OS_RELEASE = {
    "ubuntu-22.04": ['NAME="Ubuntu"', "ID=ubuntu", 'VERSION_ID="22.04"', "VERSION_CODENAME=jammy"],
    "ubuntu-24.04": ['NAME="Ubuntu"', "ID=ubuntu", 'VERSION_ID="24.04"', "VERSION_CODENAME=noble"],
    "debian-12": ['NAME="Debian GNU/Linux"', "ID=debian", 'VERSION_ID="12"', "VERSION_CODENAME=bookworm"],
}
FREE_PLENTY = {"--output=avail": ["Avail", str(100 * 2**30)]}
#: The PCI scan of the NvidiaGpus fact: one H200 (vendor 10de, 3D controller class).
ONE_GPU = {"/sys/bus/pci/devices/*": ["0000:00:06.0 0x10de 0x2335 0x030200"]}


def machine(uname_m: str) -> dict[Any, Any]:
    return {re.compile(r"^uname -m$"): uname_m, re.compile(r"^uname -s$"): "Linux"}


def present(path: str, content: str = "x", mode: str = "-rw-r--r--") -> dict[Any, Any]:
    """Fake responses: ``path`` and its directory exist, owned by root with ``mode``, holding ``content``."""
    sha1 = hashlib.sha1(content.encode()).hexdigest()
    parent = str(Path(path).parent)
    return {
        f"sha1sum {path} ": f"{sha1}  {path}",
        re.compile(rf"stat -c .* {re.escape(path)} "): (
            f"user=root group=root mode={mode} atime=0 mtime=0 ctime=0 size={len(content)} '{path}'"
        ),
        re.compile(rf"stat -c .* {re.escape(parent)} "): (
            f"user=root group=root mode=drwxr-xr-x atime=0 mtime=0 ctime=0 size=4096 '{parent}'"
        ),
    }


def running(service: str) -> dict[Any, Any]:
    return {
        f"--property SubState {service}": [f"Id={service}", "SubState=running"],
        f"--property UnitFileState {service}": [f"Id={service}", "UnitFileState=enabled"],
    }


def run_deploy(
    target: str, groups: dict[str, list[tuple[str, dict[str, Any]]]], responses: dict[Any, Any]
) -> list[str]:
    fake = {"fake_delay": 0, "fake_delay_jitter": 0, **PORTS}
    with_responses = {
        group: [(n, {**d, "fake_responses": responses} if n == target else d) for n, d in members]
        for group, members in groups.items()
    }
    inventory = Inventory(
        ([n for members in groups.values() for n, _ in members], fake),
        **{group: (members, {}) for group, members in with_responses.items()},
    )
    state = State(inventory, Config())
    connect_all(state)
    add_deploy(state, mon.monitoring, host=inventory.get_host(target))
    run_ops(state)
    host = inventory.get_host(target)
    assert host not in state.failed_hosts
    assert isinstance(host.connector, FakeConnector)
    return list(host.connector.executed_commands)


FLEET_GROUPS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "gpu": [("@fake/gpu-1", {"ssh_hostname": "10.20.1.11"})],
    "proxy": [("@fake/proxy-1", {"ssh_hostname": "10.10.0.5"})],
    "monitoring": [("@fake/mon-1", {"ssh_hostname": "10.30.0.9"})],
}
SCRAPERS = ["10.30.0.9"]  # the monitoring hosts' addresses: the exporters' units admit them


def uploaded(uploads: dict[str, str], dest: str) -> str:
    assert dest in uploads, f"{dest} not uploaded; uploads: {sorted(uploads)}"
    return uploads[dest]


def curls(commands: list[str]) -> list[str]:
    return [c for c in commands if "curl --fail --location --continue-at -" in c]


@pytest.mark.parametrize(("uname_m", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_gpu_host_installs_both_exporters_verified(uname_m: str, arch: str) -> None:
    commands = run_deploy("@fake/gpu-1", FLEET_GROUPS, {**machine(uname_m), **FREE_PLENTY, **ONE_GPU})
    fetches = curls(commands)
    assert len(fetches) == 2
    for name, fetch in zip(("node_exporter", "nvidia_gpu_exporter"), fetches, strict=True):
        art = artifact(name)
        assert f"url={art.url(arch)}" in fetch
        assert f"expected={art.sha256(arch)}" in fetch
        (extract,) = [c for c in commands if "tar -xzf" in c and art.file(arch) in c]
        assert extract.index("sha256sum --check") < extract.index("tar -xzf")
        assert commands.index(fetch) < commands.index(extract)
    assert any(re.search(r"systemctl (re)?start llmkit-node-exporter\.service", c) for c in commands)
    assert any(re.search(r"systemctl (re)?start llmkit-gpu-exporter\.service", c) for c in commands)
    assert "systemctl daemon-reload" in commands
    assert not any("prometheus " in c and "install" in c for c in commands)


def test_proxy_host_gets_node_exporter_only() -> None:
    commands = run_deploy("@fake/proxy-1", FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY})
    (fetch,) = curls(commands)
    assert "node_exporter" in fetch
    assert not any("llmkit-gpu-exporter" in c for c in commands)


def test_distro_node_exporter_is_removed_when_installed() -> None:
    dpkg = {"dpkg -l": ["ii  prometheus-node-exporter 1.5.0-1 amd64 Prometheus exporter for machine metrics"]}
    commands = run_deploy("@fake/proxy-1", FLEET_GROUPS, {**dpkg, **machine("x86_64"), **FREE_PLENTY})
    assert any("remove" in c and "prometheus-node-exporter" in c for c in commands)
    clean = run_deploy("@fake/proxy-1", FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY})
    assert not any("remove" in c and "prometheus-node-exporter" in c for c in clean)


PROXY_METRICS_UNIT = f"{mon.UNIT_DIR}/{mon.PROXY_METRICS_SERVICE}"
PROXY_METRICS_IN_PLACE = {
    **present(mon.MTAIL_PROGRAM, mon.render_mtail_program()),
    **present(PROXY_METRICS_UNIT, mon.render_proxy_metrics_unit("10.10.0.5:3903", SCRAPERS)),
    **running(mon.PROXY_METRICS_SERVICE),
}


def test_unchanged_exporter_is_neither_downloaded_nor_restarted() -> None:
    version = artifact("node_exporter").version
    unit = mon.render_unit(mon.NODE_EXPORTER, version, "10.10.0.5:9100", SCRAPERS)
    responses = {
        **present(mon.NODE_EXPORTER.binary(version), mode="-rwxr-xr-x"),
        **present(mon.NODE_EXPORTER.unit_path, unit),
        **running("llmkit-node-exporter.service"),
        **PROXY_METRICS_IN_PLACE,
        **machine("x86_64"),
    }
    commands = run_deploy("@fake/proxy-1", FLEET_GROUPS, responses)
    assert curls(commands) == []
    assert not any("tar -xzf" in c for c in commands)
    assert not any("restart llmkit-node-exporter" in c for c in commands)
    assert "systemctl daemon-reload" not in commands


def test_exporter_binds_to_the_host_address(uploads: dict[str, str]) -> None:
    run_deploy("@fake/gpu-1", FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY, **ONE_GPU})
    assert "--web.listen-address=10.20.1.11:9100" in uploaded(uploads, mon.NODE_EXPORTER.unit_path)
    assert "--web.listen-address=10.20.1.11:9835" in uploaded(uploads, mon.GPU_EXPORTER.unit_path)


def test_exporter_binds_to_the_route_source_when_the_host_has_no_ip(uploads: dict[str, str]) -> None:
    groups = {"proxy": [("@fake/proxy-1", {"ssh_hostname": "proxy.lab.example"})]}
    route = {"ip -4 -o route get": ["192.0.2.1 via 10.10.0.1 dev eth0 src 10.10.0.5 uid 0"]}
    commands = run_deploy("@fake/proxy-1", groups, {**route, **machine("x86_64"), **FREE_PLENTY})
    assert any("ip -4 -o route get" in c for c in commands)
    unit = uploaded(uploads, mon.NODE_EXPORTER.unit_path)
    assert "--web.listen-address=10.10.0.5:9100" in unit
    assert "0.0.0.0" not in unit


def test_unpinned_architecture_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    real = artifact("node_exporter")

    def fake_artifact(name: str) -> Artifact:
        art = artifact(name) if name != "node_exporter" else real
        return art.model_copy(update={"sha256s": {"amd64": None, "arm64": None}})

    monkeypatch.setattr(mon, "artifact", fake_artifact)
    with pytest.raises(ConfigError, match="unverified"):
        run_deploy("@fake/proxy-1", FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY})


@pytest.mark.parametrize("release", sorted(OS_RELEASE))
def test_monitoring_host_installs_checks_and_reloads_prometheus(
    release: str, uploads: dict[str, str]
) -> None:
    # The distro package starts Prometheus when it is installed.
    responses = {
        "cat /etc/os-release": OS_RELEASE[release],
        **running("prometheus.service"),
        **machine("x86_64"),
        **FREE_PLENTY,
    }
    commands = run_deploy("@fake/mon-1", FLEET_GROUPS, responses)
    (install,) = [
        c for c in commands if "install" in c and re.search(r"\bprometheus\b", c) and "apt-get" in c
    ]
    assert "--no-install-recommends" in install
    check = commands.index(f"promtool check config {mon.PROMETHEUS_CONFIG}")
    reload = next(i for i, c in enumerate(commands) if "reload prometheus.service" in c)
    assert check < reload
    config = yaml.safe_load(uploaded(uploads, mon.PROMETHEUS_CONFIG))
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["node"] == ["10.20.1.11:9100", "10.10.0.5:9100", "10.30.0.9:9100"]
    assert targets["nvidia_gpu"] == ["10.20.1.11:9835"]
    assert "LlmkitP99LatencyHigh" in uploaded(uploads, mon.PROMETHEUS_RULES)
    assert "127.0.0.1:9090" in uploaded(uploads, mon.PROMETHEUS_DEFAULTS)


def test_unchanged_prometheus_is_not_reloaded() -> None:
    hosts = [
        mon.InventoryHost(name=n, groups=[g], data={**PORTS, **d})
        for g, members in FLEET_GROUPS.items()
        for n, d in members
    ]
    responses = {
        **present(mon.PROMETHEUS_DEFAULTS, mon.render_prometheus_defaults()),
        **present(mon.PROMETHEUS_RULES, mon.render_rules()),
        **present(mon.PROMETHEUS_CONFIG, mon.render_prometheus(hosts)),
        **running("prometheus.service"),
        **machine("x86_64"),
        **FREE_PLENTY,
    }
    commands = run_deploy("@fake/mon-1", FLEET_GROUPS, responses)
    assert not any(c.startswith("promtool") for c in commands)
    assert not any("reload prometheus" in c or "restart prometheus" in c for c in commands)


# --- GPU-less gpu hosts, mirrors ------------------------------------------------------------------


def test_gpu_host_without_a_gpu_gets_no_gpu_exporter() -> None:
    commands = run_deploy("@fake/gpu-1", FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY})
    (fetch,) = curls(commands)
    assert "node_exporter" in fetch
    assert any("/sys/bus/pci/devices" in c for c in commands)  # it looked for one
    assert not any("llmkit-gpu-exporter" in c or "nvidia_gpu_exporter" in c for c in commands)


def test_exporters_come_from_the_mirror_with_a_mirror_checksum() -> None:
    own_build = "ab" * 32
    groups = {
        "proxy": [
            (
                "@fake/proxy-1",
                {
                    "ssh_hostname": "10.10.0.5",
                    "exporters_mirror_url": "http://10.97.0.1:8080/",
                    "node_exporter_sha256": own_build.upper(),
                },
            )
        ]
    }
    commands = run_deploy("@fake/proxy-1", groups, {**machine("x86_64"), **FREE_PLENTY})
    (fetch,) = curls(commands)
    art = artifact("node_exporter")
    assert f"url=http://10.97.0.1:8080/node_exporter/v{art.version}/{art.file('amd64')}" in fetch
    assert f"expected={own_build}" in fetch
    assert "github.com" not in fetch
    (extract,) = [c for c in commands if "tar -xzf" in c]
    assert f"echo '{own_build}  " in extract


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"exporters_mirror_url": "ftp://mirror/"}, "exporters_mirror_url"),
        ({"node_exporter_sha256": "not-a-digest"}, "node_exporter_sha256"),
    ],
)
def test_bad_mirror_settings_are_refused(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        mon.release(artifact("node_exporter"), "amd64", data)


# --- the proxy's SLO metrics (mtail) ---------------------------------------------------------------


def test_proxy_host_runs_mtail_on_its_access_log(uploads: dict[str, str]) -> None:
    commands = run_deploy("@fake/proxy-1", FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY})
    (install,) = [c for c in commands if "apt-get" in c and "install" in c and "mtail" in c]
    assert "--no-install-recommends" in install
    unit = uploaded(uploads, PROXY_METRICS_UNIT)
    assert "--address 10.10.0.5 --port 3903" in unit
    assert f"--logs {mon.PROXY_ACCESS_LOG}" in unit
    for line in (
        "DynamicUser=true",
        "SupplementaryGroups=adm",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
    ):
        assert line in unit.splitlines()
    assert uploaded(uploads, mon.MTAIL_PROGRAM) == mon.render_mtail_program()
    assert any(re.search(r"systemctl (re)?start llmkit-proxy-metrics\.service", c) for c in commands)


def test_unchanged_proxy_metrics_are_not_restarted() -> None:
    commands = run_deploy(
        "@fake/proxy-1", FLEET_GROUPS, {**PROXY_METRICS_IN_PLACE, **machine("x86_64"), **FREE_PLENTY}
    )
    assert not any("llmkit-proxy-metrics" in c and "restart" in c for c in commands)


def test_gpu_and_monitoring_hosts_run_no_mtail() -> None:
    for target in ("@fake/gpu-1", "@fake/mon-1"):
        commands = run_deploy(target, FLEET_GROUPS, {**machine("x86_64"), **FREE_PLENTY})
        assert not any("mtail" in c for c in commands), target


def test_mtail_buckets_start_below_zero() -> None:
    assert mon.mtail_buckets([0.5, 2, 10]) == "-1, 0.5, 2, 10"


def access_log_line(**values: str) -> str:
    """One line as nginx writes it with the proxy's real log_format (from the rendered template)."""
    template = (Path(rp.__file__).parent.parent / "templates" / "nginx-proxy.conf.j2").read_text()
    block = template.split("log_format llmkit_proxy_json escape=json", 1)[1].split(";", 1)[0]
    fmt = "".join(re.findall(r"'([^']*)'", block))

    def value(match: re.Match[str]) -> str:
        return values.get(match.group(1), "x")

    line = re.sub(r"\$([a-z0-9_]+)", value, fmt)
    assert isinstance(json.loads(line), dict)  # the format really is JSON
    return line


needs_mtail = pytest.mark.needs("mtail")


@needs_mtail
def test_real_mtail_turns_the_access_log_into_the_slo_metrics(tmp_path: Path) -> None:
    common = {"bytes_sent": "10", "request_length": "10"}
    lines = [
        access_log_line(status="200", request_time="3.500", upstream_header_time="0.400", **common),
        # nginx retried the next upstream: the last attempt's header time counts.
        access_log_line(status="502", request_time="1.200", upstream_header_time="-, 1.100", **common),
        # Answered by nginx itself (rate limit): no upstream, a time of 0.000.
        access_log_line(status="429", request_time="0.000", upstream_header_time="", **common),
    ]
    log = tmp_path / "proxy-access.log"
    log.write_text("\n".join(lines) + "\n")
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "llmkit_proxy.mtail").write_text(mon.render_mtail_program())
    result = subprocess.run(
        [
            "mtail",
            "--one_shot",
            "--one_shot_format",
            "prometheus",
            "--emit_prog_label=false",
            "--progs",
            str(progs),
            "--logs",
            str(log),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    samples = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            samples[name] = float(number)
    total = mon.REQUESTS_METRIC
    assert samples[f'{total}{{status="200"}}'] == 1
    assert samples[f'{total}{{status="502"}}'] == 1
    assert samples[f'{total}{{status="429"}}'] == 1
    duration, latency = mon.DURATION_METRIC, mon.LATENCY_METRIC
    assert samples[f"{duration}_count"] == 3
    assert samples[f'{duration}_bucket{{le="+Inf"}}'] == 3  # the 0.000 one lands in a bucket
    assert samples[f'{duration}_bucket{{le="0.1"}}'] == 1
    assert samples[f'{duration}_bucket{{le="2"}}'] == 2
    assert samples[f"{latency}_count"] == 2
    assert samples[f"{latency}_sum"] == pytest.approx(1.5)
    assert samples[f'{latency}_bucket{{le="0.5"}}'] == 1
    assert samples[f'{latency}_bucket{{le="1"}}'] == 1
    assert samples[f'{latency}_bucket{{le="2"}}'] == 2
