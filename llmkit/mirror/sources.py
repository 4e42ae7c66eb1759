"""Where a model comes from: an Ollama registry, a list of file URLs, or local files.

Each source turns into :class:`~llmkit.mirror.download.Blob` s (or local copies) and a ``source``
record for the manifest. What a registry or a server sends is data, never syntax
(:mod:`llmkit.untrusted`): a malformed answer is one line naming its source (exit 2).

- **Ollama registry** (the protocol ``ollama pull`` speaks, OCI distribution v2):
  ``GET <registry>/v2/<namespace>/<model>/manifests/<tag>`` with the manifest media types in
  ``Accept`` (at most :data:`MAX_MANIFEST_BYTES`), then ``GET /v2/<namespace>/<model>/blobs/<digest>``
  per layer and the config. A name without a namespace is ``library/<name>``. A layer's role and
  file come from its **exact** media type (:data:`LAYER_KINDS`, Ollama 0.13.3's own list):
  ``model.gguf``, ``template``, ``params.json``, ...; a layer of any other media type is refused
  (the mirror would not hold the model the registry describes), except Ollama's deprecated
  embeddings layer, which Ollama ignores and so is skipped. Text layers (template, system, params,
  messages, license) are at most :data:`MAX_TEXT_LAYER` bytes, by the manifest's word and then
  the server's. A ``Modelfile`` is written from them (:func:`modelfile_from_layers`) so that
  on-prem hosts can ``ollama create`` the same model from the mirror.
- **URL list** (Hugging Face style): lines ``URL [SHA256] [SIZE]`` (``#`` comments), or
  ``URL#sha256=<hex>``. A URL without a listed sha256 is refused before any request, unless the
  pull is told ``--allow-unverified``: then the file's sha256 is the one of the bytes received,
  and the manifest's source lists the file under ``unverified``. A server's ``ETag`` or
  ``X-Linked-Etag`` is never taken as the checksum (the server would vouch for itself).
- **Local** GGUF file(s) and a Modelfile: copied, then hashed (:mod:`llmkit.mirror.pull`).
"""

from __future__ import annotations

import http.client
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit import net, untrusted
from llmkit.files import read_inside, regular_inside
from llmkit.mirror.auth import PASSWORD_ENV, RegistryAuth
from llmkit.mirror.download import USER_AGENT, Blob
from llmkit.mirror.manifest import MirrorError, check_relpath, is_sha256
from llmkit.modelfile import DEPRECATED_PARAMETERS, PARAMETERS
from llmkit.untrusted import printable

DEFAULT_REGISTRY = "https://registry.ollama.ai"
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
MAX_MANIFEST_BYTES = 4 << 20  # the distribution registry's own limit for a manifest
MAX_TEXT_LAYER = 1 << 20  # a template, system prompt, params, messages or license layer
MAX_LAYERS = 256
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class LayerKind:
    """What a layer of one media type is: the file it is saved as, its role in the manifest."""

    file: str  # the first layer's; a repeatable kind numbers the next ones: adapter-2.gguf, license-2
    role: str
    repeatable: bool = False
    text: bool = False  # read into memory to write the Modelfile: at most MAX_TEXT_LAYER bytes


_TEMPLATE = LayerKind("template", "template", text=True)
# Ollama 0.13.3's layer media types (server/images.go), exactly; nothing is matched by suffix.
LAYER_KINDS = {
    "application/vnd.ollama.image.model": LayerKind("model.gguf", "gguf"),
    "application/vnd.ollama.image.adapter": LayerKind("adapter.gguf", "adapter", repeatable=True),
    "application/vnd.ollama.image.projector": LayerKind("projector.gguf", "projector", repeatable=True),
    "application/vnd.ollama.image.template": _TEMPLATE,
    "application/vnd.ollama.image.prompt": _TEMPLATE,  # the template's older name
    "application/vnd.ollama.image.system": LayerKind("system", "system", text=True),
    "application/vnd.ollama.image.params": LayerKind("params.json", "params", text=True),
    "application/vnd.ollama.image.messages": LayerKind("messages.json", "messages", text=True),
    "application/vnd.ollama.image.license": LayerKind("license", "license", repeatable=True, text=True),
}
# Media types that Ollama itself ignores: skipped, not fetched.
IGNORED_LAYERS = {"application/vnd.ollama.image.embed": "deprecated embeddings, which Ollama ignores"}
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
    """The body of ``url`` (at most MAX_MANIFEST_BYTES), answering the registry's challenges."""
    from llmkit.mirror.download import OPENER

    for _attempt in range(3):  # a challenge answered (token, or Basic) -> once more
        headers = {"Accept": ", ".join(accept), "User-Agent": USER_AGENT}
        if auth is not None:
            headers.update(auth.headers(url))
        req = urllib.request.Request(url, headers=headers)
        try:
            with OPENER.open(req, timeout=60) as resp:
                return net.read_bounded(resp, MAX_MANIFEST_BYTES, f"{url}: the manifest", MirrorError)
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
            raise MirrorError(f"{url}: HTTP {exc.code} {printable(exc.reason)}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise MirrorError(f"{url}: {printable(exc)}") from None
    tokens = auth.tokens_fetched if auth is not None else 0
    raise MirrorError(
        f"{url}: HTTP 401: the registry refused the credentials it asked for ({tokens} token(s) tried)"
    )


def _descriptor(raw: Any, where: str) -> tuple[str, str, int]:
    """(media type, sha256 hex, size) of a manifest's layer or config; MirrorError naming it."""
    if not isinstance(raw, dict):
        raise MirrorError(f"{where}: not an object (a descriptor with mediaType, digest and size)")
    media, digest = raw.get("mediaType"), raw.get("digest")
    if not isinstance(media, str):
        raise MirrorError(f"{where}: no mediaType")
    algo, _, hexd = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    if algo != "sha256" or not is_sha256(hexd):
        raise MirrorError(f"{where}: digest {str(digest)[:80]!r} is not sha256:<64 hex>")
    return media, hexd, untrusted.size(raw.get("size"), where, MirrorError)


def _numbered(file: str, n: int) -> str:
    if n == 1:
        return file
    stem, dot, ext = file.partition(".")
    return f"{stem}-{n}{dot}{ext}"


def registry_model(registry: str, model: str, tag: str, auth: RegistryAuth | None = None) -> RegistryModel:
    """Read the manifest and turn its config and layers into blobs to fetch."""
    base = registry.rstrip("/")
    net.check_url(base, "--registry")
    repository = model if "/" in model else f"library/{model}"
    url = f"{base}/v2/{repository}/manifests/{urllib.parse.quote(tag)}"
    raw = _get_json(url, MANIFEST_MEDIA_TYPES, auth)
    doc = untrusted.parse_json(raw, f"{url}: the manifest", MirrorError)
    if not isinstance(doc, dict):
        raise MirrorError(f"{url}: the manifest is not a JSON object")
    layers, config = doc.get("layers"), doc.get("config")
    if not isinstance(layers, list) or not layers:
        raise MirrorError(f"{url}: the manifest lists no layers")
    if len(layers) > MAX_LAYERS:
        raise MirrorError(
            f"{url}: the manifest lists {len(layers)} layers, more than the {MAX_LAYERS} accepted"
        )
    described: list[tuple[str, LayerKind | None, str, int]] = []  # (where, kind, hex, size)
    if config is not None:
        _media, hexd, size = _descriptor(config, f"{url}: config")
        described.append((f"{url}: config", None, hexd, size))
    for i, layer in enumerate(layers):
        where = f"{url}: layers[{i}]"
        media, hexd, size = _descriptor(layer, where)
        if media in IGNORED_LAYERS:
            continue
        kind = LAYER_KINDS.get(media)
        if kind is None:
            raise MirrorError(
                f"{where}: unknown media type {media[:120]!r}; a mirror holds only the layers "
                "Ollama knows (application/vnd.ollama.image.model, .template, .params, ...)"
            )
        if kind.text and size > MAX_TEXT_LAYER:
            raise MirrorError(
                f"{where}: a {kind.role} layer of {size} bytes, more than the {MAX_TEXT_LAYER} accepted"
            )
        described.append((where, kind, hexd, size))
    blobs: list[Blob] = []
    count: dict[str, int] = {}
    for where, kind, hexd, size in described:
        if kind is None:
            name, role = CONFIG_FILE, "config"
        else:
            count[kind.file] = count.get(kind.file, 0) + 1
            if count[kind.file] > 1 and not kind.repeatable:
                raise MirrorError(f"{where}: a second {kind.role} layer; a model has one")
            name, role = _numbered(kind.file, count[kind.file]), kind.role
        blobs.append(
            Blob(
                url=f"{base}/v2/{repository}/blobs/sha256:{hexd}",
                path=name,
                sha256=hexd,
                size=size,
                role=role,
                auth=auth,
            )
        )
    return RegistryModel(base, repository, tag, raw, blobs)


# --- the Modelfile -----------------------------------------------------------------------------

_FLOAT32_MAX = 3.4028234663852886e38
# Ollama's Modelfile parser has no escapes: a """ block ends at the first line end after """
# (spaces and tabs between are trimmed), and it drops every character that is not printable
# (strconv.IsPrint) other than tab, CR and LF.
_ENDS_BLOCK = re.compile(r'"""[ \t]*[\r\n]')


def _block(text: str, what: str) -> str:
    """``text`` as a Modelfile value that Ollama reads back exactly; MirrorError when it can't be."""
    dropped = next((ch for ch in text if not (ch.isprintable() or ch in "\t\r\n")), None)
    if dropped is not None:
        raise MirrorError(
            f"{what}: holds the character U+{ord(dropped):04X}, which Ollama's Modelfile parser drops; "
            "refusing to write a Modelfile that says something else than the layer"
        )
    if _ENDS_BLOCK.search(text):
        raise MirrorError(
            f'{what}: holds """ at the end of a line, which would end its quoted block in the Modelfile '
            "(and let the rest be read as directives); refused"
        )
    return f'"""{text}"""'


def _parameter(key: str, value: Any, what: str) -> list[str]:
    kind = PARAMETERS[key]
    where = f"{what}: {key}"
    if kind is list:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, str) for item in items):
            raise MirrorError(f"{where}: expected a string or a list of strings")
        return [f"PARAMETER {key} {_block(item, where)}" for item in items]
    if kind is bool:
        if not isinstance(value, bool):
            raise MirrorError(f"{where}: expected true or false")
        return [f"PARAMETER {key} {'true' if value else 'false'}"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MirrorError(f"{where}: expected a number")
    if kind is int:
        if not isinstance(value, int):
            raise MirrorError(f"{where}: expected a whole number, got {value!r}")
        return [f"PARAMETER {key} {value}"]
    number = float(value)
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        raise MirrorError(f"{where}: {value!r} is out of range")
    return [f"PARAMETER {key} {number!r}"]


def _layer_text(directory: Path, name: str, what: str) -> str | None:
    """The UTF-8 text of the layer file ``name`` (None when the model has none), bounded."""
    if regular_inside(directory, name) is None:
        return None
    try:
        data = read_inside(directory, name, limit=MAX_TEXT_LAYER)
    except OSError as exc:
        raise MirrorError(f"{what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MirrorError(f"{what}: not UTF-8 text (byte {exc.start})") from None


def _layer_files(directory: Path, kind: LayerKind) -> list[str]:
    names: list[str] = []
    while regular_inside(directory, name := _numbered(kind.file, len(names) + 1)) is not None:
        names.append(name)
    return names


def modelfile_from_layers(directory: Path, gguf: str = "model.gguf") -> str:
    """A Modelfile equivalent to the pulled layers: FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER, LICENSE.

    What the layers hold is data: each text goes into a quoted block that Ollama's parser reads
    back exactly (:func:`_block`), parameters only from Ollama's own list (:data:`PARAMETERS`)
    with values of their type; anything else is refused, naming the layer.
    """
    kinds = {kind.role: kind for kind in LAYER_KINDS.values()}
    lines = [f"FROM ./{check_relpath(gguf)}"]
    lines += [f"ADAPTER ./{name}" for name in _layer_files(directory, kinds["adapter"])]
    for role, directive in (("template", "TEMPLATE"), ("system", "SYSTEM")):
        what = f"the {role} layer ({kinds[role].file})"
        text = _layer_text(directory, kinds[role].file, what)
        if text is not None:
            lines.append(f"{directive} {_block(text, what)}")
    what = f"the params layer ({kinds['params'].file})"
    text = _layer_text(directory, kinds["params"].file, what)
    if text is not None:
        params = untrusted.parse_json(text, what, MirrorError)
        if not isinstance(params, dict):
            raise MirrorError(f"{what}: not a JSON object of parameters")
        for key, value in params.items():
            if key in DEPRECATED_PARAMETERS:
                continue
            if key not in PARAMETERS:
                raise MirrorError(
                    f"{what}: {key[:80]!r} is not one of Ollama's parameters "
                    f"({', '.join(sorted(PARAMETERS))})"
                )
            lines += _parameter(key, value, what)
    for name in _layer_files(directory, kinds["license"]):
        what = f"the license layer ({name})"
        text = _layer_text(directory, name, what)
        assert text is not None
        lines.append(f"LICENSE {_block(text, what)}")
    return "\n".join(lines) + "\n"


# --- URL lists ---------------------------------------------------------------------------------


def _url_blob(url: str, sha: str | None, size: int | None, where: str, allow_unverified: bool) -> Blob:
    parsed = net.check_url(url, where)
    if parsed.fragment.startswith("sha256="):
        sha = sha or parsed.fragment.removeprefix("sha256=")
        url = urllib.parse.urlunsplit(parsed._replace(fragment=""))
    shown = net.redact_url(url)
    if sha is not None:
        sha = sha.lower()
        if not is_sha256(sha):
            raise MirrorError(f"{where}: sha256 {sha[:80]!r} is not 64 hex digits")
    elif not allow_unverified:
        raise MirrorError(
            f"{where}: no sha256 is known for {shown}; list it (URL SHA256 in the URL list, or "
            "URL#sha256=<hex>), or pull with --allow-unverified to take the bytes as they come (the "
            "manifest then says so)"
        )
    name = urllib.parse.unquote(parsed.path.rstrip("/").rpartition("/")[2])
    if not name:
        raise MirrorError(f"{where}: {shown!r} names no file")
    role = "gguf" if name.endswith(".gguf") else "modelfile" if name == "Modelfile" else None
    return Blob(url=url, path=check_relpath(name), sha256=sha, size=size, role=role, unverified=sha is None)


def url_blobs(urls: Sequence[str], list_file: Path | None, allow_unverified: bool = False) -> list[Blob]:
    """The blobs of ``--url`` and ``--urls FILE``; without a sha256, refused unless ``allow_unverified``."""
    blobs = [_url_blob(u, None, None, "--url", allow_unverified) for u in urls]
    if list_file is not None:
        try:
            text = list_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise MirrorError(f"--urls {list_file}: {problem or exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{list_file}:{number}"
            if len(fields) > 3:
                raise MirrorError(f"{where}: expected URL [SHA256] [SIZE]")
            size = None
            if len(fields) == 3:
                if not (fields[2].isascii() and fields[2].isdigit()) or len(fields[2]) > 18:
                    raise MirrorError(f"{where}: SIZE {fields[2][:40]!r} is not a byte count")
                size = untrusted.size(int(fields[2]), where, MirrorError)
            blobs.append(
                _url_blob(fields[0], fields[1] if len(fields) > 1 else None, size, where, allow_unverified)
            )
    names = [b.path for b in blobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MirrorError(f"two URLs save to the same file name: {', '.join(dupes)}")
    if not blobs:
        raise MirrorError("no URLs given (--url URL or --urls FILE)")
    return blobs
