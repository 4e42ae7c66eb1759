"""NVIDIA GPU driver: the pinned branch from the distribution or NVIDIA's signed repository.

Decisions (all from facts, before anything runs):
- No NVIDIA GPU on the PCI bus -> nothing to do (logged), or a DeployError when ``require_gpu``.
- A working driver (nvidia-smi answers) of the requested branch -> left as it is. A working
  driver of a *newer* branch is also left alone (a downgrade breaks whatever needs it) unless
  ``nvidia_driver_replace_newer``; an older branch is upgraded.
- ``nvidia_driver_source: distro`` installs Ubuntu's ``nvidia-driver-<branch>-server[-open]`` or
  Debian 12's non-free ``nvidia-driver`` (branch 535 only); ``nvidia`` adds NVIDIA's CUDA
  repository, whose key is downloaded and installed only when its fingerprint equals the one
  pinned in ``llmkit/data/versions.yaml`` (trust is the pinned fingerprint, never the download),
  with an apt source restricted to that keyring (``signed-by``).
- The host reboots only when the driver packages changed *and* the kernel module the host runs
  is not the installed branch (``nvidia-smi`` fails with a driver/library mismatch, or nouveau
  still holds the GPU); a same-version reinstall or a first install that loads cleanly does not.
- ``nvidia-persistenced`` is enabled, then ``nvidia-smi`` must answer with the requested branch
  or the deploy fails.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch, KernelVersion, LinuxDistribution
from pyinfra.operations import apt, python, server, systemd

from llmkit.errors import ConfigError
from llmkit.versions import DriverSource, Versions, load_versions
from llmkit.versions import KernelModule as KernelModuleFlavour
from playbooks.facts.nvidia import (
    KernelModule,
    KeyringFingerprints,
    NvidiaGpus,
    NvidiaKernelModule,
    NvidiaSmi,
    SmiInfo,
)

SUPPORTED_DISTROS = {
    ("ubuntu", "22.04"): "ubuntu2204",
    ("ubuntu", "24.04"): "ubuntu2404",
    ("debian", "12"): "debian12",
}
REPO_PREREQUISITES = ["ca-certificates", "curl", "gnupg"]


def distro_id() -> str:
    """``ubuntu2204`` / ``ubuntu2404`` / ``debian12`` from /etc/os-release; DeployError otherwise."""
    meta = (host.get_fact(LinuxDistribution) or {}).get("release_meta") or {}
    key = (str(meta.get("ID", "")).lower(), str(meta.get("VERSION_ID", "")))
    try:
        return SUPPORTED_DISTROS[key]
    except KeyError:
        raise DeployError(
            f"{host.name}: {key[0] or 'unknown'} {key[1]} is not supported by the NVIDIA deploys "
            "(supported: Ubuntu 22.04, Ubuntu 24.04, Debian 12)"
        ) from None


def require_x86_64() -> None:
    arch = host.get_fact(Arch)
    if arch not in ("x86_64", "amd64"):
        raise DeployError(f"{host.name}: the NVIDIA version matrix covers x86_64 only, the host is {arch}")


def keyring_command(key_url: str, fingerprint: str, keyring: str) -> str:
    """Download a repository key, refuse it unless it is exactly the pinned key, install it dearmored."""
    url, fpr, dest = shlex.quote(key_url), shlex.quote(fingerprint), shlex.quote(keyring)
    return (
        "set -e; tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT; "
        f'curl -fsSL --retry 3 -o "$tmp/key" {url}; '
        'got=$(gpg --batch --show-keys --with-colons "$tmp/key" | '
        'awk -F: \'$1 == "pub" {p = 1; next} $1 == "sub" {p = 0} $1 == "fpr" && p {print $10; p = 0}\'); '
        f'if [ "$got" != {fpr} ]; then '
        f'echo "refusing {key_url}: fingerprint $got, expected {fingerprint}" >&2; exit 1; fi; '
        'gpg --batch --yes --dearmor -o "$tmp/keyring.gpg" "$tmp/key"; '
        f'install -D -m 0644 "$tmp/keyring.gpg" {dest}'
    )


def mirror_url(url: str, mirror: str | None) -> str:
    """``url`` served by ``mirror`` (host data ``nvidia_repo_mirror``): same path, the mirror's base.

    ``https://developer.download.nvidia.com/compute/cuda/repos/...`` with mirror
    ``https://mirror.internal/nvidia`` becomes ``https://mirror.internal/nvidia/compute/cuda/repos/...``.
    The signing key is still checked against the pinned fingerprint, so a mirror cannot swap it.
    """
    if not mirror:
        return url
    parsed = urlsplit(str(mirror))
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(
            "nvidia_repo_mirror must be an http(s) base URL such as https://mirror.internal/nvidia, "
            f"got {mirror!r}"
        )
    return str(mirror).rstrip("/") + urlsplit(url).path


def signed_apt_repo(
    *, label: str, key_url: str, fingerprint: str, keyring: str, list_file: str, repo_url: str
) -> OperationMeta:
    """Pinned key + ``signed-by`` apt source + ``apt-get update`` when either changed.

    With host data ``nvidia_repo_mirror`` both come from the internal mirror (:func:`mirror_url`).
    Returns the update operation (callers order package installs after it).
    """
    mirror = host.data.get("nvidia_repo_mirror")
    key_url, repo_url = mirror_url(key_url, mirror), mirror_url(repo_url, mirror)
    apt.packages(name=f"Install what adding the {label} repository needs", packages=REPO_PREREQUISITES)
    key_changed: Callable[[], bool] = lambda: False  # noqa: E731
    if host.get_fact(KeyringFingerprints, path=keyring) != [fingerprint]:
        key_op = server.shell(
            name=f"Install the {label} signing key (fingerprint {fingerprint})",
            commands=[keyring_command(key_url, fingerprint, keyring)],
        )
        key_changed = key_op.did_change
    repo_op = apt.repo(
        name=f"Add the {label} apt repository",
        src=f"deb [signed-by={keyring}] {repo_url} /",
        filename=list_file,
    )
    return apt.update(
        name=f"Update apt after adding the {label} repository",
        _if=lambda: key_changed() or repo_op.did_change(),
    )


def nvidia_repo(versions: Versions, distro: str) -> OperationMeta:
    repo = versions.nvidia_repo
    return signed_apt_repo(
        label="NVIDIA CUDA",
        key_url=repo.key(distro),
        fingerprint=repo.key_fingerprint,
        keyring=repo.keyring,
        list_file=repo.list_name(distro),
        repo_url=repo.repo_url(distro),
    )


@dataclass(frozen=True)
class DriverPlan:
    """What :func:`gpu_driver` does on this host; :func:`cuda` reads it to know the driver it will have."""

    action: str  # "skip" (no GPU) | "keep" (working driver left alone) | "install"
    branch: str  # the requested branch
    installed: SmiInfo | None  # the working driver before this run, if any
    reason: str

    @property
    def driver_version(self) -> str | None:
        """The full driver version the host keeps; None when a branch is being installed."""
        return self.installed.driver_version if self.action == "keep" and self.installed else None


def driver_settings(versions: Versions) -> tuple[str, DriverSource, KernelModuleFlavour, bool]:
    data = host.data
    branch = versions.branch(data.get("nvidia_driver_branch")).name
    source: DriverSource = data.get("nvidia_driver_source") or "distro"
    if source not in ("distro", "nvidia"):
        raise ConfigError("nvidia_driver_source", source, "distro, nvidia", "unknown driver source")
    module: KernelModuleFlavour = data.get("nvidia_kernel_module") or versions.driver.default_kernel_module
    if module not in ("open", "proprietary"):
        raise ConfigError(
            "nvidia_kernel_module", module, "open, proprietary", "unknown kernel module flavour"
        )
    return branch, source, module, bool(data.get("nvidia_driver_replace_newer", False))


def plan_driver(versions: Versions) -> DriverPlan:
    branch, _source, _module, replace_newer = driver_settings(versions)
    if not host.get_fact(NvidiaGpus):
        return DriverPlan("skip", branch, None, "no NVIDIA GPU on the PCI bus")
    smi = host.get_fact(NvidiaSmi)
    if smi is None:
        return DriverPlan("install", branch, None, "no working NVIDIA driver (nvidia-smi absent or failing)")
    have, want = int(smi.branch), int(branch)
    if have == want:
        return DriverPlan(
            "keep", branch, smi, f"driver {smi.driver_version} of branch {branch} already works"
        )
    if have > want and not replace_newer:
        return DriverPlan(
            "keep",
            branch,
            smi,
            f"driver {smi.driver_version} is newer than branch {branch}; left alone "
            "(set nvidia_driver_replace_newer to replace it)",
        )
    verb = "replaced by" if have > want else "upgraded to"
    return DriverPlan("install", branch, smi, f"driver {smi.driver_version} is {verb} branch {branch}")


def driver_problem(smi: SmiInfo | None, module: KernelModule | None, branch: str) -> str | None:
    """Why the host does not run a working driver of ``branch``; None when it does."""
    if smi is None:
        loaded = (
            f"kernel module {module.version} is loaded" if module else "no NVIDIA kernel module is loaded"
        )
        return f"nvidia-smi does not work ({loaded})"
    if smi.branch != branch:
        return f"nvidia-smi reports driver {smi.driver_version}, not branch {branch}"
    if module is not None and module.version != smi.driver_version:
        return f"kernel module {module.version} does not match driver {smi.driver_version}"
    return None


def verify_driver(state: Any, host: Any, branch: str) -> None:
    """Run at execution time (python.call): fail the deploy unless nvidia-smi reports ``branch``."""
    del state
    smi = host.get_fact(NvidiaSmi)
    problem = driver_problem(smi, host.get_fact(NvidiaKernelModule), branch)
    if problem:
        raise DeployError(f"{host.name}: NVIDIA driver {branch} installed but not working: {problem}")
    assert smi is not None
    logger.info(
        f"{host.name}: NVIDIA driver {smi.driver_version}, CUDA {smi.cuda_version}, "
        f"GPUs: {', '.join(f'{n} ({m} MiB)' for n, m in zip(smi.names, smi.memory_mib, strict=True))}"
    )


def persistence_daemon() -> OperationMeta:
    return systemd.service(
        name="Enable the NVIDIA persistence daemon",
        service="nvidia-persistenced",
        running=True,
        enabled=True,
    )


@deploy("NVIDIA GPU driver")
def gpu_driver() -> None:
    versions = load_versions()
    plan = plan_driver(versions)
    if plan.action == "skip":
        if host.data.get("require_gpu", False):
            raise DeployError(
                f"{host.name}: require_gpu is set but no NVIDIA GPU was found "
                "(no PCI device with vendor 0x10de and display class 0x03xx in /sys/bus/pci/devices)"
            )
        host.noop(f"{plan.reason}: NVIDIA driver skipped")
        return
    if plan.action == "keep":
        host.noop(plan.reason)
        persistence_daemon()
        return

    branch, source, module, _ = driver_settings(versions)
    info = versions.branch(branch)
    if not info.supported:
        logger.warning(f"{host.name}: NVIDIA driver branch {branch} has reached end of life ({info.source})")
    require_x86_64()
    distro = distro_id()
    packages = versions.driver_packages(branch, distro, source, module)
    if source == "nvidia":
        nvidia_repo(versions, distro)
    else:
        apt.update(name="Update apt", cache_time=3600)
    headers = f"linux-headers-{host.get_fact(KernelVersion)}"
    downgrade = plan.installed is not None and int(plan.installed.branch) > int(branch)
    install = apt.packages(
        name=f"Install NVIDIA driver {branch} ({module} kernel module, from {source})",
        packages=[headers, *packages],
        allow_downgrades=downgrade,
    )

    def module_not_current() -> bool:
        if not install.did_change():
            return False
        return driver_problem(host.get_fact(NvidiaSmi), host.get_fact(NvidiaKernelModule), branch) is not None

    server.reboot(
        name="Reboot to load the new NVIDIA kernel module",
        delay=30,
        reboot_timeout=900,
        _if=module_not_current,
    )
    persistence_daemon()
    python.call(
        name=f"Verify nvidia-smi reports driver branch {branch}", function=verify_driver, branch=branch
    )
