"""A host's TLS key material, read on the controller: shared by every deploy that serves TLS.

``pki_dir`` on the controller (``<pki_dir>/<host>.crt|.key`` and ``ca.crt``, as ``llmkit pki``
writes them) or PEM text in host data (``tls_cert``, ``tls_key``, ``tls_ca``). This module never
imports a deploy: the deploys import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TlsMaterial:
    """A host's certificate, key and the internal CA, as PEM text."""

    cert: str
    key: str
    ca: str


def _pem(text: str, what: str, marker: str = "-----BEGIN ") -> str:
    if marker not in text:
        raise ValueError(f"{what} is not PEM text (no '{marker.strip()}' line)")
    return text if text.endswith("\n") else text + "\n"


def tls_material(data: Mapping[str, Any], host_name: str) -> TlsMaterial:
    """The host's key material: ``pki_dir`` (controller files), else ``tls_cert``/``tls_key``/``tls_ca``."""
    pki_dir = data.get("pki_dir")
    if pki_dir:
        root = Path(str(pki_dir)).expanduser()
        paths = {"cert": root / f"{host_name}.crt", "key": root / f"{host_name}.key", "ca": root / "ca.crt"}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise ValueError(f"pki_dir: missing {', '.join(missing)} (run `llmkit pki` for host {host_name})")
        texts = {k: p.read_text(encoding="utf-8") for k, p in paths.items()}
        source = f"pki_dir ({root})"
    else:
        texts = {k: data.get(f"tls_{k}") or "" for k in ("cert", "key", "ca")}
        absent = [f"tls_{k}" for k, v in texts.items() if not v]
        if absent:
            raise ValueError(
                f"host {host_name}: no key material: set pki_dir, "
                f"or {', '.join(absent)} (PEM text) in host data"
            )
        source = "host data"
    return TlsMaterial(
        cert=_pem(texts["cert"], f"{source}: certificate of {host_name}", "-----BEGIN CERTIFICATE-----"),
        key=_pem(texts["key"], f"{source}: key of {host_name}", "PRIVATE KEY-----"),
        ca=_pem(texts["ca"], f"{source}: CA certificate", "-----BEGIN CERTIFICATE-----"),
    )


def client_ca_pem(value: str | None) -> str | None:
    """``mtls_client_ca`` as PEM text: given inline, or read from a controller path; None: no mTLS."""
    if not value:
        return None
    if "-----BEGIN" in value:
        return _pem(value, "mtls_client_ca", "-----BEGIN CERTIFICATE-----")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"mtls_client_ca: {value} is neither PEM text nor a file on the controller")
    return _pem(path.read_text(encoding="utf-8"), f"mtls_client_ca ({path})", "-----BEGIN CERTIFICATE-----")


def certificate_pem(name: str, data: Mapping[str, Any]) -> str:
    """Host ``name``'s certificate as the controller has it: ``<pki_dir>/<name>.crt``, else
    ``tls_cert`` (PEM text) from its host data."""
    pki_dir = data.get("pki_dir")
    if pki_dir:
        path = Path(str(pki_dir)).expanduser() / f"{name}.crt"
        if not path.is_file():
            raise ValueError(f"pki_dir: missing {path} (run `llmkit pki issue` for host {name})")
        return path.read_text(encoding="utf-8")
    text = data.get("tls_cert")
    if not text:
        raise ValueError(f"host {name}: no certificate: set pki_dir, or tls_cert (PEM text) in its host data")
    return str(text)
