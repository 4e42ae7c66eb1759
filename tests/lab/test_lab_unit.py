"""The lab's pure parts, fast and without root: validation, generated files, state, a safe down.

Nothing here creates an interface, boots a machine or runs a service; ``test_lab_up.py`` does
(``pytest -m e2e``).
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from llmkit.cli import main
from llmkit.errors import ConfigError, LlmkitError
from llmkit.lab import inventory as inv
from llmkit.lab import lab as labmod
from llmkit.lab import machines, network, prereqs, services, system

ROOT = Path(__file__).resolve().parents[2]
# Not the subnet of any real lab (the e2e tests use 10.94 and 10.98, `llmkit lab up` 10.97,
# bench/lab.py 10.96): down() in these tests looks for machines, links and namespaces by the
# names it derives from the subnet, and must never meet a running lab's.
NET = ipaddress.IPv4Network("10.199.77.0/24")
ALL_PROGRAMS = set(labmod.REQUIRED_PROGRAMS)


def fake_which(present: set[str]) -> Any:
    def which(cmd: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        return f"/usr/bin/{cmd}" if cmd in present else None

    return which


# --- preflight ------------------------------------------------------------------------------------


def test_preflight_passes_as_root_with_every_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", fake_which(ALL_PROGRAMS))
    labmod.preflight()


def test_preflight_refuses_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", fake_which(ALL_PROGRAMS))
    with pytest.raises(LlmkitError, match=r"must run as root") as caught:
        labmod.preflight()
    assert caught.value.exit_code == 2
    assert "apt-get install" not in str(caught.value)


def test_preflight_names_the_missing_programs_and_the_packages_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    present = ALL_PROGRAMS - {"systemd-nspawn", "debootstrap", "apt-cacher-ng", "nginx"}
    monkeypatch.setattr(shutil, "which", fake_which(present))
    with pytest.raises(LlmkitError) as caught:
        labmod.preflight()
    message = str(caught.value)
    assert message == prereqs.missing_message(["systemd-nspawn", "debootstrap", "apt-cacher-ng", "nginx"])
    assert "systemd-nspawn (Debian package systemd-container)" in message
    assert "nginx (Debian package nginx-light)" in message
    assert "`uv run --frozen llmkit lab prereqs` as root" in message
    assert "must run as root" not in message


def test_preflight_for_down_needs_only_root_and_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", fake_which({"ip", "umount"}))
    labmod.preflight(labmod.DOWN_PROGRAMS)
    with pytest.raises(LlmkitError, match=r"missing prerequisite\(s\): systemd-nspawn"):
        labmod.preflight()


def test_cli_up_refuses_without_root_with_exit_2_and_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", fake_which(set()))
    result = CliRunner().invoke(main, ["lab", "up", "--state-dir", "/nonexistent/lab"])
    assert result.exit_code == 2
    assert "must run as root" in result.output
    assert "systemd-nspawn (Debian package systemd-container)" in result.output
    assert "llmkit lab prereqs" in result.output
    assert "Traceback" not in result.output
    assert not Path("/nonexistent/lab").exists()


def test_cli_up_without_go_refuses_before_making_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    lab_programs = set(labmod.REQUIRED_PROGRAMS)
    monkeypatch.setattr(shutil, "which", fake_which(lab_programs))  # everything but go
    result = CliRunner().invoke(main, ["lab", "up", "--state-dir", "/nonexistent/lab"])
    assert result.exit_code == 2, result.output
    assert "needs the Go toolchain" in result.output and "`go` is not on PATH" in result.output
    assert "Traceback" not in result.output
    assert not Path("/nonexistent/lab").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--hosts", "proxy,gpu1,proxy"], "'proxy' is given twice"),
        (["--hosts", "proxy,GPU1"], "'GPU1' is not a usable host name"),
        (["--hosts", "proxy,gpu_1"], "'gpu_1' is not a usable host name"),
        (["--hosts", "proxy,,gpu1"], "'' is not a usable host name"),
        (["--hosts", "controller"], "'controller' is reserved"),
        (["--subnet", "10.97.0.0/16"], "a /16, not a /24"),
        (["--subnet", "8.8.8.0/24"], "not a private RFC 1918 network"),
    ],
)
def test_cli_up_refuses_bad_arguments_before_anything_else(
    monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the argument error comes first, even so
    result = CliRunner().invoke(main, ["lab", "up", "--state-dir", "/nonexistent/lab", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output


def test_cli_lists_the_three_verbs() -> None:
    result = CliRunner().invoke(main, ["lab", "--help"])
    assert result.exit_code == 0
    for verb in ("up", "status", "down"):
        assert re.search(rf"^\s+{verb}\s", result.output, re.MULTILINE), result.output


def test_cli_status_without_a_lab_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["lab", "status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no lab in" in result.output and "llmkit lab up" in result.output


def test_cli_down_without_a_lab_removes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", fake_which({"ip", "umount"}))
    result = CliRunner().invoke(main, ["lab", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "nothing to remove" in result.output


# --- host names and subnets -----------------------------------------------------------------------


def test_hosts_keep_their_order_and_may_be_a_string() -> None:
    assert network.validate_hosts("proxy, gpu1,gpu2") == ["proxy", "gpu1", "gpu2"]
    assert network.validate_hosts(["mon-1", "gateway2"]) == ["mon-1", "gateway2"]


@pytest.mark.parametrize(
    "bad",
    ["", "Proxy", "1gpu", "gpu-", "-gpu", "gpu.1", "gpu 1", "a" * 41, "localhost", "lab-controller", "ca"],
)
def test_bad_host_names_are_refused_naming_the_value(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        network.validate_hosts(["proxy", bad])
    assert caught.value.key == "--hosts"
    assert repr(bad) in str(caught.value)


def test_duplicate_hosts_are_refused() -> None:
    with pytest.raises(ConfigError, match="'gpu1' is given twice"):
        network.validate_hosts(["gpu1", "proxy", "gpu1"])


def test_too_many_hosts_for_a_slash_24_are_refused() -> None:
    names = [f"h{i}" for i in range(network.MAX_HOSTS + 1)]
    with pytest.raises(ConfigError, match="too many hosts"):
        network.validate_hosts(names)
    assert len(network.validate_hosts(names[:-1])) == network.MAX_HOSTS == 245


@pytest.mark.parametrize("good", ["10.97.0.0/24", "172.16.5.0/24", "172.31.255.0/24", "192.168.77.0/24"])
def test_private_slash_24_subnets_are_accepted(good: str) -> None:
    assert str(network.parse_subnet(good)) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("10.97.0.0/16", "a /16, not a /24"),
        ("10.97.0.0/25", "a /25, not a /24"),
        ("10.97.0.5/24", "not an IPv4 network"),  # host bits set
        ("8.8.8.0/24", "not a private RFC 1918 network"),
        ("100.64.0.0/24", "not a private RFC 1918 network"),
        ("127.0.0.0/24", "not a private RFC 1918 network"),
        ("169.254.1.0/24", "not a private RFC 1918 network"),
        ("172.32.0.0/24", "not a private RFC 1918 network"),
        ("fd00::/64", "IPv6 is not supported"),
        ("lab", "not an IPv4 network"),
    ],
)
def test_other_subnets_are_refused_with_a_clear_message(bad: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        network.parse_subnet(bad)
    assert caught.value.key == "--subnet"
    assert why in str(caught.value) and "RFC 1918" in str(caught.value)


def test_addresses_controller_first_then_hosts_from_dot_10_in_order() -> None:
    assert network.controller_address(NET) == ipaddress.IPv4Address("10.199.77.1")
    addresses = network.host_addresses(NET, ["proxy", "gpu1", "gpu2"])
    assert {k: str(v) for k, v in addresses.items()} == {
        "proxy": "10.199.77.10",
        "gpu1": "10.199.77.11",
        "gpu2": "10.199.77.12",
    }


def test_interface_and_machine_names_are_unique_per_subnet_and_fit() -> None:
    other = ipaddress.IPv4Network("10.97.0.0/24")
    assert network.bridge_name(NET) == "llmkit-0ac74d"
    assert network.bridge_name(other) != network.bridge_name(NET)
    widest = ipaddress.IPv4Network("192.168.255.0/24")
    assert len(network.bridge_name(widest)) <= network.IFNAME_MAX
    assert network.machine_name("proxy", NET) == "proxy-10-199-77"
    assert network.machine_name("proxy", NET) != network.machine_name("proxy", other)


# --- files of a machine ---------------------------------------------------------------------------


def test_networkd_file_gives_host0_its_static_address_and_no_way_out() -> None:
    text = network.networkd_unit(ipaddress.IPv4Address("10.199.77.11"), NET)
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    assert parser["Match"]["Name"] == "host0"
    assert parser["Network"]["Address"] == "10.199.77.11/24"
    assert parser["Network"]["DHCP"] == "no"
    assert parser["Network"]["IPv6AcceptRA"] == "no"
    assert parser["Network"]["LinkLocalAddressing"] == "no"
    assert "Gateway" not in parser["Network"] and "[Route]" not in text
    # Named as systemd's own DHCP file for host0, so it replaces it.
    assert machines.NETWORKD_FILE == "etc/systemd/network/80-container-host0.network"


def test_hosts_file_lists_loopback_the_controller_and_every_host() -> None:
    entries = [network.HostEntry("proxy", "10.199.77.10"), network.HostEntry("gpu1", "10.199.77.11")]
    lines = network.hosts_file(entries, ipaddress.IPv4Address("10.199.77.1")).splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.199.77.1\tlab-controller" in lines
    assert "10.199.77.10\tproxy" in lines and "10.199.77.11\tgpu1" in lines


def test_apt_and_pip_go_through_the_controller_proxy() -> None:
    apt = machines.apt_proxy_conf("http://10.199.77.1:3142")
    assert 'Acquire::http::Proxy "http://10.199.77.1:3142";' in apt
    pip = configparser.ConfigParser()
    pip.read_string(machines.pip_conf("http://10.199.77.1:3142"))
    assert pip["global"]["proxy"] == "http://10.199.77.1:3142"
    assert pip["global"]["cert"] == "/" + machines.CA_BUNDLE_IN_HOST


@pytest.mark.needs("ssh-keygen")
def test_configure_root_makes_a_copy_of_the_image_into_one_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for directory in ("etc/ssh", "etc/apt/apt.conf.d", "etc/ssl", "root"):
        (root / directory).mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("the image's key\n")
    bundle = tmp_path / "bundle.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    setup = machines.HostSetup(
        name="gpu1",
        address=ipaddress.IPv4Address("10.199.77.11"),
        network=NET,
        controller=ipaddress.IPv4Address("10.199.77.1"),
        hosts=(network.HostEntry("proxy", "10.199.77.10"), network.HostEntry("gpu1", "10.199.77.11")),
        public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1lab llmkit-lab",
        apt_proxy_url="http://10.199.77.1:3142",
    )
    machines.configure_root(root, setup, ca_bundle=bundle)
    assert (root / "etc/hostname").read_text() == "gpu1\n"
    assert re.fullmatch(r"[0-9a-f]{32}\n", (root / "etc/machine-id").read_text())
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_text() != "the image's key\n"
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().startswith("ssh-ed25519 ")
    keys = root / "root/.ssh/authorized_keys"
    assert keys.read_text() == setup.public_key + "\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (root / "root/.ssh").stat().st_mode & 0o777 == 0o700
    assert "Address=10.199.77.11/24" in (root / machines.NETWORKD_FILE).read_text()
    assert "http://10.199.77.1:3142" in (root / machines.APT_PROXY_FILE).read_text()
    assert "10.199.77.10\tproxy" in (root / "etc/hosts").read_text()
    assert (root / machines.CA_BUNDLE_IN_HOST).read_text() == bundle.read_text()


def test_nspawn_boots_the_root_on_the_bridge_without_a_system_bus() -> None:
    argv = machines.nspawn_argv(Path("/s/machines/gpu1"), "gpu1-10-199-77", "llmkit-0ac74d")
    assert argv[0] == "systemd-nspawn"
    for flag in (
        "--boot",
        "--directory=/s/machines/gpu1",
        "--machine=gpu1-10-199-77",
        "--register=no",
        "--keep-unit",
        "--network-bridge=llmkit-0ac74d",
        "--link-journal=no",
        "--resolv-conf=off",
        "--settings=no",
    ):
        assert flag in argv
    assert not any(
        a.startswith(("--network-veth", "--bind", "--capability", "--private-network=no")) for a in argv
    )
    assert machines.nspawn_markers(Path("/s/machines/gpu1")) == [
        "systemd-nspawn",
        "--directory=/s/machines/gpu1",
    ]


def test_debootstrap_makes_a_minbase_bookworm_with_the_issue_packages() -> None:
    argv = machines.debootstrap_argv(Path("/c/build/root"), "http://deb.debian.org/debian")
    assert argv[:2] == ["debootstrap", "--variant=minbase"]
    assert argv[-3:] == ["bookworm", "/c/build/root", "http://deb.debian.org/debian"]
    included = next(a for a in argv if a.startswith("--include=")).removeprefix("--include=").split(",")
    required = (
        "systemd systemd-sysv openssh-server python3 dbus iproute2 ca-certificates curl sudo libgomp1 gnupg"
    )
    assert set(required.split()) <= set(included)


def test_the_image_cache_is_keyed_by_suite_and_packages() -> None:
    base = machines.image_path(Path("/c"))
    assert base.parent == Path("/c/images") and base.name.startswith("bookworm-")
    assert machines.image_path(Path("/c"), packages=(*machines.IMAGE_PACKAGES, "vim")) != base
    assert machines.image_path(Path("/c"), suite="trixie").name.startswith("trixie-")
    reordered = tuple(reversed(machines.IMAGE_PACKAGES))
    assert machines.image_path(Path("/c"), packages=reordered) == base


def test_cache_dir_from_the_option_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(machines.CACHE_ENV, raising=False)
    assert machines.resolve_cache_dir() == Path("/var/cache/llmkit/lab")
    monkeypatch.setenv(machines.CACHE_ENV, "/srv/lab-cache")
    assert machines.resolve_cache_dir() == Path("/srv/lab-cache")
    assert machines.resolve_cache_dir("/opt/c") == Path("/opt/c")


def test_the_debian_mirror_is_read_from_the_controller_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.example.internal/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://src.example.internal/debian\n"
        "Suites: bookworm\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example.internal/debian-security\n"
        "Suites: bookworm-security\n"
    )
    mirrors = machines.debian_mirrors(tmp_path)
    assert mirrors.archive == "http://mirror.example.internal/debian"
    assert mirrors.security == "http://mirror.example.internal/debian-security"
    text = machines.sources_list(mirrors)
    assert "deb http://mirror.example.internal/debian bookworm main" in text
    assert "deb http://mirror.example.internal/debian bookworm-updates main" in text
    assert "deb http://mirror.example.internal/debian-security bookworm-security main" in text


def test_one_line_sources_and_the_fallback_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://old.example.internal/debian bookworm main\n"
    )
    assert machines.debian_mirrors(tmp_path).archive == "http://old.example.internal/debian"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert machines.debian_mirrors(empty) == machines.DebianMirrors(
        machines.DEFAULT_MIRROR, machines.DEFAULT_SECURITY_MIRROR
    )


# --- services -------------------------------------------------------------------------------------


def paths(tmp_path: Path) -> services.ServicePaths:
    return services.ServicePaths(tmp_path / "state", tmp_path / "cache", network.lab_tag(NET))


def test_the_apt_proxy_listens_on_the_lab_address_and_tunnels_only_to_pypi(tmp_path: Path) -> None:
    text = services.acng_conf(paths(tmp_path), ipaddress.IPv4Address("10.199.77.1"))
    conf = dict(
        line.split(": ", 1) for line in text.splitlines() if ": " in line and not line.startswith("#")
    )
    assert conf["BindAddress"] == "10.199.77.1"
    assert conf["Port"] == "3142"
    assert conf["CacheDir"] == str(tmp_path / "cache/apt-cacher-ng/10-199-77")
    assert conf["LogDir"].startswith(str(tmp_path / "state"))
    assert "0.0.0.0" not in text and "Remap-" not in text and "ReportPage" not in text
    pattern = re.compile(conf["PassThroughPattern"])
    assert pattern.search("pypi.org:443") and pattern.search("files.pythonhosted.org:443")
    for refused in (
        "example.com:443",
        "pypi.org:80",
        "evilpypi.org:443",
        "pypi.org.evil.example:443",
        "pypixorg:443",
    ):
        assert not pattern.search(refused), refused


def test_the_mirror_serves_read_only_on_the_lab_address_with_a_rate(tmp_path: Path) -> None:
    text = services.nginx_conf(paths(tmp_path), ipaddress.IPv4Address("10.199.77.1"), 4096, "nobody nogroup")
    assert "listen 10.199.77.1:8080;" in text
    assert len(re.findall(r"^\s*listen ", text, re.MULTILINE)) == 1
    assert "limit_rate 4096;" in text
    assert "limit_except GET { deny all; }" in text
    assert "autoindex off;" in text and "server_tokens off;" in text
    assert f'root "{tmp_path / "state/mirror"}";' in text
    assert "limit_rate 0;" in services.nginx_conf(
        paths(tmp_path), ipaddress.IPv4Address("10.199.77.1"), None, "root root"
    )


@pytest.mark.needs("nginx")
def test_nginx_accepts_the_generated_mirror_config(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.mirror_dir.mkdir(parents=True)
    p.run_dir.mkdir(parents=True)
    p.nginx_error_log.parent.mkdir(parents=True)
    # `nginx -t` binds the listen address: loopback here, as the lab's bridge does not exist.
    services.write_nginx_conf(p, ipaddress.IPv4Address("127.0.0.1"), 1000)
    assert "limit_rate 1000;" in p.nginx_conf.read_text()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "fast"])
def test_mirror_rates_must_be_positive_integers(bad: Any) -> None:
    with pytest.raises(ConfigError, match="limit_rate"):
        services.check_rate(bad)
    assert services.check_rate(None) is None
    assert services.check_rate(1) == 1


# --- state, inventory, PKI ------------------------------------------------------------------------


def planned(tmp_path: Path, hosts: list[str] | None = None) -> labmod.Lab:
    return labmod.new_lab(
        hosts or ["proxy", "gpu1", "gpu2", "mon1", "monitoring2", "gateway1", "db1"],
        tmp_path / "state",
        tmp_path / "cache",
        "10.199.77.0/24",
    )


def test_state_round_trips_through_lab_json(tmp_path: Path) -> None:
    lab = planned(tmp_path, ["proxy", "gpu1"])
    lab.hosts[0].pid, lab.hosts[0].veth = 4242, "vb-proxy-10-199-77"
    lab.services["mirror"] = labmod.Service("nginx mirror", "10.199.77.1", 8080, tmp_path / "log", pid=77)
    lab.mirror_rate = 1000
    lab.timings["up_seconds"] = 12.5
    lab.state_dir.mkdir(parents=True)
    lab.save()
    loaded = labmod.load(lab.state_dir)
    assert loaded == lab
    assert loaded.host("proxy").address == "10.199.77.10"
    assert loaded.controller_address == "10.199.77.1"
    assert loaded.mirror_url == "http://10.199.77.1:8080"
    assert loaded.apt_proxy_url == "http://10.199.77.1:3142"
    assert loaded.bridge == "llmkit-0ac74d"
    data = json.loads((lab.state_dir / "lab.json").read_text())
    assert data["hosts"][0] == {
        "name": "proxy",
        "address": "10.199.77.10",
        "machine": "proxy-10-199-77",
        "root": str(tmp_path / "state/machines/proxy"),
        "log": str(tmp_path / "state/logs/proxy.log"),
        "pid": 4242,
        "veth": "vb-proxy-10-199-77",
    }
    with pytest.raises(LlmkitError, match="no host 'gpu9'"):
        loaded.host("gpu9")


def test_load_refuses_a_missing_or_broken_state(tmp_path: Path) -> None:
    with pytest.raises(LlmkitError, match="no lab in"):
        labmod.load(tmp_path)
    (tmp_path / "lab.json").write_text("{}")
    with pytest.raises(LlmkitError, match="not a lab state file"):
        labmod.load(tmp_path)


def test_ssh_uses_the_lab_key_as_root_without_host_key_checks(tmp_path: Path) -> None:
    lab = planned(tmp_path, ["proxy"])
    argv = lab.ssh_argv("proxy", "true")
    assert argv[:3] == ["ssh", "-i", str(tmp_path / "state/ssh/id_ed25519")]
    assert argv[-2:] == ["root@10.199.77.10", "true"]
    for option in (
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
    ):
        assert option in argv


def test_a_failed_host_command_is_a_called_process_error_with_its_output() -> None:
    error = labmod.LabCommandError("gpu1", "false", 1, "out", "it broke")
    assert isinstance(error, subprocess.CalledProcessError) and isinstance(error, LlmkitError)
    assert error.returncode == 1 and error.stderr == "it broke"
    assert "gpu1" in str(error) and "it broke" in str(error)


ARTIFACTS = {
    "ollama": {
        "version": "0.13.3",
        "file": "ollama/v0.13.3/ollama-linux-amd64.tgz",
        "sha256": "a" * 64,
        "size": 1,
    },
    "node_exporter": {"version": "1.9.1", "file": "node_exporter/x.tar.gz", "sha256": "b" * 64, "size": 2},
    "models": [
        {
            "name": "tiny-r1:latest",
            "source": "mirror",
            "file": "tiny-r1/tiny-r1.gguf",
            "sha256": "c" * 64,
            "size": 3,
            "modelfile": {"file": "tiny-r1/Modelfile", "sha256": "d" * 64},
        }
    ],
}


@pytest.fixture
def inventory_file(tmp_path: Path) -> Iterator[tuple[labmod.Lab, Path]]:
    lab = planned(tmp_path)
    lab.mirror_dir.mkdir(parents=True)
    (lab.mirror_dir / "artifacts.json").write_text(json.dumps(ARTIFACTS))
    path = labmod.write_inventory(lab, {"client_cidrs": ["10.199.77.0/24"], "rate_limit_per_second": 1000})
    yield lab, path


def test_the_inventory_groups_hosts_by_name_prefix(inventory_file: tuple[labmod.Lab, Path]) -> None:
    _, path = inventory_file
    namespace = runpy.run_path(str(path))
    groups = {k: [name for name, _ in v[0]] for k, v in namespace.items() if not k.startswith("_")}
    assert groups == {
        "proxy": ["proxy"],
        "gpu": ["gpu1", "gpu2"],
        "monitoring": ["mon1", "monitoring2"],
        "gateway": ["gateway1"],
        "lab": ["db1"],
    }


def test_the_inventory_host_data_connects_as_root_with_the_lab_key(
    inventory_file: tuple[labmod.Lab, Path],
) -> None:
    lab, path = inventory_file
    namespace = runpy.run_path(str(path))
    hosts = {
        name: data
        for group in ("proxy", "gpu", "monitoring", "gateway", "lab")
        for name, data in namespace[group][0]
    }
    for host in lab.hosts:
        data = hosts[host.name]
        assert data["ssh_hostname"] == host.address
        assert data["ssh_user"] == "root"
        assert data["ssh_key"] == str(lab.ssh_key)
        assert data["ssh_known_hosts_file"] == "/dev/null"
        assert data["ssh_strict_host_key_checking"] == "no"
    assert hosts["gpu1"]["model_bind_address"] == "10.199.77.11"
    assert hosts["gpu2"]["model_bind_address"] == "10.199.77.12"
    assert "model_bind_address" not in hosts["proxy"]


def test_the_inventory_site_data_with_the_mirror_and_the_overrides(
    inventory_file: tuple[labmod.Lab, Path],
) -> None:
    lab, path = inventory_file
    namespace = runpy.run_path(str(path))
    for group in ("proxy", "gpu", "monitoring", "gateway", "lab"):
        site = namespace[group][1]
        assert site["admin_cidrs"] == ["10.199.77.1/32"]
        assert site["client_cidrs"] == ["10.199.77.0/24"]  # overridden by extra
        assert site["rate_limit_per_second"] == 1000  # added by extra
        assert site["proxy_server_name"] == "proxy"
        assert site["pki_dir"] == str(lab.pki_dir)
        assert site["ollama_mirror_url"] == "http://10.199.77.1:8080"
        assert site["ollama_version"] == "0.13.3" and site["ollama_sha256"] == "a" * 64
        assert site["exporters_mirror_url"] == "http://10.199.77.1:8080"
        assert site["node_exporter_sha256"] == "b" * 64
        assert site["models_mirror_url"] == "http://10.199.77.1:8080/models/"
        assert site["models"] == ARTIFACTS["models"]


def test_without_artifacts_the_inventory_has_no_mirror_data(tmp_path: Path) -> None:
    lab = planned(tmp_path, ["proxy", "gpu1"])
    namespace = runpy.run_path(str(labmod.write_inventory(lab)))
    site = namespace["gpu"][1]
    assert site == {
        "admin_cidrs": ["10.199.77.1/32"],
        "client_cidrs": ["10.199.77.1/32"],
        "proxy_server_name": "proxy",
        "pki_dir": str(lab.pki_dir),
        "mtls_client_ca": str(lab.pki_dir / "ca.crt"),
    }
    assert "monitoring" not in namespace and "lab" not in namespace


def test_values_that_are_not_literals_never_reach_the_inventory(tmp_path: Path) -> None:
    lab = planned(tmp_path, ["proxy"])
    with pytest.raises(LlmkitError, match="not a plain Python literal"):
        labmod.write_inventory(lab, {"evil": object()})
    assert not lab.inventory_path.exists()


LOAD_WITH_PYINFRA = """
import json, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

with ctx_state.use(State(check_for_changes=False)):
    inventory = make_inventory(sys.argv[1], group_data_directories=[sys.argv[2]])
print(json.dumps({
    "groups": {g: sorted(h.name for h in hosts) for g, hosts in inventory.groups.items()},
    "hosts": {h.name: h.data.dict() for h in inventory},
}, default=repr))
"""


def test_pyinfra_loads_the_inventory_and_group_data_keeps_the_site_values(
    inventory_file: tuple[labmod.Lab, Path],
) -> None:
    lab, path = inventory_file
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_PYINFRA, str(path), str(ROOT / "playbooks/group_data")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded["groups"]["gpu"] == ["gpu1", "gpu2"]
    assert loaded["groups"]["monitoring"] == ["mon1", "monitoring2"]
    gpu1 = loaded["hosts"]["gpu1"]
    assert gpu1["admin_cidrs"] == ["10.199.77.1/32"]  # group data wins over group_data/all.py
    assert gpu1["pki_dir"] == str(lab.pki_dir)
    assert gpu1["ssh_hostname"] == "10.199.77.11"
    assert gpu1["model_bind_address"] == "10.199.77.11"
    assert gpu1["require_gpu"] is False  # a default from group_data/all.py


def test_the_model_tls_name_is_the_one_the_proxy_verifies() -> None:
    from playbooks.deploys.reverse_proxy import UPSTREAM_TLS_NAME

    assert inv.MODEL_TLS_NAME == UPSTREAM_TLS_NAME


def test_the_gateway_tls_name_is_the_one_the_proxy_verifies() -> None:
    from playbooks.deploys.reverse_proxy import GATEWAY_TLS_NAME

    assert inv.GATEWAY_TLS_NAME == GATEWAY_TLS_NAME


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)} | {
        f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)
    }


def _usages(cert: x509.Certificate) -> set[str]:
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}
    return {names[oid] for oid in eku if oid in names}


def test_the_lab_pki_has_what_the_deploys_need(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    hosts = [
        ("proxy", "10.199.77.10"),
        ("gpu1", "10.199.77.11"),
        ("gateway1", "10.199.77.12"),
        ("mon1", "10.199.77.13"),
    ]
    assert inv.make_pki(pki_dir, hosts) == ["proxy", "gpu1", "gateway1", "mon1", "lab-client"]
    proxy, gpu1 = _cert(pki_dir / "proxy.crt"), _cert(pki_dir / "gpu1.crt")
    assert _sans(proxy) == {"DNS:proxy", "IP:10.199.77.10"}
    assert _usages(proxy) == {"server", "client"}  # it presents its certificate to the model hosts
    assert _sans(gpu1) == {"DNS:gpu1", "IP:10.199.77.11", "DNS:model.llmkit.internal"}
    assert _usages(gpu1) == {"server"}
    assert _usages(_cert(pki_dir / "gateway1.crt")) == {"server", "client"}
    assert _sans(_cert(pki_dir / "gateway1.crt")) == {
        "DNS:gateway1",
        "IP:10.199.77.12",
        "DNS:gateway.llmkit.internal",
    }
    assert _usages(_cert(pki_dir / "mon1.crt")) == {"server"}
    assert _usages(_cert(pki_dir / "lab-client.crt")) == {"client"}
    assert (pki_dir / "gpu1.key").stat().st_mode & 0o777 == 0o600
    ca = (pki_dir / "ca.crt").read_bytes()
    first = (pki_dir / "gpu1.crt").read_bytes()
    inv.make_pki(pki_dir, [("proxy2", "10.199.77.20"), ("gpu1", "10.199.77.21")])  # a second up: same CA
    assert (pki_dir / "ca.crt").read_bytes() == ca
    assert (pki_dir / "gpu1.crt").read_bytes() != first
    assert "IP:10.199.77.21" in _sans(_cert(pki_dir / "gpu1.crt"))
    assert "DNS:proxy" in _sans(_cert(pki_dir / "proxy2.crt"))


# --- down, safely ---------------------------------------------------------------------------------


def _unused_pid() -> int:
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(limit - 1, 1, -1):
        if not Path(f"/proc/{pid}").exists():
            return pid
    raise AssertionError("no free pid")


def test_down_removes_a_half_made_lab_and_signals_no_stranger(tmp_path: Path) -> None:
    lab = planned(tmp_path, ["proxy", "gpu1", "gpu2"])
    stranger = subprocess.Popen(["sleep", "60"])  # a live process whose pid lab.json now names
    try:
        lab.hosts[0].pid = _unused_pid()
        lab.hosts[1].pid = stranger.pid
        lab.hosts[2].pid = None  # never booted
        lab.services["mirror"] = labmod.Service(
            "nginx mirror", "10.199.77.1", 8080, tmp_path / "l", pid=stranger.pid
        )
        lab.services["apt_proxy"] = labmod.Service(
            "apt-cacher-ng", "10.199.77.1", 3142, tmp_path / "l", pid=None
        )
        for host in lab.hosts[:2]:  # two roots copied, the third never made
            (host.root / "etc").mkdir(parents=True)
            (host.root / "etc/hostname").write_text(host.name)
            os.symlink("/etc", host.root / "link-out")  # removal never follows a link
        lab.save()
        labmod.write_inventory(lab)

        removed = labmod.down(lab.state_dir)

        assert stranger.poll() is None, "down signalled a process that is not the lab's"
        assert sorted(removed) == sorted(
            [
                f"root {lab.hosts[0].root}",
                f"root {lab.hosts[1].root}",
                f"inventory {lab.inventory_path}",
                f"state file {lab.state_file}",
            ]
        )
        assert not lab.hosts[0].root.exists() and not lab.hosts[1].root.exists()
        assert Path("/etc/hostname").exists()
        assert not lab.state_file.exists()
        assert labmod.down(lab.state_dir) == []  # idempotent
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.needs("root", "ip", "umount")
def test_cli_down_says_each_removal_once_and_lists_what_it_kept(tmp_path: Path) -> None:
    lab = planned(tmp_path, ["gpu1"])
    (lab.hosts[0].root / "etc").mkdir(parents=True)
    for kept in ("pki", "ssh", "mirror", "logs", "run"):
        (lab.state_dir / kept).mkdir(exist_ok=True)
    lab.save()
    labmod.write_inventory(lab)

    result = CliRunner().invoke(main, ["lab", "down", "--state-dir", str(lab.state_dir)])

    assert result.exit_code == 0, result.output
    for item in (
        f"root {lab.hosts[0].root}",
        f"inventory {lab.inventory_path}",
        f"state file {lab.state_file}",
    ):
        assert result.output.count(item) == 1, result.output
    assert "removed 3 item(s); kept:" in result.output
    for kept in ("pki", "ssh", "mirror", "logs", "run"):
        line = next(
            line for line in result.output.splitlines() if line.startswith(f"  {lab.state_dir / kept}  (")
        )
        assert labmod.KEPT_IN_STATE[kept] in line
    assert "the image, build and apt caches in" in result.output


def test_remove_tree_refuses_anything_outside_its_directory(tmp_path: Path) -> None:
    inside = tmp_path / "machines"
    inside.mkdir()
    for outside in (tmp_path, tmp_path / "other", inside, inside / ".." / "x"):
        with pytest.raises(LlmkitError, match="refusing to remove"):
            system.remove_tree(outside, inside=inside)
    assert not system.remove_tree(inside / "absent", inside=inside)


def test_a_process_is_matched_by_its_command_line(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while system.cmdline(child.pid) != ["sleep", "30"] and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has exec'd
        assert system.matches(child.pid, ["sleep", "30"])
        assert not system.matches(child.pid, ["slee"])  # whole arguments, never substrings
        assert system.find(["sleep", "30"]) and child.pid in system.find(["sleep", "30"])
        assert not system.matches(child.pid, ["systemd-nspawn"])
        assert not system.stop(child.pid, ["systemd-nspawn", "--directory=/x"])
        assert child.poll() is None
        assert system.stop(child.pid, ["sleep"], timeout=5)
        assert not system.alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not system.alive(None) and not system.alive(_unused_pid())


def test_markers_match_nginx_rewritten_command_line_by_whole_words() -> None:
    title = ["nginx: master process /usr/sbin/nginx -e /s/logs/e.log -c /s/mirror-nginx.conf"]
    tokens = system._tokens(title)
    assert {"nginx", "/s/mirror-nginx.conf"} <= tokens
    assert "/s/mirror-nginx.con" not in tokens and "/s/mirror" not in tokens
    nspawn = system._tokens(["systemd-nspawn", "--directory=/s/machines/gpu10"])
    assert "--directory=/s/machines/gpu1" not in nspawn


def test_up_validates_before_it_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="given twice"):
        labmod.up(["gpu1", "gpu1"], tmp_path / "s", cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="--subnet"):
        labmod.up(["gpu1"], tmp_path / "s", cache_dir=tmp_path / "c", subnet="10.0.0.0/8")
    with pytest.raises(LlmkitError, match="must run as root"):
        labmod.up(["gpu1"], tmp_path / "s", cache_dir=tmp_path / "c", subnet="10.199.77.0/24")
    assert not (tmp_path / "s").exists()


def test_up_refuses_a_state_dir_that_holds_a_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(labmod, "preflight", lambda *a: None)
    lab = planned(tmp_path, ["gpu1"])
    lab.state_dir.mkdir(parents=True)
    lab.save()
    with pytest.raises(LlmkitError, match="already recorded"):
        labmod.up(["gpu1"], lab.state_dir, cache_dir=tmp_path / "c", subnet="10.199.77.0/24")


def test_paths_that_would_need_quoting_are_refused() -> None:
    with pytest.raises(ConfigError, match="--state-dir"):
        labmod.check_dir('/tmp/my lab"', "--state-dir")
    assert labmod.check_dir("/var/lib/llmkit/lab", "--state-dir") == Path("/var/lib/llmkit/lab")
