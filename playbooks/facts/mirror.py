"""Facts about the model mirror as a host sees it: a mirror manifest read on the host.

The host fetches the manifest from its own network, exactly as the verified download fetches the
files it lists (a controller may reach a different mirror, or none). ``http(s)://`` URLs go
through ``curl -fsSL`` with a connect and a total timeout and a size cap; ``file://`` URLs and
absolute paths (a mounted mirror) are read with ``cat``; ``s3://`` URLs (the AWS model hosts'
model store) with ``aws s3 cp ... -``. The command exits 0 either way and says
which it was with a first marker line, so a missing or unreachable manifest is reported as
``None``, not as a failed fact; the parsing lives in :func:`parse_fetched`, which the tests call on
captured output. The text is returned as is: the deploy parses it
(:meth:`llmkit.mirror.manifest.Manifest.loads`), so a bad manifest gets a message naming the
model entry.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from urllib.parse import unquote

from pyinfra.api import FactBase

OK_MARKER = "@@llmkit-mirror-ok"
UNAVAILABLE_MARKER = "@@llmkit-mirror-unavailable"
MAX_BYTES = 1 << 20  # a manifest is a few KiB; refuse to pull anything big into a fact
CONNECT_TIMEOUT_S = 10
MAX_TIME_S = 30


def local_path(url: str) -> str | None:
    """The host path of a ``file://`` URL (``file:///p`` or ``file://localhost/p``) or an absolute path.

    ``None`` for anything else (``http(s)://``, a ``file://`` URL naming another host), which
    curl fetches (and refuses, for a remote ``file://``).
    """
    if url.startswith("/"):
        return url
    if url.startswith("file://"):
        rest = url[len("file://") :]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if rest.startswith("/"):
            return unquote(rest)
    return None


def fetch_command(url: str) -> str:
    """Print :data:`OK_MARKER` and the text at ``url``, or :data:`UNAVAILABLE_MARKER`; exit 0."""
    path = local_path(url)
    if path is not None:
        p = shlex.quote(path)
        fetch = f'[ -f {p} ] && [ -r {p} ] && [ "$(wc -c < {p})" -le {MAX_BYTES} ] && out=$(cat {p})'
    elif url.startswith("s3://"):
        # the AWS model hosts: the instance role, through the S3 gateway endpoint
        fetch = (
            f't=$(mktemp) && {{ aws s3 cp --only-show-errors {shlex.quote(url)} "$t" && '
            f'[ "$(wc -c < "$t")" -le {MAX_BYTES} ] && out=$(cat "$t"); r=$?; rm -f "$t"; [ "$r" -eq 0 ]; }}'
        )
    else:
        fetch = (
            f"out=$(curl -fsSL --connect-timeout {CONNECT_TIMEOUT_S} --max-time {MAX_TIME_S} "
            f"--max-filesize {MAX_BYTES} {shlex.quote(url)})"
        )
    return f"if {fetch}; then printf '%s\\n' {OK_MARKER} \"$out\"; else echo {UNAVAILABLE_MARKER}; fi"


def parse_fetched(lines: Iterable[str]) -> str | None:
    """The fetched text (lines after :data:`OK_MARKER`); ``None`` when it could not be fetched."""
    output = list(lines)
    start = next((i for i, line in enumerate(output) if line.strip()), None)
    if start is None or output[start].strip() != OK_MARKER:
        return None
    return "\n".join(output[start + 1 :])


class MirrorManifest(FactBase[str | None]):
    """The text of the mirror manifest at ``url`` as the host reads it; ``None`` when it cannot.

    ``None`` covers an unreachable server, an HTTP error, a missing or unreadable file, a timeout
    (:data:`MAX_TIME_S`) and a manifest over :data:`MAX_BYTES`.
    """

    def command(self, url: str) -> str:
        return fetch_command(url)

    def process(self, output: list[str]) -> str | None:
        return parse_fetched(output)
