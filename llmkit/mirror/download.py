"""Parallel, resumable, verified HTTP downloads into a staging directory.

Each file is fetched into ``<path>.part`` with ranged requests (``Range: bytes=a-b``) in chunks
spread over a thread pool. ``<path>.part.json`` records, per chunk, how many bytes are on disk; a
byte is written before it is counted, so after any interruption (a cut connection, a killed
process) the next run asks only for the bytes not yet counted. A failed request is retried with
exponential backoff from where it stopped. When every chunk is complete the part is hashed: a
wrong sha256 deletes the part (and its state) and names the file; a right one is renamed into
place. A server that ignores ``Range`` gets one plain request per file (and a restart on retry).

Before any byte moves, the free space of the destination must hold 1.2 times what is left to
fetch (:data:`DISK_HEADROOM`).

Every file below the staging directory (the files, their parts, the resume state, the directories
of a path like ``blobs/…``) is opened, made, renamed and removed through :mod:`llmkit.files`'s
``*_inside`` operations: no link planted there is followed, and a path that is a link or not a
regular file is refused (exit 2, naming it) before any byte moves.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from llmkit.files import (
    UnsafePathError,
    atomic_write_inside,
    hash_inside,
    lstat_inside,
    open_inside,
    read_inside,
    regular_inside,
    remove_inside,
    replace_inside,
    split_relpath,
)
from llmkit.mirror.auth import RegistryAuth, redact_url, strip_auth_on_redirect
from llmkit.mirror.manifest import DigestMismatch, FileEntry, MirrorError

DISK_HEADROOM = 1.2
DEFAULT_WORKERS = 8
DEFAULT_CHUNK = 32 << 20
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
READ_BLOCK = 1 << 20
STATE_FLUSH_S = 0.5
MAX_STATE_BYTES = 16 << 20  # a resume state lists one number per chunk
TIMEOUT_S = 60.0
USER_AGENT = "llmkit-mirror/1"


@dataclass(frozen=True)
class Blob:
    """One file to fetch: ``url`` into ``path`` (relative to the staging directory)."""

    url: str
    path: str
    sha256: str | None = None
    size: int | None = None
    role: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # a registry's credentials and token (sent to its own origin only, refreshed on a 401)
    auth: RegistryAuth | None = None
    # no sha256 is known and the user allowed that (--allow-unverified): the digest is the one of
    # the bytes received; without it, a blob with no sha256 is refused
    unverified: bool = False


@dataclass
class Options:
    workers: int = DEFAULT_WORKERS
    chunk_size: int = DEFAULT_CHUNK
    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    progress: bool = False
    console: Console | None = None
    # sleep is injectable so that tests of the backoff need not wait
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Stats:
    fetched_bytes: int = 0  # body bytes received over HTTP
    requests: int = 0
    retries: int = 0
    skipped_files: int = 0
    resumed_bytes: int = 0  # bytes already on disk from an earlier run
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int = 0, requests: int = 0, retries: int = 0) -> None:
        with self.lock:
            self.fetched_bytes += nbytes
            self.requests += requests
            self.retries += retries


class _Transient(Exception):
    """A failure worth retrying (connection cut, timeout, 5xx, 429)."""


# Follows redirects, but never carries Authorization to another origin (blob storage, a CDN).
OPENER = strip_auth_on_redirect()


def _request(
    url: str, headers: Mapping[str, str], method: str = "GET", auth: RegistryAuth | None = None
) -> Any:
    sent = {**headers, **(auth.headers(url) if auth is not None else {})}
    req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **sent})
    try:
        return OPENER.open(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        challenge = exc.headers.get("WWW-Authenticate") if exc.headers else None
        if exc.code == 401 and auth is not None and auth.refresh(challenge, sent.get("Authorization")):
            raise _Transient(
                f"HTTP 401 from {redact_url(url)}: retrying with new registry credentials"
            ) from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(f"HTTP {exc.code} from {redact_url(url)}") from None
        raise MirrorError(f"{redact_url(url)}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"{redact_url(url)}: {exc}") from None


def backoff_delay(attempt: int, base: float) -> float:
    """Exponential backoff with full jitter: up to ``base * 2**attempt``, capped."""
    return min(MAX_BACKOFF_S, base * (2**attempt)) * (0.5 + random.random() / 2)


def _retrying(what: str, opts: Options, stats: Stats, fn: Callable[[], Any]) -> Any:
    attempt = 0
    while True:
        try:
            return fn()
        except _Transient as exc:
            if attempt >= opts.retries:
                raise MirrorError(f"{what}: giving up after {attempt + 1} attempt(s): {exc}") from None
            stats.add(retries=1)
            opts.sleep(backoff_delay(attempt, opts.backoff_s))
            attempt += 1


@dataclass
class _Probe:
    size: int
    ranges: bool


def probe(blob: Blob, opts: Options, stats: Stats) -> _Probe:
    """Size and range support from ``GET Range: bytes=0-0`` (one byte, or the whole body's headers)."""

    def go() -> _Probe:
        with _request(blob.url, {**blob.headers, "Range": "bytes=0-0"}, auth=blob.auth) as resp:
            stats.add(requests=1)
            # an ETag (or Hugging Face's X-Linked-Etag) is never taken as the sha256: the server
            # would vouch for its own bytes
            if resp.status == 206:
                total = (resp.headers.get("Content-Range") or "").rpartition("/")[2]
                if total.isascii() and total.isdigit():
                    return _Probe(int(total), True)
            length = resp.headers.get("Content-Length")
            if resp.status == 200 and length and length.isascii() and length.isdigit():
                return _Probe(int(length), False)
            if blob.size is not None:
                return _Probe(blob.size, False)
            raise MirrorError(
                f"{redact_url(blob.url)}: the server reports no size (no Content-Range/Content-Length)"
            )

    result: _Probe = _retrying(blob.path, opts, stats, go)
    return result


class _State:
    """``<part>.json``: the bytes on disk per chunk, flushed at most every STATE_FLUSH_S."""

    def __init__(self, root: Path, rel: str, key: dict[str, Any], chunks: list[tuple[int, int]]) -> None:
        self.root = root
        self.rel = rel
        self.key = key
        self.chunks = chunks
        self.done = [0] * len(chunks)
        self.lock = threading.Lock()
        self.flushed = 0.0

    def load(self) -> bool:
        try:
            doc = json.loads(read_inside(self.root, self.rel, limit=MAX_STATE_BYTES))
        except (OSError, ValueError):
            return False
        # a state that is not what this run would write (planted, stale, truncated): start afresh
        if not isinstance(doc, dict) or doc.get("key") != self.key:
            return False
        if not isinstance(doc.get("done"), list) or len(doc["done"]) != len(self.chunks):
            return False
        pairs = zip(doc["done"], self.chunks, strict=True)
        try:
            self.done = [max(0, min(int(d), end - start)) for d, (start, end) in pairs]
        except (TypeError, ValueError):
            return False
        return True

    def advance(self, index: int, nbytes: int) -> None:
        with self.lock:
            self.done[index] += nbytes
            now = time.monotonic()
            if now - self.flushed >= STATE_FLUSH_S:
                self._flush()
                self.flushed = now

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        # not fsynced: the part's bytes are not either, and a flush must not wait on the disk
        doc = json.dumps({"key": self.key, "done": self.done}).encode()
        atomic_write_inside(self.root, self.rel, doc, durable=False)

    @property
    def on_disk(self) -> int:
        return sum(self.done)


def _part(rel: str) -> str:
    return rel + ".part"


def _state_path(rel: str) -> str:
    return rel + ".part.json"


def _digest(root: Path, rel: str) -> str:
    return hash_inside(root, rel)[0]


def _exists(root: Path, rel: str) -> bool:
    try:
        return lstat_inside(root, rel) is not None
    except UnsafePathError:
        return False


def chunk_ranges(size: int, chunk: int, ranges: bool) -> list[tuple[int, int]]:
    """``[start, end)`` per chunk; a single chunk when the server ignores ranges."""
    if not ranges or size == 0:
        return [(0, size)]
    return [(a, min(a + chunk, size)) for a in range(0, size, chunk)]


@dataclass
class _Job:
    blob: Blob
    root: Path  # the staging directory
    rel: str  # the file's path below it (the blob's)
    size: int
    sha256: str | None
    ranges: bool
    state: _State | None = None
    task: Any = None


def _fetch_chunk(job: _Job, index: int, opts: Options, stats: Stats, progress: Callable[[int], None]) -> None:
    assert job.state is not None
    start, end = job.state.chunks[index]
    part = _part(job.rel)

    def go() -> None:
        offset = start + job.state.done[index]  # type: ignore[union-attr]
        if offset >= end:
            return
        headers = dict(job.blob.headers)
        if job.ranges:
            headers["Range"] = f"bytes={offset}-{end - 1}"
        elif offset:
            # no ranges: start the whole file again
            job.state.advance(index, -job.state.done[index])  # type: ignore[union-attr]
            progress(-offset)
            offset = start
        with _request(job.blob.url, headers, auth=job.blob.auth) as resp:
            stats.add(requests=1)
            if job.ranges and resp.status != 206:
                raise MirrorError(f"{redact_url(job.blob.url)}: asked for a range, got HTTP {resp.status}")
            fd = open_inside(job.root, part, os.O_WRONLY)
            try:
                while offset < end:
                    try:
                        block = resp.read(min(READ_BLOCK, end - offset))
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient(
                            f"{job.blob.path}: connection lost at byte {offset}: {exc}"
                        ) from None
                    if not block:
                        raise _Transient(f"{job.blob.path}: connection closed at byte {offset} of {end}")
                    os.pwrite(fd, block, offset)
                    offset += len(block)
                    stats.add(len(block))
                    job.state.advance(index, len(block))  # type: ignore[union-attr]
                    progress(len(block))
            finally:
                os.close(fd)

    _retrying(f"{job.blob.path} (bytes {start}-{end - 1})", opts, stats, go)


def _free_bytes(directory: Path) -> int:
    probe_dir = directory
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    return shutil.disk_usage(probe_dir).free


def preflight(directory: Path, needed: int, headroom: float = DISK_HEADROOM) -> None:
    free = _free_bytes(directory)
    want = int(needed * headroom)
    if want > free:
        raise MirrorError(
            f"{directory}: not enough free disk space: {want} bytes needed ({needed} to fetch x {headroom}), "
            f"{free} free"
        )


@contextlib.contextmanager
def _progress(opts: Options, enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=opts.console,
    )
    with bar:
        yield bar


def fetch_all(
    blobs: Sequence[Blob],
    directory: Path,
    opts: Options | None = None,
    prepare: Callable[[], None] | None = None,
) -> tuple[list[FileEntry], Stats]:
    """Fetch every blob into ``directory``; the verified entries in the blobs' order, and the stats.

    ``prepare`` runs once the preflight has passed, before the first write into ``directory``.
    """
    opts = opts or Options()
    stats = Stats()
    directory.mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    entries: dict[str, FileEntry] = {}
    # 1. what is there, and what is left: no byte of a body moves before the preflight. A file,
    # its part or its state that is a link (or lies under one), or not a regular file, is refused.
    for blob in blobs:
        split_relpath(blob.path)
        dest = regular_inside(directory, blob.path)
        part_there = regular_inside(directory, _part(blob.path))
        regular_inside(directory, _state_path(blob.path))
        known = blob.sha256 and blob.size is not None
        if known and dest and dest.st_size == blob.size and _digest(directory, blob.path) == blob.sha256:
            entries[blob.path] = FileEntry(blob.path, blob.sha256, blob.size, blob.role)
            stats.skipped_files += 1
            continue
        info = probe(blob, opts, stats)
        if blob.size is not None and info.size != blob.size:
            raise MirrorError(
                f"{blob.path}: the server reports {info.size} bytes, the source lists {blob.size}"
            )
        expected = blob.sha256
        if not expected and not blob.unverified:
            raise MirrorError(
                f"{blob.path}: no sha256 is known for {redact_url(blob.url)}; list it (URL SHA256 in the "
                "URL list, or URL#sha256=<hex>)"
            )
        if expected and dest and dest.st_size == info.size and _digest(directory, blob.path) == expected:
            entries[blob.path] = FileEntry(blob.path, expected, info.size, blob.role)
            stats.skipped_files += 1
            continue
        job = _Job(blob, directory, blob.path, info.size, expected, info.ranges)
        key = {
            "url": redact_url(blob.url),
            "size": info.size,
            "sha256": expected,
            "chunk": opts.chunk_size,
            "ranges": info.ranges,
        }
        chunks = chunk_ranges(info.size, opts.chunk_size, info.ranges)
        job.state = _State(directory, _state_path(blob.path), key, chunks)
        if not (part_there and part_there.st_size == info.size and job.state.load()):
            job.state.done = [0] * len(job.state.chunks)
        jobs.append(job)
    left = sum(j.size - (j.state.on_disk if j.state else 0) for j in jobs)
    preflight(directory, left)
    if prepare is not None:
        prepare()
    # 2. the part files, at their full size (a new one made afresh, never written through)
    for job in jobs:
        assert job.state is not None
        part = _part(job.rel)
        if job.state.on_disk == 0:
            remove_inside(directory, part)
            fd = open_inside(directory, part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, create_dirs=True)
            try:
                os.ftruncate(fd, job.size)
            finally:
                os.close(fd)
        stats.resumed_bytes += job.state.on_disk
        job.state.flush()
    # 3. every chunk of every file on one pool; a file is verified once its last chunk lands
    with _progress(opts, opts.progress and bool(jobs)) as bar:
        total_task = None
        if bar is not None:
            total_task = bar.add_task("total", total=sum(j.size for j in jobs))
            bar.advance(total_task, sum(j.state.on_disk for j in jobs if j.state))
            for job in jobs:
                job.task = bar.add_task(
                    job.blob.path, total=job.size, completed=job.state.on_disk if job.state else 0
                )

        def progress_of(job: _Job) -> Callable[[int], None]:
            def advance(n: int) -> None:
                if bar is not None:
                    bar.advance(job.task, n)
                    bar.advance(total_task, n)  # type: ignore[arg-type]

            return advance

        remaining = {id(j): sum(1 for i in range(len(j.state.chunks))) for j in jobs if j.state}
        lock = threading.Lock()
        with ThreadPoolExecutor(max_workers=max(1, opts.workers), thread_name_prefix="mirror") as pool:
            futures: list[Future[None]] = []

            def chunk_task(job: _Job, index: int) -> None:
                _fetch_chunk(job, index, opts, stats, progress_of(job))
                with lock:
                    remaining[id(job)] -= 1
                    last = remaining[id(job)] == 0
                if last:
                    entries[job.blob.path] = _finish(job)

            for job in jobs:
                assert job.state is not None
                for index in range(len(job.state.chunks)):
                    futures.append(pool.submit(chunk_task, job, index))
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                # after the pool has let its running chunks finish: their bytes count too
                pool.shutdown(wait=True, cancel_futures=True)
                for job in jobs:
                    if job.state is not None and _exists(job.root, _part(job.rel)):
                        job.state.flush()
    return [entries[b.path] for b in blobs], stats


def _finish(job: _Job) -> FileEntry:
    assert job.state is not None and (job.sha256 is not None or job.blob.unverified)
    job.state.flush()
    part = _part(job.rel)
    digest = _digest(job.root, part)
    if job.sha256 is not None and digest != job.sha256:
        remove_inside(job.root, part)
        remove_inside(job.root, _state_path(job.rel))
        raise DigestMismatch(
            job.blob.path, job.sha256, digest, f" (from {redact_url(job.blob.url)}; the bad part was deleted)"
        )
    replace_inside(job.root, part, job.rel)
    remove_inside(job.root, _state_path(job.rel))
    return FileEntry(job.blob.path, job.sha256 or digest, job.size, job.blob.role)
