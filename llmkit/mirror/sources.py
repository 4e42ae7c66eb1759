"""Where a model comes from: an Ollama registry, a list of file URLs, or local files.

Each source turns into :class:`~llmkit.mirror.download.Blob` s (or local copies) and a ``source``
record for the manifest.

- **Ollama registry** (the protocol ``ollama pull`` speaks, OCI distribution v2):
  ``GET <registry>/v2/<namespace>/<model>/manifests/<tag>`` with the manifest media types in
  ``Accept``, then ``GET /v2/<namespace>/<model>/blobs/<digest>`` per layer and the config. A name
  without a namespace is ``library/<name>``. Layers are saved under names by media type
  (``model.gguf``, ``template``, ``params.json``, ...); a ``Modelfile`` is written from them so that
  on-prem hosts can ``ollama create`` the same model from the mirror.
- **URL list** (Hugging Face style): lines ``URL [SHA256] [SIZE]`` (``#`` comments), or
  ``URL#sha256=<hex>``; without a listed sha256 the server's ``X-Linked-Etag`` (Hugging Face's
  LFS sha256) is used, else the pull is refused.
- **Local** GGUF file(s) and a Modelfile: copied, then hashed.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.mirror.auth import PASSWORD_ENV, RegistryAuth
from llmkit.mirror.download import USER_AGENT, Blob
from llmkit.mirror.manifest import FileEntry, MirrorError, check_relpath, is_sha256, sha256_file

DEFAULT_REGISTRY = "https://registry.ollama.ai"
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
# Ollama's layer media types -> the file each is saved as.
LAYER_FILES = {
    "application/vnd.ollama.image.model": "model.gguf",
    "application/vnd.ollama.image.projector": "projector.gguf",
    "application/vnd.ollama.image.adapter": "adapter.gguf",
    "application/vnd.ollama.image.template": "template",
    "application/vnd.ollama.image.system": "system",
    "application/vnd.ollama.image.params": "params.json",
    "application/vnd.ollama.image.license": "license",
    "application/vnd.ollama.image.messages": "messages.json",
}
LAYER_ROLES = {"application/vnd.ollama.image.model": "gguf"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def split_name(ref: str, default_tag: str = "latest") -> tuple[str, str]:
    """``MODEL[:TAG]`` -> (model, tag); a usage error names a bad one."""
    model, _, tag = ref.partition(":")
    tag = tag or default_tag
    if not _NAME.match(model) or not _TAG.match(tag):
        raise MirrorError(
            f"model {ref!r}: expected MODEL[:TAG] (lowercase, optionally namespace/name; e.g. deepseek-r1:7b)"
        )
    return model, tag


# --- Ollama registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryModel:
    registry: str
    repository: str  # namespace/model
    tag: str
    manifest: bytes
    blobs: list[Blob]


def _get_json(url: str, accept: Sequence[str], auth: RegistryAuth | None = None) -> bytes:
    from llmkit.mirror.download import OPENER

    for _attempt in range(3):  # a challenge answered (token, or Basic) -> once more
        headers = {"Accept": ", ".join(accept), "User-Agent": USER_AGENT}
        if auth is not None:
            headers.update(auth.headers(url))
        req = urllib.request.Request(url, headers=headers)
        try:
            with OPENER.open(req, timeout=60) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate") if exc.headers else None
            if exc.code == 401 and auth is not None and auth.refresh(challenge, headers.get("Authorization")):
                continue
            if exc.code == 401:
                raise MirrorError(
                    f"{url}: HTTP 401, the registry wants credentials (--registry-user and {PASSWORD_ENV})"
                    if auth is None or auth.username is None
                    else f"{url}: HTTP 401, the registry refused the credentials of {auth.username!r}"
                ) from None
            if exc.code == 404:
                raise MirrorError(f"{url}: not found in the registry (HTTP 404)") from None
            raise MirrorError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MirrorError(f"{url}: {exc}") from None
    tokens = auth.tokens_fetched if auth is not None else 0
    raise MirrorError(
        f"{url}: HTTP 401: the registry refused the credentials it asked for ({tokens} token(s) tried)"
    )


def registry_model(registry: str, model: str, tag: str, auth: RegistryAuth | None = None) -> RegistryModel:
    """Read the manifest and turn its config and layers into blobs to fetch."""
    base = registry.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise MirrorError(f"--registry {registry!r}: expected http(s)://host[:port]")
    repository = model if "/" in model else f"library/{model}"
    url = f"{base}/v2/{repository}/manifests/{urllib.parse.quote(tag)}"
    raw = _get_json(url, MANIFEST_MEDIA_TYPES, auth)
    try:
        doc = json.loads(raw)
        layers = list(doc.get("layers") or [])
        config = doc.get("config")
    except ValueError:
        raise MirrorError(f"{url}: the manifest is not JSON") from None
    if not layers:
        raise MirrorError(f"{url}: the manifest lists no layers")
    blobs: list[Blob] = []
    used: set[str] = set()
    for layer in ([config] if config else []) + layers:
        digest, media, size = layer.get("digest", ""), layer.get("mediaType", ""), layer.get("size")
        algo, _, hexd = str(digest).partition(":")
        if algo != "sha256" or not is_sha256(hexd):
            raise MirrorError(f"{url}: layer digest {digest!r} is not sha256:<64 hex>")
        name = "config.json" if layer is config else LAYER_FILES.get(media, f"blobs/sha256-{hexd}")
        if name in used:
            name = f"blobs/sha256-{hexd}"
        if name in used:
            continue  # the same blob twice
        used.add(name)
        blobs.append(
            Blob(
                url=f"{base}/v2/{repository}/blobs/{digest}",
                path=name,
                sha256=hexd,
                size=int(size) if isinstance(size, int) else None,
                role=LAYER_ROLES.get(media) or ("config" if layer is config else media.rsplit(".", 1)[-1]),
                auth=auth,
            )
        )
    return RegistryModel(base, repository, tag, raw, blobs)


def _quote_block(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile_from_layers(directory: Path, gguf: str = "model.gguf") -> str:
    """A Modelfile equivalent to the pulled layers: FROM, TEMPLATE, SYSTEM, PARAMETER, LICENSE."""
    lines = [f"FROM ./{gguf}"]
    if (directory / "adapter.gguf").is_file():
        lines.append("ADAPTER ./adapter.gguf")
    if (directory / "template").is_file():
        lines.append(f"TEMPLATE {_quote_block((directory / 'template').read_text(encoding='utf-8'))}")
    if (directory / "system").is_file():
        lines.append(f"SYSTEM {_quote_block((directory / 'system').read_text(encoding='utf-8'))}")
    if (directory / "params.json").is_file():
        params: dict[str, Any] = json.loads((directory / "params.json").read_text(encoding="utf-8"))
        for key, value in params.items():
            for item in value if isinstance(value, list) else [value]:
                text = (
                    json.dumps(item)
                    if isinstance(item, str)
                    else str(item).lower()
                    if isinstance(item, bool)
                    else str(item)
                )
                lines.append(f"PARAMETER {key} {text}")
    if (directory / "license").is_file():
        lines.append(f"LICENSE {_quote_block((directory / 'license').read_text(encoding='utf-8'))}")
    return "\n".join(lines) + "\n"


# --- URL lists ---------------------------------------------------------------------------------


def _url_blob(url: str, sha: str | None, size: int | None, where: str) -> Blob:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise MirrorError(f"{where}: {url!r} is not an http(s) URL")
    if parsed.fragment.startswith("sha256="):
        sha = sha or parsed.fragment.removeprefix("sha256=")
        url = urllib.parse.urlunsplit(parsed._replace(fragment=""))
    if sha is not None:
        sha = sha.lower()
        if not is_sha256(sha):
            raise MirrorError(f"{where}: sha256 {sha!r} is not 64 hex digits")
    name = urllib.parse.unquote(parsed.path.rstrip("/").rpartition("/")[2])
    if not name:
        raise MirrorError(f"{where}: {url!r} names no file")
    role = "gguf" if name.endswith(".gguf") else "modelfile" if name == "Modelfile" else None
    return Blob(url=url, path=check_relpath(name), sha256=sha, size=size, role=role)


def url_blobs(urls: Sequence[str], list_file: Path | None) -> list[Blob]:
    blobs = [_url_blob(u, None, None, "--url") for u in urls]
    if list_file is not None:
        try:
            text = list_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise MirrorError(f"--urls {list_file}: {exc.strerror or exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{list_file}:{number}"
            if len(fields) > 3 or (len(fields) == 3 and not fields[2].isdigit()):
                raise MirrorError(f"{where}: expected URL [SHA256] [SIZE]")
            blobs.append(
                _url_blob(
                    fields[0],
                    fields[1] if len(fields) > 1 else None,
                    int(fields[2]) if len(fields) > 2 else None,
                    where,
                )
            )
    names = [b.path for b in blobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MirrorError(f"two URLs save to the same file name: {', '.join(dupes)}")
    if not blobs:
        raise MirrorError("no URLs given (--url URL or --urls FILE)")
    return blobs


# --- local files -------------------------------------------------------------------------------


def copy_local(src: Path, directory: Path, name: str, role: str | None) -> FileEntry:
    """Copy ``src`` to ``directory/name`` (via a .part and rename) and record its digest."""
    if not src.is_file():
        raise MirrorError(f"{src}: no such file")
    dest = directory / check_relpath(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, part)
    digest = sha256_file(part)
    part.replace(dest)
    return FileEntry(name, digest, dest.stat().st_size, role)
