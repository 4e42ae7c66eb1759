"""The model cache volume of the AWS model hosts: a file system on it, mounted where Ollama keeps models.

The fleet attaches an encrypted volume as ``/dev/sdf``, sized for the model (twice the weights
plus 20 GiB: a verified download beside the loaded copy), and says so in host data:
``model_cache: {"device_name": "/dev/sdf", "size_gib": N}``. Without that key (bare metal) this
deploy does nothing.

- **Which disk.** On Nitro instances the volume is an NVMe disk whose name the kernel chooses
  (``/dev/nvme1n1``...), not ``/dev/sdf``; so it is found by what it is (fact
  :class:`BlockDevices`, ``lsblk -J -b``): a whole disk of exactly ``size_gib`` GiB, not the disk
  of the root file system, and an "Amazon Elastic Block Store" when the kernel reports a model.
  Exactly one may match; none or several stop the deploy, naming what was found.
- **Never someone's data.** A disk without a file system gets ``mkfs.ext4 -L llmkit-models`` (the
  command checks again with ``blkid`` right before formatting); one that already carries that
  label is ours and only mounted; any other file system stops the deploy.
- **Where.** The parent of ``ollama_models_path`` (``/var/lib/ollama``; an accepted host path,
  checked with ``host_paths`` before anything else, on the host too), so Ollama's blobs and the
  verified-download staging directory of the models deploy share the volume; an ``/etc/fstab``
  line by label (``nofail``), then ``mount <dir>`` through that line, so a warm-pool instance
  mounts it again when it boots.
  It runs before the Ollama deploy, which then owns the directories it creates there.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import files, server

from llmkit.errors import ConfigError
from playbooks.deploys.ollama import check_on_host, ollama_settings

LABEL = "llmkit-models"
FS_TYPE = "ext4"
GIB = 1 << 30
EBS_MODEL = "Amazon Elastic Block Store"
LSBLK = "lsblk -J -b -o NAME,PATH,SIZE,TYPE,FSTYPE,LABEL,MOUNTPOINTS,MODEL"


@dataclass(frozen=True)
class Disk:
    path: str
    size: int
    fstype: str | None
    label: str | None
    model: str | None
    holds_root: bool


def _mountpoints(node: Mapping[str, Any]) -> list[str]:
    return [m for m in node.get("mountpoints") or [] if m]


def _holds_root(node: Mapping[str, Any]) -> bool:
    if "/" in _mountpoints(node):
        return True
    return any(_holds_root(child) for child in node.get("children") or [])


def parse_lsblk(text: str) -> list[Disk]:
    """The whole disks of ``lsblk -J -b`` output (util-linux >= 2.37: MOUNTPOINTS)."""
    doc = json.loads(text)
    disks = []
    for node in doc.get("blockdevices") or []:
        if node.get("type") != "disk":
            continue
        disks.append(
            Disk(
                path=str(node.get("path") or f"/dev/{node.get('name')}"),
                size=int(node.get("size") or 0),
                fstype=node.get("fstype") or None,
                label=node.get("label") or None,
                model=(node.get("model") or "").strip() or None,
                holds_root=_holds_root(node),
            )
        )
    return disks


class BlockDevices(FactBase[list[Disk] | None]):
    """The host's whole disks (``lsblk -J -b``); None when lsblk is missing or fails."""

    def command(self) -> str:
        return f"{LSBLK} 2>/dev/null || true"

    def process(self, output: list[str]) -> list[Disk] | None:
        text = "\n".join(output).strip()
        if not text:
            return None
        try:
            return parse_lsblk(text)
        except (ValueError, TypeError, AttributeError):
            return None


def cache_disk(disks: Sequence[Disk], size_gib: int, device_name: str) -> Disk:
    """The one disk that is the model cache volume; ConfigError naming what was found otherwise."""
    size = size_gib * GIB
    matches = [
        d for d in disks if d.size == size and not d.holds_root and (d.model is None or d.model == EBS_MODEL)
    ]
    found = ", ".join(f"{d.path} ({d.size} bytes, {d.model or 'no model'})" for d in disks) or "none"
    if len(matches) != 1:
        raise ConfigError(
            "model_cache",
            {"device_name": device_name, "size_gib": size_gib},
            f"exactly one non-root disk of {size} bytes",
            f"{'no' if not matches else 'more than one'} disk matches the model cache volume "
            f"(disks: {found})",
        )
    disk = matches[0]
    if disk.fstype is not None and disk.label != LABEL:
        raise ConfigError(
            "model_cache",
            disk.path,
            f"a disk without a file system, or the {FS_TYPE} file system labelled {LABEL}",
            f"{disk.path} holds a {disk.fstype} file system labelled {disk.label!r}: not formatting it",
        )
    return disk


def mkfs_command(path: str) -> str:
    """Format ``path`` only if it still has no file system (checked right before)."""
    q = shlex.quote(path)
    return (
        f'if [ -n "$(blkid -o value -s TYPE {q} 2>/dev/null)" ]; then '
        f'echo "llmkit: {path} has a file system now; not formatting it" >&2; exit 1; fi; '
        f"mkfs.{FS_TYPE} -q -L {LABEL} -m 0 {q}"
    )


def mount_command(mount_point: str) -> str:
    """Mount by the /etc/fstab line (so the line itself is proven), unless already mounted."""
    q = shlex.quote(mount_point)
    return f"mountpoint -q {q} || mount {q}"


def fstab_line(mount_point: str) -> str:
    return f"LABEL={LABEL} {mount_point} {FS_TYPE} defaults,nofail,noatime 0 2"


@deploy("Model cache volume")
def model_cache() -> None:
    spec = host.data.get("model_cache")
    if not spec:
        host.noop("no model_cache in host data (not an AWS model host)")
        return
    if not isinstance(spec, Mapping) or not isinstance(spec.get("size_gib"), int) or spec["size_gib"] < 1:
        raise ConfigError("model_cache", spec, "{device_name, size_gib: GiB > 0}", "invalid model_cache")
    settings = ollama_settings(host.data)  # the models path and its parent: accepted host paths
    check_on_host(settings)
    disks = host.get_fact(BlockDevices)
    if disks is None:
        raise ConfigError("model_cache", spec, "a host with lsblk (util-linux >= 2.37)", "cannot list disks")
    disk = cache_disk(disks, spec["size_gib"], str(spec.get("device_name", "")))
    mount_point = posixpath.dirname(settings.models_path)
    if disk.fstype is None:
        server.shell(name=f"File system on {disk.path} (label {LABEL})", commands=[mkfs_command(disk.path)])
    files.directory(name=f"Mount point {mount_point}", path=mount_point, mode="0755")
    files.line(
        name=f"Mount {LABEL} at {mount_point} at boot",
        path="/etc/fstab",
        line=rf"^LABEL={LABEL}[[:space:]].*$",
        replace=fstab_line(mount_point),
    )
    server.shell(name=f"Mount the model cache at {mount_point}", commands=[mount_command(mount_point)])
