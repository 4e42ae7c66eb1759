"""File helpers shared by the mirror, the lab and the playbooks' host side (standard library only).

- :func:`sha256_file`: a file's sha256, read in 1 MiB blocks.
- :func:`atomic_write`: write bytes next to ``dest``, fsync, then rename over it (mode 0644), so a
  reader sees the old file or the whole new one, never a part.

Inside a tree that llmkit writes or reads as data (a pull's staging directory, a mirror, the
bootstrap bundle), every operation goes through the ``*_inside`` functions below. Each takes the
tree's ``root`` (the path as the user wrote it: links in it are followed, once) and a relative
POSIX path, and walks from the root one directory at a time with ``O_DIRECTORY | O_NOFOLLOW``
file descriptors (``openat``): a component that is a symbolic link, or not what it should be, is
refused with :class:`UnsafePathError` naming it, and the last component is opened with
``O_NOFOLLOW`` too. So no write and no read ever leaves the tree through a link planted in it,
whenever the link appears. Besides:

- a file is only opened as a regular file (a FIFO or a device is refused, and never blocks);
- a file written in place must have a single hard link, and ``O_TRUNC`` is applied only after
  that check (a planted hard link to a file elsewhere is refused, not truncated);
- new content goes to a fresh temporary file (``O_CREAT | O_EXCL``) renamed over the name, so an
  existing link there is replaced, never written through;
- removal unlinks the name itself, and the walks never descend into a link.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from llmkit.errors import LlmkitError

HASH_BLOCK = 1 << 20
FILE_MODE = 0o644
DIR_MODE = 0o755

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
ACCEPTED = "regular files and directories, no symbolic links"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def atomic_write(dest: Path, data: bytes) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


# --- inside a tree -------------------------------------------------------------------------------


class UnsafePathError(LlmkitError):
    """A path inside a tree that llmkit writes or reads is a link, or not what llmkit made there."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _refusal(root: Path, rel: str, what: str) -> UnsafePathError:
    return UnsafePathError(
        root / rel if rel else root,
        f"{what}; refused: llmkit follows no link inside {root} and writes or reads there only "
        f"{ACCEPTED} (remove it, or give another directory)",
    )


def _unexpected(dir_fd: int, name: str, root: Path, rel: str, expected: str) -> UnsafePathError:
    try:
        what = _kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        what = "changed while llmkit was reading it"
    return _refusal(root, rel, f"{what}, not {expected}")


def split_relpath(rel: str) -> list[str]:
    """``a/b/c`` -> ``["a", "b", "c"]``; "" (the root itself) -> []. Absolute, ``.``, ``..``: refused."""
    stripped = rel.rstrip("/")
    parts = stripped.split("/") if stripped else []
    if rel.startswith("/") or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(rel, "not a relative path inside the directory (no '/' first, no '.' or '..')")
    return parts


def _open_root(root: Path, create: bool) -> int:
    if create:
        os.makedirs(root, mode=DIR_MODE, exist_ok=True)
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise UnsafePathError(root, "not a directory") from None


def _open_subdir(dir_fd: int, name: str, create: bool, root: Path, rel: str) -> int:
    for _attempt in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root / rel)) from None
            with suppress(FileExistsError):  # made meanwhile: open it (a link is refused)
                os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _unexpected(dir_fd, name, root, rel, "a directory") from None
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _open_dir(root: Path, parts: Sequence[str], create: bool = False) -> int:
    """A descriptor of ``root/parts...``, every component opened without following a link."""
    fd = _open_root(root, create)
    try:
        for i, name in enumerate(parts):
            child = _open_subdir(fd, name, create, root, "/".join(parts[: i + 1]))
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _dir(root: Path, parts: Sequence[str], create: bool = False) -> Iterator[int]:
    fd = _open_dir(root, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _leaf(rel: str) -> tuple[list[str], str]:
    parts = split_relpath(rel)
    if not parts:
        raise UnsafePathError(rel, "names the directory itself, not a file inside it")
    return parts[:-1], parts[-1]


def _open_file(dir_fd: int, name: str, flags: int, mode: int, root: Path, rel: str) -> int:
    truncate = flags & os.O_TRUNC
    flags = (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP: a link; ENXIO: a FIFO without reader or a socket; EISDIR: a directory
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR, errno.EOPNOTSUPP):
            raise _unexpected(dir_fd, name, root, rel, "a regular file") from None
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root / rel)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refusal(root, rel, f"{_kind(st.st_mode)}, not a regular file")
        if (flags & os.O_ACCMODE) != os.O_RDONLY and st.st_nlink > 1:
            raise _refusal(
                root, rel, f"a file with {st.st_nlink} hard links (llmkit writes in place only its own)"
            )
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if truncate:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_inside(root: Path, rel: str, flags: int, mode: int = FILE_MODE, *, create_dirs: bool = False) -> int:
    """``os.open`` of ``root/rel`` without following any link below ``root``; a regular file only.

    ``create_dirs`` makes the missing directories of ``rel`` (and ``root``). A file opened for
    writing must not have other hard links. The caller closes the descriptor.
    """
    parents, name = _leaf(rel)
    with _dir(root, parents, create_dirs) as dir_fd:
        return _open_file(dir_fd, name, flags, mode, root, rel)


@contextmanager
def reading_inside(root: Path, rel: str) -> Iterator[BinaryIO]:
    """``root/rel`` opened for reading (``rb``) through :func:`open_inside`."""
    with os.fdopen(open_inside(root, rel, os.O_RDONLY), "rb") as f:
        yield f


def read_inside(root: Path, rel: str, limit: int | None = None) -> bytes:
    """The bytes of ``root/rel``; with ``limit``, more than ``limit`` bytes raise ``OSError(EFBIG)``."""
    with reading_inside(root, rel) as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(root / rel))
    return data


def sha256_fd(fd: int) -> tuple[str, int]:
    """(sha256, size) of what a descriptor reads from its start."""
    h, size, offset = hashlib.sha256(), 0, 0
    while block := os.pread(fd, HASH_BLOCK, offset):
        h.update(block)
        size += len(block)
        offset += len(block)
    return h.hexdigest(), size


def hash_inside(root: Path, rel: str) -> tuple[str, int]:
    """(sha256, size) of ``root/rel``, read through :func:`open_inside` (the bytes hashed, counted)."""
    fd = open_inside(root, rel, os.O_RDONLY)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def lstat_inside(root: Path, rel: str) -> os.stat_result | None:
    """The ``lstat`` of ``root/rel`` (a link is not followed); ``None`` when it or a parent is missing.

    A parent that is a link or not a directory is refused.
    """
    parents, name = _leaf(rel)
    try:
        with _dir(root, parents) as dir_fd:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def regular_inside(root: Path, rel: str) -> os.stat_result | None:
    """Like :func:`lstat_inside`, and anything there but a regular file (a link...) is refused."""
    st = lstat_inside(root, rel)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _refusal(root, rel, f"{_kind(st.st_mode)}, not a regular file")
    return st


def makedirs_inside(root: Path, rel: str) -> None:
    """``mkdir -p root/rel`` (and ``root``), refusing a component that is a link or a file."""
    with _dir(root, split_relpath(rel), create=True):
        pass


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.tmp"


def atomic_inside(
    root: Path, rel: str, write: Callable[[int], None], mode: int = FILE_MODE, durable: bool = True
) -> None:
    """Make ``root/rel`` whole or not at all: ``write(fd)`` fills a new temporary file beside it
    (``O_EXCL``, never a link), which is fsynced and renamed over the name (a link there is
    replaced, not followed). If ``write`` raises, the temporary file is removed and ``rel`` is
    untouched. Missing directories are made. ``durable=False`` skips the fsync (a file rewritten
    often, like a resume state, whose loss only costs a refetch).
    """
    parents, name = _leaf(rel)
    with _dir(root, parents, create=True) as dir_fd:
        existing = _stat_at(dir_fd, name)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise _refusal(root, rel, "a directory, not a regular file")
        tmp = _temp_name(name)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            try:
                write(fd)
                if durable:
                    os.fsync(fd)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            _unlink_at(dir_fd, tmp)
            raise


def _stat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _unlink_at(dir_fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_inside(
    root: Path, rel: str, data: bytes, mode: int = FILE_MODE, durable: bool = True
) -> None:
    """:func:`atomic_write` for ``root/rel``, through :func:`atomic_inside`."""
    atomic_inside(root, rel, lambda fd: _write_all(fd, data), mode, durable)


def copy_inside(
    src: BinaryIO,
    root: Path,
    rel: str,
    check: Callable[[str, int], None] | None = None,
    mode: int = FILE_MODE,
) -> tuple[str, int]:
    """Copy ``src`` (read to its end) to ``root/rel`` through :func:`atomic_inside`.

    Returns (sha256, size) of the bytes written. ``check(sha256, size)`` runs before the rename;
    if it raises, ``root/rel`` is untouched.
    """
    result: list[tuple[str, int]] = []

    def write(fd: int) -> None:
        h, size = hashlib.sha256(), 0
        while block := src.read(HASH_BLOCK):
            h.update(block)
            size += len(block)
            _write_all(fd, block)
        if check is not None:
            check(h.hexdigest(), size)
        result.append((h.hexdigest(), size))

    atomic_inside(root, rel, write, mode)
    return result[0]


def replace_inside(root: Path, src_rel: str, dst_rel: str) -> None:
    """Rename the regular file ``root/src_rel`` over ``root/dst_rel`` (neither followed if a link)."""
    src_parents, src_name = _leaf(src_rel)
    dst_parents, dst_name = _leaf(dst_rel)
    with _dir(root, src_parents) as src_fd, _dir(root, dst_parents, create=True) as dst_fd:
        st = _stat_at(src_fd, src_name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root / src_rel))
        if not stat.S_ISREG(st.st_mode):
            raise _refusal(root, src_rel, f"{_kind(st.st_mode)}, not a regular file")
        there = _stat_at(dst_fd, dst_name)
        if there is not None and stat.S_ISDIR(there.st_mode):
            raise _refusal(root, dst_rel, "a directory, not a regular file")
        os.replace(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def remove_inside(root: Path, rel: str, missing_ok: bool = True) -> bool:
    """Unlink ``root/rel`` (a link is removed itself, never what it points to); True if removed."""
    parents, name = _leaf(rel)
    try:
        with _dir(root, parents) as dir_fd:
            st = _stat_at(dir_fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise _refusal(root, rel, "a directory, not a file")
            os.unlink(name, dir_fd=dir_fd)
            return True
    except FileNotFoundError:
        if missing_ok:
            return False
        raise


def _walk(dir_fd: int, prefix: str) -> Iterator[tuple[str, int]]:
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue  # removed meanwhile
        if not stat.S_ISDIR(mode):
            yield rel, mode
            continue
        try:
            child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a link meanwhile
                yield rel, stat.S_IFLNK
                continue
            raise
        try:
            yield from _walk(child, rel + "/")
        finally:
            os.close(child)


def walk_inside(root: Path, under: str = "") -> Iterator[tuple[str, int]]:
    """(path relative to ``root/under``, ``st_mode``) of everything below it that is not a
    directory (links and special files included), sorted; links are listed, never entered.
    Nothing when ``root/under`` does not exist."""
    try:
        fd = _open_dir(root, split_relpath(under))
    except FileNotFoundError:
        return
    try:
        yield from _walk(fd, "")
    finally:
        os.close(fd)


def iter_files_inside(root: Path, under: str = "") -> Iterator[str]:
    """The paths that :func:`walk_inside` lists (what a directory holds that is not a directory)."""
    for rel, _mode in walk_inside(root, under):
        yield rel


def require_plain_tree(root: Path, under: str = "") -> None:
    """Refuse ``root/under`` if anything below it is a link or a special file (names the first)."""
    base = "/".join(split_relpath(under))
    for rel, mode in walk_inside(root, under):
        if not stat.S_ISREG(mode):
            raise _refusal(root, f"{base}/{rel}" if base else rel, _kind(mode))


def remove_empty_dirs_inside(root: Path, under: str = "") -> list[str]:
    """Remove the empty directories below ``root/under`` (not it), deepest first; never enters a link."""
    removed: list[str] = []

    def prune(dir_fd: int, prefix: str) -> bool:
        empty = True
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                empty = False
                continue
            try:
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                empty = False
                continue
            try:
                child_empty = prune(child, prefix + entry.name + "/")
            finally:
                os.close(child)
            if child_empty:
                try:
                    os.rmdir(entry.name, dir_fd=dir_fd)
                    removed.append(prefix + entry.name)
                    continue
                except OSError:
                    pass
            empty = False
        return empty

    try:
        fd = _open_dir(root, split_relpath(under))
    except FileNotFoundError:
        return removed
    try:
        prune(fd, "")
    finally:
        os.close(fd)
    return removed
