"""The models Ollama serves: pulled from the Ollama registry or built from a verified mirror file.

Host data ``models`` lists them; each entry is ``{name, source, ...}`` (the fleet's host data
adds ``tag``, ``context_length``, ``concurrency``...). The served name is ``tag`` when given,
else ``name``; ``ollama list`` reports it with ``:latest`` added when it has no tag.

- ``source: registry`` (the default): ``ollama pull <served name>`` only when ``ollama list``
  does not already show it (Ollama verifies every layer's digest as it pulls).
- ``source: mirror``: ``file`` (path under ``models_mirror_url``), ``sha256`` and ``size`` are
  required. The GGUF goes through ``verified_download`` (free-disk preflight, resume, retries,
  sha256, atomic rename) into a root-only staging directory; an optional mirror Modelfile
  (``modelfile: {file, sha256}``) too. The Modelfile that is used always starts with a ``FROM``
  naming the verified GGUF (any ``FROM`` of a downloaded Modelfile is dropped); an inline
  ``modelfile`` string adds directives (no ``FROM``), and ``context_length`` becomes
  ``PARAMETER num_ctx`` unless the directives set it. Then ``ollama create``, then the staging
  files are deleted (Ollama keeps its own copy as the blob ``sha256-<digest>``). Nothing happens
  when the served name is listed *and* that blob exists. A checksum mismatch fails the
  download, naming the file, before ``ollama create`` could touch the served model.
- ``prune_models: true``: ``ollama rm`` of every listed model that is not configured, as the
  last step, so only after every configured model is in place; never when the list of
  installed models could not be read.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from llmkit.artifacts import is_sha256
from llmkit.errors import ConfigError
from playbooks.deploys.ollama import OllamaSettings, ollama_settings
from playbooks.facts.ollama import InstalledModel, OllamaModels, normalize_model_name
from playbooks.operations.download import verified_download

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")
_MIRROR_FILE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
STAGING_DIR_NAME = "llmkit-staging"


@dataclass(frozen=True)
class MirrorFile:
    path: str  # relative to models_mirror_url
    sha256: str
    size: int | None

    @property
    def basename(self) -> str:
        return posixpath.basename(self.path)


@dataclass(frozen=True)
class ModelSpec:
    served: str  # the name Ollama serves it under, normalized ("llama3.1:8b", "mine:latest")
    source: str  # "registry" | "mirror"
    gguf: MirrorFile | None = None
    modelfile: MirrorFile | None = None
    directives: tuple[str, ...] = ()


def _mirror_file(index: int, key: str, path: Any, sha: Any, size: Any) -> MirrorFile:
    where = f"models[{index}].{key}"
    text = str(path or "")
    if not _MIRROR_FILE.match(text) or ".." in text.split("/"):
        raise ConfigError(where, path, "a relative path under models_mirror_url", "invalid mirror file")
    digest = str(sha or "").strip().lower()
    if not is_sha256(digest):
        raise ConfigError(
            f"models[{index}].sha256" if key == "file" else f"{where}.sha256",
            sha,
            "64 hex digits",
            "a mirror file needs its published sha256",
        )
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"models[{index}].size", size, "a size in bytes", "invalid size")
    return MirrorFile(path=text, sha256=digest, size=size)


def model_specs(data: Mapping[str, Any] | Any) -> list[ModelSpec]:
    """Validated model entries from host data; ConfigError naming the entry otherwise."""
    specs: list[ModelSpec] = []
    for i, entry in enumerate(data.get("models") or []):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"models[{i}]", entry, "a mapping with name and source", "invalid model entry")
        raw_name = entry.get("tag") or entry.get("name")
        if not raw_name or not _MODEL_NAME.match(str(raw_name)):
            raise ConfigError(
                f"models[{i}].name", raw_name, "an Ollama model name such as llama3.1:8b", "invalid"
            )
        served = normalize_model_name(str(raw_name))
        source = entry.get("source") or "registry"
        if source == "registry":
            specs.append(ModelSpec(served=served, source="registry"))
            continue
        if source != "mirror":
            raise ConfigError(f"models[{i}].source", source, "registry, mirror", "unknown model source")
        mirror_url = data.get("models_mirror_url")
        if mirror_url and not re.match(r"^((https?|file)://\S+|/\S*)$", str(mirror_url)):
            raise ConfigError(
                "models_mirror_url",
                mirror_url,
                "an http(s):// or file:// URL or an absolute path on the host",
                "the verified download fetches with curl (s3:// is not supported: serve the bucket "
                "over HTTPS, e.g. a presigned or VPC-endpoint URL, or mount it)",
            )
        if not mirror_url:
            raise ConfigError(
                "models_mirror_url", None, "an http(s):// or file:// URL", f"models[{i}] needs a mirror"
            )
        if entry.get("size") is None:
            raise ConfigError(f"models[{i}].size", None, "a size in bytes", "a mirror model needs its size")
        gguf = _mirror_file(i, "file", entry.get("file"), entry.get("sha256"), entry.get("size"))
        modelfile: MirrorFile | None = None
        directives: list[str] = []
        mf = entry.get("modelfile")
        if isinstance(mf, Mapping):
            modelfile = _mirror_file(i, "modelfile", mf.get("file"), mf.get("sha256"), mf.get("size"))
        elif isinstance(mf, str):
            directives = [line.rstrip() for line in mf.splitlines() if line.strip()]
            if any(line.strip().upper().startswith("FROM ") for line in directives):
                raise ConfigError(
                    f"models[{i}].modelfile",
                    "FROM ...",
                    "directives without FROM",
                    "the FROM line is written by llmkit and names the verified file",
                )
        elif mf is not None:
            raise ConfigError(f"models[{i}].modelfile", mf, "Modelfile text or {file, sha256}", "invalid")
        ctx = entry.get("context_length")
        if ctx and not any(line.split()[:2] == ["PARAMETER", "num_ctx"] for line in directives):
            directives.append(f"PARAMETER num_ctx {int(ctx)}")
        specs.append(
            ModelSpec(
                served=served, source="mirror", gguf=gguf, modelfile=modelfile, directives=tuple(directives)
            )
        )
    seen: set[str] = set()
    for spec in specs:
        if spec.served in seen:
            raise ConfigError("models", spec.served, "each model once", "duplicate model")
        seen.add(spec.served)
    return specs


def staging_dir(settings: OllamaSettings, spec: ModelSpec) -> str:
    parent = posixpath.dirname(settings.models_path.rstrip("/"))
    return f"{parent}/{STAGING_DIR_NAME}/{re.sub(r'[^A-Za-z0-9._-]', '_', spec.served)}"


def blob_path(settings: OllamaSettings, sha256: str) -> str:
    return f"{settings.models_path}/blobs/sha256-{sha256}"


def ollama_cli(settings: OllamaSettings, *args: str) -> str:
    return f"OLLAMA_HOST={shlex.quote(settings.client_host)} ollama " + " ".join(shlex.quote(a) for a in args)


def modelfile_text(gguf_path: str, directives: tuple[str, ...]) -> str:
    return "\n".join([f"FROM {gguf_path}", *directives]) + "\n"


def merge_modelfile_command(
    gguf_path: str, mirror_modelfile: str, dest: str, directives: tuple[str, ...]
) -> str:
    """Modelfile = our FROM + the mirror Modelfile without its FROM lines + our directives."""
    extra = "".join(f"; echo {shlex.quote(d)}" for d in directives)
    return (
        f"{{ echo {shlex.quote('FROM ' + gguf_path)}; "
        f"grep -v -i -E '^[[:space:]]*FROM[[:space:]]' {shlex.quote(mirror_modelfile)} || true{extra}; }}"
        f" > {shlex.quote(dest)}"
    )


def to_prune(installed: list[InstalledModel], specs: list[ModelSpec]) -> list[str]:
    wanted = {s.served for s in specs}
    return [m.name for m in installed if m.name not in wanted]


def mirror_model(settings: OllamaSettings, spec: ModelSpec, mirror: str) -> None:
    assert spec.gguf is not None
    stage = staging_dir(settings, spec)
    gguf_path = f"{stage}/{spec.gguf.basename}"
    modelfile_path = f"{stage}/Modelfile"
    files.directory(
        name=f"Staging directory for {spec.served}", path=stage, user="root", group="root", mode="0700"
    )
    verified_download(
        name=f"Download {spec.gguf.path} for {spec.served}",
        src=f"{mirror}/{spec.gguf.path}",
        dest=gguf_path,
        sha256=spec.gguf.sha256,
        size=spec.gguf.size,
    )
    if spec.modelfile is not None:
        fetched = f"{stage}/Modelfile.mirror"
        verified_download(
            name=f"Download {spec.modelfile.path} for {spec.served}",
            src=f"{mirror}/{spec.modelfile.path}",
            dest=fetched,
            sha256=spec.modelfile.sha256,
            size=spec.modelfile.size,
        )
        server.shell(
            name=f"Modelfile for {spec.served} (FROM the verified file)",
            commands=[merge_modelfile_command(gguf_path, fetched, modelfile_path, spec.directives)],
        )
    else:
        files.put(
            name=f"Modelfile for {spec.served} (FROM the verified file)",
            src=StringIO(modelfile_text(gguf_path, spec.directives)),
            dest=modelfile_path,
            user="root",
            group="root",
            mode="0600",
        )
    server.shell(
        name=f"Create {spec.served} from {spec.gguf.basename}",
        commands=[
            ollama_cli(settings, "create", spec.served, "-f", modelfile_path),
            f"rm -rf {shlex.quote(stage)}",
        ],
    )


@deploy("Ollama models")
def models() -> None:
    settings = ollama_settings(host.data)
    specs = model_specs(host.data)
    mirror = str(host.data.get("models_mirror_url") or "").rstrip("/")
    installed = host.get_fact(OllamaModels, ollama_host=settings.client_host)
    names = {m.name for m in installed or []}

    for spec in specs:
        if spec.source == "registry":
            if spec.served in names:
                host.noop(f"{spec.served} is already served")
                continue
            server.shell(name=f"Pull {spec.served}", commands=[ollama_cli(settings, "pull", spec.served)])
            continue
        assert spec.gguf is not None
        if spec.served in names and host.get_fact(File, path=blob_path(settings, spec.gguf.sha256)):
            host.noop(f"{spec.served} is already served from sha256 {spec.gguf.sha256}")
            continue
        mirror_model(settings, spec, mirror)

    if not host.data.get("prune_models", False):
        return
    if installed is None:
        logger.warning(f"{host.name}: the Ollama server did not answer `ollama list`: pruning skipped")
        return
    for name in to_prune(installed, specs):
        server.shell(name=f"Remove unconfigured model {name}", commands=[ollama_cli(settings, "rm", name)])
