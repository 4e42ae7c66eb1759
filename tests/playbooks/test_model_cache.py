"""The AWS model hosts' model cache volume: found by what it is, formatted only when blank, mounted.

The disk listing is ``lsblk -J -b``'s: this machine's own output, and the shape it has on a Nitro
GPU instance (the root EBS volume with its partitions, the model cache EBS volume, the instance's
local NVMe store). The format command runs for real on a loop device (root only), and the deploy
on pyinfra's ``@fake`` connector with the listing canned.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmkit.errors import ConfigError
from playbooks.deploys import model_cache as mc
from tests.playbooks import test_ollama as ollama_tests

GIB = 1 << 30
CACHE_GIB = 100


def nitro_lsblk(
    *, cache_fs: str | None = None, cache_label: str | None = None, extra: list[dict[str, Any]] | None = None
) -> str:
    """``lsblk -J -b -o NAME,PATH,SIZE,TYPE,FSTYPE,LABEL,MOUNTPOINTS,MODEL`` on a g5 instance."""
    disks = [
        {
            "name": "nvme0n1", "path": "/dev/nvme0n1", "size": 200 * GIB, "type": "disk", "fstype": None,
            "label": None, "mountpoints": [None], "model": "Amazon Elastic Block Store              ",
            "children": [
                {"name": "nvme0n1p1", "path": "/dev/nvme0n1p1", "size": 199 * GIB, "type": "part",
                 "fstype": "ext4", "label": "cloudimg-rootfs", "mountpoints": ["/"], "model": None},
                {"name": "nvme0n1p15", "path": "/dev/nvme0n1p15", "size": 105 << 20, "type": "part",
                 "fstype": "vfat", "label": "UEFI", "mountpoints": ["/boot/efi"], "model": None},
            ],
        },
        {
            "name": "nvme1n1", "path": "/dev/nvme1n1", "size": CACHE_GIB * GIB, "type": "disk",
            "fstype": cache_fs, "label": cache_label, "mountpoints": [None],
            "model": "Amazon Elastic Block Store              ",
        },
        {
            "name": "nvme2n1", "path": "/dev/nvme2n1", "size": 250000000000, "type": "disk", "fstype": None,
            "label": None, "mountpoints": [None], "model": "Amazon EC2 NVMe Instance Storage        ",
        },
        *(extra or []),
    ]  # fmt: skip
    return json.dumps({"blockdevices": disks}, indent=3)


@pytest.mark.needs("lsblk")
def test_this_machines_own_lsblk_output_parses() -> None:
    out = subprocess.run(mc.LSBLK.split(), capture_output=True, text=True, check=True).stdout
    disks = mc.parse_lsblk(out)
    assert disks and all(d.path.startswith("/dev/") and d.size >= 0 for d in disks)
    # the disk holding / is never a candidate (a container may not see it: then none is marked)
    assert sum(d.holds_root for d in disks) <= 1


def test_the_cache_volume_is_the_ebs_disk_of_its_size() -> None:
    disks = mc.parse_lsblk(nitro_lsblk())
    root, cache, local = disks
    assert root.holds_root and not cache.holds_root and not local.holds_root
    assert mc.cache_disk(disks, CACHE_GIB, "/dev/sdf") == cache


def test_the_root_disk_is_never_picked_even_at_the_same_size() -> None:
    disks = mc.parse_lsblk(nitro_lsblk())
    with pytest.raises(ConfigError, match="no disk matches the model cache volume"):
        mc.cache_disk(disks, 200, "/dev/sdf")


def test_two_candidates_are_refused_naming_them() -> None:
    twin = {"name": "nvme3n1", "path": "/dev/nvme3n1", "size": CACHE_GIB * GIB, "type": "disk",
            "fstype": None, "label": None, "mountpoints": [None], "model": mc.EBS_MODEL}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        mc.cache_disk(mc.parse_lsblk(nitro_lsblk(extra=[twin])), CACHE_GIB, "/dev/sdf")
    assert "more than one disk matches" in str(err.value)
    assert "/dev/nvme1n1" in str(err.value) and "/dev/nvme3n1" in str(err.value)


def test_a_disk_with_someone_elses_file_system_is_not_formatted() -> None:
    disks = mc.parse_lsblk(nitro_lsblk(cache_fs="xfs", cache_label="data"))
    with pytest.raises(ConfigError, match="holds a xfs file system labelled 'data': not formatting it"):
        mc.cache_disk(disks, CACHE_GIB, "/dev/sdf")
    ours = mc.parse_lsblk(nitro_lsblk(cache_fs="ext4", cache_label=mc.LABEL))
    assert mc.cache_disk(ours, CACHE_GIB, "/dev/sdf").label == mc.LABEL


def run_deploy(data: dict[str, Any], lsblk: str | None) -> list[str]:
    """The model_cache deploy on a fake host (test_ollama's runner), ``lsblk`` its disk listing."""
    responses: dict[Any, Any] = {}
    if lsblk is not None:
        responses[re.compile(r"^lsblk -J -b")] = lsblk.splitlines()
    return [str(c) for c in ollama_tests.run_deploy(mc.model_cache, data, responses)]


CACHE = {"model_cache": {"device_name": "/dev/sdf", "size_gib": CACHE_GIB}}


def test_a_blank_volume_is_formatted_recorded_in_fstab_and_mounted() -> None:
    commands = run_deploy(CACHE, nitro_lsblk())
    assert mc.mkfs_command("/dev/nvme1n1") in commands
    assert any(mc.fstab_line("/var/lib/ollama") in c and "/etc/fstab" in c for c in commands)
    assert mc.mount_command("/var/lib/ollama") in commands
    keys = ("mkfs.ext4", ">> /etc/fstab", "mountpoint -q")
    order = [next(i for i, c in enumerate(commands) if key in c) for key in keys]
    assert order == sorted(order)


def test_our_volume_after_a_reboot_is_only_mounted() -> None:
    commands = run_deploy(CACHE, nitro_lsblk(cache_fs="ext4", cache_label=mc.LABEL))
    assert not [c for c in commands if "mkfs" in c]
    assert mc.mount_command("/var/lib/ollama") in commands


def test_bare_metal_hosts_mount_nothing() -> None:
    assert run_deploy({}, nitro_lsblk()) == []


def test_no_listing_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot list disks"):
        run_deploy(CACHE, None)


@pytest.mark.needs("root", "losetup")
def test_the_format_command_on_a_real_block_device(tmp_path: Path) -> None:
    image = tmp_path / "volume.img"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    device = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True
    )
    loop = device.stdout.strip()
    try:
        subprocess.run(["sh", "-c", mc.mkfs_command(loop)], check=True, capture_output=True, timeout=60)
        probe = subprocess.run(["blkid", "-o", "export", loop], capture_output=True, text=True, check=True)
        assert f"LABEL={mc.LABEL}" in probe.stdout and "TYPE=ext4" in probe.stdout
        # a second run finds the file system and refuses to format it again
        again = subprocess.run(
            ["sh", "-c", mc.mkfs_command(loop)], capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 1 and "has a file system now; not formatting it" in again.stderr
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
