"""The hosts' wheels for the bootstrap bundle: a hash-locked requirements file -> wheel files.

The requirements file is pip's hash-checking format, as ``uv pip compile --generate-hashes``
writes it (``playbooks/files/host-requirements.txt``): every line ``name==version [; marker]``
with one or more ``--hash=sha256:<hex>``. Nothing else is accepted (no ranges, no ``-r``, no
URLs): the bundle must hold exactly what the lock names.

For each target (a CPython version, a CPU architecture, the oldest glibc of the hosts) every
pin whose marker applies gets one wheel: the most specific one the target's interpreter accepts
(the order of :func:`packaging.tags.cpython_tags`, as pip ranks them), among the index's files of
that exact version **whose sha256 the lock lists**. A file the index lists with another digest is
never chosen; a file whose bytes do not match the digest is refused when it lands
(:func:`llmkit.mirror.download.fetch_all`). The hosts' pip checks the same hashes again
(``requirements.txt`` in the bundle puts it in hash-checking mode).

Sources: a simple repository (PEP 503 HTML or PEP 691 JSON: PyPI, devpi, Artifactory, Nexus)
or a flat directory of wheel files (``--find-links DIR``). An index is read under the kit's HTTP
policy (:mod:`llmkit.net`): credentials in ``--index-url`` (``https://user:token@host/...``)
become a Basic header for the index's own origin only (never over plain http except to loopback,
never to a redirect target elsewhere), a project page is at most :data:`MAX_INDEX_PAGE` bytes,
and only its http(s) links are considered.
"""

from __future__ import annotations

import html.parser
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from llmkit import net, untrusted
from llmkit.mirror.download import USER_AGENT, Blob
from llmkit.mirror.manifest import MirrorError, sha256_file
from llmkit.net import redact_url, same_origin
from llmkit.untrusted import printable

DEFAULT_INDEX = "https://pypi.org/simple/"
# The hosts' CPython versions: Ubuntu 22.04 (the fleet's default Deep Learning AMI), Debian 12,
# Ubuntu 24.04.
DEFAULT_PYTHONS = ("3.10", "3.11", "3.12")
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The oldest glibc among those hosts (Ubuntu 22.04: 2.35; Debian 12: 2.36; Ubuntu 24.04: 2.39).
DEFAULT_GLIBC = "2.35"
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
# The oldest manylinux glibc per machine (PEP 600 tags start there).
_OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17}
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_HASH = re.compile(r"--hash[=\s]+([A-Za-z0-9]+):([0-9A-Fa-f]+)")
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
MAX_INDEX_PAGE = 64 << 20  # PyPI's largest project pages are a few MiB
_OPENER = net.opener()


@dataclass(frozen=True)
class Pin:
    """One locked requirement: ``name==version``, its marker, the sha256 digests it allows."""

    name: str  # canonical
    version: str
    marker: Marker | None
    hashes: frozenset[str]
    line: int

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def read_requirements(path: Path) -> list[Pin]:
    """The pins of a hash-locked requirements file; a MirrorError names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MirrorError(f"{path}: cannot read the requirements ({exc.strerror})") from None
    pins: list[Pin] = []
    logical = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            pins.append(_pin(path, start, logical.strip()))
        logical = ""
    if logical.strip():
        pins.append(_pin(path, start, logical.strip()))
    if not pins:
        raise MirrorError(f"{path}: no requirements")
    seen: dict[tuple[str, str], int] = {}
    for pin in pins:
        key = (pin.name, str(pin.marker))
        if key in seen:
            raise MirrorError(f"{path}:{pin.line}: {pin.name} is pinned twice (also line {seen[key]})")
        seen[key] = pin.line
    return pins


def _pin(path: Path, line: int, text: str) -> Pin:
    where = f"{path}:{line}"
    spec = text.split("--hash", 1)[0].strip()
    if spec.startswith("-"):
        raise MirrorError(
            f"{where}: {spec.split()[0]} is not supported (only name==version --hash=sha256:...)"
        )
    try:
        req = Requirement(spec)
    except InvalidRequirement as exc:
        raise MirrorError(f"{where}: {spec!r} is not a requirement ({exc})") from None
    specifiers = list(req.specifier)
    if req.url or len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
        raise MirrorError(f"{where}: {spec!r} must pin one exact version (name==version)")
    hashes: set[str] = set()
    for algo, digest in _HASH.findall(text):
        if algo.lower() != "sha256" or len(digest) != 64:
            raise MirrorError(f"{where}: --hash={algo}:{digest[:12]}... (only sha256:<64 hex> is accepted)")
        hashes.add(digest.lower())
    if not hashes:
        raise MirrorError(
            f"{where}: {req.name} has no --hash=sha256:...; the bundle takes hash-locked pins only"
        )
    return Pin(canonicalize_name(req.name), specifiers[0].version, req.marker, frozenset(hashes), line)


# --- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A host interpreter: CPython ``python`` on Linux ``arch`` with at least glibc ``glibc``."""

    python: tuple[int, int]
    arch: str  # amd64 | arm64
    glibc: tuple[int, int]

    @property
    def machine(self) -> str:
        return MACHINES[self.arch]

    @property
    def abi(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}"

    @property
    def label(self) -> str:
        return f"{self.abi}-manylinux_{self.glibc[0]}_{self.glibc[1]}_{self.machine}"

    def platforms(self) -> list[str]:
        out: list[str] = []
        for minor in range(self.glibc[1], _OLDEST_GLIBC[self.machine] - 1, -1):
            out.append(f"manylinux_2_{minor}_{self.machine}")
            legacy = _LEGACY.get(minor)
            if legacy and (legacy == "manylinux2014" or self.machine == "x86_64"):
                out.append(f"{legacy}_{self.machine}")
        return out

    def tags(self) -> list[Tag]:
        """Every tag this interpreter installs, most preferred first (pip's order)."""
        platforms = self.platforms()
        return [
            *cpython_tags(self.python, abis=[self.abi], platforms=platforms),
            *compatible_tags(self.python, self.abi, platforms),
        ]

    def environment(self) -> dict[str, str]:
        """PEP 508 marker values of this interpreter."""
        version = f"{self.python[0]}.{self.python[1]}"
        return {
            "python_version": version,
            "python_full_version": f"{version}.0",
            "implementation_name": "cpython",
            "implementation_version": f"{version}.0",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": self.machine,
            "os_name": "posix",
            "platform_release": "",
            "platform_version": "",
            "extra": "",
        }


def targets(pythons: Sequence[str], arches: Sequence[str], glibc: str) -> list[Target]:
    """The targets of ``--python`` x ``--arch``; a MirrorError names a bad value."""
    out: list[Target] = []
    match = re.fullmatch(r"2\.(\d+)", glibc.strip())
    if not match or int(match.group(1)) < 17:
        raise MirrorError(
            f"--glibc {glibc!r}: expected 2.N with N >= 17 (the hosts' oldest glibc, e.g. 2.35)"
        )
    glibc_version = (2, int(match.group(1)))
    for python in pythons:
        if python not in SUPPORTED_PYTHONS:
            raise MirrorError(f"--python {python!r}: expected one of {', '.join(SUPPORTED_PYTHONS)}")
        major, minor = (int(p) for p in python.split("."))
        for arch in arches:
            if arch not in MACHINES:
                raise MirrorError(f"--arch {arch!r}: expected one of {', '.join(MACHINES)}")
            out.append(Target((major, minor), arch, glibc_version))
    if not out:
        raise MirrorError("give at least one --python and one --arch")
    return out


# --- sources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    size: int | None
    # the index's credentials, for files on the index's own origin only
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``https://user:token@host/simple/`` -> (``https://host/simple/``, Basic auth header).

    urllib does not send a URL's user info; an index that needs it gets it as a header instead,
    for its own origin only (:func:`llmkit.net.split_credentials`).
    """
    return net.split_credentials(url, "--index-url")


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _sha256_fragment(url: str) -> tuple[str, str | None]:
    base, _, fragment = url.partition("#")
    algo, _, digest = fragment.partition("=")
    return base, digest.lower() if algo == "sha256" and len(digest) == 64 else None


def _remote(url: str) -> bool:
    """An index lists files by http(s) URL; any other scheme (``file:``) is never fetched."""
    return urllib.parse.urlsplit(url).scheme.lower() in net.DEFAULT_PORTS


def parse_index_page(body: bytes, content_type: str, page_url: str) -> list[IndexFile]:
    """A project page of a simple repository, JSON (PEP 691) or HTML (PEP 503): its http(s) files."""
    files: list[IndexFile] = []
    shown = redact_url(page_url)
    if JSON_ACCEPT in content_type or content_type.startswith("application/json"):
        doc = untrusted.parse_json(body, f"{shown}: the project page", MirrorError)
        entries = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise MirrorError(f"{shown}: not a PEP 691 project page (no list of files)")
        for i, f in enumerate(entries):
            where = f"{shown}: files[{i}]"
            if (
                not isinstance(f, dict)
                or not isinstance(f.get("filename"), str)
                or not isinstance(f.get("url"), str)
            ):
                raise MirrorError(f"{where}: not a PEP 691 file (filename and url strings)")
            hashes = f.get("hashes") or {}
            digest = hashes.get("sha256") if isinstance(hashes, dict) else None
            size = f.get("size")
            url, fragment_sha = _sha256_fragment(urllib.parse.urljoin(page_url, f["url"]))
            sha = (digest if isinstance(digest, str) else None) or fragment_sha
            if not _remote(url):
                continue
            files.append(
                IndexFile(
                    f["filename"],
                    url,
                    sha.lower() if sha else None,
                    untrusted.size(size, where, MirrorError) if size is not None else None,
                )
            )
        return files
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    for href, text in parser.links:
        url, sha = _sha256_fragment(urllib.parse.urljoin(page_url, href))
        if not _remote(url):
            continue
        name = text or urllib.parse.unquote(url.rsplit("/", 1)[-1])
        files.append(IndexFile(name, url, sha, None))
    return files


def index_files(index_url: str, name: str) -> list[IndexFile]:
    """The files a simple repository lists for project ``name`` (404: none)."""
    clean, credentials = split_credentials(index_url)
    page = f"{clean.rstrip('/')}/{name}/"
    shown = redact_url(page)
    req = urllib.request.Request(
        page,
        headers={"Accept": f"{JSON_ACCEPT}, text/html;q=0.1", "User-Agent": USER_AGENT, **credentials},
    )
    try:
        with _OPENER.open(req, timeout=60) as resp:
            body = net.read_bounded(resp, MAX_INDEX_PAGE, shown, MirrorError)
            content_type = resp.headers.get("Content-Type", "")
            final = resp.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise MirrorError(f"{shown}: HTTP {exc.code} {printable(exc.reason)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise MirrorError(f"{shown}: {printable(getattr(exc, 'reason', exc))}") from None
    files = parse_index_page(body, content_type, final)
    if not credentials:
        return files
    return [replace(f, headers=credentials) if same_origin(f.url, clean) else f for f in files]


def directory_files(directory: Path) -> dict[str, list[IndexFile]]:
    """A flat directory of wheels, by canonical project name; digests computed here."""
    if not directory.is_dir():
        raise MirrorError(f"--find-links {directory}: not a directory")
    out: dict[str, list[IndexFile]] = {}
    for path in sorted(directory.glob("*.whl")):
        try:
            name = parse_wheel_filename(path.name)[0]
        except InvalidWheelFilename:
            continue
        out.setdefault(str(name), []).append(
            IndexFile(path.name, path.resolve().as_uri(), sha256_file(path), path.stat().st_size)
        )
    return out


# --- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selected:
    pin: Pin
    file: IndexFile
    targets: tuple[str, ...]

    def blob(self) -> Blob:
        assert self.file.sha256 is not None
        return Blob(
            url=self.file.url,
            path=f"wheels/{self.file.filename}",
            sha256=self.file.sha256,
            size=self.file.size,
            role="pip-wheel" if self.pin.name == "pip" else "wheel",
            headers=self.file.headers,
        )


def applies(pin: Pin, target: Target) -> bool:
    return pin.marker is None or pin.marker.evaluate(target.environment())


def best_wheel(pin: Pin, files: Iterable[IndexFile], target: Target) -> IndexFile | None:
    """The locked wheel of ``pin`` that ``target`` prefers, or None."""
    rank = {tag: i for i, tag in reversed(list(enumerate(target.tags())))}
    best: tuple[int, IndexFile] | None = None
    for f in files:
        if f.sha256 not in pin.hashes or "/" in f.filename or not f.filename.endswith(".whl"):
            continue
        try:
            name, version, _build, tags = parse_wheel_filename(f.filename)
        except InvalidWheelFilename:
            continue
        if name != pin.name or version != Version(pin.version):
            continue
        score = min((rank[t] for t in tags if t in rank), default=None)
        if score is not None and (best is None or score < best[0]):
            best = (score, f)
    return best[1] if best else None


def select(
    pins: Sequence[Pin],
    wanted: Sequence[Target],
    files_of: Mapping[str, Sequence[IndexFile]],
    where: str,
) -> list[Selected]:
    """One wheel per pin and target (deduplicated); a MirrorError lists every pin left without one."""
    chosen: dict[str, Selected] = {}
    missing: list[str] = []
    for pin in pins:
        for target in wanted:
            if not applies(pin, target):
                continue
            files = files_of.get(pin.name, ())
            found = best_wheel(pin, files, target)
            if found is None:
                listed = [f for f in files if f.filename.endswith(".whl")]
                reason = (
                    "no wheels listed"
                    if not listed
                    else "none for this interpreter whose sha256 the lock lists"
                )
                missing.append(f"{pin} for {target.label} ({reason})")
                continue
            known = chosen.get(found.filename)
            labels = (*known.targets, target.label) if known else (target.label,)
            chosen[found.filename] = Selected(pin, found, labels)
    if missing:
        raise MirrorError(f"{where}: no usable wheel for: " + "; ".join(missing))
    return sorted(chosen.values(), key=lambda s: s.file.filename)
