"""``verified_download``: a resumable, retried download that lands only with the right sha256.

Order of events on the host, decided from facts before any byte moves:

1. ``dest`` already has the expected sha256 (fact ``Sha256File``) -> nothing to do.
2. With ``size`` given, the filesystem that will hold ``dest`` must have at least
   ``1.2 x size`` bytes free (fact ``FreeDiskSpace``), else the operation raises
   :class:`InsufficientDiskError` naming the path, the need and the free space, and no command
   is sent.
3. ``curl --fail --location --continue-at - --retry 5 --retry-delay 2 --retry-all-errors``
   writes ``<dest>.part``. ``--continue-at -`` resumes a part left by an earlier, interrupted
   run. Retries: curl's own ``--retry`` backs off exponentially (1 s, doubling, up to 10 min)
   only while no ``--retry-delay`` is given; with the mandated ``--retry-delay 2`` it waits a
   fixed 2 s between its 5 retries. For real exponential backoff the command wraps curl in
   :data:`ATTEMPTS` attempts that sleep 5, 10, 20 ... s between them; every attempt resumes the
   same part file, so no completed byte is fetched twice.
4. The part's sha256 is computed on the host. A mismatch deletes the part and fails, naming
   the file, the expected and the actual digest; a transfer that fails outright keeps the part
   for the next run to resume.
5. Only a verified part is renamed onto ``dest`` (``mv`` within one directory: an atomic
   rename), so ``dest`` is either the old file or the complete, verified new one.

``src`` may be ``http(s)://``, ``file://`` or a local absolute path on the host (a mounted
mirror), which is turned into a ``file://`` URL, or ``s3://bucket/key``: the AWS model hosts
read the model store through the VPC's S3 gateway endpoint with the instance role. An ``s3://``
source is fetched by ``aws s3 cp`` (the AWS CLI of the host; its region and retry mode from the
environment, which the fleet's user data sets) into the same part file, with the same attempts,
backoff, sha256 check and rename; ``aws s3 cp`` cannot resume, so each attempt starts the part
over (it downloads large objects in parallel ranged parts itself).
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from urllib.parse import quote

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.exceptions import OperationError, OperationValueError
from pyinfra.facts.files import Sha256File

from llmkit.artifacts import is_sha256
from playbooks.facts.ollama import FreeDiskSpace

DISK_FACTOR = 1.2
ATTEMPTS = 4
FIRST_BACKOFF_S = 5
CURL_FLAGS = (
    "--fail --location --continue-at - --retry 5 --retry-delay 2 --retry-all-errors "
    "--silent --show-error --connect-timeout 30"
)
# curl exit codes after which the part file cannot be resumed and must be started over:
# 33 (HTTP range error), 36 (bad download resume).
UNRESUMABLE = (33, 36)


class InsufficientDiskError(OperationError):
    """Not enough free space for a download; raised before anything is sent to the host."""


def source_url(src: str) -> str:
    """``/srv/mirror/x.gguf`` -> ``file:///srv/mirror/x.gguf``; URLs are returned unchanged."""
    if src.startswith("/"):
        return "file://" + quote(src)
    if src.split("://", 1)[0] in ("http", "https", "file") and "://" in src:
        return src
    if re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$", src):
        return src
    raise OperationValueError(
        f"download source must be an http(s)://, file:// or s3://bucket/key URL or an absolute path: {src!r}"
    )


def fetch_command(url: str) -> str:
    """The command that writes ``$url`` to ``$part``: curl (resuming), or the AWS CLI for s3://."""
    if url.startswith("s3://"):
        return 'rm -f "$part"; aws s3 cp --only-show-errors "$url" "$part"'
    return f'curl {CURL_FLAGS} --output "$part" "$url"'


def disk_need(size: int) -> int:
    return math.ceil(DISK_FACTOR * size)


def check_free_space(dest: str, size: int, free: int | None) -> None:
    """Raise InsufficientDiskError unless ``free`` covers ``1.2 x size`` for ``dest``."""
    need = disk_need(size)
    if free is None:
        raise InsufficientDiskError(
            f"cannot download to {dest}: the free space on its filesystem could not be read "
            f"(need {need} bytes, 1.2 x {size})"
        )
    if free < need:
        raise InsufficientDiskError(
            f"not enough disk space to download {dest}: need {need} bytes "
            f"(1.2 x {size}), {free} bytes free on its filesystem"
        )


def download_script(src: str, dest: str, sha256: str) -> str:
    """The shell script that fetches ``src`` to ``dest`` as described in the module docstring."""
    url = source_url(src)
    q_url, q_dest, q_part = shlex.quote(url), shlex.quote(dest), shlex.quote(dest + ".part")
    q_dir = shlex.quote(posixpath.dirname(dest) or ".")
    unresumable = " ".join(str(c) for c in UNRESUMABLE)
    tool = "aws" if url.startswith("s3://") else "curl"
    return (
        "set -u; "
        f"mkdir -p {q_dir} || exit 1; "
        f"url={q_url}; dest={q_dest}; part={q_part}; expected={sha256}; "
        f"attempt=1; wait={FIRST_BACKOFF_S}; "
        "while :; do "
        f"rc=0; {fetch_command(url)} || rc=$?; "
        '[ "$rc" -eq 0 ] && break; '
        f'case " {unresumable} " in *" $rc "*) rm -f "$part";; esac; '
        f'if [ "$attempt" -ge {ATTEMPTS} ]; then '
        f'echo "llmkit: download of $url to $dest failed ({tool} exit $rc after $attempt attempts);'
        ' the partial file $part is kept for the next run to resume" >&2; exit 1; fi; '
        'sleep "$wait"; wait=$((wait * 2)); attempt=$((attempt + 1)); '
        "done; "
        "actual=$(sha256sum \"$part\" | cut -d' ' -f1); "
        'if [ "$actual" != "$expected" ]; then rm -f "$part"; '
        'echo "llmkit: checksum mismatch for $dest (downloaded from $url): '
        'expected sha256 $expected, actual $actual; the download was deleted" >&2; exit 1; fi; '
        'mv -f "$part" "$dest"'
    )


@operation()
def verified_download(src: str, dest: str, sha256: str, size: int | None = None):
    """
    Download ``src`` to ``dest``, resumable and retried, installed only if its sha256 matches.

    + src: ``http(s)://`` or ``file://`` URL, or an absolute path on the host
    + dest: absolute path of the file to create
    + sha256: the expected digest (64 hex digits)
    + size: expected size in bytes; when given, ``1.2 x size`` must be free on dest's filesystem
    """
    digest = str(sha256).strip().lower()
    if not is_sha256(digest):
        raise OperationValueError(f"verified_download {dest}: sha256 must be 64 hex digits, got {sha256!r}")
    if not dest.startswith("/"):
        raise OperationValueError(f"verified_download: dest must be an absolute path, got {dest!r}")
    source_url(src)
    current = host.get_fact(Sha256File, path=dest)
    if current is not None and current.lower() == digest:
        host.noop(f"{dest} already has sha256 {digest}")
        return
    if size is not None:
        if int(size) <= 0:
            raise OperationValueError(f"verified_download {dest}: size must be positive, got {size!r}")
        check_free_space(dest, int(size), host.get_fact(FreeDiskSpace, path=posixpath.dirname(dest)))
    yield download_script(src, dest, digest)


# Where release archives wait, verified, until they are unpacked (root only).
DOWNLOAD_DIR = "/var/cache/llmkit/downloads"


def download_release(label: str, version: str, src: str, file: str, sha256: str, size: int | None) -> str:
    """Queue a verified download of one pinned release archive; return where it will be.

    The archive goes to ``DOWNLOAD_DIR/<label>-v<version>/<file>`` (a root-only directory); the
    caller unpacks it (re-checking the sha256) with its own extract command.
    """
    from pyinfra.operations import files

    archive_dir = f"{DOWNLOAD_DIR}/{label}-v{version}"
    archive = f"{archive_dir}/{file}"
    files.directory(name="Download cache", path=archive_dir, user="root", group="root", mode="0700")
    verified_download(
        name=f"Download {label} {version} ({file}, sha256 {sha256[:12]}...)",
        src=src,
        dest=archive,
        sha256=sha256,
        size=size,
    )
    return archive
