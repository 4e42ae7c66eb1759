"""``llmkit mirror pull``: one model into a staging directory, its manifest written last.

The staging directory (``--to``) must be new, empty, a pulled model (its ``manifest.json`` says
kind ``model``) or a pull that was interrupted (:data:`PULL_MARK`, written before the first byte
and removed with the manifest's arrival); anything else is refused, as is a directory holding a
symbolic link or a special file anywhere. Every file below it is written through
:mod:`llmkit.files`'s ``*_inside`` operations, which follow no link.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmkit.files import (
    atomic_write_inside,
    copy_inside,
    remove_inside,
)
from llmkit.mirror import sources
from llmkit.mirror.auth import RegistryAuth, redact_url
from llmkit.mirror.download import Blob, Options, Stats, fetch_all, preflight
from llmkit.mirror.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    MirrorError,
    check_relpath,
    check_staging_target,
)

# Marks a directory as a pull in progress (an interrupted pull has no manifest yet).
PULL_MARK = ".llmkit-pull"


@dataclass
class PullResult:
    manifest: Manifest
    stats: Stats
    directory: Path


def check_target(directory: Path) -> None:
    """``--to`` must be new, empty, a pulled model, or a pull that was interrupted; no links in it."""
    check_staging_target(directory, "model", PULL_MARK, "a pulled model")


def _start(directory: Path) -> None:
    """Before the first byte: the mark, then no manifest.

    A re-pull rewrites the manifest last: the old one goes first, so a half-updated directory
    never carries a manifest that vouches for it.
    """
    atomic_write_inside(directory, PULL_MARK, b"")
    remove_inside(directory, MANIFEST_NAME)


def _finish(directory: Path, manifest: Manifest) -> None:
    manifest.write(directory)
    remove_inside(directory, PULL_MARK)  # the manifest marks it from now on


def _write(directory: Path, name: str, data: bytes, role: str) -> FileEntry:
    atomic_write_inside(directory, name, data)
    return FileEntry(name, hashlib.sha256(data).hexdigest(), len(data), role)


def pull_registry(
    ref: str,
    directory: Path,
    registry: str = sources.DEFAULT_REGISTRY,
    opts: Options | None = None,
    auth: RegistryAuth | None = None,
) -> PullResult:
    model, tag = sources.split_name(ref)
    check_target(directory)
    auth = auth or RegistryAuth(registry)  # anonymous: answers a registry's token challenge
    found = sources.registry_model(registry, model, tag, auth)
    entries, stats = fetch_all(found.blobs, directory, opts, prepare=lambda: _start(directory))
    # The registry's own manifest, so the mirror can be served as a registry later.
    entries.append(_write(directory, "ollama-manifest.json", found.manifest, "ollama-manifest"))
    gguf = next((e for e in entries if e.role == "gguf"), None)
    if gguf is not None:
        # reads the layers just written; check_target refused links, and none was written since
        text = sources.modelfile_from_layers(directory, gguf.path).encode()
        entries.append(_write(directory, "Modelfile", text, "modelfile"))
    source = {"type": "registry", "registry": found.registry, "repository": found.repository, "tag": tag}
    manifest = Manifest("model", model.rpartition("/")[2], tag, source, entries)
    _finish(directory, manifest)
    return PullResult(manifest, stats, directory)


def pull_urls(
    ref: str,
    directory: Path,
    urls: Sequence[str],
    list_file: Path | None,
    opts: Options | None = None,
    allow_unverified: bool = False,
) -> PullResult:
    """``allow_unverified``: a URL without a listed sha256 is taken as it comes, and the
    manifest's source lists it under ``unverified`` (:mod:`llmkit.mirror.sources`)."""
    model, tag = sources.split_name(ref)
    blobs: list[Blob] = sources.url_blobs(urls, list_file, allow_unverified)
    check_target(directory)
    entries, stats = fetch_all(blobs, directory, opts, prepare=lambda: _start(directory))
    source: dict[str, object] = {"type": "urls", "urls": [redact_url(b.url) for b in blobs]}
    unverified = [b.path for b in blobs if b.unverified]
    if unverified:
        source["unverified"] = unverified
    manifest = Manifest("model", model.rpartition("/")[2], tag, source, entries)
    _finish(directory, manifest)
    return PullResult(manifest, stats, directory)


def _copy_local(src: Path, directory: Path, name: str, role: str | None) -> FileEntry:
    """Copy the user's ``src`` to ``directory/name`` (whole or not at all) and record its digest."""
    rel = check_relpath(name)
    try:
        with src.open("rb") as f:
            digest, size = copy_inside(f, directory, rel)
    except (FileNotFoundError, IsADirectoryError):
        raise MirrorError(f"{src}: no such file") from None
    return FileEntry(rel, digest, size, role)


def pull_local(ref: str, directory: Path, ggufs: Sequence[Path], modelfile: Path | None) -> PullResult:
    model, tag = sources.split_name(ref)
    if not ggufs:
        raise MirrorError("--gguf: give at least one local GGUF file")
    names = [g.name for g in ggufs] + (["Modelfile"] if modelfile else [])
    if len(set(names)) != len(names):
        raise MirrorError(f"local files with the same name: {', '.join(names)}")
    missing = [str(p) for p in [*ggufs, *([modelfile] if modelfile else [])] if not p.is_file()]
    if missing:
        raise MirrorError(f"no such file: {', '.join(missing)}")
    check_target(directory)
    preflight(directory, sum(p.stat().st_size for p in ggufs))
    _start(directory)
    entries = [
        _copy_local(g, directory, g.name, "gguf" if i == 0 else "gguf-part") for i, g in enumerate(ggufs)
    ]
    if modelfile is not None:
        entries.append(_copy_local(modelfile, directory, "Modelfile", "modelfile"))
    source = {
        "type": "local",
        "files": [str(p.resolve()) for p in [*ggufs, *([modelfile] if modelfile else [])]],
    }
    manifest = Manifest("model", model.rpartition("/")[2], tag, source, entries)
    _finish(directory, manifest)
    return PullResult(manifest, Stats(), directory)
