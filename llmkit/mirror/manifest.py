"""The mirror manifest: ``manifest.json`` beside the files it lists, written last.

One format for a model and for the host bootstrap bundle::

    {"schema": 1, "kind": "model" | "bundle", "model": "tiny-r1", "tag": "latest",
     "source": {"type": "registry" | "urls" | "local" | "bundle", ...}, "created": "<UTC ISO 8601>",
     "files": [{"path": "tiny-r1.gguf", "sha256": "<64 hex>", "size": 123, "role": "gguf"}, ...]}

``files[].path`` is relative to the manifest's directory (POSIX, no ``..``, never
``manifest.json``): exactly what the AWS model hosts' user data checks for ``bootstrap/``
(``components/templates/model_host_user_data.sh``: every listed file present with its size and
sha256, nothing unlisted). ``role`` (``gguf``, ``modelfile``, ...) tells the on-prem deploys which
file is which (``playbooks/deploys/models.py``: ``file``, ``sha256``, ``size``, ``modelfile``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from llmkit.artifacts import is_sha256
from llmkit.errors import LlmkitError
from llmkit.files import (
    UnsafePathError,
    atomic_write_inside,
    hash_inside,
    iter_files_inside,
    read_inside,
)
from llmkit.files import atomic_write as atomic_write  # re-exported for the mirror's modules
from llmkit.files import sha256_file as sha256_file
from llmkit.store_layout import MANIFEST_NAME

SCHEMA = 1
KINDS = ("model", "bundle")


class MirrorError(LlmkitError):
    """A mirror problem the user can act on (one line, exit 2)."""


class DigestMismatch(MirrorError):
    """A file's sha256 differs from the one it must have; names the file."""

    def __init__(self, path: str, expected: str, actual: str, detail: str = "") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: sha256 {actual} does not match the expected {expected}{detail}")


def check_relpath(path: str) -> str:
    """A manifest path: relative POSIX, no empty, ``.`` or ``..`` parts, not the manifest itself."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or path == MANIFEST_NAME:
        raise MirrorError(f"{MANIFEST_NAME}: refused path {path!r} (relative, no '..', not the manifest)")
    return str(PurePosixPath(path))


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    role: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size}
        if self.role:
            out["role"] = self.role
        return out


def _now() -> str:
    # timezone.utc, not datetime.UTC: the hosts import this module (models deploy) on Python 3.10
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017


@dataclass
class Manifest:
    kind: str
    model: str
    tag: str
    source: dict[str, Any]
    files: list[FileEntry]
    created: str = field(default_factory=lambda: _now())

    @property
    def name(self) -> str:
        return f"{self.model}:{self.tag}"

    def by_role(self, role: str) -> FileEntry | None:
        return next((f for f in self.files if f.role == role), None)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "model": self.model,
            "tag": self.tag,
            "source": self.source,
            "created": self.created,
            "files": [f.to_json() for f in self.files],
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n").encode()

    def write(self, directory: Path) -> Path:
        """Write ``directory/manifest.json`` atomically (the last step of a pull or bundle)."""
        atomic_write_inside(directory, MANIFEST_NAME, self.dumps())
        return directory / MANIFEST_NAME

    @classmethod
    def loads(cls, data: bytes | str, where: str) -> Manifest:
        try:
            doc = json.loads(data)
            files = []
            seen: set[str] = set()
            for raw in doc["files"]:
                entry = FileEntry(
                    path=check_relpath(str(raw["path"])),
                    sha256=str(raw["sha256"]).lower(),
                    size=int(raw["size"]),
                    role=raw.get("role"),
                )
                if not is_sha256(entry.sha256):
                    raise MirrorError(f"{where}: {entry.path}: sha256 is not 64 hex digits")
                if entry.path in seen:
                    raise MirrorError(f"{where}: {entry.path} is listed twice")
                seen.add(entry.path)
                files.append(entry)
            return cls(
                kind=str(doc.get("kind", "model")),
                model=str(doc.get("model", "")),
                tag=str(doc.get("tag", "")),
                source=dict(doc.get("source") or {}),
                files=files,
                created=str(doc.get("created", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MirrorError(f"{where}: not a mirror manifest ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_NAME
        try:
            data = read_inside(directory, MANIFEST_NAME)  # a link is refused, not followed
        except FileNotFoundError:
            raise MirrorError(
                f"{path}: no mirror manifest (is {directory} a pulled model or bundle?)"
            ) from None
        return cls.loads(data, str(path))


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str


def verify_dir(directory: Path, manifest: Manifest | None = None, strict: bool = False) -> list[Finding]:
    """Re-hash every listed file; a finding per missing, resized or changed file (and, strict: unlisted).

    Each file is read without following a link below ``directory`` (:func:`llmkit.files.hash_inside`):
    a listed file that is a link, or lies under one, is a finding, never read.
    """
    manifest = manifest or Manifest.read(directory)
    findings: list[Finding] = []
    for entry in manifest.files:
        try:
            digest, size = hash_inside(directory, entry.path)
        except FileNotFoundError:
            findings.append(Finding(entry.path, "missing"))
            continue
        except UnsafePathError as exc:
            findings.append(Finding(entry.path, f"refused, {exc.path} is {exc.problem.partition(';')[0]}"))
            continue
        if size != entry.size:
            findings.append(Finding(entry.path, f"size {size} differs from the manifest's {entry.size}"))
            continue
        if digest != entry.sha256:
            findings.append(
                Finding(entry.path, f"sha256 {digest} differs from the manifest's {entry.sha256}")
            )
    if strict:
        listed = {e.path for e in manifest.files} | {MANIFEST_NAME}
        for extra in sorted(set(local_files(directory)) - listed):
            findings.append(Finding(extra, "not listed in the manifest"))
    return findings


def local_files(directory: Path) -> Iterable[str]:
    """Everything below ``directory`` that is not a directory (links listed, never entered)."""
    return iter_files_inside(directory)
