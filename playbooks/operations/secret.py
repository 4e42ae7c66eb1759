"""``secret_file``: put a secret from the inventory on the host without ever showing it.

``files.put`` prints a text file's content (and, for a changed file, the old content it reads back
with ``cat``) when pyinfra runs with ``--diff``. A key or a password must never reach a terminal or
a CI log that way, so this operation compares digests only: the host's ``sha256sum`` of the file
(fact ``Sha256File``) against the digest of the wanted content, and uploads it over the
connector's file transfer (never inside a command line) only when they differ. Owner and mode are
checked and set like ``files.put`` does. The content is never echoed, diffed or logged.
"""

from __future__ import annotations

import hashlib
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.api.exceptions import OperationValueError
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations.util import files as file_utils


def _mode_of(value: str | int) -> int:
    """``"0600"`` -> 600: the File fact's digits-as-an-int form of a mode."""
    return int(str(value))


@operation()
def secret_file(dest: str, content: str, user: str = "root", group: str = "root", mode: str = "600"):
    """
    Write ``content`` to ``dest`` with ``user:group`` and ``mode``; never show the content.

    + dest: absolute path of the file
    + content: the secret text
    + user, group, mode: owner and permissions (default root:root 600)
    """
    if not dest.startswith("/"):
        raise OperationValueError(f"secret_file: dest must be an absolute path, got {dest!r}")
    digest = hashlib.sha256(content.encode()).hexdigest()
    current = host.get_fact(Sha256File, path=dest)
    if current is None or current.lower() != digest:
        yield FileUploadCommand(StringIO(content), dest, remote_temp_filename=host.get_temp_filename(dest))
        yield file_utils.chown(dest, user, group)
        yield file_utils.chmod(dest, mode)
        return
    info: dict[str, Any] = dict(host.get_fact(File, path=dest) or {})
    if info.get("user") != user or info.get("group") != group:
        yield file_utils.chown(dest, user, group)
    if info.get("mode") != _mode_of(mode):
        yield file_utils.chmod(dest, mode)
    if info.get("user") == user and info.get("group") == group and info.get("mode") == _mode_of(mode):
        host.noop(f"{dest} is up to date")
