"""NVIDIA facts, version matrix and the driver / CUDA / container toolkit deploys.

Facts in, commands out: parsers run on the real output captured on an H200 host
(tests/fixtures/nvidia-h200) and on synthetic cases; deploys run against a fake host whose
facts the test chooses, and the test reads the commands each operation would run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.exceptions import DeployError
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.apt import AptSources
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Arch, KernelVersion, LinuxDistribution
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from llmkit.errors import ConfigError
from llmkit.versions import IncompatibleCudaError, check_cuda, cuda_for_driver, load_versions, version_key
from playbooks.deploys.container_toolkit import container_toolkit
from playbooks.deploys.cuda import cuda
from playbooks.deploys.gpu_driver import driver_problem, gpu_driver, keyring_command, verify_driver
from playbooks.facts.nvidia import (
    CUDA_MARKER,
    FAILED_MARKER,
    KernelModule,
    KeyringFingerprints,
    NvidiaGpus,
    NvidiaKernelModule,
    NvidiaSmi,
    PciDevice,
    SmiInfo,
    parse_cuda_version,
    parse_kernel_module,
    parse_keyring_fingerprints,
    parse_nvidia_smi,
    parse_pci_devices,
    parse_query_gpu,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-h200"
CUDA_FPR = "EB693B3035CD5710E231E123A4B469963BF863CC"
CTK_FPR = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


# -- version matrix -----------------------------------------------------------------------------


def test_matrix_minimum_drivers_follow_the_release_notes_table() -> None:
    v = load_versions()
    assert v.cuda["12.2"].min_driver == "535.54.03"
    assert v.cuda["12.8"].min_driver == "570.26"
    assert v.cuda["13.0"].min_driver == "580.65.06"
    assert v.driver.default_branch == "580"
    assert v.nvidia_repo.key_fingerprint == CUDA_FPR
    assert v.container_toolkit.key_fingerprint == CTK_FPR
    # Newer toolkits never need an older driver.
    ordered = sorted(v.cuda.values(), key=lambda c: version_key(c.version))
    mins = [version_key(c.min_driver) for c in ordered]
    assert mins == sorted(mins)


def test_every_branch_and_source_is_cited() -> None:
    v = load_versions()
    assert set(v.driver.branches) == {"535", "550", "570", "575", "580"}
    for b in v.driver.branches.values():
        assert b.source.split(" ")[0] in v.sources
    assert v.nvidia_repo.source in v.sources
    assert v.container_toolkit.source.split(" ")[0] in v.sources


def test_cuda_for_driver_picks_the_newest_allowed_toolkit() -> None:
    assert cuda_for_driver("580.159.04") == "13.0"
    assert cuda_for_driver("570.124.06") == "12.8"
    assert cuda_for_driver("535.183.01") == "12.2"
    assert cuda_for_driver("535.54.03") == "12.2"
    assert cuda_for_driver("535.54.02") == "12.1"
    assert cuda_for_driver("520.61.05") is None


def test_check_cuda_names_both_versions_and_the_minimum() -> None:
    check_cuda("12.2", "535.183.01")  # compatible: no error
    with pytest.raises(IncompatibleCudaError) as err:
        check_cuda("12.8", "535.183.01")
    assert "CUDA 12.8 needs driver >= 570.26, the host has 535.183.01" in str(err.value)
    with pytest.raises(ConfigError, match="unknown CUDA toolkit version"):
        check_cuda("12.7", "580.159.04")


def test_driver_packages_per_distro_and_source() -> None:
    v = load_versions()
    assert v.driver_packages("580", "ubuntu2204", "distro", "open") == ["nvidia-driver-580-server-open"]
    assert v.driver_packages("570", "ubuntu2404", "distro", "proprietary") == ["nvidia-driver-570-server"]
    assert v.driver_packages("580", "debian12", "nvidia", "open") == [
        "nvidia-driver-pinning-580",
        "nvidia-open-580",
    ]
    assert v.driver_packages("570", "ubuntu2404", "nvidia", "proprietary") == ["cuda-drivers-570"]
    assert "nvidia-driver" in v.driver_packages("535", "debian12", "distro", "proprietary")
    with pytest.raises(ConfigError, match="does not carry driver branch 580"):
        v.driver_packages("580", "debian12", "distro", "open")
    with pytest.raises(ConfigError, match="unknown NVIDIA driver branch"):
        v.branch("999")


# -- parsers on the real H200 capture -------------------------------------------------------------


def test_pci_parser_finds_the_h200_only() -> None:
    gpus = parse_pci_devices(fixture_lines("sys-pci.txt"))
    assert gpus == [PciDevice(slot="0000:00:06.0", vendor="0x10de", device="0x2335", pci_class="0x030200")]


def test_pci_parser_ignores_nvswitch_and_audio_and_other_vendors() -> None:
    lines = [
        "0000:05:00.0 0x10de 0x2330 0x030200",
        "0000:06:00.0 0x10de 0x2330 0x030000",
        "0000:07:00.0 0x10de 0x22a3 0x068000",  # NVSwitch bridge
        "0000:08:00.1 0x10de 0x10f0 0x040300",  # HDMI audio
        "0000:09:00.0 0x1002 0x740f 0x038000",  # AMD
    ]
    assert [d.slot for d in parse_pci_devices(lines)] == ["0000:05:00.0", "0000:06:00.0"]
    assert parse_pci_devices([]) == []


def test_query_gpu_parser_on_h200() -> None:
    [gpu] = parse_query_gpu(fixture_lines("query-gpu.csv"))
    assert gpu.name == "NVIDIA H200"
    assert gpu.memory_total_mib == 143771
    assert gpu.driver_version == "580.159.04"
    assert gpu.compute_cap == "9.0"
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.persistence_mode is True
    assert gpu.utilization_gpu == 0
    # The catalog's H200 memory is what nvidia-smi reports on the real card.
    from llmkit.catalog import load_catalog

    h200 = [g for g in load_catalog().gpus.values() if g.name.startswith("H200")]
    assert not h200 or h200[0].memory_mib == gpu.memory_total_mib


def test_cuda_version_from_header_and_from_version_flag() -> None:
    assert parse_cuda_version(fixture_lines("nvidia-smi.txt")) == "13.0"
    assert parse_cuda_version(fixture_lines("nvidia-smi-version.txt")) == "13.0"
    assert parse_cuda_version(["no such line"]) is None


def test_nvidia_smi_fact_output_on_h200() -> None:
    lines = [*fixture_lines("query-gpu.csv"), CUDA_MARKER, *fixture_lines("nvidia-smi-version.txt")]
    info = parse_nvidia_smi(lines)
    assert info is not None
    assert (info.driver_version, info.cuda_version, info.branch) == ("580.159.04", "13.0", "580")
    assert info.names == ["NVIDIA H200"]
    assert info.memory_mib == [143771]


def test_nvidia_smi_fact_multi_gpu_and_odd_cells() -> None:
    rows = [
        f"{i}, NVIDIA A100-SXM4-80GB, GPU-{i:04d}, 81920, {i * 10}, 570.124.06, 00000000:0{i}:00.0, "
        f"8.0, [N/A], {'Enabled' if i else 'Disabled'}"
        for i in range(4)
    ]
    header = "| NVIDIA-SMI 570.124.06   Driver Version: 570.124.06   CUDA Version: 12.8     |"
    info = parse_nvidia_smi([*rows, CUDA_MARKER, header])
    assert info is not None
    assert len(info.gpus) == 4
    assert info.cuda_version == "12.8"
    assert [g.utilization_gpu for g in info.gpus] == [None] * 4
    assert [g.persistence_mode for g in info.gpus] == [False, True, True, True]
    # A name with a comma still parses: the name is split from both ends.
    [odd] = parse_query_gpu(["0, Weird, Name, GPU-1, 10, 0, 580.1, 0000:00:01.0, 9.0, 5, Enabled"])
    assert odd.name == "Weird, Name"


def test_nvidia_smi_fact_absent_or_failing_is_none() -> None:
    assert parse_nvidia_smi([]) is None
    failing = [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        f"{FAILED_MARKER} 9",
    ]
    assert parse_nvidia_smi(failing) is None
    assert parse_nvidia_smi(["Failed to initialize NVML: Driver/library version mismatch"]) is None


def test_fact_commands_never_fail_the_host() -> None:
    for fact in (NvidiaGpus(), NvidiaSmi(), NvidiaKernelModule()):
        assert fact.command().rstrip().endswith("true")
    assert KeyringFingerprints().command("/k.gpg").rstrip().endswith("true")
    assert "lspci" not in NvidiaGpus().command()


def test_kernel_module_parser() -> None:
    assert parse_kernel_module(fixture_lines("proc-driver-version.txt")) == KernelModule("580.159.04", True)
    legacy = ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024"]
    assert parse_kernel_module(legacy) == KernelModule("535.183.01", False)
    assert parse_kernel_module([]) is None


def test_keyring_fingerprints_parser_reads_primary_keys_only() -> None:
    lines = [
        "pub:-:4096:1:A4B469963BF863CC:1650000000:::-:::scESC::::::23::0:",
        f"fpr:::::::::{CUDA_FPR}:",
        "uid:-::::1650000000::HASH::cudatools <cudatools@nvidia.com>::::::::::0:",
        "sub:-:4096:1:1111111111111111:1650000000::::::e::::::23:",
        "fpr:::::::::0000000000000000000000001111111111111111:",
    ]
    assert parse_keyring_fingerprints(lines) == [CUDA_FPR]


# -- fake host ---------------------------------------------------------------------------------------

OS_RELEASE = {
    "ubuntu2204": {"ID": "ubuntu", "VERSION_ID": "22.04"},
    "ubuntu2404": {"ID": "ubuntu", "VERSION_ID": "24.04"},
    "debian12": {"ID": "debian", "VERSION_ID": "12"},
}
H200 = [PciDevice("0000:00:06.0", "0x10de", "0x2335", "0x030200")]


def smi(version: str, cuda_version: str = "13.0") -> SmiInfo:
    [gpu] = parse_query_gpu(
        [f"0, NVIDIA H200, GPU-1, 143771, 0, {version}, 00000000:00:06.0, 9.0, 0, Enabled"]
    )
    return SmiInfo(driver_version=version, cuda_version=cuda_version, gpus=(gpu,))


def host_facts(
    distro: str = "ubuntu2404",
    gpus: list[PciDevice] | None = None,
    driver: str | None = None,
    extra: dict[type, Any] | None = None,
) -> dict[type, Any]:
    facts: dict[type, Any] = {
        LinuxDistribution: {"name": "x", "major": 0, "minor": 0, "release_meta": OS_RELEASE[distro]},
        Arch: "x86_64",
        KernelVersion: "6.8.0-51-generic",
        NvidiaGpus: H200 if gpus is None else gpus,
        NvidiaSmi: smi(driver) if driver else None,
        NvidiaKernelModule: KernelModule(driver, True) if driver else None,
        DebPackages: {},
        AptSources: [],
        SystemdStatus: {},
        SystemdEnabled: {},
        KeyringFingerprints: [],
    }
    facts.update(extra or {})
    return facts


class Run:
    """The operations one deploy queued on the fake host, with their commands."""

    def __init__(self, state: State, host: Any) -> None:
        self.state, self.host = state, host
        self.ops: list[tuple[str, Any, list[str]]] = []

    def collect(self) -> None:
        for op_hash in self.host.op_hash_order:
            name = ", ".join(sorted(self.state.get_op_meta(op_hash).names))
            data = self.state.get_op_data_for_host(self.host, op_hash)
            cmds = []
            for cmd in data.command_generator():
                raw = getattr(cmd, "get_raw_value", None)
                cmds.append(raw() if raw else f"<{type(cmd).__name__} {getattr(cmd, 'function', '')}>")
            self.ops.append((name, data, cmds))

    @property
    def commands(self) -> list[str]:
        return [c for _, _, cmds in self.ops for c in cmds]

    def text(self) -> str:
        return "\n".join(self.commands)

    def op(self, fragment: str) -> tuple[str, Any, list[str]]:
        [found] = [o for o in self.ops if fragment in o[0]]
        return found


@contextmanager
def fake_host(data: dict[str, Any], facts: dict[type, Any]) -> Iterator[tuple[State, Any]]:
    inventory = Inventory((["gpu-1"], data))
    state = State(inventory, Config())
    host = inventory.get_host("gpu-1")

    def get_fact(cls: type, *args: Any, **kwargs: Any) -> Any:
        value = facts[cls] if cls in facts else cls().default()
        return value(**kwargs) if callable(value) and not isinstance(value, list | dict) else value

    host.get_fact = get_fact  # type: ignore[method-assign,assignment]
    with ctx_state.use(state), ctx_host.use(host):
        yield state, host


def run(deploy: Callable[[], Any], data: dict[str, Any], facts: dict[type, Any]) -> Run:
    with fake_host(data, facts) as (state, host):
        deploy()
        result = Run(state, host)
        result.collect()
    return result


# -- gpu_driver ------------------------------------------------------------------------------------


@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404"])
def test_ubuntu_distro_install_uses_the_server_open_package(distro: str) -> None:
    r = run(gpu_driver, {}, host_facts(distro))
    text = r.text()
    install = r.op("Install NVIDIA driver 580")[2]
    assert any(
        "nvidia-driver-580-server-open" in c and "linux-headers-6.8.0-51-generic" in c for c in install
    )
    assert "developer.download.nvidia.com" not in text  # distro source: no NVIDIA repository
    assert "systemctl enable nvidia-persistenced.service" in text
    names = [o[0] for o in r.ops]
    order = [
        next(i for i, n in enumerate(names) if key in n)
        for key in ("Install NVIDIA", "Reboot", "persistence", "Verify")
    ]
    assert order == sorted(order)


def test_debian12_distro_installs_the_nonfree_535_driver() -> None:
    r = run(gpu_driver, {"nvidia_driver_branch": "535"}, host_facts("debian12"))
    [cmd] = r.op("Install NVIDIA driver 535")[2]
    for pkg in ("nvidia-driver", "firmware-misc-nonfree", "nvidia-open-kernel-dkms", "nvidia-persistenced"):
        assert pkg in cmd.split()
    assert "nvidia-driver-535" not in cmd


def test_debian12_distro_refuses_a_branch_the_archive_lacks() -> None:
    with pytest.raises(ConfigError, match="debian12 archive does not carry driver branch 580"):
        run(gpu_driver, {}, host_facts("debian12"))


@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404", "debian12"])
def test_nvidia_repo_install_pins_key_and_signed_source(distro: str) -> None:
    r = run(gpu_driver, {"nvidia_driver_source": "nvidia"}, host_facts(distro))
    text = r.text()
    repo = f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/"
    [key_cmd] = r.op("signing key")[2]
    assert f"{repo}3bf863cc.pub" in key_cmd
    assert CUDA_FPR in key_cmd
    assert "/usr/share/keyrings/cuda-archive-keyring.gpg" in key_cmd
    assert f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {repo} /" in text
    assert f"/etc/apt/sources.list.d/cuda-{distro}-x86_64.list" in text
    [install] = r.op("Install NVIDIA driver 580")[2]
    assert "nvidia-driver-pinning-580" in install and "nvidia-open-580" in install
    assert "server" not in install


def test_nvidia_repo_proprietary_flavour_uses_cuda_drivers() -> None:
    facts = host_facts("ubuntu2204")
    r = run(
        gpu_driver,
        {
            "nvidia_driver_source": "nvidia",
            "nvidia_driver_branch": "570",
            "nvidia_kernel_module": "proprietary",
        },
        facts,
    )
    [install] = r.op("Install NVIDIA driver 570")[2]
    assert "cuda-drivers-570" in install
    assert "pinning" not in install  # NVIDIA's pinning packages start at 580


def test_key_already_pinned_is_not_downloaded_again() -> None:
    facts = host_facts("ubuntu2404", extra={KeyringFingerprints: [CUDA_FPR]})
    r = run(gpu_driver, {"nvidia_driver_source": "nvidia"}, facts)
    assert not [o for o in r.ops if "signing key" in o[0]]
    # A keyring holding another key (or extra keys) is replaced.
    facts = host_facts("ubuntu2404", extra={KeyringFingerprints: [CUDA_FPR, "0" * 40]})
    r = run(gpu_driver, {"nvidia_driver_source": "nvidia"}, facts)
    assert r.op("signing key")


def test_keyring_command_refuses_a_key_with_another_fingerprint(tmp_path: Path) -> None:
    cmd = keyring_command("https://example.invalid/key.pub", CUDA_FPR, "/usr/share/keyrings/x.gpg")
    assert f'if [ "$got" != {CUDA_FPR} ]' in cmd
    assert "exit 1" in cmd.split("fi;")[0]
    assert cmd.index("exit 1") < cmd.index("--dearmor")  # nothing is installed before the check
    assert "curl -fsSL" in cmd and "set -e" in cmd


def test_no_gpu_skips_without_operations() -> None:
    r = run(gpu_driver, {}, host_facts(gpus=[]))
    assert r.ops == []


def test_no_gpu_with_require_gpu_fails() -> None:
    with pytest.raises(DeployError, match="require_gpu is set but no NVIDIA GPU"):
        run(gpu_driver, {"require_gpu": True}, host_facts(gpus=[]))


def persisted() -> dict[type, Any]:
    return {
        SystemdStatus: {"nvidia-persistenced.service": True},
        SystemdEnabled: {"nvidia-persistenced.service": True},
    }


def test_same_branch_working_driver_is_a_noop() -> None:
    r = run(gpu_driver, {}, host_facts(driver="580.159.04", extra=persisted()))
    assert r.commands == []
    assert not [o for o in r.ops if "Install" in o[0] or "Reboot" in o[0]]


def test_newer_working_driver_is_left_alone() -> None:
    r = run(gpu_driver, {"nvidia_driver_branch": "570"}, host_facts(driver="580.159.04", extra=persisted()))
    assert r.commands == []


def test_newer_driver_replaced_only_when_asked() -> None:
    data = {"nvidia_driver_branch": "570", "nvidia_driver_replace_newer": True}
    r = run(gpu_driver, data, host_facts(driver="580.159.04"))
    [install] = r.op("Install NVIDIA driver 570")[2]
    assert "nvidia-driver-570-server-open" in install
    assert "--allow-downgrades" in install


def test_older_working_driver_is_upgraded() -> None:
    r = run(gpu_driver, {}, host_facts(driver="570.124.06"))
    [install] = r.op("Install NVIDIA driver 580")[2]
    assert "nvidia-driver-580-server-open" in install
    assert "--allow-downgrades" not in install


def test_reboot_only_when_the_package_changed_and_the_module_is_stale() -> None:
    facts = host_facts()
    with fake_host({}, facts) as (state, host):
        gpu_driver()
        run_ = Run(state, host)
        install_meta = next(
            state.get_op_data_for_host(host, h).operation_meta
            for h in host.op_hash_order
            if any("Install NVIDIA driver" in n for n in state.get_op_meta(h).names)
        )
        reboot_if: Any = next(
            state.get_op_data_for_host(host, h).global_arguments["_if"]
            for h in host.op_hash_order
            if any("Reboot" in n for n in state.get_op_meta(h).names)
        )
        del run_
        # Packages changed, old 570 module still loaded and nvidia-smi fails: reboot.
        install_meta.set_complete(True, ["apt-get install"], CommandOutput([]))
        facts[NvidiaKernelModule] = KernelModule("570.124.06", True)
        assert reboot_if() is True
        # Packages changed but the new driver loaded cleanly (first install, no nouveau): no reboot.
        facts[NvidiaSmi] = smi("580.159.04")
        facts[NvidiaKernelModule] = KernelModule("580.159.04", True)
        assert reboot_if() is False
    # Packages unchanged: never a reboot, whatever the module.
    facts = host_facts()
    with fake_host({}, facts) as (state, host):
        gpu_driver()
        for h in host.op_hash_order:
            meta = state.get_op_data_for_host(host, h).operation_meta
            names = state.get_op_meta(h).names
            if any("Install NVIDIA driver" in n for n in names):
                meta.set_complete(True, [], CommandOutput([]))
            if any("Reboot" in n for n in names):
                reboot_if = state.get_op_data_for_host(host, h).global_arguments.get("_if")
        assert reboot_if() is False


class _VerifyHost:
    name = "gpu-1"

    def __init__(self, facts: dict[type, Any]) -> None:
        self.facts = facts

    def get_fact(self, cls: type, **_: Any) -> Any:
        return self.facts.get(cls)


def test_verify_fails_when_nvidia_smi_does_not_work_after_install() -> None:
    with pytest.raises(DeployError, match="nvidia-smi does not work"):
        verify_driver(None, _VerifyHost({NvidiaSmi: None, NvidiaKernelModule: None}), "580")
    with pytest.raises(DeployError, match="not branch 580"):
        verify_driver(None, _VerifyHost({NvidiaSmi: smi("570.124.06")}), "580")
    verify_driver(
        None,
        _VerifyHost({NvidiaSmi: smi("580.159.04"), NvidiaKernelModule: KernelModule("580.159.04", True)}),
        "580",
    )
    assert driver_problem(smi("580.159.04"), KernelModule("580.95.05", True), "580") is not None


def test_unsupported_distro_and_bad_settings_fail_clearly() -> None:
    facts = host_facts()
    facts[LinuxDistribution] = {"release_meta": {"ID": "rocky", "VERSION_ID": "9"}}
    with pytest.raises(DeployError, match="rocky 9 is not supported"):
        run(gpu_driver, {}, facts)
    with pytest.raises(ConfigError, match="nvidia_driver_source"):
        run(gpu_driver, {"nvidia_driver_source": "ppa"}, host_facts())
    facts = host_facts()
    facts[Arch] = "aarch64"
    with pytest.raises(DeployError, match="x86_64 only"):
        run(gpu_driver, {}, facts)


# -- cuda --------------------------------------------------------------------------------------------


def test_cuda_defaults_to_the_newest_toolkit_the_driver_runs() -> None:
    r = run(cuda, {}, host_facts(driver="580.159.04"))
    [install] = r.op("Install CUDA toolkit 13.0")[2]
    assert "cuda-toolkit-13-0" in install
    assert "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/ /" in r.text()


def test_cuda_incompatible_with_the_driver_fails_before_any_operation() -> None:
    data = {"cuda_version": "12.8", "nvidia_driver_branch": "535"}
    with fake_host(data, host_facts("ubuntu2204", driver="535.183.01")) as (_state, host):
        with pytest.raises(IncompatibleCudaError) as err:
            cuda()
        assert host.op_hash_order == []
    assert "CUDA 12.8 needs driver >= 570.26, the host has 535.183.01" in str(err.value)


def test_cuda_checked_against_the_branch_being_installed() -> None:
    # No working driver yet: gpu_driver will install 570, which cannot run CUDA 13.0.
    with pytest.raises(
        IncompatibleCudaError, match=r"CUDA 13.0 needs driver >= 580.65.06, the host has branch 570"
    ):
        run(cuda, {"cuda_version": "13.0", "nvidia_driver_branch": "570"}, host_facts())
    r = run(cuda, {"nvidia_driver_branch": "570"}, host_facts())
    assert r.op("Install CUDA toolkit 12.8")
    # An older working driver that gpu_driver upgrades counts as the new branch.
    r = run(cuda, {"cuda_version": "13.0"}, host_facts(driver="570.124.06"))
    assert r.op("Install CUDA toolkit 13.0")


def test_cuda_skips_without_gpu_or_when_none() -> None:
    assert run(cuda, {}, host_facts(gpus=[])).ops == []
    assert run(cuda, {"cuda_version": "none"}, host_facts(driver="580.159.04")).ops == []


def test_cuda_refuses_a_toolkit_the_distro_repo_lacks() -> None:
    with pytest.raises(ConfigError, match=r"ubuntu2404 repository has no CUDA 12\.2"):
        run(cuda, {"cuda_version": "12.2"}, host_facts("ubuntu2404", driver="580.159.04"))
    r = run(cuda, {"cuda_version": "12.2"}, host_facts("ubuntu2204", driver="580.159.04"))
    assert "cuda-toolkit-12-2" in r.text()


@pytest.mark.parametrize("distro", ["ubuntu2204", "debian12"])
def test_cuda_uses_the_distro_repository(distro: str) -> None:
    data = {"cuda_version": "12.8", "nvidia_driver_branch": "570"}
    r = run(cuda, data, host_facts(distro, driver="570.124.06"))
    assert "cuda-toolkit-12-8" in r.text()
    assert f"/compute/cuda/repos/{distro}/x86_64/" in r.text()


# -- container toolkit ----------------------------------------------------------------------------


def test_container_toolkit_off_by_default() -> None:
    assert run(container_toolkit, {}, host_facts(driver="580.159.04")).ops == []


def test_container_toolkit_pinned_from_its_signed_repo() -> None:
    r = run(container_toolkit, {"container_toolkit": True}, host_facts(driver="580.159.04"))
    version = load_versions().container_toolkit.version
    [install] = r.op("Install NVIDIA container toolkit")[2]
    for pkg in (
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    ):
        assert f"{pkg}={version}" in install
    [key_cmd] = r.op("signing key")[2]
    assert "https://nvidia.github.io/libnvidia-container/gpgkey" in key_cmd and CTK_FPR in key_cmd
    assert (
        "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
    ) in r.text()


# -- the fact commands themselves, run by sh against a stand-in nvidia-smi ---------------------


def _fake_nvidia_smi(tmp_path: Path, exit_code: int) -> dict[str, str]:
    import os

    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --query-gpu=*) cat {FIXTURES / "query-gpu.csv"}; exit {exit_code};; '
        f"--version) cat {FIXTURES / 'nvidia-smi-version.txt'};; "
        f"*) cat {FIXTURES / 'nvidia-smi.txt'};; esac\n"
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}


@pytest.mark.parametrize("exit_code", [0, 9])
def test_nvidia_smi_fact_command_under_sh(tmp_path: Path, exit_code: int) -> None:
    import subprocess

    env = _fake_nvidia_smi(tmp_path, exit_code)
    out = subprocess.run(["sh", "-c", NvidiaSmi().command()], env=env, capture_output=True, text=True)
    assert out.returncode == 0
    info = NvidiaSmi().process(out.stdout.splitlines())
    if exit_code:
        assert info is None
    else:
        assert info is not None and (info.driver_version, info.cuda_version) == ("580.159.04", "13.0")


def test_nvidia_smi_fact_command_without_nvidia_smi(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run(
        ["/bin/sh", "-c", NvidiaSmi().command()], env={"PATH": str(tmp_path)}, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout == ""


def test_nvidia_repositories_can_come_from_an_internal_mirror() -> None:
    from playbooks.deploys.gpu_driver import mirror_url

    upstream = "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/3bf863cc.pub"
    assert mirror_url(upstream, None) == upstream
    assert (
        mirror_url(upstream, "https://mirror.internal/nvidia/")
        == "https://mirror.internal/nvidia/compute/cuda/repos/ubuntu2204/x86_64/3bf863cc.pub"
    )
    ctk = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
    assert (
        mirror_url(ctk, "http://10.0.0.5:8080")
        == "http://10.0.0.5:8080/libnvidia-container/stable/deb/$(ARCH)"
    )
    for bad in ("mirror.internal", "ftp://mirror.internal", "https://mirror.internal/?x=1"):
        with pytest.raises(ValueError, match="nvidia_repo_mirror must be an http"):
            mirror_url(upstream, bad)
