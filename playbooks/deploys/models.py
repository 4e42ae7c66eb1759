"""The models Ollama serves: pulled from the Ollama registry or built from a verified mirror file.

Host data ``models`` lists them; each entry is ``{name, source, ...}`` (the fleet's host data
adds ``tag``, ``context_length``, ``concurrency``...). The served name is ``tag`` when given,
else ``name``; ``ollama list`` reports it with ``:latest`` added when it has no tag.

- ``source: registry`` (the default): ``ollama pull <served name>`` only when ``ollama list``
  does not already show it (Ollama verifies every layer's digest as it pulls).
- ``source: mirror`` takes one of two forms; ``models_mirror_url`` (an ``http(s)://`` or
  ``file://`` URL or an absolute path, as the *host* reaches it, or ``s3://<model store>/`` on
  the AWS model hosts: the AWS CLI with the instance role) is required for both.

  - The manifest form (neither ``file`` nor ``sha256``): the deploys verify against the mirror
    manifest that ``llmkit mirror push`` published. It is read *on the host* (fact
    :class:`~playbooks.facts.mirror.MirrorManifest`: ``curl`` or ``cat``, the host's own view
    of the mirror, as the download has) from ``<models_mirror_url>/<manifest>``; ``manifest``
    (optional, a relative path like ``file``) defaults to ``models/<slug>/manifest.json``, the
    slug of the served name (``tiny-r1:latest`` -> ``models/tiny-r1-latest/manifest.json``), so
    here ``models_mirror_url`` is the mirror's *base* (where ``push --to-dir``/``--to-http``
    publish, the directory that holds ``models/``). The manifest must be of kind ``model`` with
    exactly one file of role ``gguf`` (a multi-part GGUF, role ``gguf-part``, is refused:
    ``ollama create`` takes one file) and at most one of role ``modelfile``; their sha256 and
    size, and their paths relative to the manifest's directory, stand in for ``file``,
    ``sha256``, ``size`` and ``modelfile: {file, sha256}``. ``size`` and a ``modelfile`` mapping
    are refused here (the manifest says them); an inline ``modelfile`` string and
    ``context_length`` work as below. A manifest that cannot be fetched, or is not such a
    manifest, fails the deploy with a ConfigError naming the host, ``models[i]`` and the URL.
  - The explicit form: ``file`` (path under ``models_mirror_url``), ``sha256`` and ``size`` are
    required, ``modelfile: {file, sha256}`` optional; nothing is read from the mirror before the
    download.

  Either way the GGUF goes through ``verified_download`` (free-disk preflight, resume, retries,
  sha256, atomic rename) into a root-only staging directory; the mirror Modelfile too. The
  Modelfile that is used always starts with a ``FROM`` naming the verified GGUF (any ``FROM`` of
  a downloaded Modelfile is dropped); an inline ``modelfile`` string adds directives (no
  ``FROM``), and ``context_length`` becomes ``PARAMETER num_ctx`` unless the directives set it.
  Then ``ollama create``, then the staging files are deleted (Ollama keeps its own copy as the
  blob ``sha256-<digest>``). Nothing happens when the served name is listed *and* that blob (of
  the manifest's or the entry's digest) exists. A checksum mismatch fails the download, naming
  the file, before ``ollama create`` could touch the served model.
- ``prune_models: true``: ``ollama rm`` of every listed model that is not configured, as the
  last step, so only after every configured model is in place; never when the list of
  installed models could not be read.
"""

from __future__ import annotations

import dataclasses
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
from llmkit.mirror.manifest import FileEntry, Manifest, MirrorError
from llmkit.store_layout import MODELS_PREFIX, model_slug
from playbooks.deploys.ollama import OllamaSettings, ollama_settings
from playbooks.facts.mirror import MAX_BYTES, MAX_TIME_S, MirrorManifest, local_path
from playbooks.facts.ollama import InstalledModel, OllamaModels, normalize_model_name
from playbooks.operations.download import verified_download

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")
_MIRROR_FILE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
STAGING_DIR_NAME = "llmkit-staging"
MANIFEST_ACCEPTED = (
    "a mirror manifest of kind model (`llmkit mirror push`) listing one file of role gguf "
    "and at most one of role modelfile, under paths of letters, digits, '.', '_', '-' and '/'"
)


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
    gguf: MirrorFile | None = None  # None for the manifest form until resolve_manifest()
    modelfile: MirrorFile | None = None
    directives: tuple[str, ...] = ()
    manifest: str | None = None  # the manifest form: its path under models_mirror_url
    manifest_default: bool = False  # ... derived from the served name, not given as `manifest`
    key: str = "models"  # "models[i]", for errors


def default_manifest(served: str) -> str:
    """Where ``llmkit mirror push`` puts a model's manifest under the mirror base."""
    return f"{MODELS_PREFIX}{model_slug(served)}/manifest.json"


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
        if mirror_url and not re.match(r"^((https?|file|s3)://\S+|/\S*)$", str(mirror_url)):
            raise ConfigError(
                "models_mirror_url",
                mirror_url,
                "an http(s)://, file:// or s3://bucket/ URL or an absolute path on the host",
                "the host fetches from it with curl (or the AWS CLI for s3://)",
            )
        if not mirror_url:
            raise ConfigError(
                "models_mirror_url", None, "an http(s):// or file:// URL", f"models[{i}] needs a mirror"
            )
        by_manifest = entry.get("file") is None and entry.get("sha256") is None
        gguf: MirrorFile | None = None
        manifest: str | None = None
        if by_manifest:
            if entry.get("size") is not None:
                raise ConfigError(
                    f"models[{i}].size",
                    entry.get("size"),
                    "file, sha256 and size together, or none of them (the manifest form)",
                    "without file and sha256 the mirror manifest gives the size",
                )
            raw_manifest = entry.get("manifest")
            manifest = default_manifest(served) if raw_manifest is None else str(raw_manifest)
            if not _MIRROR_FILE.match(manifest) or ".." in manifest.split("/"):
                raise ConfigError(
                    f"models[{i}].manifest",
                    raw_manifest,
                    "a relative path under models_mirror_url",
                    "invalid mirror manifest path",
                )
        else:
            if entry.get("manifest") is not None:
                raise ConfigError(
                    f"models[{i}].manifest",
                    entry.get("manifest"),
                    "manifest, or file with sha256 and size",
                    "a mirror model is described by its manifest or by file/sha256/size, not both",
                )
            if entry.get("size") is None:
                raise ConfigError(
                    f"models[{i}].size", None, "a size in bytes", "a mirror model needs its size"
                )
            gguf = _mirror_file(i, "file", entry.get("file"), entry.get("sha256"), entry.get("size"))
        modelfile: MirrorFile | None = None
        directives: list[str] = []
        mf = entry.get("modelfile")
        if isinstance(mf, Mapping) and by_manifest:
            raise ConfigError(
                f"models[{i}].modelfile",
                dict(mf),
                "Modelfile directives as text (the manifest names the mirror Modelfile)",
                "a manifest-form model takes its Modelfile from the manifest (role modelfile)",
            )
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
                served=served,
                source="mirror",
                gguf=gguf,
                modelfile=modelfile,
                directives=tuple(directives),
                manifest=manifest,
                manifest_default=by_manifest and entry.get("manifest") is None,
                key=f"models[{i}]",
            )
        )
    seen: set[str] = set()
    for spec in specs:
        if spec.served in seen:
            raise ConfigError("models", spec.served, "each model once", "duplicate model")
        seen.add(spec.served)
    return specs


def manifest_url(mirror: str, spec: ModelSpec) -> str:
    """``<models_mirror_url>/<manifest>`` (``mirror`` without its trailing slash)."""
    assert spec.manifest is not None
    return f"{mirror}/{spec.manifest}"


def resolve_manifest(spec: ModelSpec, text: str | None, url: str, host_name: str) -> ModelSpec:
    """``spec`` with ``gguf`` and ``modelfile`` from the manifest text the host read at ``url``.

    ConfigError naming the host, ``models[i]``, the URL and the problem when the text is missing
    (the host could not fetch it) or is not a single-file model manifest.
    """
    assert spec.manifest is not None

    def refuse(problem: str) -> ConfigError:
        return ConfigError(spec.key, url, MANIFEST_ACCEPTED, problem, source=host_name)

    if text is None:
        hint = (
            f" (models_mirror_url is the mirror's base here: the manifest defaults to "
            f"{spec.manifest} under it; set `manifest` to its path otherwise)"
            if spec.manifest_default
            else ""
        )
        path = local_path(url)
        if path is not None:
            check = f"check {path} there"
        elif url.startswith("s3://"):
            check = f"run `aws s3 cp {url} -` there (the instance role, the S3 endpoint)"
        else:
            check = f"run `curl -fsSL {url}` there"
        raise refuse(
            "the host could not fetch the mirror manifest (unreachable, HTTP error, missing or "
            f"unreadable file, over {MAX_BYTES >> 20} MiB or over {MAX_TIME_S} s: {check} to see why){hint}"
        )
    try:
        manifest = Manifest.loads(text, url)
    except MirrorError as exc:
        raise refuse(f"invalid mirror manifest: {exc}") from None
    if manifest.kind != "model":
        raise refuse(f"the mirror manifest is of kind {manifest.kind!r}, not 'model'")
    parts = [f.path for f in manifest.files if f.role == "gguf-part"]
    if parts:
        raise refuse(
            f"the mirror manifest lists a multi-part GGUF ({', '.join(parts)}): `ollama create` builds "
            "from one file, so merge the parts (llama-gguf-split --merge) and publish that"
        )
    ggufs = [f for f in manifest.files if f.role == "gguf"]
    if len(ggufs) != 1:
        raise refuse(f"the mirror manifest lists {len(ggufs)} files of role gguf, not exactly one")
    modelfiles = [f for f in manifest.files if f.role == "modelfile"]
    if len(modelfiles) > 1:
        raise refuse(f"the mirror manifest lists {len(modelfiles)} files of role modelfile, not at most one")
    base = posixpath.dirname(spec.manifest)

    def mirror_file(entry: FileEntry) -> MirrorFile:
        path = posixpath.join(base, entry.path) if base else entry.path
        if not _MIRROR_FILE.match(path) or ".." in path.split("/"):
            raise refuse(f"the mirror manifest lists a path the deploys do not fetch: {entry.path!r}")
        if entry.size < 1:
            raise refuse(f"the mirror manifest gives {entry.path} the size {entry.size}")
        return MirrorFile(path=path, sha256=entry.sha256, size=entry.size)

    return dataclasses.replace(
        spec,
        gguf=mirror_file(ggufs[0]),
        modelfile=mirror_file(modelfiles[0]) if modelfiles else None,
    )


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
        if spec.manifest is not None:
            url = manifest_url(mirror, spec)
            spec = resolve_manifest(spec, host.get_fact(MirrorManifest, url=url), url, host.name)
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
