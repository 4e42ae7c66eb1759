"""What the lab mirror serves, built here from source: Ollama, node_exporter and a tiny model.

The lab is offline, and a checksum is never computed from a download we made ourselves
(``llmkit/data/artifacts.yaml``), so the lab does not download release binaries: it builds the
pinned versions from their Go modules with this machine's Go toolchain, packs them in the
official release layout, and publishes them with their sha256 in ``artifacts.json``; the lab
inventory then hands those checksums to the deploys exactly as an operator would.

- **Ollama** (CPU only): ``go build`` of ``github.com/ollama/ollama@v<version>`` with cgo. The
  ggml CPU backend and the llama.cpp runner are compiled into the binary through cgo, so plain
  ``go build`` gives a binary that runs models on the CPU (no cmake; ``lib/ollama/`` stays empty:
  the GPU and per-CPU-variant backends that cmake would put there are not needed). Two things the
  Go module zip lacks: Go drops every file under a ``vendor/`` subdirectory from module zips, and
  llama.cpp keeps three single-header libraries there. ``nlohmann/json`` and ``stb/stb_image.h``
  come from the Debian packages ``nlohmann-json3-dev`` and ``libstb-dev``;
  ``miniaudio/miniaudio.h`` (Debian has no package for it) is replaced by a small header whose
  decoder reports "not implemented", so only audio input to llama.cpp multimodal models is
  missing from this build. Flags as in Ollama's own build: ``-trimpath``, PIE,
  ``-X github.com/ollama/ollama/version.Version=<version>`` and ``server.mode=release``. No
  ``-march``: the binary runs on any x86-64 Debian 12 host and needs only glibc and libstdc++.
- **node_exporter**: ``CGO_ENABLED=0`` static build with Prometheus' version ldflags (the build
  date is the module's commit time, so the same inputs give the same binary).
- Tarballs are deterministic (sorted names, mtime 0, uid/gid 0, no gzip name or time), so the
  same binary always gives the same sha256.
- Builds are cached under ``<cache>/builds/<name>-<version>-<key>/``, keyed by the module, its
  version, the Go version, GOOS/GOARCH, the C compiler (cgo builds) and the whole recipe (flags,
  the replacement header). A build runs in a temporary directory next to it and is renamed into
  place only once packed and checked, so a killed build never leaves a half entry; a lock file
  serialises concurrent builds of the same thing. Each build's output goes to
  ``<cache>/logs/<entry>.log``; a failure raises :class:`BuildFailed` with the log's tail.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.artifacts import artifact
from llmkit.errors import LlmkitError
from llmkit.files import atomic_write, sha256_file
from llmkit.lab import prereqs, system, tiny_model

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_CACHE = Path("/var/cache/llmkit/lab")
CACHE_ENV = "LLMKIT_LAB_CACHE"
OLLAMA_MODULE = "github.com/ollama/ollama"
NODE_EXPORTER_MODULE = "github.com/prometheus/node_exporter"
# Bump when the way builds are made changes in a way the recipe below does not capture.
RECIPE_REVISION = 1
BUILD_TIMEOUT_S = 3600
LOG_TAIL_LINES = 40

# Debian packages that provide the headers the Ollama module zip lacks (see the docstring).
#: Headers the module zip lacks, in /usr/include (their Debian packages: llmkit/data/prereqs.yaml).
OLLAMA_HEADERS = ("nlohmann/json.hpp", "stb/stb_image.h")

# Written to llama/llama.cpp/vendor/miniaudio/miniaudio.h: the declarations mtmd-helper.cpp uses,
# every decoder call failing, so audio input is refused instead of decoded.
MINIAUDIO_STUB = """\
/* llmkit lab build: miniaudio is not in the Go module zip (vendor/ is dropped) nor in Debian.
 * Only the declarations llama.cpp's mtmd-helper.cpp uses; decoding reports MA_NOT_IMPLEMENTED,
 * so audio input to llama.cpp multimodal models fails cleanly. Text and images are unaffected. */
#ifndef LLMKIT_MINIAUDIO_STUB_H
#define LLMKIT_MINIAUDIO_STUB_H
#include <stddef.h>
#include <stdint.h>
typedef int ma_result;
typedef uint32_t ma_uint32;
typedef uint64_t ma_uint64;
typedef enum { ma_format_unknown = 0, ma_format_f32 = 5 } ma_format;
#define MA_SUCCESS 0
#define MA_NOT_IMPLEMENTED (-29)
typedef struct { ma_format format; ma_uint32 channels; ma_uint32 sampleRate; } ma_decoder_config;
typedef struct { int unused; } ma_decoder;
static inline ma_decoder_config ma_decoder_config_init(ma_format format, ma_uint32 channels, ma_uint32 rate) {
    ma_decoder_config c; c.format = format; c.channels = channels; c.sampleRate = rate; return c;
}
static inline ma_result ma_decoder_init_memory(const void *data, size_t size, const ma_decoder_config *config,
                                               ma_decoder *decoder) {
    (void)data; (void)size; (void)config; (void)decoder; return MA_NOT_IMPLEMENTED;
}
static inline ma_result ma_decoder_get_length_in_pcm_frames(ma_decoder *decoder, ma_uint64 *frames) {
    (void)decoder; *frames = 0; return MA_NOT_IMPLEMENTED;
}
static inline ma_result ma_decoder_read_pcm_frames(ma_decoder *decoder, void *out, ma_uint64 count,
                                                   ma_uint64 *read) {
    (void)decoder; (void)out; (void)count; *read = 0; return MA_NOT_IMPLEMENTED;
}
static inline ma_result ma_decoder_uninit(ma_decoder *decoder) { (void)decoder; return MA_SUCCESS; }
#endif
"""


# --- errors ------------------------------------------------------------------------------------


class LabBuildError(LlmkitError):
    """A lab artefact could not be built or published."""


class ToolMissing(LabBuildError):
    """A tool or header the build needs is not installed."""


class BuildFailed(LabBuildError):
    """A build command failed; the message ends with the tail of its log."""

    def __init__(self, what: str, command: Sequence[str], log_path: Path, detail: str) -> None:
        self.what = what
        self.command = list(command)
        self.log_path = log_path
        self.tail = log_tail(log_path)
        super().__init__(
            f"building {what} failed: `{' '.join(self.command)}` {detail}; full log: {log_path}\n"
            f"--- last lines of the log ---\n{self.tail}"
        )


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One packed build in the cache."""

    name: str
    version: str
    path: Path  # the tarball
    sha256: str
    size: int
    key: str
    cached: bool  # True when this call reused the cache
    seconds: float  # how long this call took
    log: Path

    @property
    def file(self) -> str:
        return self.path.name


# --- hashing, packing --------------------------------------------------------------------------


def write_sha256_file(path: Path) -> str:
    """``<path>.sha256`` with ``<hex>  <name>`` (``sha256sum`` format); returns the hex digest."""
    digest = sha256_file(path)
    sidecar = path.with_name(path.name + ".sha256")
    atomic_write(sidecar, f"{digest}  {path.name}\n".encode())
    return digest


def cache_key(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of everything a build depends on."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One tar member: a directory (``source`` None) or a regular file copied from ``source``."""

    name: str
    source: Path | None = None
    mode: int = 0o755


def pack_tgz(dest: Path, entries: Sequence[Entry]) -> Path:
    """A deterministic .tar.gz: sorted names, mtime 0, uid/gid 0 (root), no gzip name or time."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tar member names in {names}")
    for e in entries:
        if e.name.startswith("/") or ".." in e.name.split("/") or not e.name:
            raise ValueError(f"tar member name must be relative without '..': {e.name!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
        ):
            for e in sorted(entries, key=lambda e: e.name):
                info = tarfile.TarInfo(e.name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = e.mode
                if e.source is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                    continue
                info.size = e.source.stat().st_size
                with e.source.open("rb") as f:
                    tar.addfile(info, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def ollama_entries(binary: Path, libs: Sequence[Path] = ()) -> list[Entry]:
    """Ollama's release layout: ``bin/ollama`` and ``lib/ollama/`` (runtime libraries, if any)."""
    entries = [Entry("bin"), Entry("bin/ollama", binary, 0o755), Entry("lib"), Entry("lib/ollama")]
    entries += [Entry(f"lib/ollama/{lib.name}", lib, 0o755) for lib in libs]
    return entries


def node_exporter_entries(
    version: str, goarch: str, binary: Path, extras: Sequence[Path] = ()
) -> list[Entry]:
    """node_exporter's release layout: ``node_exporter-<v>.linux-<arch>/{node_exporter,LICENSE,NOTICE}``."""
    top = f"node_exporter-{version}.linux-{goarch}"
    entries = [Entry(top), Entry(f"{top}/node_exporter", binary, 0o755)]
    entries += [Entry(f"{top}/{p.name}", p, 0o644) for p in extras]
    return entries


# --- toolchain ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoToolchain:
    go: str
    version: str  # go1.26.8
    goos: str
    goarch: str
    cc: str
    cxx: str


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def go_toolchain() -> GoToolchain:
    """The machine's Go toolchain (``go`` on PATH); ToolMissing otherwise."""
    go = shutil.which("go")
    if not go:
        raise ToolMissing(
            "the lab builds Ollama and node_exporter from source and needs the Go toolchain: "
            "`go` is not on PATH; " + prereqs.missing_message(["go"])
        )
    try:
        out = subprocess.run(
            [go, "env", "-json", "GOVERSION", "GOOS", "GOARCH", "CC", "CXX"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        env = json.loads(out)
    except (subprocess.SubprocessError, OSError, json.JSONDecodeError) as exc:
        raise ToolMissing(f"`{go} env` failed, the Go toolchain is not usable: {exc}") from None
    return GoToolchain(
        go=go,
        version=env["GOVERSION"],
        goos=env["GOOS"],
        goarch=env["GOARCH"],
        cc=env.get("CC") or "gcc",
        cxx=env.get("CXX") or "g++",
    )


def compiler_id(cc: str) -> str:
    """The first line of ``<cc> --version``; ToolMissing when there is no C compiler."""
    path = shutil.which(cc)
    if not path:
        raise ToolMissing(f"Ollama is built with cgo and needs a C/C++ compiler: `{cc}` is not on PATH")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolMissing(f"`{cc} --version` failed, the C compiler is not usable: {exc}") from None
    return (out.splitlines() or [cc])[0].strip()


def check_ollama_headers(cxx: str) -> None:
    """The system headers that replace llama.cpp's vendor/ directory; ToolMissing naming the packages."""
    missing: list[str] = []
    for header in OLLAMA_HEADERS:
        probe = subprocess.run(
            [cxx, "-std=c++17", "-fsyntax-only", "-x", "c++", "-"],
            input=f"#include <{header}>\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        if probe.returncode != 0:
            missing.append(f"/usr/include/{header}")
    if missing:
        raise ToolMissing(
            "building Ollama from its Go module needs headers the module zip lacks (Go drops "
            "vendor/ subdirectories): " + prereqs.missing_message(missing)
        )


def _build_env(tc: GoToolchain, cgo: bool) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("CGO_CFLAGS", "CGO_CXXFLAGS", "CGO_CPPFLAGS", "CGO_LDFLAGS", "GOFLAGS"):
        env.pop(var, None)
    env |= {
        "CGO_ENABLED": "1" if cgo else "0",
        "GOOS": tc.goos,
        "GOARCH": tc.goarch,
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
        "GOFLAGS": "-buildvcs=false",
    }
    return env


# --- running and caching -----------------------------------------------------------------------


class _Run:
    """Runs build commands with their output appended to one log file."""

    def __init__(self, what: str, log_path: Path, env: Mapping[str, str]) -> None:
        self.what = what
        self.log_path = log_path
        self.env = dict(env)

    def note(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")

    def __call__(self, cmd: Sequence[str], cwd: Path, timeout: float = BUILD_TIMEOUT_S) -> None:
        self.note(f"$ (cd {cwd} && {' '.join(cmd)})")
        with self.log_path.open("ab") as out:
            try:
                proc = subprocess.run(
                    list(cmd), cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                raise BuildFailed(
                    self.what, cmd, self.log_path, f"did not finish in {timeout:.0f} s"
                ) from None
            except OSError as exc:
                raise BuildFailed(self.what, cmd, self.log_path, f"could not start: {exc}") from None
        if proc.returncode != 0:
            raise BuildFailed(self.what, cmd, self.log_path, f"exited with status {proc.returncode}")

    def output(self, cmd: Sequence[str], cwd: Path, timeout: float = 600) -> str:
        self.note(f"$ (cd {cwd} && {' '.join(cmd)})")
        try:
            proc = subprocess.run(
                list(cmd), cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise BuildFailed(self.what, cmd, self.log_path, f"did not finish in {timeout:.0f} s") from None
        except OSError as exc:
            raise BuildFailed(self.what, cmd, self.log_path, f"could not start: {exc}") from None
        self.note(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise BuildFailed(self.what, cmd, self.log_path, f"exited with status {proc.returncode}")
        return proc.stdout


@contextlib.contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    locks = cache / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _say(progress: Progress | None, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(message)


def _read_entry(entry: Path, key: str) -> tuple[Path, str, int] | None:
    """The cached tarball, its sha256 and size when the entry is complete and intact."""
    try:
        meta = json.loads((entry / "build.json").read_text(encoding="utf-8"))
        tarball = entry / meta["file"]
        sidecar = tarball.with_name(tarball.name + ".sha256")
        if meta.get("key") != key or sha256_file(tarball) != meta["sha256"]:
            return None
        if sidecar.read_text(encoding="utf-8") != f"{meta['sha256']}  {tarball.name}\n":
            return None
        return tarball, meta["sha256"], tarball.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None


# A producer builds into `work` (scratch) and writes the tarball into `out`; returns the tarball.
Producer = Callable[[Path, Path, _Run], Path]


def cached_build(
    cache: Path,
    name: str,
    version: str,
    inputs: Mapping[str, Any],
    produce: Producer,
    env: Mapping[str, str],
    progress: Progress | None = None,
) -> Build:
    """Reuse ``<cache>/builds/<name>-<version>-<key>`` or produce it in a temp dir and rename it there."""
    started = time.monotonic()
    key = cache_key({"name": name, "version": version, "recipe_revision": RECIPE_REVISION, **inputs})
    builds = cache / "builds"
    entry = builds / f"{name}-{version}-{key[:16]}"
    log_path = cache / "logs" / f"{entry.name}.log"
    with _locked(cache, name):
        hit = _read_entry(entry, key)
        if hit is not None:
            tarball, digest, size = hit
            took = time.monotonic() - started
            _say(progress, f"{name} {version}: cached ({tarball}, sha256 {digest[:12]}, {took:.1f} s)")
            return Build(name, version, tarball, digest, size, key, True, took, log_path)

        builds.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in builds.glob(f".{name}-*"):  # left by a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        log_path.write_text(
            f"# llmkit lab build of {name} {version}\n# key {key}\n# inputs "
            f"{json.dumps(inputs, sort_keys=True)}\n",
            encoding="utf-8",
        )
        _say(progress, f"{name} {version}: building (log: {log_path})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=builds))
        try:
            work, out = tmp / "work", tmp / "out"
            work.mkdir()
            out.mkdir()
            with system.heartbeat(progress, f"{name} {version}", log_path):
                tarball = produce(work, out, _Run(f"{name} {version}", log_path, env))
            if tarball.parent != out:
                raise LabBuildError(f"{name}: the tarball must be written into {out}, got {tarball}")
            digest = write_sha256_file(tarball)
            size = tarball.stat().st_size
            took = time.monotonic() - started
            meta = {"name": name, "version": version, "file": tarball.name, "sha256": digest, "size": size}
            meta |= {"key": key, "inputs": dict(inputs), "build_seconds": round(took, 1)}
            atomic_write(out / "build.json", json.dumps(meta, indent=2, sort_keys=True).encode())
            shutil.rmtree(work)
            if entry.exists():  # an incomplete or corrupted entry: replace it
                shutil.rmtree(entry)
            out.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _say(progress, f"{name} {version}: built in {took:.0f} s (sha256 {digest[:12]}, {size} bytes)")
        tarball = entry / tarball.name
        return Build(name, version, tarball, digest, size, key, False, took, log_path)


def module_source(run: _Run, tc: GoToolchain, module: str, version: str, dest: Path) -> dict[str, Any]:
    """``go mod download`` the module and copy its (read-only) source out of the module cache."""
    info = json.loads(
        run.output([tc.go, "mod", "download", "-json", f"{module}@v{version}"], cwd=dest.parent)
    )
    if info.get("Error") or not info.get("Dir"):
        raise BuildFailed(run.what, ["go", "mod", "download"], run.log_path, f"failed: {info.get('Error')}")
    shutil.copytree(info["Dir"], dest, symlinks=True)
    for root, dirs, files in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)
    os.chmod(dest, 0o755)
    try:
        info["Time"] = json.loads(Path(info["Info"]).read_text(encoding="utf-8")).get("Time")
    except (OSError, KeyError, ValueError):
        info["Time"] = None
    return info


def _log_ldd(run: _Run, binary: Path) -> None:
    if shutil.which("ldd"):
        with contextlib.suppress(LabBuildError):
            run.output(["ldd", str(binary)], cwd=binary.parent)


# --- Ollama ------------------------------------------------------------------------------------


def ollama_ldflags(version: str) -> str:
    return (
        f"-w -s -X=github.com/ollama/ollama/version.Version={version} "
        "-X=github.com/ollama/ollama/server.mode=release"
    )


def preflight() -> GoToolchain:
    """Refuse (ToolMissing, naming what to install) unless Go, a C/C++ compiler and the headers
    that the Ollama build needs are all here; checked before a lab is made."""
    tc = go_toolchain()
    compiler_id(tc.cc)
    compiler_id(tc.cxx)
    check_ollama_headers(tc.cxx)
    return tc


def build_ollama(cache_dir: Path | None = None, progress: Progress | None = None) -> Build:
    """``ollama-linux-<arch>.tgz`` of the pinned Ollama, CPU only, from the cache or built now."""
    cache = cache_dir or default_cache_dir()
    art = artifact("ollama")
    version = art.version
    tc = go_toolchain()
    file = art.file(tc.goarch)
    ldflags = ollama_ldflags(version)
    build_cmd = [tc.go, "build", "-trimpath", "-buildmode=pie", "-ldflags", ldflags, "-o"]
    inputs = {
        "module": OLLAMA_MODULE,
        "go": tc.version,
        "goos": tc.goos,
        "goarch": tc.goarch,
        "cgo": True,
        "cc": compiler_id(tc.cc),
        "cxx": compiler_id(tc.cxx),
        "build": build_cmd[1:],
        "miniaudio_stub": hashlib.sha256(MINIAUDIO_STUB.encode()).hexdigest(),
        "file": file,
    }

    def produce(work: Path, out: Path, run: _Run) -> Path:
        check_ollama_headers(tc.cxx)
        src = work / "ollama"
        module_source(run, tc, OLLAMA_MODULE, version, src)
        stub = src / "llama" / "llama.cpp" / "vendor" / "miniaudio" / "miniaudio.h"
        if not stub.exists():  # a module zip that keeps vendor/ would bring the real one
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text(MINIAUDIO_STUB, encoding="utf-8")
            run.note(f"# wrote the miniaudio stand-in header {stub}")
        binary = work / "ollama-bin"
        run([*build_cmd, str(binary), "."], cwd=src)
        _log_ldd(run, binary)
        # --version runs the binary; it only warns that no server answers on the (dead) port 9.
        env = dict(run.env, OLLAMA_HOST="127.0.0.1:9")
        proc = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        run.note(proc.stdout + proc.stderr)
        if version not in proc.stdout + proc.stderr:
            raise BuildFailed(
                run.what, [str(binary), "--version"], run.log_path, f"does not report version {version}"
            )
        return pack_tgz(out / file, ollama_entries(binary))

    _say(progress, f"ollama {version}: {tc.version} {tc.goos}/{tc.goarch}, cache {cache}")
    return cached_build(cache, "ollama", version, inputs, produce, _build_env(tc, cgo=True), progress)


# --- node_exporter -----------------------------------------------------------------------------


def node_exporter_ldflags(version: str, build_date: str) -> str:
    v = "github.com/prometheus/common/version"
    return (
        f"-s -w -X {v}.Version={version} -X {v}.Branch=HEAD -X {v}.BuildUser=llmkit@lab "
        f"-X {v}.BuildDate={build_date}"
    )


def _prometheus_date(rfc3339: str | None) -> str:
    """``2025-04-01T15:14:14Z`` -> ``20250401-15:14:14`` (promu's format); the epoch when unknown."""
    stamp = (rfc3339 or "1970-01-01T00:00:00Z").replace("Z", "")
    day, _, clock = stamp.partition("T")
    return f"{day.replace('-', '')}-{clock[:8]}"


def build_node_exporter(cache_dir: Path | None = None, progress: Progress | None = None) -> Build:
    """``node_exporter-<v>.linux-<arch>.tar.gz`` of the pinned node_exporter, from the cache or built now."""
    cache = cache_dir or default_cache_dir()
    art = artifact("node_exporter")
    version = art.version
    tc = go_toolchain()
    file = art.file(tc.goarch)
    build_args = ["build", "-trimpath", "-tags", "netgo,osusergo", "-ldflags"]
    inputs = {
        "module": NODE_EXPORTER_MODULE,
        "go": tc.version,
        "goos": tc.goos,
        "goarch": tc.goarch,
        "cgo": False,
        "build": build_args,
        "ldflags": node_exporter_ldflags(version, "<module time>"),
        "file": file,
    }

    def produce(work: Path, out: Path, run: _Run) -> Path:
        src = work / "node_exporter"
        info = module_source(run, tc, NODE_EXPORTER_MODULE, version, src)
        binary = work / "node_exporter-bin" / "node_exporter"
        binary.parent.mkdir()
        ldflags = node_exporter_ldflags(version, _prometheus_date(info.get("Time")))
        run([tc.go, *build_args, ldflags, "-o", str(binary), "."], cwd=src)
        reported = run.output([str(binary), "--version"], cwd=work)
        if f"version {version}" not in reported:
            raise BuildFailed(
                run.what, [str(binary), "--version"], run.log_path, f"does not report version {version}"
            )
        extras = [p for p in (src / "LICENSE", src / "NOTICE") if p.is_file()]
        return pack_tgz(out / file, node_exporter_entries(version, tc.goarch, binary, extras))

    _say(progress, f"node_exporter {version}: {tc.version} {tc.goos}/{tc.goarch}, cache {cache}")
    return cached_build(cache, "node_exporter", version, inputs, produce, _build_env(tc, cgo=False), progress)


# --- publishing --------------------------------------------------------------------------------


def _place(src: Path, dest: Path) -> None:
    """Hardlink (or copy, across filesystems) ``src`` to ``dest``, replacing it atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_builds(mirror_dir: Path, ollama: Build, node_exporter: Build) -> dict[str, Any]:
    """Lay the builds and the tiny model out in ``mirror_dir`` and write ``artifacts.json`` last."""
    mirror_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    for b in (ollama, node_exporter):
        rel = f"{b.name}/v{b.version}/{b.file}"
        _place(b.path, mirror_dir / rel)
        _place(b.path.with_name(b.file + ".sha256"), mirror_dir / f"{rel}.sha256")
        if sha256_file(mirror_dir / rel) != b.sha256:
            raise LabBuildError(f"{mirror_dir / rel} does not have the cached build's sha256 {b.sha256}")
        entries[b.name] = {"version": b.version, "file": rel, "sha256": b.sha256, "size": b.size}

    model_dir = mirror_dir / "models" / tiny_model.SLUG
    gguf_path, modelfile_path = tiny_model.write_model(model_dir)
    entries["models"] = [
        {
            "name": tiny_model.MODEL_NAME,
            "source": "mirror",
            "file": f"{tiny_model.SLUG}/{gguf_path.name}",
            "sha256": sha256_file(gguf_path),
            "size": gguf_path.stat().st_size,
            "modelfile": {
                "file": f"{tiny_model.SLUG}/{modelfile_path.name}",
                "sha256": sha256_file(modelfile_path),
            },
        }
    ]
    atomic_write(
        mirror_dir / "artifacts.json", (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode()
    )
    return entries


def publish(
    mirror_dir: Path, cache_dir: Path | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Build (or reuse) Ollama and node_exporter, write the tiny model, lay out the mirror.

    Returns what it writes to ``<mirror_dir>/artifacts.json`` (the lab contract's shape).
    """
    cache = cache_dir or default_cache_dir()
    ollama = build_ollama(cache, progress)
    node_exporter = build_node_exporter(cache, progress)
    result = publish_builds(Path(mirror_dir), ollama, node_exporter)
    _say(progress, f"mirror {mirror_dir}: published ollama, node_exporter and {tiny_model.MODEL_NAME}")
    return result


__all__ = [
    "Build",
    "BuildFailed",
    "Entry",
    "GoToolchain",
    "LabBuildError",
    "ToolMissing",
    "build_node_exporter",
    "build_ollama",
    "cache_key",
    "cached_build",
    "default_cache_dir",
    "go_toolchain",
    "node_exporter_entries",
    "ollama_entries",
    "pack_tgz",
    "preflight",
    "publish",
    "publish_builds",
    "write_sha256_file",
]
