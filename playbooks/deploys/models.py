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
  sha256, atomic rename) into a root-only staging directory. The mirror Modelfile (at most 1 MiB)
  is read on the host (fact :class:`MirrorBytes`) and checked here against its sha256 and size.
  A Modelfile is data, never syntax: it is parsed here as Ollama parses it, every directive must
  be on the whitelist (TEMPLATE, SYSTEM, LICENSE, MESSAGE with a known role, PARAMETER with a
  known name; see :data:`MODELFILE_PARAMETERS`; ADAPTER and anything else is refused, so is an
  unterminated quote), and the Modelfile the host gets is written anew from the checked directives:
  a ``FROM`` naming the verified GGUF (any ``FROM`` of the mirror's is dropped), the mirror's
  directives, then the entry's. An inline ``modelfile`` string adds directives under the same
  whitelist (no ``FROM``), and ``context_length`` becomes ``PARAMETER num_ctx`` unless the
  directives set it. A refused Modelfile fails the deploy before any command, naming
  ``models[i].modelfile``, the URL and the line.
  Then ``ollama create``, then the staging files are deleted (Ollama keeps its own copy as the
  blob ``sha256-<digest>``). Nothing happens when the served name is listed *and* that blob (of
  the manifest's or the entry's digest) exists. A checksum mismatch fails the download, naming
  the file, before ``ollama create`` could touch the served model.
- ``prune_models: true``: ``ollama rm`` of every listed model that is not configured, as the
  last step, so only after every configured model is in place; never when the list of
  installed models could not be read.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from llmkit.artifacts import is_sha256
from llmkit.errors import ConfigError
from llmkit.mirror.manifest import FileEntry, Manifest, MirrorError
from llmkit.modelfile import PARAMETERS
from llmkit.store_layout import MODELS_PREFIX, model_slug
from playbooks.deploys.host_paths import mirror_location
from playbooks.deploys.ollama import OllamaSettings, check_on_host, ollama_settings
from playbooks.facts.mirror import (
    CONNECT_TIMEOUT_S,
    MAX_BYTES,
    MAX_TIME_S,
    OK_MARKER,
    UNAVAILABLE_MARKER,
    MirrorManifest,
    local_path,
    parse_fetched,
)
from playbooks.facts.ollama import InstalledModel, OllamaModels, normalize_model_name
from playbooks.operations.download import verified_download

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")
_MIRROR_FILE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
STAGING_DIR_NAME = "llmkit-staging"
MANIFEST_ACCEPTED = (
    "a mirror manifest of kind model (`llmkit mirror push`) listing one file of role gguf "
    "and at most one of role modelfile, under paths of letters, digits, '.', '_', '-' and '/'"
)


# --- Modelfiles: parsed as Ollama parses them, checked against a whitelist, written anew -----------
#
# A mirror Modelfile is data from the mirror (and, through `llmkit mirror pull`, from a registry):
# it may only set what a served model needs. It is parsed here, on the controller, by a port of
# Ollama's own parser (ollama/parser/parser.go, v0.13.3: the same states, quotes and newlines), each
# directive is checked against the whitelist below, and the Modelfile the host gets is written anew
# from the parsed directives (values quoted by :func:`_render_value`), after llmkit's own FROM. So
# Ollama never parses the mirror's bytes: whatever a crafted file hides (a newline or a carriage
# return in a value, an open """ block, a character Ollama drops), the host receives only the
# checked directives in a form whose parse is unambiguous (checked again by parsing it back).

#: The directives a Modelfile may hold (lower case; Ollama's names are case-insensitive). FROM is
#: accepted in a mirror Modelfile but dropped: llmkit writes its own FROM naming the verified GGUF.
#: Not accepted: ADAPTER (a LoRA from a path the file names), RENDERER and PARSER (code paths
#: chosen by name), and anything Ollama does not know.
MODELFILE_DIRECTIVES = ("from", "template", "system", "license", "parameter", "message")
#: PARAMETER names accepted (Ollama 0.13's api.Options and api.Runner fields a Modelfile may set).
MODELFILE_PARAMETERS = frozenset(PARAMETERS)
MESSAGE_ROLES = ("system", "user", "assistant")
_OLLAMA_COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "renderer",
    "parser",
    "parameter",
    "message",
)
_TRIPLE = '"""'
_PLAIN_VALUE = re.compile(r'^[^\s"]+$')


class ModelfileError(ValueError):
    """A Modelfile that is not accepted; ``line`` is 1-based (0: the file as a whole)."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}" if line else problem)


@dataclass(frozen=True)
class Directive:
    """One Modelfile directive: ``name`` (lower case), the PARAMETER name or MESSAGE role, the value."""

    name: str
    value: str
    key: str | None = None  # PARAMETER's name, MESSAGE's role
    line: int = 0


def _unquote(text: str) -> tuple[str, bool]:
    """Ollama's ``unquote``: (value, complete)."""
    if text.startswith(_TRIPLE):
        if len(text) >= 6 and text.endswith(_TRIPLE):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


def _is_space(char: str) -> bool:
    return char in " \t"


def _is_newline(char: str) -> bool:
    return char in "\r\n"


def _is_alpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)


def _next_state(char: str, state: int) -> tuple[int, str | None]:
    """Ollama's ``parseRuneForState``: the next state and the character it passes on (None: none)."""
    if state == _NIL:
        if char == "#":
            return _COMMENT, None
        if _is_space(char) or _is_newline(char):
            return _NIL, None
        return _NAME, char
    if state == _NAME:
        if _is_alpha(char):
            return _NAME, char
        if _is_space(char):
            return _VALUE, None
        raise ModelfileError(0, "a directive's name is letters, then a space and its value")
    if state == _VALUE:
        return (_NIL if _is_space(char) or _is_newline(char) else _VALUE), char
    if state in (_PARAMETER, _MESSAGE):
        if _is_alpha(char) or (state == _PARAMETER and ("0" <= char <= "9" or char == "_")):
            return state, char
        if _is_space(char):
            return _VALUE, None
        raise ModelfileError(0, "PARAMETER and MESSAGE take a name, then a space and the value")
    return (_NIL if _is_newline(char) else _COMMENT), None


def parse_modelfile(text: str) -> list[Directive]:
    """The directives of a Modelfile, as Ollama 0.13.3's parser reads them; ModelfileError otherwise.

    A port of ``parser.ParseFile``: a value ends at a newline (``\\r`` or ``\\n``) where it is
    complete (unquoted, ``"..."`` or triple-quoted), so an open quote runs on over the following
    lines; characters that are not printable are dropped, as Go's ``strconv.IsPrint`` drops them.
    An unterminated quote is refused (Ollama refuses it too, at ``ollama create``).
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    directives: list[Directive] = []
    state, line, start = _NIL, 1, 1
    buffer: list[str] = []
    command, key = "", None
    for char in text:
        if _is_newline(char):
            line += 1
        try:
            following, passed = _next_state(char, state)
        except ModelfileError as error:
            raise ModelfileError(line, f"{error.problem} (at {''.join([*buffer, char])!r})") from None
        if following != state:
            if state == _NAME:
                word = "".join(buffer)
                command, key = word.lower(), None
                if command not in _OLLAMA_COMMANDS:
                    raise ModelfileError(line, f"{word!r} is not a Modelfile directive")
                if command == "parameter":
                    following = _PARAMETER
                elif command == "message":
                    following = _MESSAGE
            elif state == _PARAMETER:
                key = "".join(buffer)
            elif state == _MESSAGE:
                key = "".join(buffer)
                if key not in MESSAGE_ROLES:
                    raise ModelfileError(line, f"MESSAGE role {key!r}: one of {', '.join(MESSAGE_ROLES)}")
            elif state == _VALUE:
                assert passed is not None
                value, complete = _unquote("".join(buffer).strip())
                if not complete or _is_space(passed):
                    buffer.append(passed)
                    continue
                directives.append(Directive(command, value, key, start))
            elif following == _NAME:
                start = line
            buffer = []
            state = following
        if passed is not None and passed.isprintable():
            buffer.append(passed)
    if state == _VALUE:
        value, complete = _unquote("".join(buffer).strip())
        if not complete:
            opener = _TRIPLE if "".join(buffer).strip().startswith(_TRIPLE) else '"'
            raise ModelfileError(start, f"the {command.upper()} value opens {opener} and never closes it")
        directives.append(Directive(command, value, key, start))
    elif state not in (_NIL, _COMMENT):
        raise ModelfileError(start, f"{(command or ''.join(buffer)).upper()} has no value")
    return directives


MODELFILE_ACCEPTED = (
    "TEMPLATE, SYSTEM, LICENSE, MESSAGE system|user|assistant and PARAMETER "
    + "|".join(sorted(MODELFILE_PARAMETERS))
    + ", with complete quotes (FROM only in a mirror Modelfile, where llmkit replaces it)"
)


def check_directives(directives: Iterable[Directive], *, from_allowed: bool) -> list[Directive]:
    """The accepted directives (FROM dropped where allowed); ModelfileError on the first one refused."""
    accepted: list[Directive] = []
    for directive in directives:
        name = directive.name.upper()
        if directive.name == "from":
            if not from_allowed:
                raise ModelfileError(directive.line, "FROM is written by llmkit and names the verified file")
            continue
        if directive.name not in MODELFILE_DIRECTIVES:
            raise ModelfileError(directive.line, f"{name} is not accepted")
        if directive.name == "parameter":
            if directive.key not in MODELFILE_PARAMETERS:
                raise ModelfileError(directive.line, f"PARAMETER {directive.key} is not accepted")
            if "\n" in directive.value or not directive.value.strip():
                raise ModelfileError(directive.line, f"PARAMETER {directive.key} needs a value on its line")
        if _TRIPLE in directive.value:
            raise ModelfileError(
                directive.line, f'the {name} value holds """, which no Modelfile quote can hold'
            )
        if "\r" in directive.value:
            raise ModelfileError(directive.line, f"the {name} value holds a carriage return")
        accepted.append(directive)
    return accepted


def _render_value(value: str, *, parameter: bool) -> str:
    """``value`` as Ollama reads it back: bare (one word), in double quotes (a PARAMETER value) or
    triple-quoted. A value holding three quotes in a row or a carriage return is refused before."""
    if _PLAIN_VALUE.match(value):
        return value
    if parameter and not value.startswith('"'):
        return f'"{value}"'
    return f"{_TRIPLE}{value}{_TRIPLE}"


def render_directive(directive: Directive) -> str:
    parts = [directive.name.upper()]
    if directive.key is not None:
        parts.append(directive.key)
    return " ".join([*parts, _render_value(directive.value, parameter=directive.name == "parameter")])


def render_modelfile(gguf_path: str, directives: Iterable[Directive]) -> str:
    """FROM ``gguf_path``, then ``directives`` (checked), each written anew and parsed back to prove it."""
    checked = check_directives(directives, from_allowed=False)
    text = "\n".join([f"FROM {gguf_path}", *(render_directive(d) for d in checked)]) + "\n"
    back = [(d.name, d.key, d.value) for d in parse_modelfile(text)]
    if back != [("from", None, gguf_path), *((d.name, d.key, d.value) for d in checked)]:
        raise ModelfileError(0, "the Modelfile written does not parse back to its directives")
    return text


def parse_directives(text: str, *, from_allowed: bool) -> list[Directive]:
    """Parse and check Modelfile text; ModelfileError names the line and what is wrong."""
    return check_directives(parse_modelfile(text), from_allowed=from_allowed)


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
    directives: tuple[Directive, ...] = ()  # checked; after the mirror Modelfile's
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
        mirror_location("models_mirror_url", mirror_url)
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
        directives: list[Directive] = []
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
            try:
                directives = parse_directives(mf, from_allowed=False)
            except ModelfileError as error:
                raise ConfigError(f"models[{i}].modelfile", mf, MODELFILE_ACCEPTED, str(error)) from None
        elif mf is not None:
            raise ConfigError(f"models[{i}].modelfile", mf, "Modelfile text or {file, sha256}", "invalid")
        ctx = entry.get("context_length")
        if ctx and not any(d.name == "parameter" and d.key == "num_ctx" for d in directives):
            if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1:
                raise ConfigError(f"models[{i}].context_length", ctx, "a number of tokens", "invalid")
            directives.append(Directive("parameter", str(ctx), "num_ctx"))
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


def modelfile_text(gguf_path: str, directives: Iterable[Directive]) -> str:
    """The Modelfile of a model without a mirror Modelfile: our FROM and the entry's directives."""
    return render_modelfile(gguf_path, directives)


def merged_modelfile(gguf_path: str, mirror_text: str, directives: Iterable[Directive]) -> str:
    """Our FROM, the mirror Modelfile's accepted directives (its FROM dropped), then ours.

    ModelfileError when the mirror Modelfile holds a directive, PARAMETER or MESSAGE role that is not
    accepted, an unterminated quote, or anything Ollama's parser refuses.
    """
    return render_modelfile(gguf_path, [*parse_directives(mirror_text, from_allowed=True), *directives])


def fetch_base64_command(url: str) -> str:
    """Print the file at ``url`` (at most MAX_BYTES) as one base64 line after OK_MARKER, as the host
    reads it (``cat`` of a mounted mirror, ``aws s3 cp``, ``curl``), or UNAVAILABLE_MARKER; exit 0."""
    path = local_path(url)
    if path is not None:
        get = f'[ -f {shlex.quote(path)} ] && cat -- {shlex.quote(path)} > "$t"'
    elif url.startswith("s3://"):
        get = f'aws s3 cp --only-show-errors {shlex.quote(url)} "$t"'
    else:
        get = (
            f"curl -fsSL --connect-timeout {CONNECT_TIMEOUT_S} --max-time {MAX_TIME_S} "
            f'--max-filesize {MAX_BYTES} -o "$t" {shlex.quote(url)}'
        )
    return (
        f't=$(mktemp) && {{ if {get} && [ "$(wc -c < "$t")" -le {MAX_BYTES} ]; then '
        f'printf \'%s\\n\' {OK_MARKER} "$(base64 -w0 < "$t")"; else echo {UNAVAILABLE_MARKER}; fi; '
        'rm -f "$t"; }'
    )


class MirrorBytes(FactBase[bytes | None]):
    """A small mirror file (a Modelfile) as the host reads it; None when it cannot (see
    :func:`fetch_base64_command`). Its checksum is checked by the deploy."""

    def command(self, url: str) -> str:
        return fetch_base64_command(url)

    def process(self, output: list[str]) -> bytes | None:
        text = parse_fetched(output)
        if text is None:
            return None
        try:
            return base64.b64decode(text.strip(), validate=True)
        except ValueError:
            return None


def mirror_modelfile(spec: ModelSpec, data: bytes | None, url: str, host_name: str) -> str:
    """The mirror Modelfile's text once its size and sha256 are checked; ConfigError otherwise."""
    assert spec.modelfile is not None
    key = f"{spec.key}.modelfile"

    def refuse(problem: str) -> ConfigError:
        accepted = "the file the host reads there, with the published sha256 and size, as UTF-8 text"
        return ConfigError(key, url, accepted, problem, source=host_name)

    if data is None:
        raise refuse(
            "the host could not fetch the mirror Modelfile (unreachable, missing, unreadable or over "
            f"{MAX_BYTES >> 20} MiB)"
        )
    if spec.modelfile.size is not None and len(data) != spec.modelfile.size:
        raise refuse(f"the mirror Modelfile has {len(data)} bytes, not {spec.modelfile.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.modelfile.sha256:
        raise refuse(f"the mirror Modelfile has sha256 {digest}, not {spec.modelfile.sha256}: refusing it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("the mirror Modelfile is not UTF-8 text") from None


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
        url = f"{mirror}/{spec.modelfile.path}"
        text = mirror_modelfile(spec, host.get_fact(MirrorBytes, url=url), url, host.name)
        try:
            content = merged_modelfile(gguf_path, text, spec.directives)
        except ModelfileError as error:
            raise ConfigError(
                f"{spec.key}.modelfile",
                url,
                MODELFILE_ACCEPTED,
                f"mirror Modelfile {error}",
                source=host.name,
            ) from None
    else:
        content = modelfile_text(gguf_path, spec.directives)
    files.put(
        name=f"Modelfile for {spec.served} (FROM the verified file)",
        src=StringIO(content),
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
    check_on_host(settings)
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
