"""``llmkit mirror pull``: one model into a staging directory, its manifest written last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmkit.mirror import sources
from llmkit.mirror.auth import RegistryAuth, redact_url
from llmkit.mirror.download import Blob, Options, Stats, fetch_all, preflight
from llmkit.mirror.manifest import MANIFEST_NAME, FileEntry, Manifest, MirrorError, atomic_write, sha256_file


@dataclass
class PullResult:
    manifest: Manifest
    stats: Stats
    directory: Path


def _start(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # A re-pull rewrites the manifest last: drop the old one first, so a half-updated directory
    # never carries a manifest that vouches for it.
    (directory / MANIFEST_NAME).unlink(missing_ok=True)


def pull_registry(
    ref: str,
    directory: Path,
    registry: str = sources.DEFAULT_REGISTRY,
    opts: Options | None = None,
    auth: RegistryAuth | None = None,
) -> PullResult:
    model, tag = sources.split_name(ref)
    auth = auth or RegistryAuth(registry)  # anonymous: answers a registry's token challenge
    found = sources.registry_model(registry, model, tag, auth)
    _start(directory)
    entries, stats = fetch_all(found.blobs, directory, opts)
    # The registry's own manifest, so the mirror can be served as a registry later.
    raw = atomic_write(directory / "ollama-manifest.json", found.manifest)
    entries.append(FileEntry("ollama-manifest.json", sha256_file(raw), raw.stat().st_size, "ollama-manifest"))
    gguf = next((e for e in entries if e.role == "gguf"), None)
    if gguf is not None:
        text = sources.modelfile_from_layers(directory, gguf.path).encode()
        path = atomic_write(directory / "Modelfile", text)
        entries.append(FileEntry("Modelfile", sha256_file(path), len(text), "modelfile"))
    source = {"type": "registry", "registry": found.registry, "repository": found.repository, "tag": tag}
    manifest = Manifest("model", model.rpartition("/")[2], tag, source, entries)
    manifest.write(directory)
    return PullResult(manifest, stats, directory)


def pull_urls(
    ref: str, directory: Path, urls: Sequence[str], list_file: Path | None, opts: Options | None = None
) -> PullResult:
    model, tag = sources.split_name(ref)
    blobs: list[Blob] = sources.url_blobs(urls, list_file)
    _start(directory)
    entries, stats = fetch_all(blobs, directory, opts)
    source = {"type": "urls", "urls": [redact_url(b.url) for b in blobs]}
    manifest = Manifest("model", model.rpartition("/")[2], tag, source, entries)
    manifest.write(directory)
    return PullResult(manifest, stats, directory)


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
    preflight(directory, sum(p.stat().st_size for p in ggufs))
    _start(directory)
    entries = [
        sources.copy_local(g, directory, g.name, "gguf" if i == 0 else "gguf-part")
        for i, g in enumerate(ggufs)
    ]
    if modelfile is not None:
        entries.append(sources.copy_local(modelfile, directory, "Modelfile", "modelfile"))
    source = {
        "type": "local",
        "files": [str(p.resolve()) for p in [*ggufs, *([modelfile] if modelfile else [])]],
    }
    manifest = Manifest("model", model.rpartition("/")[2], tag, source, entries)
    manifest.write(directory)
    return PullResult(manifest, Stats(), directory)
