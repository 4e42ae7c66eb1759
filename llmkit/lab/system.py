"""Processes, mounts and files of the lab on the controller: the careful parts of start and stop.

Decisions, for reviewers:

- **Detached children**: machines and services start in a session of their own
  (``start_new_session``), stdin from /dev/null and output appended to a log file, so they outlive
  the ``llmkit`` process that started them and a terminal's hang-up never reaches them.
- **A pid is checked before it is signalled**: a pid read from ``lab.json`` may have been reused
  by an unrelated process since. A process is only signalled when its command line still holds
  the markers the lab recorded (the program and the path of its root or config); otherwise it is
  left alone and reported as gone.
- **Stop**: SIGTERM, wait, then SIGKILL after a timeout. A zombie counts as gone (and is reaped
  when it is our child).
- **Removing a tree** unmounts whatever is mounted below it first (deepest first, lazily), so a
  half-finished debootstrap (with /proc and /sys mounted in the target) or a machine root never
  makes ``rm -rf`` reach into the controller's own file systems. Removal never follows symlinks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from llmkit.errors import LlmkitError

#: Where the tools live; PATH under sudo or uv may lack the sbin directories.
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(program: str) -> str | None:
    """``shutil.which`` over PATH and the sbin directories."""
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), SBIN_PATH) if p)
    return shutil.which(program, path=search)


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    return stat.rsplit(")", 1)[-1].split()[0]


def alive(pid: int | None) -> bool:
    """A running (not zombie) process ``pid``; reaps it when it is our child and has exited."""
    if not pid or pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def _tokens(args: Sequence[str]) -> set[str]:
    """Every argument, every word of it (nginx rewrites its command line into one string) and the
    base name of each: what markers are compared with, exactly (never as substrings)."""
    out: set[str] = set()
    for arg in args:
        for token in (arg, *arg.split()):
            out.update((token, os.path.basename(token)))
    return out


def matches(pid: int | None, markers: Sequence[str]) -> bool:
    """``pid`` is alive and every marker is one of its arguments (or a word or base name of one)."""
    if not alive(pid):
        return False
    assert pid is not None
    args = cmdline(pid)
    if not args:
        return False
    tokens = _tokens(args)
    return all(marker in tokens for marker in markers)


def find(markers: Sequence[str]) -> list[int]:
    """Every live process whose command line holds all ``markers`` (see :func:`matches`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and matches(int(entry.name), markers):
            found.append(int(entry.name))
    return sorted(found)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return sorted(out)


def net_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def spawn(argv: Sequence[str], log: Path, *, cwd: Path | None = None) -> int:
    """Start ``argv`` detached (own session), output appended to ``log``; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            list(argv),
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            close_fds=True,
        )
    _CHILDREN[process.pid] = process
    return process.pid


#: Popen objects of the processes this Python process started: kept so that Python does not warn
#: about them, and reaped through ``alive``.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def stop(
    pid: int | None, markers: Sequence[str], *, timeout: float = 30.0, kill_timeout: float = 10.0
) -> bool:
    """SIGTERM ``pid`` if it is still the process the markers describe, SIGKILL after ``timeout``.

    True when a process was stopped, False when there was none (already gone, or the pid now
    belongs to something else). Raises when it survives SIGKILL.
    """
    if pid is None or not matches(pid, markers):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if wait_gone(pid, kill_timeout):
        return True
    raise LlmkitError(f"process {pid} ({' '.join(cmdline(pid) or [])}) survived SIGKILL")


def kill_now(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- mounts and trees -----------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """Mount points in /proc/self/mountinfo escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below ``path`` in our mount namespace, deepest first."""
    root = os.path.realpath(path)
    found: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == root or point.startswith(root.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_below(path: Path) -> list[Path]:
    done = []
    for point in mounts_below(path):
        result = subprocess.run(["umount", "-l", str(point)], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            done.append(point)
    return done


def remove_tree(path: Path, *, inside: Path) -> bool:
    """Remove ``path`` (a directory below ``inside``) after unmounting everything below it."""
    real, parent = Path(os.path.realpath(path)), Path(os.path.realpath(inside))
    if real == parent or parent not in real.parents:
        raise LlmkitError(f"refusing to remove {path}: not inside {inside}")
    if not os.path.lexists(path):
        return False
    unmount_below(real)
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(real)
    return True


# --- files ----------------------------------------------------------------------------------------


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` atomically (temp file in the same directory, then rename) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed) while the block runs; waits for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LlmkitError(f"{what} is in use by another llmkit process (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: How often a long step (debootstrap, a Go build) reports that it is still running.
HEARTBEAT_SECONDS = 30.0


def last_line(log: Path, width: int = 100) -> str:
    """The last non-empty line of ``log`` (read from its end), cut to ``width`` characters."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= width else text[: width - 3] + "..."


@contextlib.contextmanager
def heartbeat(
    progress: Callable[[str], None] | None, what: str, log: Path, every: float = HEARTBEAT_SECONDS
) -> Iterator[None]:
    """While the block runs, tell ``progress`` every ``every`` seconds how long ``what`` has run
    and the last line of its log, so a long first step is never silent on the terminal."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            line = last_line(log)
            progress(
                f"{what}: still running, {time.monotonic() - started:.0f} s" + (f" ({line})" if line else "")
            )

    thread = threading.Thread(target=beat, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, waiting as long as another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tail(path: Path, lines: int = 15) -> str:
    """The last non-empty ``lines`` of a log, without terminal colour codes."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
