"""Where a model and the bootstrap bundle live in a mirror (S3 bucket, directory or HTTP server).

The AWS side reads the same layout: the model store (``components/model_store.py``,
``MODELS_PREFIX``/``BOOTSTRAP_PREFIX``) and the fleet's host data (``components/fleet.py``:
``mirror: s3://<bucket>/models/<slug>/``, ``bootstrap: s3://<bucket>/bootstrap/``). These values are
kept equal to those by ``tests/mirror/test_layout.py``.
"""

from __future__ import annotations

import hashlib
import re

from llmkit.mirror.manifest import Manifest, MirrorError

MODELS_PREFIX = "models/"
BOOTSTRAP_PREFIX = "bootstrap/"
MAX_SLUG_LENGTH = 32
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


def model_slug(name: str) -> str:
    """``deepseek-r1:32b`` -> ``deepseek-r1-32b`` (as ``components.fleet.model_slug``)."""
    slug = _SLUG_CHARS.sub("-", name.lower()).strip("-")
    if not slug:
        raise MirrorError(f"model name {name!r} has no letters or digits to make a slug of")
    if len(slug) > MAX_SLUG_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_SLUG_LENGTH - 9].rstrip('-')}-{digest}"
    return slug


def default_prefix(manifest: Manifest) -> str:
    """``bootstrap/`` for the bundle, ``models/<slug of model:tag>/`` for a model."""
    if manifest.kind == "bundle":
        return BOOTSTRAP_PREFIX
    return f"{MODELS_PREFIX}{model_slug(manifest.name)}/"


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise MirrorError(f"--prefix {prefix!r}: no empty, '.' or '..' parts")
    return f"{prefix}/" if prefix else ""
