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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from llmkit import untrusted
from llmkit.artifacts import is_sha256
from llmkit.errors import LlmkitError
from llmkit.files import (
    UnsafePathError,
    atomic_write_inside,
    hash_inside,
    iter_files_inside,
    read_inside,
    regular_inside,
    require_plain_tree,
)
from llmkit.files import atomic_write as atomic_write  # re-exported for the mirror's modules
from llmkit.files import sha256_file as sha256_file
from llmkit.store_layout import MANIFEST_NAME
from llmkit.untrusted import printable

SCHEMA = 1
KINDS = ("model", "bundle")
MAX_MANIFEST_BYTES = 16 << 20  # a bundle's manifest lists about a thousand files: some 200 KiB
_ROLE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


class MirrorError(LlmkitError):
    """A mirror problem the user can act on (one line, exit 2)."""


class DigestMismatch(MirrorError):
    """A file's sha256 differs from the one it must have; names the file."""

    def __init__(self, path: str, expected: str, actual: str, detail: str = "") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: sha256 {actual} does not match the expected {expected}{detail}")


def check_relpath(path: str, where: str = MANIFEST_NAME) -> str:
    """A manifest path: relative POSIX, no empty, ``.`` or ``..`` parts, not the manifest itself,
    no control characters (a name from a server or a URL is data, never a line break)."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or path == MANIFEST_NAME
        or untrusted.has_unprintable(path)
    ):
        raise MirrorError(
            f"{where}: refused path {path!r} (relative, no '..', no control characters, not the manifest)"
        )
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
        """The manifest in ``data``; one MirrorError naming ``where`` for anything else.

        What a mirror serves is data (:mod:`llmkit.untrusted`): at most :data:`MAX_MANIFEST_BYTES`,
        a JSON object of this schema, each file with a safe relative path, a sha256, a size that
        is a non-negative int and a role of ``[a-z0-9-]``; no NaN, no ``1e999``, no deep nesting.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise MirrorError(f"{where}: more than the {MAX_MANIFEST_BYTES} bytes a manifest may have")
        doc = untrusted.parse_json(data, where, MirrorError, not_json="not a mirror manifest")

        def bad(problem: str) -> MirrorError:
            return MirrorError(f"{where}: not a mirror manifest ({problem})")

        if not isinstance(doc, dict):
            raise bad(f"a JSON {type(doc).__name__}, not an object")
        schema = doc.get("schema", SCHEMA)
        if isinstance(schema, bool) or schema != SCHEMA:
            raise bad(f"schema {printable(repr(schema))[:40]}; this llmkit reads schema {SCHEMA}")
        raw_files = doc.get("files")
        if not isinstance(raw_files, list):
            raise bad("no list of files")
        files = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_files):
            if not isinstance(raw, dict):
                raise bad(f"files[{i}] is not an object")
            path, digest, role = raw.get("path"), raw.get("sha256"), raw.get("role")
            if not isinstance(path, str):
                raise bad(f"files[{i}].path is not a string")
            path = check_relpath(path, where)
            if not isinstance(digest, str) or not is_sha256(digest.lower()):
                raise MirrorError(f"{where}: {printable(path)}: sha256 is not 64 hex digits")
            if role is not None and not (isinstance(role, str) and _ROLE.fullmatch(role)):
                raise bad(f"files[{i}].role {printable(repr(role))[:40]} is not [a-z0-9-]")
            size = untrusted.size(raw.get("size"), f"{where}: {printable(path)}", MirrorError)
            if path in seen:
                raise MirrorError(f"{where}: {printable(path)} is listed twice")
            seen.add(path)
            files.append(FileEntry(path, digest.lower(), size, role))
        kind = doc.get("kind", "model")
        if kind not in KINDS:
            raise bad(f"kind {printable(repr(kind))[:40]}, not one of {', '.join(KINDS)}")
        text = {key: doc.get(key, "") for key in ("model", "tag", "created")}
        for key, value in text.items():
            if not isinstance(value, str):
                raise bad(f"{key} is not a string")
        source = doc.get("source") or {}
        if not isinstance(source, dict):
            raise bad("source is not an object")
        return cls(
            kind=kind,
            model=text["model"],
            tag=text["tag"],
            source=source,
            files=files,
            created=text["created"],
        )

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_NAME
        try:
            # a link is refused, not followed; a file too large to be a manifest, not read
            data = read_inside(directory, MANIFEST_NAME, limit=MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            raise MirrorError(
                f"{path}: no mirror manifest (is {directory} a pulled model or bundle?)"
            ) from None
        except OSError as exc:  # EFBIG: larger than a manifest may be; EACCES, EISDIR, ...
            raise MirrorError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
        return cls.loads(data, str(path))


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str


def check_staging_target(directory: Path, kind: str, mark: str, what: str) -> None:
    """``--to`` of a pull or a bundle: new, empty, one of ``kind`` (its manifest says so), or one
    whose last run was interrupted (``mark`` is there); and no link or special file in it."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise MirrorError(f"--to {directory}: not a directory")
    has_manifest = regular_inside(directory, MANIFEST_NAME) is not None
    has_mark = regular_inside(directory, mark) is not None
    require_plain_tree(directory)
    if has_manifest:
        found = Manifest.read(directory).kind
        if found != kind:
            raise MirrorError(f"--to {directory}: holds a {found}, not a {kind}; give another directory")
        return
    if has_mark or not any(directory.iterdir()):
        return
    raise MirrorError(
        f"--to {directory}: not empty and not {what} (no {MANIFEST_NAME}, no {mark}); refusing to "
        "write into it (give an empty or new directory)"
    )


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
