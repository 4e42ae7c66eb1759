"""The NVIDIA version matrix: driver branches, CUDA toolkit -> minimum driver, container toolkit.

Loaded from ``llmkit/data/versions.yaml`` (the only place these numbers live, each with its
source). The bare-metal playbooks import it to decide what to install and to refuse a CUDA
toolkit the host's driver cannot run, before any change is made.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmkit.errors import ConfigError, LlmkitError

Distro = Literal["ubuntu2204", "ubuntu2404", "debian12"]
KernelModule = Literal["open", "proprietary"]
DriverSource = Literal["distro", "nvidia"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def version_key(version: str) -> tuple[int, ...]:
    """``"570.124.06"`` -> ``(570, 124, 6)``; raises ValueError on anything else."""
    text = str(version).strip()
    parts = text.split(".")
    if not text or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a dotted numeric version: {version!r}")
    return tuple(int(p) for p in parts)


def branch_of(driver_version: str) -> str:
    """The driver branch of a full driver version: ``"580.159.04"`` -> ``"580"``."""
    return str(version_key(driver_version)[0])


class IncompatibleCudaError(LlmkitError):
    """The requested CUDA toolkit needs a newer driver than the host has."""

    def __init__(self, cuda: str, driver: str, min_driver: str) -> None:
        self.cuda = cuda
        self.driver = driver
        self.min_driver = min_driver
        super().__init__(
            f"CUDA {cuda} needs driver >= {min_driver}, the host has {driver}: "
            f"install a newer driver branch (nvidia_driver_branch) or choose an older cuda_version"
        )


class Branch(_Frozen):
    name: str
    designation: str
    end_of_life: str
    distro: tuple[Distro, ...]
    source: str

    @property
    def supported(self) -> bool:
        return self.end_of_life != "ended"


class PackageFlavours(_Frozen):
    open: tuple[str, ...]
    proprietary: tuple[str, ...]


class NvidiaPackages(PackageFlavours):
    pinning: str
    pinning_from_branch: str


class DriverPackages(_Frozen):
    ubuntu: PackageFlavours
    debian12: PackageFlavours
    nvidia: NvidiaPackages


class Driver(_Frozen):
    default_branch: str
    default_kernel_module: KernelModule
    branches: dict[str, Branch]
    packages: DriverPackages

    @model_validator(mode="after")
    def _default_known(self) -> Driver:
        if self.default_branch not in self.branches:
            raise ValueError(f"default_branch {self.default_branch} is not a listed branch")
        return self


class NvidiaRepo(_Frozen):
    url: str
    key_url: str
    key_fingerprint: str = Field(pattern=r"^[0-9A-F]{40}$")
    keyring: str
    list_file: str
    distros: tuple[Distro, ...]
    source: str

    def repo_url(self, distro: str) -> str:
        return self.url.format(distro=distro)

    def key(self, distro: str) -> str:
        return self.key_url.format(distro=distro)

    def list_name(self, distro: str) -> str:
        return self.list_file.format(distro=distro)


class Cuda(_Frozen):
    version: str
    min_driver: str
    repos: tuple[Distro, ...]

    @property
    def package(self) -> str:
        major, minor = self.version.split(".")
        return f"cuda-toolkit-{major}-{minor}"


class ContainerToolkit(_Frozen):
    version: str
    packages: tuple[str, ...]
    repo_url: str
    key_url: str
    key_fingerprint: str = Field(pattern=r"^[0-9A-F]{40}$")
    keyring: str
    list_file: str
    source: str

    @property
    def pinned_packages(self) -> list[str]:
        return [f"{p}={self.version}" for p in self.packages]


class Versions(_Frozen):
    reviewed: str
    sources: dict[str, str]
    driver: Driver
    nvidia_repo: NvidiaRepo
    cuda: dict[str, Cuda]
    container_toolkit: ContainerToolkit

    # -- driver ---------------------------------------------------------------------------
    def branch(self, name: str | int | None) -> Branch:
        key = self.driver.default_branch if name is None else str(name)
        try:
            return self.driver.branches[key]
        except KeyError:
            raise ConfigError(
                key="nvidia_driver_branch",
                value=name,
                accepted=", ".join(self.driver.branches),
                message="unknown NVIDIA driver branch",
            ) from None

    def driver_packages(
        self, branch: str, distro: str, source: DriverSource, kernel_module: KernelModule
    ) -> list[str]:
        """The packages that install ``branch`` on ``distro`` from ``source``.

        Raises ConfigError when the source does not carry that branch for that distro.
        """
        b = self.branch(branch)
        if source == "nvidia":
            if distro not in self.nvidia_repo.distros:
                raise ConfigError(
                    key="nvidia_driver_source",
                    value=source,
                    accepted=", ".join(self.nvidia_repo.distros),
                    message=f"NVIDIA's repository has no {distro} build",
                )
            flavours = self.driver.packages.nvidia
            names = list(getattr(flavours, kernel_module))
            if version_key(b.name) >= version_key(flavours.pinning_from_branch):
                names.insert(0, flavours.pinning)
            return [n.format(branch=b.name) for n in names]
        if distro not in b.distro:
            offered = [n for n, br in self.driver.branches.items() if distro in br.distro]
            raise ConfigError(
                key="nvidia_driver_branch",
                value=b.name,
                accepted=", ".join(offered) or "none",
                message=(
                    f"the {distro} archive does not carry driver branch {b.name}; "
                    "set nvidia_driver_source: nvidia to install it from NVIDIA's repository"
                ),
            )
        table = self.driver.packages.debian12 if distro == "debian12" else self.driver.packages.ubuntu
        return [n.format(branch=b.name) for n in getattr(table, kernel_module)]

    # -- CUDA -----------------------------------------------------------------------------
    def toolkit(self, cuda: str) -> Cuda:
        try:
            return self.cuda[str(cuda)]
        except KeyError:
            raise ConfigError(
                key="cuda_version",
                value=cuda,
                accepted=", ".join(self.cuda) + ', "none"',
                message="unknown CUDA toolkit version",
            ) from None

    def cuda_for_driver(self, driver_version: str) -> Cuda | None:
        """The newest toolkit whose minimum driver ``driver_version`` meets, or None."""
        have = version_key(driver_version)
        allowed = [c for c in self.cuda.values() if have >= version_key(c.min_driver)]
        return max(allowed, key=lambda c: version_key(c.version), default=None)

    def cuda_for_branch(self, branch: str) -> Cuda | None:
        """The newest toolkit a driver branch runs (judged by branch: its releases are not known yet)."""
        allowed = [c for c in self.cuda.values() if version_key(c.min_driver)[0] <= int(branch)]
        return max(allowed, key=lambda c: version_key(c.version), default=None)

    def check_cuda_branch(self, cuda: str, branch: str) -> None:
        """Like :meth:`check_cuda` for a driver branch about to be installed."""
        need = self.toolkit(cuda).min_driver
        if version_key(need)[0] > int(branch):
            raise IncompatibleCudaError(str(cuda), f"branch {branch} (being installed)", need)

    def check_cuda(self, cuda: str, driver_version: str) -> None:
        """Raise IncompatibleCudaError when ``driver_version`` is older than ``cuda`` needs."""
        need = self.toolkit(cuda).min_driver
        if version_key(driver_version) < version_key(need):
            raise IncompatibleCudaError(str(cuda), driver_version, need)


def _read() -> dict:
    text = resources.files("llmkit.data").joinpath("versions.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("llmkit/data/versions.yaml: expected a mapping at the top level")
    return data


@cache
def load_versions() -> Versions:
    """Load and validate ``llmkit/data/versions.yaml`` once per process."""
    doc = _read()
    drv = doc["driver"]
    branches = {str(n): Branch(name=str(n), **v) for n, v in drv["branches"].items()}
    cuda = {str(n): Cuda(version=str(n), **v) for n, v in doc["cuda"].items()}
    for c in cuda.values():
        version_key(c.min_driver)
    return Versions(
        reviewed=doc["reviewed"],
        sources=doc["sources"],
        driver=Driver(
            default_branch=str(drv["default_branch"]),
            default_kernel_module=drv["default_kernel_module"],
            branches=branches,
            packages=DriverPackages(**drv["packages"]),
        ),
        nvidia_repo=NvidiaRepo(**doc["nvidia_repo"]),
        cuda=cuda,
        container_toolkit=ContainerToolkit(**doc["container_toolkit"]),
    )


def cuda_for_driver(driver_version: str) -> str | None:
    """The newest CUDA toolkit version (``"13.0"``) the driver runs, or None when none does."""
    found = load_versions().cuda_for_driver(driver_version)
    return found.version if found else None


def check_cuda(cuda: str, driver_version: str) -> None:
    """None when ``driver_version`` runs CUDA ``cuda``; IncompatibleCudaError naming both and the minimum."""
    load_versions().check_cuda(cuda, driver_version)
