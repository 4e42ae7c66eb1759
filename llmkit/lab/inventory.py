"""The lab's pyinfra inventory (``<state>/inventory.py``) and the lab PKI the deploys read.

Groups come from host-name prefixes (:func:`group_of`): ``proxy*`` → ``proxy``, ``gpu*`` →
``gpu``, ``monitoring*``/``mon*`` → ``monitoring``, ``gateway*`` → ``gateway``; any other host is
in ``lab``. As ``playbooks/inventories/onprem.example.py`` asks, site-wide values go in every
group's data (never an ``all`` group, which ``group_data/all.py`` would replace).

Lab-only choices, for reviewers: pyinfra logs in as root with the lab's generated key and does
not check host keys (``ssh_known_hosts_file=/dev/null``, ``ssh_strict_host_key_checking="no"``):
the machines are made fresh with new host keys on every ``up``, and reachable only on the lab's
own bridge. An inventory for real hosts must never copy these settings.

The file is plain Python literals (``repr`` of str, int, bool, None, lists and dicts), checked to
read back equal, so a value that is not a literal can never turn into code.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmkit import pki
from llmkit.errors import LlmkitError
from llmkit.lab import system

GROUP_PREFIXES: tuple[tuple[str, str], ...] = (
    ("proxy", "proxy"),
    ("gpu", "gpu"),
    ("monitoring", "monitoring"),
    ("mon", "monitoring"),
    ("gateway", "gateway"),
)
OTHER_GROUP = "lab"
GROUP_ORDER = ("proxy", "gpu", "monitoring", "gateway", OTHER_GROUP)
PROXY_SERVER_NAME = "proxy"
#: The DNS name the reverse proxy verifies on every model host's certificate; it must equal
#: ``playbooks.deploys.reverse_proxy.UPSTREAM_TLS_NAME`` (a unit test checks). llmkit is packaged
#: without the playbooks, so it is not imported from there.
MODEL_TLS_NAME = "model.llmkit.internal"
#: The DNS name the reverse proxy verifies on every gateway's certificate; it must equal
#: ``playbooks.deploys.reverse_proxy.GATEWAY_TLS_NAME`` (a unit test checks).
GATEWAY_TLS_NAME = "gateway.llmkit.internal"
LAB_CLIENT = "lab-client"
LAB_CA_NAME = "llmkit lab CA"
ARTIFACTS_FILE = "artifacts.json"


def group_of(name: str) -> str:
    for prefix, group in GROUP_PREFIXES:
        if name.startswith(prefix):
            return group
    return OTHER_GROUP


def ssh_data(address: str, ssh_key: Path) -> dict[str, Any]:
    return {
        "ssh_hostname": address,
        "ssh_user": "root",
        "ssh_key": str(ssh_key),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
    }


def mirror_data(mirror_dir: Path, mirror_url: str) -> dict[str, Any]:
    """Host data from ``<mirror>/artifacts.json`` (lab-contract.md); empty when there is none."""
    path = mirror_dir / ARTIFACTS_FILE
    if not path.is_file():
        return {}
    try:
        artifacts = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LlmkitError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(artifacts, dict):
        raise LlmkitError(f"{path}: expected a JSON object, got {type(artifacts).__name__}")
    url = mirror_url.rstrip("/")
    data: dict[str, Any] = {}
    ollama = artifacts.get("ollama")
    if isinstance(ollama, dict):
        data["ollama_mirror_url"] = url
        if ollama.get("version"):
            data["ollama_version"] = ollama["version"]
        if ollama.get("sha256"):
            data["ollama_sha256"] = ollama["sha256"]
    exporter = artifacts.get("node_exporter")
    if isinstance(exporter, dict):
        data["exporters_mirror_url"] = url
        if exporter.get("sha256"):
            data["node_exporter_sha256"] = exporter["sha256"]
    models = artifacts.get("models")
    if isinstance(models, list):
        data["models_mirror_url"] = f"{url}/models/"
        data["models"] = models
    return data


def site_data(
    *,
    controller_address: str,
    pki_dir: Path,
    mirror_dir: Path,
    mirror_url: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "admin_cidrs": [f"{controller_address}/32"],
        "client_cidrs": [f"{controller_address}/32"],
        "proxy_server_name": PROXY_SERVER_NAME,
        "pki_dir": str(pki_dir),
        # Mutual TLS at the proxy, as production should run: clients use the lab-client certificate.
        "mtls_client_ca": str(pki_dir / "ca.crt"),
    }
    data.update(mirror_data(mirror_dir, mirror_url))
    data.update(dict(extra or {}))
    return data


def _format(value: Any, indent: int) -> str:
    """``value`` as Python source, one item per line inside containers (4 spaces per level)."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{inner}{key!r}: {_format(item, indent + 4)}," for key, item in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple) and value:
        items = [f"{inner}{_format(item, indent + 4)}," for item in value]
        brackets = "[]" if isinstance(value, list) else "()"
        return brackets[0] + "\n" + "\n".join(items) + f"\n{pad}" + brackets[1]
    return repr(value)


def _literal(value: Any, what: str, indent: int = 0) -> str:
    """``value`` as source text that reads back equal, else refused (it would not be a literal)."""
    text = _format(value, indent)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise LlmkitError(f"inventory: {what} is not a plain Python literal: {value!r}")
    return text


def render(
    hosts: Sequence[tuple[str, str]],
    *,
    ssh_key: Path,
    site: Mapping[str, Any],
    state_dir: Path,
) -> str:
    """The inventory file for ``hosts`` ((name, address) in lab order)."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, address in hosts:
        data = ssh_data(address, ssh_key)
        group = group_of(name)
        if group == "gpu":
            data["model_bind_address"] = address
        groups.setdefault(group, []).append((name, data))
    lines = [
        f'"""pyinfra inventory of the llmkit lab in {state_dir} (written by `llmkit lab up`).',
        "",
        "Lab only: root logs in with the lab's key and host keys are not checked (fresh machines,",
        "reachable only on the lab's bridge). Regenerate with llmkit.lab.lab.write_inventory.",
        '"""',
        "",
        f"_SITE = {_literal(dict(site), 'site data')}",
    ]
    for group in GROUP_ORDER:
        members = groups.get(group)
        if not members:
            continue
        lines += [
            "",
            f"{group} = (",
            f"    {_literal(members, f'hosts of group {group}', indent=4)},",
            "    dict(_SITE),",
            ")",
        ]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    system.write_text(path, text, 0o644)
    return path


# --- PKI ------------------------------------------------------------------------------------------


def make_pki(pki_dir: Path, hosts: Sequence[tuple[str, str]]) -> list[str]:
    """The lab CA (kept if ``pki_dir`` has one) and fresh certificates; the names issued.

    Every host: a server certificate with its name and address. Proxy hosts also carry
    ``proxy_server_name`` and client usage (the proxy presents its own certificate to the model
    hosts); gpu hosts carry :data:`MODEL_TLS_NAME`; gateway hosts carry :data:`GATEWAY_TLS_NAME` and
    get client usage too (the gateway connects to each model host by its address, which every
    certificate carries). Plus :data:`LAB_CLIENT`, a client certificate for tests and admins.
    """
    if not (pki_dir / pki.CA_CERT).is_file():
        pki.init_ca(pki_dir, common_name=LAB_CA_NAME)
    issued = []
    for name, address in hosts:
        group = group_of(name)
        sans = [f"IP:{address}"]
        if group == "gpu":
            sans.append(f"DNS:{MODEL_TLS_NAME}")
        if group == "gateway":
            sans.append(f"DNS:{GATEWAY_TLS_NAME}")
        if group == "proxy" and name != PROXY_SERVER_NAME:
            sans.append(f"DNS:{PROXY_SERVER_NAME}")
        client = group in ("proxy", "gateway")
        pki.issue(pki_dir, name, server=True, client=client, sans=sans, force=True)
        issued.append(name)
    pki.issue(pki_dir, LAB_CLIENT, server=False, client=True, force=True)
    issued.append(LAB_CLIENT)
    return issued
