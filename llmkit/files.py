"""File helpers shared by the mirror, the lab and the playbooks' host side (standard library only).

- :func:`sha256_file`: a file's sha256, read in 1 MiB blocks.
- :func:`atomic_write`: write bytes next to ``dest``, fsync, then rename over it (mode 0644), so a
  reader sees the old file or the whole new one, never a part.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

HASH_BLOCK = 1 << 20


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
