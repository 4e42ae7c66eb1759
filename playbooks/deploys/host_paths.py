"""Host paths from host data: only under the roots the deploys may own or read, never a system path.

Host data names places on the host: where Ollama keeps models (``ollama_models_path``, whose
parent is also the models deploy's staging directory and the model cache volume's mount point)
and mirrors mounted on the host (``models_mirror_url``, ``ollama_mirror_url``,
``exporters_mirror_url`` as ``file://`` URLs or absolute paths). The deploys ``chown``, ``chmod``,
mount over and unit-sandbox (``ReadWritePaths=``) what they are given, so ``/etc`` or ``/usr``
there would hand a system directory to the ``ollama`` user. Every such key goes through
:func:`host_path` before any operation:

- an absolute path of letters, digits and ``._-/``, without ``.`` or ``..`` components or ``//``
  (it is what the commands use, verbatim, so it is checked as written, not normalised into
  something else);
- equal to or below one of :data:`OWN_ROOTS` (directories llmkit owns: Ollama's home, llmkit's
  state and install trees), or strictly below one of :data:`SITE_ROOTS` (the places a site puts
  data volumes and mounted mirrors; the root itself is never taken over).

A refusal is a ConfigError naming the key, the value and these roots. On the host, a path that
passes may still be a symbolic link to somewhere else: the deploys that write there resolve it on
the host first (fact :class:`ResolvedPaths`) and check the resolved path the same way.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from pyinfra.api import FactBase

from llmkit.errors import ConfigError
from playbooks.facts.mirror import local_path

#: Directories llmkit owns on a host: a path may be one of them or anything below it.
OWN_ROOTS = ("/var/lib/ollama", "/var/lib/llmkit", "/opt/llmkit")
#: Where sites keep data volumes and mounted mirrors: a path must be strictly below one of them.
SITE_ROOTS = ("/srv", "/mnt", "/data")
ACCEPTED = (
    f"an absolute path (letters, digits, '._-/'; no '.' or '..' components) equal to or below "
    f"{', '.join(OWN_ROOTS)}, or below {', '.join(f'{r}/' for r in SITE_ROOTS)}"
)
_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _below(path: str, root: str) -> bool:
    return path.startswith(root + "/")


def host_path(key: str, value: Any, *, role: str = "") -> str:
    """``value`` as an accepted host path (without a trailing ``/``); ConfigError naming ``key``.

    ``role`` says what the path is used for when it is derived from ``key`` (its parent, say).
    """
    text = value if isinstance(value, str) else ""
    path = text.rstrip("/") or text
    problem = None
    if not _PATH.match(text) or "//" in text:
        problem = "not an absolute path of letters, digits and '._-/'"
    elif any(part in (".", "..") for part in path.split("/")):
        problem = "a path with '.' or '..' components"
    elif not (
        any(path == root or _below(path, root) for root in OWN_ROOTS)
        or any(_below(path, root) for root in SITE_ROOTS)
    ):
        problem = "outside the roots the deploys may use: a system path is never taken over"
    if problem is not None:
        what = f"{role} {path!r} " if role else ""
        raise ConfigError(key, value, ACCEPTED, f"{what}{problem}".strip())
    return path


def mirror_location(key: str, url: Any) -> None:
    """A mirror URL's host path, when it is one (``file://`` or absolute), must be accepted.

    ``http(s)://`` and ``s3://`` URLs are not host paths: nothing to check here. A URL template
    (``{version}``...) is checked up to its first placeholder.
    """
    if not isinstance(url, str):
        return
    fixed = url.split("{", 1)[0]
    path = local_path(fixed)
    if path is None:
        return
    if "{" in url:
        path = posixpath.dirname(path) if not path.endswith("/") else path
    host_path(key, path, role="mirror directory")


class ResolvedPaths(FactBase[dict[str, str]]):
    """Each path as the host resolves it (``realpath -m``: every symbolic link followed)."""

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def command(self, paths: Iterable[str]) -> str:
        return "; ".join(
            f"printf '%s\\t%s\\n' {shlex.quote(p)} \"$(realpath -m -- {shlex.quote(p)})\"" for p in paths
        )

    def process(self, output: list[str]) -> dict[str, str]:
        resolved: dict[str, str] = {}
        for line in output:
            path, sep, target = line.partition("\t")
            if sep:
                resolved[path] = target
        return resolved


def check_resolved(key: str, paths: Mapping[str, str], resolved: Mapping[str, str]) -> None:
    """Refuse a path (``paths``: path -> role) that the host resolves outside the accepted roots.

    A path the host did not answer for is taken as it is (``realpath -m`` always answers).
    """
    for path, role in paths.items():
        target = resolved.get(path, path)
        if target == path:
            continue
        try:
            host_path(key, target)
        except ConfigError:
            raise ConfigError(
                key,
                path,
                ACCEPTED,
                f"the {role} {path} resolves on the host to {target} (a symbolic link), outside the "
                "roots the deploys may use: refusing to write through it",
            ) from None
