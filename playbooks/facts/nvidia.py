"""Facts about NVIDIA GPUs, the driver and the loaded kernel module.

They read the kernel's own view (``/sys/bus/pci``, ``/proc/driver/nvidia/version``) and
``nvidia-smi``, never ``lspci`` or ``modinfo``: minimal and container-built hosts often lack
pciutils and kmod (the reference H200 host in ``tests/fixtures/nvidia-h200`` has neither).
Every command exits 0 so that a host without a GPU or driver reports "none" instead of
failing the deploy; the parsing lives in module functions the tests call on captured output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pyinfra.api import FactBase

NVIDIA_VENDOR = "0x10de"
DISPLAY_CLASS_PREFIX = "0x03"  # PCI base class 03: display controller (VGA 0x0300, 3D 0x0302)

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.used",
    "driver_version",
    "pci.bus_id",
    "compute_cap",
    "utilization.gpu",
    "persistence_mode",
)
QUERY_COMMAND = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits"
CUDA_MARKER = "@@llmkit-cuda"
FAILED_MARKER = "@@llmkit-nvidia-smi-failed"


@dataclass(frozen=True)
class PciDevice:
    slot: str
    vendor: str
    device: str
    pci_class: str


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int
    driver_version: str
    pci_bus_id: str
    compute_cap: str | None
    utilization_gpu: int | None
    persistence_mode: bool


@dataclass(frozen=True)
class SmiInfo:
    """What a working ``nvidia-smi`` reports."""

    driver_version: str
    cuda_version: str | None
    gpus: tuple[Gpu, ...]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gpus]

    @property
    def memory_mib(self) -> list[int]:
        return [g.memory_total_mib for g in self.gpus]

    @property
    def branch(self) -> str:
        return self.driver_version.split(".", 1)[0]


@dataclass(frozen=True)
class KernelModule:
    version: str
    open: bool


# -- parsers ---------------------------------------------------------------------------------


def parse_pci_devices(lines: Iterable[str]) -> list[PciDevice]:
    """NVIDIA display-class devices from ``<slot> <vendor> <device> <class>`` lines.

    NVIDIA's other PCI functions (NVSwitch bridges 0x0680, HDMI audio 0x0403) are not GPUs.
    """
    found = []
    for line in lines:
        words = line.split()
        if len(words) != 4:
            continue
        slot, vendor, device, pci_class = (w.lower() for w in words)
        if vendor == NVIDIA_VENDOR and pci_class.startswith(DISPLAY_CLASS_PREFIX):
            found.append(PciDevice(slot=slot, vendor=vendor, device=device, pci_class=pci_class))
    return found


def _optional(value: str) -> str | None:
    value = value.strip()
    if not value or value.startswith("[") or value in {"N/A", "Not Supported"}:
        return None
    return value


def _optional_int(value: str) -> int | None:
    text = _optional(value)
    return int(text) if text is not None and text.isdigit() else None


def parse_query_gpu(lines: Iterable[str]) -> list[Gpu]:
    """Rows of :data:`QUERY_COMMAND` output (csv, noheader, nounits).

    The name is the only free-text column, so the row is split from both ends.
    """
    gpus = []
    tail = len(QUERY_FIELDS) - 2
    for line in lines:
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < len(QUERY_FIELDS) or not cells[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi --query-gpu row: {line!r}")
        index, name, rest = cells[0], ", ".join(cells[1:-tail]), cells[-tail:]
        uuid, mem_total, mem_used, driver, bus_id, cap, util, persistence = rest
        gpus.append(
            Gpu(
                index=int(index),
                name=name,
                uuid=uuid,
                memory_total_mib=int(mem_total),
                memory_used_mib=int(mem_used),
                driver_version=driver,
                pci_bus_id=bus_id,
                compute_cap=_optional(cap),
                utilization_gpu=_optional_int(util),
                persistence_mode=persistence.lower() == "enabled",
            )
        )
    return gpus


_CUDA_RE = re.compile(r"CUDA Version\s*:\s*(\d+\.\d+)")


def parse_cuda_version(lines: Iterable[str]) -> str | None:
    """The CUDA version from ``nvidia-smi --version`` or the ``nvidia-smi`` table header."""
    for line in lines:
        match = _CUDA_RE.search(line)
        if match:
            return match.group(1)
    return None


def parse_nvidia_smi(lines: Iterable[str]) -> SmiInfo | None:
    """The :class:`NvidiaSmi` fact's output: query rows, a marker, then the CUDA version lines.

    None when nvidia-smi failed (no driver loaded, driver/library mismatch) or saw no GPU.
    """
    lines = list(lines)
    if any(line.startswith(FAILED_MARKER) for line in lines):
        return None
    if CUDA_MARKER in lines:
        at = lines.index(CUDA_MARKER)
        rows, version_lines = lines[:at], lines[at + 1 :]
    else:
        rows, version_lines = lines, []
    try:
        gpus = parse_query_gpu(rows)
    except ValueError:
        return None
    if not gpus:
        return None
    return SmiInfo(
        driver_version=gpus[0].driver_version,
        cuda_version=parse_cuda_version(version_lines),
        gpus=tuple(gpus),
    )


_MODULE_RE = re.compile(r"^NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)\s")


def parse_kernel_module(lines: Iterable[str]) -> KernelModule | None:
    """The loaded module from ``/proc/driver/nvidia/version``, or None when none is loaded.

    Open:        ``NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ...``
    Proprietary: ``NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 ...``
    """
    for line in lines:
        match = _MODULE_RE.match(line + " ")
        if match:
            return KernelModule(version=match.group(1), open="Open Kernel Module" in line)
    return None


def parse_keyring_fingerprints(lines: Iterable[str]) -> list[str]:
    """Primary-key fingerprints from ``gpg --show-keys --with-colons`` output."""
    fingerprints = []
    want = False
    for line in lines:
        fields = line.split(":")
        if fields[0] == "pub":
            want = True
        elif fields[0] == "sub":
            want = False
        elif fields[0] == "fpr" and want and len(fields) > 9:
            fingerprints.append(fields[9].upper())
            want = False
    return fingerprints


# -- facts -----------------------------------------------------------------------------------


class NvidiaGpus(FactBase[list[PciDevice]]):
    """NVIDIA GPUs on the PCI bus (vendor 0x10de, display class 0x03xx); [] when there are none."""

    def command(self) -> str:
        return (
            "for d in /sys/bus/pci/devices/*; do "
            '[ -r "$d/class" ] && echo "${d##*/} $(cat "$d/vendor") $(cat "$d/device") $(cat "$d/class")"; '
            "done; true"
        )

    @staticmethod
    def default() -> list[PciDevice]:
        return []

    def process(self, output: list[str]) -> list[PciDevice]:
        return parse_pci_devices(output)


class NvidiaSmi(FactBase[SmiInfo | None]):
    """GPU names, memory, driver and CUDA versions from nvidia-smi; None when it is absent or fails."""

    def command(self) -> str:
        return (
            "if command -v nvidia-smi >/dev/null 2>&1; then "
            f"if out=$({QUERY_COMMAND} 2>&1); then "
            f'printf "%s\\n" "$out"; echo {CUDA_MARKER}; '
            "nvidia-smi --version 2>/dev/null || nvidia-smi 2>/dev/null | head -n 4; "
            f'else echo "{FAILED_MARKER} $?"; fi; '
            "fi; true"
        )

    def process(self, output: list[str]) -> SmiInfo | None:
        return parse_nvidia_smi(output)


class NvidiaKernelModule(FactBase[KernelModule | None]):
    """The loaded NVIDIA kernel module's version; None when no NVIDIA module is loaded."""

    def command(self) -> str:
        return "cat /proc/driver/nvidia/version 2>/dev/null; true"

    def process(self, output: list[str]) -> KernelModule | None:
        return parse_kernel_module(output)


class KeyringFingerprints(FactBase[list[str]]):
    """Primary-key fingerprints in an apt keyring file; [] when it is missing or gpg is absent."""

    def command(self, path: str) -> str:
        return (
            f"if [ -r {path} ] && command -v gpg >/dev/null 2>&1; then "
            f"gpg --batch --show-keys --with-colons {path} 2>/dev/null; fi; true"
        )

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return parse_keyring_fingerprints(output)
