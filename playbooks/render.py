"""Render the templates in ``playbooks/templates/``: one Jinja environment for every deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from llmkit.tls import TLS_PROTOCOL

TEMPLATES = Path(__file__).resolve().parent / "templates"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,  # an undefined name is an error, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
# JSON text is a YAML double-quoted scalar; unlike ``tojson`` this keeps < > & as they are.
_ENV.filters["json"] = json.dumps
# Every template spells "TLS 1.3 only" as llmkit.tls does (nginx's ssl_protocols and the like).
_ENV.globals["tls_protocol"] = TLS_PROTOCOL


def render(template: str, **context: Any) -> str:
    """Render one of ``playbooks/templates`` with ``context``."""
    return _ENV.get_template(template).render(**context)
