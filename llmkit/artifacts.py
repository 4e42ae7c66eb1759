"""Pinned release downloads (Ollama, node_exporter, nvidia_gpu_exporter) and their checksums.

Loaded from ``llmkit/data/artifacts.yaml``, the only place these versions and digests live,
each with the page its checksum was read from. The playbooks install a download only after its
sha256 equals the pinned one (``playbooks/operations/download.py``); an architecture whose
published checksum is unknown is ``None`` here, and the deploys refuse it unless the operator
supplies the checksum in host data.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmkit.errors import ConfigError

Arch = Literal["amd64", "arm64"]
SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Every spelling a host reports (uname -m, dpkg --print-architecture) -> the canonical name.
ARCH_ALIASES: dict[str, Arch] = {
    "amd64": "amd64",
    "x86_64": "amd64",
    "arm64": "arm64",
    "aarch64": "arm64",
}


def canonical_arch(arch: str) -> Arch:
    """``x86_64``/``amd64`` -> ``amd64``, ``aarch64``/``arm64`` -> ``arm64``; ConfigError otherwise."""
    try:
        return ARCH_ALIASES[str(arch).strip().lower()]
    except KeyError:
        raise ConfigError(
            key="arch",
            value=arch,
            accepted="amd64 (x86_64), arm64 (aarch64)",
            message="no pinned release for this CPU architecture",
        ) from None


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(SHA256.match(value))


class Artifact(BaseModel):
    """One pinned release: ``url(arch)`` and ``sha256(arch)`` for ``amd64`` / ``arm64``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    format: Literal["tgz"]
    file_template: str = Field(alias="file")
    url_template: str = Field(alias="url")
    arch_names: dict[Arch, str]
    download_budget_bytes: int = Field(gt=0)
    sha256s: dict[Arch, str | None] = Field(alias="sha256")
    source: str

    @field_validator("sha256s")
    @classmethod
    def _digests(cls, value: dict[Arch, str | None]) -> dict[Arch, str | None]:
        for arch, digest in value.items():
            if digest is not None and not is_sha256(digest):
                raise ValueError(f"sha256 for {arch} is not 64 lowercase hex digits: {digest!r}")
        return value

    def file(self, arch: str) -> str:
        """The release file name for ``arch`` (``ollama-linux-amd64.tgz``)."""
        a = canonical_arch(arch)
        if a not in self.arch_names:
            raise ConfigError("arch", arch, ", ".join(self.arch_names), f"{self.name} has no {a} build")
        return self.file_template.format(version=self.version, arch=self.arch_names[a])

    def url(self, arch: str) -> str:
        """The official download URL for ``arch``."""
        return self.url_template.format(version=self.version, file=self.file(arch))

    def mirror_url(self, mirror: str, arch: str) -> str:
        """The same file on a mirror laid out as ``<mirror>/<name>/v<version>/<file>``."""
        return f"{mirror.rstrip('/')}/{self.name}/v{self.version}/{self.file(arch)}"

    def sha256(self, arch: str) -> str | None:
        """The published sha256 for ``arch``, or None when no published checksum was found."""
        return self.sha256s.get(canonical_arch(arch))


def _read() -> dict:
    text = resources.files("llmkit.data").joinpath("artifacts.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
        raise ValueError("llmkit/data/artifacts.yaml: expected a mapping with an 'artifacts' mapping")
    return data


@cache
def load_artifacts() -> dict[str, Artifact]:
    """All pinned artefacts, validated, once per process."""
    return {
        str(name): Artifact(name=str(name), **{k: v for k, v in spec.items()})
        for name, spec in _read()["artifacts"].items()
    }


def artifact(name: str) -> Artifact:
    """The pinned artefact ``name``; ConfigError naming the known ones otherwise."""
    known = load_artifacts()
    try:
        return known[name]
    except KeyError:
        raise ConfigError("artifact", name, ", ".join(known), "unknown pinned artefact") from None
