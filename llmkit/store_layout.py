"""The model store's layout, shared by the AWS components and ``llmkit mirror``.

One home for what both sides must agree on: where model files and the host bootstrap bundle live
in a mirror (an S3 bucket, a directory or an HTTP server), and a model's slug, which is also its
DNS label and the part of its AWS resource names.
"""

from __future__ import annotations

import hashlib
import re

MODELS_PREFIX = "models/"
BOOTSTRAP_PREFIX = "bootstrap/"
# Beside the files it lists, in every model directory and in the bundle (llmkit.mirror.manifest).
MANIFEST_NAME = "manifest.json"
MAX_SLUG_LENGTH = 32  # an ALB target group name is at most 32 characters
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


def model_slug(name: str) -> str:
    """A model name as a DNS label and resource name part: ``deepseek-r1:32b`` -> ``deepseek-r1-32b``.

    Lowercase ``[a-z0-9-]``, at most :data:`MAX_SLUG_LENGTH` characters; a longer name keeps its
    first 23 characters and gets 8 hex characters of its sha256, so slugs stay distinct.
    """
    slug = _SLUG_CHARS.sub("-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"model name {name!r} has no letters or digits to make a slug of")
    if len(slug) > MAX_SLUG_LENGTH:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_SLUG_LENGTH - 9].rstrip('-')}-{digest}"
    return slug
