"""``llmkit mirror bundle``: the host bootstrap bundle, for hosts with no internet.

What the bundle holds (the contract of ``components/fleet.py`` and its user data, which any
host without internet can follow too)::

    manifest.json                 kind "bundle": every file below with size, sha256 and role
    requirements.txt              playbooks/files/host-requirements.txt (pins with hashes)
    wheels/*.whl                  one wheel per pin and target interpreter, exactly one pip-*.whl
    playbooks/...                 the deploys (site.py, deploys/, group_data/, templates/, ...)
    llmkit/...                    the shared package the playbooks import (errors, versions, ...)
    <name>/v<version>/<file>      each pinned release of llmkit/data/artifacts.yaml (Ollama, the
                                  exporters) per architecture: the layout ollama_mirror_url and
                                  exporters_mirror_url read, so file:///opt/llmkit/bootstrap works

Every release is checked against the sha256 pinned in ``artifacts.yaml`` (or one given with
``--artifact-sha256 NAME[:ARCH]=HEX`` for a mirror's own build, recorded as such in the
manifest); every wheel against the lock's hashes. Downloads go through
:func:`llmkit.mirror.download.fetch_all` (parallel, resumable, retried, verified), so a re-run
after an interruption fetches only what is missing.

The directory is the bundle only: a non-empty ``--to`` without a bundle manifest is refused,
and so is one holding a symbolic link or a special file anywhere; a re-run removes the manifest
first, writes it last, and deletes files the new bundle no longer lists (the hosts refuse
unlisted files). Every write, read and removal below ``--to`` goes through
:mod:`llmkit.files`'s ``*_inside`` operations, which follow no link.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import llmkit
from llmkit import net
from llmkit.artifacts import Artifact, load_artifacts
from llmkit.errors import ConfigError
from llmkit.files import (
    atomic_write_inside,
    copy_inside,
    hash_inside,
    iter_files_inside,
    regular_inside,
    remove_empty_dirs_inside,
    remove_inside,
)
from llmkit.mirror import wheels
from llmkit.mirror.auth import redact_url
from llmkit.mirror.download import Blob, Options, Stats, fetch_all, preflight
from llmkit.mirror.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    MirrorError,
    check_staging_target,
    is_sha256,
    sha256_file,
)

BUNDLE_MODEL = "llmkit-bootstrap"
REPO_ROOT = Path(llmkit.__file__).resolve().parent.parent
HOST_REQUIREMENTS = REPO_ROOT / "playbooks" / "files" / "host-requirements.txt"
# The source trees the hosts run, relative to the repository root.
SOURCE_TREES = ("playbooks", "llmkit")
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# Marks a directory as a bundle being made (an interrupted run has no manifest yet); removed
# when the manifest is written, so a finished bundle holds only listed files.
STAGING_MARK = ".llmkit-bundle"


@dataclass
class BundleOptions:
    pythons: Sequence[str] = wheels.DEFAULT_PYTHONS
    arches: Sequence[str] = ("amd64",)
    glibc: str = wheels.DEFAULT_GLIBC
    index_url: str = wheels.DEFAULT_INDEX
    find_links: Path | None = None
    artifacts_from: str | None = None
    artifact_sha256: Mapping[str, str] = field(default_factory=dict)  # "name" or "name:arch" -> hex
    requirements: Path = HOST_REQUIREMENTS
    source_root: Path = REPO_ROOT


@dataclass
class BundleResult:
    manifest: Manifest
    stats: Stats
    wheels: int
    artifacts: int
    removed: list[str]


def parse_sha256_overrides(values: Sequence[str]) -> dict[str, str]:
    """``NAME[:ARCH]=HEX`` options -> {"name" or "name:arch": hex}; a MirrorError names a bad one."""
    known = load_artifacts()
    out: dict[str, str] = {}
    for value in values:
        key, sep, digest = value.partition("=")
        name, _, arch = key.partition(":")
        digest = digest.strip().lower()
        if not sep or name not in known or (arch and arch not in wheels.MACHINES) or not is_sha256(digest):
            raise MirrorError(
                f"--artifact-sha256 {value!r}: expected NAME[:ARCH]=<64 hex> with NAME one of "
                f"{', '.join(known)} and ARCH one of {', '.join(wheels.MACHINES)}"
            )
        out[key] = digest
    return out


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFile:
    artifact: Artifact
    arch: str
    path: str  # <name>/v<version>/<file>
    source: str  # URL or local path
    sha256: str
    checksum: str  # "pinned" | "given"


def artifact_files(options: BundleOptions) -> list[ArtifactFile]:
    out: list[ArtifactFile] = []
    unknown = [k for k in options.artifact_sha256 if k.partition(":")[0] not in load_artifacts()]
    if unknown:
        raise MirrorError(f"--artifact-sha256: unknown artefact {', '.join(unknown)}")
    for art in load_artifacts().values():
        for arch in options.arches:
            try:
                file = art.file(arch)
                pinned = art.sha256(arch)
            except ConfigError as exc:
                raise MirrorError(f"{art.name} for --arch {arch}: {exc}") from None
            given = options.artifact_sha256.get(f"{art.name}:{arch}") or options.artifact_sha256.get(art.name)
            digest = given or pinned
            if digest is None:
                raise MirrorError(
                    f"{art.name} {art.version} for {arch}: no published sha256 is pinned in "
                    f"llmkit/data/artifacts.yaml; give --artifact-sha256 {art.name}:{arch}=<hex> "
                    "from the release's own checksum file"
                )
            path = f"{art.name}/v{art.version}/{file}"
            source = art.mirror_url(options.artifacts_from, arch) if options.artifacts_from else art.url(arch)
            out.append(ArtifactFile(art, arch, path, source, digest, "given" if given else "pinned"))
    return out


def _artifact_blob(art: ArtifactFile) -> Blob:
    """A release to fetch; user info in ``--artifacts-from`` becomes a Basic header for the
    mirror's own origin (:func:`llmkit.net.split_credentials`), never part of the URL."""
    url, headers = (
        (art.source, {})
        if _local_source(art.source)
        else net.split_credentials(art.source, "--artifacts-from")
    )
    return Blob(url=url, path=art.path, sha256=art.sha256, role="artifact", headers=headers)


def _local_source(source: str) -> Path | None:
    """A file:// URL or a plain path -> the local path; None for http(s)."""
    if source.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path))
    if re.match(r"^https?://", source):
        return None
    return Path(source)


def source_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(bundle path, file) of the playbooks and the llmkit package, caches and bytecode left out."""
    if not (root / "playbooks" / "site.py").is_file():
        raise MirrorError(
            f"{root}: no playbooks/site.py beside the llmkit package; run llmkit mirror bundle from a "
            "checkout of the kit"
        )
    for tree in SOURCE_TREES:
        for dirpath, dirnames, filenames in os.walk(root / tree):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(_SKIP_SUFFIXES) or name.startswith("."):
                    continue
                full = Path(dirpath) / name
                if full.is_symlink() or not full.is_file():
                    continue
                yield full.relative_to(root).as_posix(), full


def _check_target_dir(directory: Path) -> None:
    """``--to`` must be new, empty, a bundle, or a bundle whose last run was interrupted; and
    hold no symbolic link or special file (refused, named)."""
    check_staging_target(directory, "bundle", STAGING_MARK, "a bundle")


def _copy(
    src: Path, directory: Path, rel: str, sha256: str | None = None, label: str | None = None
) -> tuple[str, int]:
    """``src`` as ``directory/rel`` (left alone when it is there already): its (sha256, size).

    With ``sha256``, the bytes copied must have it (``src`` may change after it was checked).
    """
    there = regular_inside(directory, rel)
    if there is not None and there.st_size == src.stat().st_size:
        digest, size = hash_inside(directory, rel)
        if digest == (sha256 or sha256_file(src)):
            return digest, size

    def check(digest: str, _size: int) -> None:
        if sha256 is not None and digest != sha256:
            raise MirrorError(f"{label or rel}: {src} changed while it was copied; not bundled")

    with src.open("rb") as f:
        return copy_inside(f, directory, rel, check)


def _copy_verified(src: Path, directory: Path, rel: str, sha256: str, label: str) -> int:
    if not src.is_file():
        raise MirrorError(f"{label}: no such file {src}")
    digest = sha256_file(src)
    if digest != sha256:
        raise MirrorError(f"{label}: {src} has sha256 {digest}, not the expected {sha256}; not bundled")
    return _copy(src, directory, rel, sha256, label)[1]


def _version() -> str:
    try:
        return metadata.version("llmkit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_bundle(directory: Path, options: BundleOptions, opts: Options | None = None) -> BundleResult:
    """Make (or bring up to date) the bundle in ``directory``; its manifest is written last."""
    opts = opts or Options()
    # 1. everything that can be wrong is found before any byte moves
    _check_target_dir(directory)
    pins = wheels.read_requirements(options.requirements)
    if not any(p.name == "pip" for p in pins):
        raise MirrorError(
            f"{options.requirements}: pin pip (the hosts install the rest with the bundled pip)"
        )
    wanted = wheels.targets(options.pythons, options.arches, options.glibc)
    arts = artifact_files(options)
    for art in arts:  # credentials in --artifacts-from: only over https (or to loopback)
        _artifact_blob(art)
    sources = list(source_files(options.source_root))
    if options.find_links is not None:
        by_project = wheels.directory_files(options.find_links)
        files_of: dict[str, Any] = {p.name: by_project.get(p.name, []) for p in pins}
        where = f"--find-links {options.find_links}"
    else:
        files_of = {p.name: wheels.index_files(options.index_url, p.name) for p in pins}
        where = f"--index-url {redact_url(options.index_url)}"
    selected = wheels.select(pins, wanted, files_of, where)
    pip_wheels = {s.file.filename for s in selected if s.pin.name == "pip"}
    if len(pip_wheels) != 1:
        raise MirrorError(
            f"{where}: the bundle needs exactly one pip wheel, found {sorted(pip_wheels) or 'none'}"
        )

    atomic_write_inside(directory, STAGING_MARK, b"")  # makes the directory too
    remove_inside(directory, MANIFEST_NAME)
    entries: list[FileEntry] = []
    # 2. the sources and the lock (small, local)
    for rel, src in sources:
        digest, size = _copy(src, directory, rel)
        entries.append(FileEntry(rel, digest, size, "source"))
    digest, size = _copy(options.requirements, directory, "requirements.txt")
    entries.append(FileEntry("requirements.txt", digest, size, "requirements"))
    # 3. releases and wheels: local ones copied with a digest check, remote ones fetched
    blobs: list[Blob] = []
    local: list[tuple[Path, Blob]] = []
    for blob in [s.blob() for s in selected] + [_artifact_blob(a) for a in arts]:
        path = _local_source(blob.url)
        if path is None:
            blobs.append(blob)
        else:
            local.append((path, blob))
    preflight(directory, sum(p.stat().st_size for p, _ in local if p.is_file()))
    for src, blob in local:
        assert blob.sha256 is not None
        size = _copy_verified(src, directory, blob.path, blob.sha256, blob.path)
        entries.append(FileEntry(blob.path, blob.sha256, size, blob.role))
    fetched, stats = fetch_all(blobs, directory, opts)
    entries.extend(fetched)
    # 4. what an earlier bundle left and this one does not list
    listed = {e.path for e in entries}
    removed = []
    for rel in sorted(iter_files_inside(directory)):
        if rel not in (MANIFEST_NAME, STAGING_MARK) and rel not in listed:
            remove_inside(directory, rel)  # a link is removed itself, never followed
            removed.append(rel)
    _prune_empty_dirs(directory)
    source = {
        "type": "bundle",
        "llmkit": _version(),
        "requirements": "requirements.txt",
        "targets": [t.label for t in wanted],
        "wheels_from": str(options.find_links) if options.find_links else redact_url(options.index_url),
        "artifacts": [
            {
                "name": a.artifact.name,
                "version": a.artifact.version,
                "arch": a.arch,
                "path": a.path,
                "sha256": a.sha256,
                "checksum": a.checksum,
                "from": redact_url(a.source),
            }
            for a in arts
        ],
    }
    entries.sort(key=lambda e: e.path)
    manifest = Manifest("bundle", BUNDLE_MODEL, _version(), source, entries)
    manifest.write(directory)
    remove_inside(directory, STAGING_MARK)  # the manifest marks it from now on
    return BundleResult(manifest, stats, len(selected), len(arts), removed)


def _prune_empty_dirs(directory: Path) -> None:
    remove_empty_dirs_inside(directory)  # never enters a link
