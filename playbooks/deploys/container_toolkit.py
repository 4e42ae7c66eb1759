"""NVIDIA Container Toolkit at the pinned version, from NVIDIA's signed libnvidia-container repository.

Only when host data ``container_toolkit`` is true (Ollama runs as a systemd service and needs
no container runtime; this is for hosts that also run GPU containers). The repository key is
installed only when its fingerprint equals the pinned one, the apt source is restricted to it
(``signed-by``), and all four toolkit packages are pinned to one version from
``llmkit/data/versions.yaml`` so an ``apt upgrade`` cannot move them.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt

from llmkit.versions import load_versions
from playbooks.deploys.gpu_driver import require_x86_64, signed_apt_repo
from playbooks.facts.nvidia import NvidiaGpus


@deploy("NVIDIA container toolkit")
def container_toolkit() -> None:
    if not host.data.get("container_toolkit", False):
        host.noop("container_toolkit is off: NVIDIA container toolkit skipped")
        return
    if not host.get_fact(NvidiaGpus):
        host.noop("no NVIDIA GPU on the PCI bus: NVIDIA container toolkit skipped")
        return
    require_x86_64()
    ctk = load_versions().container_toolkit
    signed_apt_repo(
        label="NVIDIA container toolkit",
        key_url=ctk.key_url,
        fingerprint=ctk.key_fingerprint,
        keyring=ctk.keyring,
        list_file=ctk.list_file,
        repo_url=ctk.repo_url,
    )
    apt.packages(
        name=f"Install NVIDIA container toolkit {ctk.version}",
        packages=ctk.pinned_packages,
        allow_downgrades=True,
    )
