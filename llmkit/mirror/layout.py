"""Where a model and the bootstrap bundle live in a mirror (S3 bucket, directory or HTTP server).

The prefixes and the model slug come from :mod:`llmkit.store_layout`, which the AWS side (the
model store and the fleet's host data) reads too.
"""

from __future__ import annotations

from llmkit.mirror.manifest import Manifest, MirrorError
from llmkit.store_layout import BOOTSTRAP_PREFIX, MODELS_PREFIX, model_slug


def default_prefix(manifest: Manifest) -> str:
    """``bootstrap/`` for the bundle, ``models/<slug of model:tag>/`` for a model."""
    if manifest.kind == "bundle":
        return BOOTSTRAP_PREFIX
    try:
        slug = model_slug(manifest.name)
    except ValueError as exc:
        raise MirrorError(str(exc)) from None
    return f"{MODELS_PREFIX}{slug}/"


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise MirrorError(f"--prefix {prefix!r}: no empty, '.' or '..' parts")
    return f"{prefix}/" if prefix else ""
