"""The gateway deploy (LiteLLM on bare metal) and how the proxies and the firewall change with it.

Facts in (canned command output on pyinfra's ``@fake`` connector), commands out, with the defaults
of ``group_data/all.py`` under every host. Rendered files are checked by the real tools where they
are installed (``nginx -t``, ``nft -c``, ``systemd-analyze verify``), and the shell the deploy sends
to make secrets on the host runs for real with ``sh`` in a temporary directory. The deploy itself
cannot run end to end here: Prisma's engines come from binaries.prisma.sh, which this sandbox
cannot reach.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import http.server
import ipaddress
import os
import re
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from llmkit.errors import ConfigError, ConfigErrors
from llmkit.gateway import MANAGEMENT_PATH_PREFIXES, litellm_release
from llmkit.lab import system
from playbooks import site
from playbooks.deploys import firewall as fw
from playbooks.deploys import gateway as gw
from playbooks.deploys import reverse_proxy as rp
from playbooks.facts.gateway import parse_env_keys, parse_postgres_state, postgres_query

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_SHA = "5" * 64
BUNDLE_URL = "https://mirror.example.internal/gateway/prisma-5.4.2-debian-openssl-3.0.x.tar.gz"
INDEX = "https://pypi.example.internal/simple"
MASTER_KEY = "sk-inventory-0123456789abcdefABCDEF"
EXTERNAL_DB = "postgresql://litellm:S3cretPassw0rd@db.example.internal:5432/litellm?sslmode=verify-full"
GATEWAY_ADDRESS = "10.30.0.10"


# --- test PKI (made here: no key material in the repository) --------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _san(value: str) -> x509.GeneralName:
    if value.startswith("IP:"):
        return x509.IPAddress(ipaddress.ip_address(value[3:]))
    return x509.DNSName(value)


def _cert(cn: str, key: Any, ca_key: Any, sans: list[str], usages: list[Any], ca: bool = False) -> str:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name("llmkit test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


class Pki:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("llmkit test CA", self.ca_key, self.ca_key, [], [], ca=True)

    def issue(self, cn: str, sans: list[str], usages: list[Any]) -> dict[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        return {
            "tls_cert": _cert(cn, key, self.ca_key, sans, usages),
            "tls_key": _key_pem(key),
            "tls_ca": self.ca,
        }


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


# --- an inventory: proxy, two gpu hosts, a gateway, monitoring -----------------------------------

GATEWAY_SECTION: dict[str, Any] = {
    "aliases": {
        "reasoning": {"model": "deepseek-r1:32b", "fallbacks": ["general"]},
        "general": {"model": "deepseek-r1:8b"},
    },
    "admin_cidrs": ["10.99.0.0/24"],
}


@pytest.fixture
def hosts(pki: Pki) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    def gpu(name: str, address: str, models: list[str]) -> tuple[str, dict[str, Any]]:
        tls = pki.issue(name, [name, f"IP:{address}", rp.UPSTREAM_TLS_NAME], [SERVER])
        return (
            f"@fake/{name}",
            {
                "ssh_hostname": address,
                "model_bind_address": address,
                "models": [{"name": m, "source": "registry"} for m in models],
                **tls,
            },
        )

    return {
        "proxy": [
            (
                "@fake/proxy-1",
                {"ssh_hostname": "10.10.0.5", **pki.issue("proxy-1", ["llm.example.com"], [SERVER, CLIENT])},
            )
        ],
        "gpu": [
            gpu("gpu-1", "10.20.1.11", ["deepseek-r1:32b"]),
            gpu("gpu-2", "10.20.1.12", ["deepseek-r1:32b", "deepseek-r1:8b"]),
        ],
        "gateway": [
            (
                "@fake/gw-1",
                {
                    "ssh_hostname": GATEWAY_ADDRESS,
                    "gateway": GATEWAY_SECTION,
                    "gateway_pip_index_url": INDEX,
                    "gateway_prisma_bundle": {"url": BUNDLE_URL, "sha256": BUNDLE_SHA, "size": 300 * 2**20},
                    **pki.issue(
                        "gw-1", ["gw-1", f"IP:{GATEWAY_ADDRESS}", rp.GATEWAY_TLS_NAME], [SERVER, CLIENT]
                    ),
                },
            )
        ],
        "monitoring": [("@fake/mon-1", {"ssh_hostname": "10.40.0.9"})],
    }


def gateway_data(hosts: dict[str, list[tuple[str, dict[str, Any]]]]) -> dict[str, Any]:
    return {**site.group_defaults(), **hosts["gateway"][0][1]}


def make_state(
    hosts: dict[str, list[tuple[str, dict[str, Any]]]],
    target: str,
    responses: dict[Any, Any],
    config: Config | None = None,
) -> tuple[State, Inventory]:
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    groups = {
        group: [
            (name, {**data, **({"fake_responses": responses} if name == target else {})})
            for name, data in members
        ]
        for group, members in hosts.items()
    }
    names = [name for members in hosts.values() for name, _ in members]
    # The defaults of group_data/all.py under everything the inventory sets, as site.py gives them.
    inventory = Inventory(
        (names, {**site.group_defaults(), **fake}), **{g: (m, {}) for g, m in groups.items()}
    )
    state = State(inventory, config or Config())
    connect_all(state)
    return state, inventory


def run_deploy(
    deploy_func: Any,
    hosts: dict[str, list[tuple[str, dict[str, Any]]]],
    responses: dict[Any, Any],
    target: str = "@fake/gw-1",
) -> tuple[list[str], list[str]]:
    """(every command sent to the target, the names of the operations that changed something)."""
    state, inventory = make_state(hosts, target, responses)
    member = inventory.get_host(target)
    add_deploy(state, deploy_func, host=member)
    run_ops(state)
    assert member not in state.failed_hosts
    changed = [
        state.get_op_meta(op_hash).names
        for op_hash in state.get_op_order()
        if (data := state.ops[member].get(op_hash)) is not None and data.operation_meta.did_change()
    ]
    connector = member.connector
    assert isinstance(connector, FakeConnector)
    return list(connector.executed_commands), [sorted(n)[0] for n in changed]


def refused_before_any_command(
    hosts: dict[str, Any], responses: dict[Any, Any]
) -> tuple[Exception, list[str]]:
    state, inventory = make_state(hosts, "@fake/gw-1", responses)
    member = inventory.get_host("@fake/gw-1")
    with pytest.raises((ConfigError, ConfigErrors, ValueError)) as raised:
        add_deploy(state, gw.gateway, host=member)
    connector = member.connector
    assert isinstance(connector, FakeConnector)
    return raised.value, list(connector.executed_commands)


# --- facts in: a fresh Debian 12 host, and one where everything is in place -----------------------

BASE: dict[Any, Any] = {
    re.compile(r"^uname -s$"): "Linux",
    "command -v useradd": "/usr/sbin/useradd",
    "--output=avail": ["Avail", str(500 * 2**30)],
}


def stat_line(
    path: str, user: str = "root", group: str = "root", mode: str = "-rw-r--r--", target: str = ""
) -> str:
    link = f" -> '{target}'" if target else ""
    now = int(time.time())
    return f"user={user} group={group} mode={mode} atime=0 mtime={now} ctime=0 size=1 '{path}'{link}"


def exists(
    path: str, user: str = "root", group: str = "root", mode: str = "-rw-r--r--", target: str = ""
) -> dict[Any, Any]:
    return {re.compile(rf"stat -c .* {re.escape(path)} 2>"): stat_line(path, user, group, mode, target)}


def put(
    path: str, content: str, user: str = "root", group: str = "root", mode: str = "-rw-r--r--"
) -> dict[Any, Any]:
    """``path`` holds ``content`` (what files.put compares: sha1sum and stat)."""
    return {
        f"sha1sum {path} ": f"{hashlib.sha1(content.encode()).hexdigest()}  {path}",
        **exists(path, user, group, mode),
    }


def secret(path: str, content: str, group: str = gw.GATEWAY_USER, mode: str = "-rw-r-----") -> dict[Any, Any]:
    """``path`` holds ``content`` (what secret_file compares: sha256sum and stat)."""
    return {
        f"sha256sum {path} ": f"{hashlib.sha256(content.encode()).hexdigest()}  {path}",
        **exists(path, "root", group, mode),
    }


def unit_allow(hosts: dict[str, Any]) -> list[str]:
    """The gateway unit's IPAddressAllow= for these hosts: the proxies and the model hosts."""
    settings = gw.gateway_settings(gateway_data(hosts))
    backends = gw.gateway_backends((name, {**site.group_defaults(), **d}) for name, d in hosts["gpu"])
    return gw.unit_ip_allow(settings, GATEWAY_ADDRESS, hosts["proxy"], backends)[0]


def everything_present(hosts: dict[str, Any], *, local_database: bool = True) -> dict[Any, Any]:
    """Facts of a gateway host after a successful first run."""
    data = gateway_data(hosts)
    settings = gw.gateway_settings(data)
    backends = gw.gateway_backends((name, {**site.group_defaults(), **d}) for name, d in hosts["gpu"])
    material = rp.tls_material(data, "@fake/gw-1")
    venv = gw.venv_dir(gw.lock_digest())
    user = gw.GATEWAY_USER
    packages = ["python3-venv", "nodejs", "openssl", "curl", "ca-certificates", "postgresql"]
    responses: dict[Any, Any] = {
        **BASE,
        "dpkg -l": [f"ii  {p} 1.0-1 amd64 {p}" for p in packages],
        **exists("/var/lib/apt/periodic/update-success-stamp"),
        "cat /etc/group": [f"{user}:x:998:", "postgres:x:105:"],
        "cat /etc/passwd": [f"{user}:x:998:998::{gw.GATEWAY_HOME}:{gw.NOLOGIN}|{user}|{user}||!"],
        **exists(gw.GATEWAY_HOME, user, user, "drwxr-x---"),
        **exists("/etc/llmkit", mode="drwxr-xr-x"),
        **exists(gw.CONFIG_DIR, "root", user, "drwxr-x---"),
        **exists(gw.TLS_DIR, "root", user, "drwxr-x---"),
        **exists(gw.PRISMA_ROOT, mode="drwxr-xr-x"),
        **exists(gw.PG_TLS_DIR, "postgres", "postgres", "drwx------"),
        **put(gw.SERVER_CERT, material.cert),
        **put(gw.CA_CERT, material.ca),
        **secret(gw.SERVER_KEY, material.key),
        **secret(gw.CLIENT_PEM, material.cert + material.key),
        **put(gw.LOCK_DEST, gw.LOCK_FILE.read_text()),
        **exists(f"{venv}/{gw.INSTALLED_MARKER}"),
        **exists(gw.VENV_LINK, mode="lrwxrwxrwx", target=venv),
        **exists(settings.bundle.query_engine, mode="-rwxr-xr-x"),
        **put(gw.ENV_PATH, gw.render_env(settings)),
        **exists(gw.generated_marker(venv, settings.bundle)),
        gw.SECRETS_PATH: [gw.MASTER_KEY_ENV, gw.SALT_KEY_ENV, gw.DATABASE_URL_ENV],
        **exists(gw.PG_SETTINGS["ssl_key_file"], "postgres", "postgres", "-rw-------"),
        "pg_settings": [f"setting|{k}|{v}" for k, v in gw.PG_SETTINGS.items()]
        + [f"role|{gw.DB_ROLE}|", f"database|{gw.DB_NAME}|"],
        **put(gw.CONFIG_PATH, gw.render_litellm_config(settings, backends), "root", user, "-rw-r-----"),
        **put(gw.UNIT_PATH, gw.render_unit(settings, GATEWAY_ADDRESS, unit_allow(hosts))),
        **exists("/etc/systemd/system", mode="drwxr-xr-x"),
        **{
            f"--property {prop} {unit}": [f"Id={unit}", f"{prop}={value}"]
            for unit in (gw.SERVICE, "postgresql.service")
            for prop, value in (("SubState", "running"), ("UnitFileState", "enabled"))
        },
    }
    # The INSTALL_ROOT stat pattern would also match the venv marker's path: keep it last.
    responses.update(exists(gw.INSTALL_ROOT, mode="drwxr-xr-x"))
    if not local_database:
        responses["dpkg -l"] = responses["dpkg -l"][:-1]
    return responses


FRESH_DEBIAN_12: dict[Any, Any] = {**BASE}


def ops(commands: list[str], marker: str) -> list[str]:
    return [c for c in commands if marker in c]


def index_of(commands: list[str], marker: str) -> int:
    return next(i for i, c in enumerate(commands) if marker in c)


# --- settings: every mistake names its key, before anything runs ---------------------------------


def test_settings_from_host_data(hosts: dict[str, Any]) -> None:
    settings = gw.gateway_settings(gateway_data(hosts))
    assert settings.port == litellm_release().port == 4000
    assert settings.bundle.directory == f"/opt/llmkit/gateway/prisma/{BUNDLE_SHA[:16]}"
    assert settings.bundle.binary_target == "debian-openssl-3.0.x"
    assert settings.local_database and settings.master_key is None
    assert list(settings.config.aliases) == ["reasoning", "general"]
    assert "sk-" not in repr(settings)  # secrets stay out of reprs (and tracebacks)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"aliases": {"x": {}}}, "gateway.aliases.x.model"),
        (
            {"aliases": {"x": {"model": "deepseek-r1:32b", "fallbacks": ["nope"]}}},
            r"gateway.aliases.x.fallbacks\[0\]",
        ),
        ({"aliases": {}}, "gateway.aliases"),
        (
            {"aliases": {"x": {"model": "deepseek-r1:32b"}}, "admin_cidrs": ["10.0.0.1/8"]},
            r"gateway.admin_cidrs\[0\]",
        ),
        ({"aliases": {"x": {"model": "deepseek-r1:32b"}}, "num_retries": 99}, "gateway.num_retries"),
        ({"aliases": {"x": {"model": "deepseek-r1:32b"}}, "colour": "blue"}, "gateway.colour"),
        (None, "gateway"),
        ("aliases: x", "gateway"),
    ],
)
def test_an_invalid_gateway_mapping_names_the_key(section: Any, key: str) -> None:
    with pytest.raises((ConfigError, ConfigErrors), match=rf"{key}: "):
        gw.gateway_config(section)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"gateway_prisma_bundle": None}, "gateway_prisma_bundle"),
        ({"gateway_prisma_bundle": {"url": BUNDLE_URL, "sha256": "abc"}}, "gateway_prisma_bundle.sha256"),
        ({"gateway_prisma_bundle": {"url": "ftp://m/x", "sha256": BUNDLE_SHA}}, "gateway_prisma_bundle.url"),
        (
            {"gateway_prisma_bundle": {"url": BUNDLE_URL, "sha256": BUNDLE_SHA, "md5": "x"}},
            "gateway_prisma_bundle.md5",
        ),
        ({"gateway_port": 70000}, "gateway_port"),
        ({"gateway_bind_address": "0.0.0.0"}, "gateway_bind_address"),
        ({"gateway_pip_index_url": "pypi.example"}, "gateway_pip_index_url"),
        ({"gateway_pip_proxy": "proxy:3128"}, "gateway_pip_proxy"),
    ],
)
def test_bad_settings_name_their_key(hosts: dict[str, Any], overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
        gw.gateway_settings({**gateway_data(hosts), **overrides})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gateway_master_key", "not-a-litellm-key-0123456789"),
        ("gateway_database_url", "postgresql://litellm:S3cretPassw0rd@db.example.internal/litellm"),
        ("gateway_database_url", "postgresql://litellm:S3cretPassw0rd@db/litellm?sslmode=prefer"),
        ("gateway_database_url", "mysql://litellm:S3cretPassw0rd@db/litellm?sslmode=require"),
    ],
)
def test_bad_secrets_are_refused_without_showing_them(hosts: dict[str, Any], key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: ") as raised:
        gw.gateway_settings({**gateway_data(hosts), key: value})
    assert value not in str(raised.value)
    assert "S3cretPassw0rd" not in str(raised.value) and "0123456789" not in str(raised.value)


def test_external_database_and_inventory_master_key(hosts: dict[str, Any]) -> None:
    settings = gw.gateway_settings(
        {**gateway_data(hosts), "gateway_master_key": MASTER_KEY, "gateway_database_url": EXTERNAL_DB}
    )
    assert not settings.local_database
    assert gw.secrets_to_make(settings, None) == [gw.SALT_KEY_ENV]
    assert gw.inventory_secrets(settings) == f"LITELLM_MASTER_KEY={MASTER_KEY}\nDATABASE_URL={EXTERNAL_DB}\n"
    local = gw.gateway_settings(gateway_data(hosts))
    assert gw.secrets_to_make(local, None) == ["LITELLM_MASTER_KEY", "LITELLM_SALT_KEY", "DATABASE_URL"]
    assert gw.secrets_to_make(local, frozenset({"LITELLM_MASTER_KEY", "LITELLM_SALT_KEY"})) == [
        "DATABASE_URL"
    ]
    assert gw.inventory_secrets(local) is None


# --- backends: the model hosts, each verified under its own address -------------------------------


def test_backends_are_the_model_hosts_by_address(hosts: dict[str, Any]) -> None:
    backends = gw.gateway_backends((n, {**site.group_defaults(), **d}) for n, d in hosts["gpu"])
    assert {m: [b.api_base for b in bs] for m, bs in backends.items()} == {
        "deepseek-r1:32b": ["https://10.20.1.11:11434", "https://10.20.1.12:11434"],
        "deepseek-r1:8b": ["https://10.20.1.12:11434"],
    }
    gw.check_served(gw.gateway_config(GATEWAY_SECTION), backends)
    with pytest.raises(ConfigError, match=r"^gateway.aliases.big.model: no model host serves this model"):
        gw.check_served(gw.gateway_config({"aliases": {"big": {"model": "deepseek-r1:70b"}}}), backends)


def test_a_model_host_certificate_without_its_address_is_refused(pki: Pki) -> None:
    tls = pki.issue("gpu-9", ["gpu-9", rp.UPSTREAM_TLS_NAME], [SERVER])
    data = {
        "model_bind_address": "10.20.1.19",
        "model_port": 11434,
        "models": [{"name": "deepseek-r1:32b"}],
        **tls,
    }
    with pytest.raises(ValueError, match=r"gpu-9 does not name 10\.20\.1\.19 .*--san IP:10\.20\.1\.19"):
        gw.gateway_backends([("gpu-9", data)])


def test_certificates_come_from_pki_dir(tmp_path: Path, pki: Pki) -> None:
    tls = pki.issue("gpu-3", ["gpu-3", "IP:10.20.1.13"], [SERVER])
    (tmp_path / "gpu-3.crt").write_text(tls["tls_cert"])
    data = {
        "pki_dir": str(tmp_path),
        "model_bind_address": "10.20.1.13",
        "model_port": 11434,
        "models": ["deepseek-r1:8b"],
    }
    assert gw.gateway_backends([("gpu-3", data)])["deepseek-r1:8b"][0].api_base == "https://10.20.1.13:11434"
    with pytest.raises(ValueError, match=r"missing .*gpu-4\.crt"):
        gw.gateway_backends([("gpu-4", {**data, "model_bind_address": "10.20.1.14"})])


@pytest.mark.parametrize(
    ("sans", "usages", "message"),
    [
        (["gw-2", "IP:10.30.0.12"], [SERVER, CLIENT], "does not carry gateway.llmkit.internal"),
        (["gw-2", rp.GATEWAY_TLS_NAME], [SERVER], "lacks --client usage"),
    ],
)
def test_the_gateway_certificate_needs_the_pool_name_and_client_usage(
    pki: Pki, sans: list[str], usages: list[Any], message: str
) -> None:
    tls = pki.issue("gw-2", sans, usages)
    with pytest.raises(ValueError, match=message):
        gw.check_own_certificate(rp.tls_material(tls, "gw-2"), "gw-2")


# --- rendered files -------------------------------------------------------------------------------


def test_litellm_config_routes_to_the_model_hosts_with_mutual_tls(hosts: dict[str, Any]) -> None:
    settings = gw.gateway_settings(gateway_data(hosts))
    backends = gw.gateway_backends((n, {**site.group_defaults(), **d}) for n, d in hosts["gpu"])
    text = gw.render_litellm_config(settings, backends)
    config = yaml.safe_load(text)
    bases = sorted((d["model_name"], d["litellm_params"]["api_base"]) for d in config["model_list"])
    assert bases == [
        ("general", "https://10.20.1.12:11434"),
        ("reasoning", "https://10.20.1.11:11434"),
        ("reasoning", "https://10.20.1.12:11434"),
    ]
    assert config["litellm_settings"]["ssl_verify"] == gw.CA_CERT
    assert config["litellm_settings"]["ssl_certificate"] == gw.CLIENT_PEM
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert config["general_settings"]["database_url"] == "os.environ/DATABASE_URL"
    assert config["router_settings"]["fallbacks"] == [{"reasoning": ["general"]}]
    assert "sk-" not in text and "PRIVATE KEY" not in text


def test_environment_points_prisma_at_the_bundle(hosts: dict[str, Any]) -> None:
    settings = gw.gateway_settings(gateway_data(hosts))
    env = dict(
        line.split("=", 1)
        for line in gw.render_env(settings).splitlines()
        if line and not line.startswith("#")
    )
    bundle = f"/opt/llmkit/gateway/prisma/{BUNDLE_SHA[:16]}"
    assert env["PRISMA_QUERY_ENGINE_BINARY"] == f"{bundle}/engines/query-engine"
    assert env["PRISMA_SCHEMA_ENGINE_BINARY"] == f"{bundle}/engines/schema-engine"
    assert env["PRISMA_BINARY_CACHE_DIR"] == f"{bundle}/binaries"
    assert env["PRISMA_CLI_PATH"] == f"{bundle}/binaries/node_modules/.bin/prisma"
    assert env["PRISMA_CLI_BINARY_TARGETS"] == "debian-openssl-3.0.x"
    assert env["PRISMA_OFFLINE_MODE"] == "true" and env["CHECKPOINT_DISABLE"] == "1"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"  # no cost map from GitHub at start
    assert env["PATH"].startswith("/opt/llmkit/gateway/venv/bin:")
    assert not any("KEY" in k and "PRISMA" not in k for k in env)  # no secrets here


def unit_lines(settings: gw.GatewaySettings) -> list[str]:
    text = gw.render_unit(settings, GATEWAY_ADDRESS)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_unit_is_hardened(hosts: dict[str, Any]) -> None:
    body = unit_lines(gw.gateway_settings(gateway_data(hosts)))
    for line in (
        "User=llmkit-gateway",
        "Group=llmkit-gateway",
        "ExecStart=/opt/llmkit/gateway/venv/bin/litellm --config /etc/llmkit/gateway/config.yaml "
        "--host 10.30.0.10 --port 4000 --ssl_keyfile_path /etc/llmkit/gateway/tls/server.key "
        "--ssl_certfile_path /etc/llmkit/gateway/tls/server.crt",
        "EnvironmentFile=/etc/llmkit/gateway/gateway.env",
        "EnvironmentFile=/etc/llmkit/gateway/secrets.env",
        "EnvironmentFile=-/etc/llmkit/gateway/inventory-secrets.env",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/llmkit-gateway",
        "ProtectHome=true",
        "PrivateTmp=true",
        "PrivateDevices=true",
        "Restart=on-failure",
        "After=network-online.target postgresql.service",
    ):
        assert line in body, line
    assert not any("0.0.0.0" in line for line in body)
    external = gw.gateway_settings({**gateway_data(hosts), "gateway_database_url": EXTERNAL_DB})
    assert "After=network-online.target" in unit_lines(external)


SYSTEMD_ANALYZE = system.which("systemd-analyze")


@pytest.mark.needs("systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path, hosts: dict[str, Any]) -> None:
    litellm = tmp_path / "litellm"  # the real binary is in the virtualenv on the host
    litellm.write_text("#!/bin/sh\n")
    litellm.chmod(0o755)
    unit = tmp_path / "llmkit-gateway.service"
    text = gw.render_unit(gw.gateway_settings(gateway_data(hosts)), GATEWAY_ADDRESS)
    unit.write_text(text.replace(f"{gw.VENV_LINK}/bin/litellm", str(litellm)))

    def verify(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSTEMD_ANALYZE or "systemd-analyze", "verify", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    result = verify(unit)
    problems = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not problems, result.stderr
    bad = tmp_path / "bad.service"  # the check is real: a bad value is reported
    bad.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    assert "bad.service" in verify(bad).stderr


# --- the deploy: first run on a fresh Debian 12 host ---------------------------------------------


def test_first_run_on_a_fresh_debian_12_host(hosts: dict[str, Any]) -> None:
    commands, changed = run_deploy(gw.gateway, hosts, FRESH_DEBIAN_12)
    assert changed
    (apt,) = [c for c in commands if "apt-get" in c and " install " in c]
    for package in ("python3-venv", "nodejs", "postgresql", "openssl"):
        assert package in apt
    assert "groupadd -r llmkit-gateway" in commands
    # The service reads its configuration and key through directories of its group, and nothing
    # takes that group away again.
    assert f"chown root:llmkit-gateway {gw.CONFIG_DIR}" in commands
    assert f"chown root:llmkit-gateway {gw.TLS_DIR}" in commands
    assert not [
        c for c in commands if c in (f"chown root:root {gw.CONFIG_DIR}", f"chown root:root {gw.TLS_DIR}")
    ]
    assert (
        "useradd -d /var/lib/llmkit-gateway -s /usr/sbin/nologin -g llmkit-gateway -r -M llmkit-gateway"
        in commands
    )

    venv = gw.venv_dir(gw.lock_digest())
    (install,) = ops(commands, "pip install")
    assert f"python3 -m venv {venv}" in install
    assert f"--require-hashes --no-deps --index-url {INDEX} -r {gw.LOCK_DEST}" in install
    assert """assert v == "1.108.7", v""" in install
    assert any(c == f"ln -s {venv} {gw.VENV_LINK}" for c in commands)

    (fetch,) = ops(commands, "curl --fail --location --continue-at -")
    assert f"url={BUNDLE_URL}" in fetch and f"expected={BUNDLE_SHA}" in fetch
    (extract,) = ops(commands, "tar -xzf")
    assert extract.index("sha256sum --check") < extract.index("tar -xzf")
    assert f"grep -q {gw.PRISMA_ENGINE_VERSION}" in extract
    (generate,) = ops(commands, "prisma generate")
    assert f"{venv}/bin/prisma generate --schema" in generate and "litellm/proxy/schema.prisma" in generate

    (secrets,) = ops(commands, "openssl rand")
    for name in ("LITELLM_MASTER_KEY", "LITELLM_SALT_KEY", "DATABASE_URL"):
        assert f"grep -q '^{name}=' \"$f\" || echo" in secrets  # each made only when absent
    assert "umask 077" in secrets and 'chmod 600 "$f"' in secrets
    assert "sslmode=require" in secrets and "@127.0.0.1:5432/litellm" in secrets

    (settings,) = ops(commands, "ALTER SYSTEM")
    assert "ALTER SYSTEM SET listen_addresses = '127.0.0.1'" in settings
    assert "ALTER SYSTEM SET ssl = 'on'" in settings
    assert "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.3'" in settings
    assert settings.endswith("systemctl restart postgresql.service")
    (certificate,) = ops(commands, "openssl req -x509")
    assert "subjectAltName=IP:127.0.0.1" in certificate
    (role,) = ops(commands, "CREATE ROLE litellm")
    assert "NOSUPERUSER" in role and "PASSWORD '$pw'" in role
    (database,) = ops(commands, "createdb")
    assert "--owner=litellm" in database

    # Order: the venv before the client is generated; secrets before the role that reads them; the
    # unit last, then the wait for LiteLLM's health endpoint under the name the proxies verify.
    assert index_of(commands, "pip install") < index_of(commands, "prisma generate")
    assert index_of(commands, "tar -xzf") < index_of(commands, "prisma generate")
    assert index_of(commands, "openssl rand") < index_of(commands, "CREATE ROLE")
    assert (
        index_of(commands, "ALTER SYSTEM")
        < index_of(commands, "CREATE ROLE")
        < index_of(commands, "createdb")
    )
    start = index_of(commands, "systemctl start llmkit-gateway.service")
    assert index_of(commands, "createdb") < start
    assert "systemctl daemon-reload" in commands
    (wait,) = ops(commands, "/health/liveliness")
    assert f"--resolve gateway.llmkit.internal:4000:{GATEWAY_ADDRESS}" in wait
    assert commands.index(wait) > start
    assert index_of(commands, "find /opt/llmkit/gateway") > commands.index(wait)  # old venvs go last


def test_secrets_never_appear_in_the_command_log(hosts: dict[str, Any]) -> None:
    hosts["gateway"][0][1].update(gateway_master_key=MASTER_KEY, gateway_database_url=EXTERNAL_DB)
    commands, _ = run_deploy(gw.gateway, hosts, FRESH_DEBIAN_12)
    log = "\n".join(commands)
    assert MASTER_KEY not in log and "S3cretPassw0rd" not in log
    assert not re.search(r"sk-[0-9a-f]{16}", log)  # generated keys are made on the host, not here
    assert "PRIVATE KEY" not in log
    # The inventory's secrets are uploaded as a file (0600 root), never inside a command.
    assert f"chmod 600 {gw.INVENTORY_SECRETS_PATH}" in commands
    # External database: no local PostgreSQL, and no DATABASE_URL or master key made on the host.
    (secrets,) = ops(commands, f"f={gw.SECRETS_PATH}")
    assert "LITELLM_SALT_KEY" in secrets and "DATABASE_URL" not in secrets and "MASTER_KEY" not in secrets
    assert not ops(commands, "ALTER SYSTEM") and not ops(commands, "CREATE ROLE")
    assert not any("apt-get" in c and "postgresql" in c for c in commands)


def test_secrets_stay_out_of_pyinfra_diffs(hosts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """``pyinfra --diff`` prints what files.put writes; the keys and secrets go through secret_file."""
    hosts["gateway"][0][1].update(gateway_master_key=MASTER_KEY, gateway_database_url=EXTERNAL_DB)
    state, inventory = make_state(hosts, "@fake/gw-1", FRESH_DEBIAN_12, Config(DIFF=True))
    with caplog.at_level("DEBUG"):
        add_deploy(state, gw.gateway, host=inventory.get_host("@fake/gw-1"))
        run_ops(state)
    assert "BEGIN CERTIFICATE" in caplog.text  # the diff is on: certificates are shown
    assert MASTER_KEY not in caplog.text and "S3cretPassw0rd" not in caplog.text
    assert "PRIVATE KEY" not in caplog.text


def test_pip_credentials_are_masked(hosts: dict[str, Any]) -> None:
    hosts["gateway"][0][1].update(
        gateway_pip_index_url="https://ci:t0ken@pypi.example.internal/simple",
        gateway_pip_proxy="http://proxyuser:pr0xyPass@proxy.example.internal:3128",
    )
    commands, _ = run_deploy(gw.gateway, hosts, FRESH_DEBIAN_12)
    (install,) = ops(commands, "pip install")
    assert "t0ken" not in install and "pr0xyPass" not in install
    assert "--index-url *MASKED* --proxy *MASKED*" in install
    raw = gw.install_command("/opt/x", "https://ci:t0ken@pypi.example.internal/simple", None).get_raw_value()
    assert "--index-url https://ci:t0ken@pypi.example.internal/simple" in raw  # what the host runs


# --- the deploy: second run, and refusals ----------------------------------------------------------


def test_second_run_with_everything_present_runs_no_command(hosts: dict[str, Any]) -> None:
    commands, changed = run_deploy(gw.gateway, hosts, everything_present(hosts))
    assert changed == []
    assert not ops(commands, "pip install") and not ops(commands, "openssl rand")
    assert not any(c.startswith("systemctl") and "show" not in c for c in commands)


def test_a_changed_lock_or_bundle_reinstalls_and_restarts(hosts: dict[str, Any]) -> None:
    responses = everything_present(hosts)
    venv = gw.venv_dir(gw.lock_digest())
    del responses[re.compile(rf"stat -c .* {re.escape(f'{venv}/{gw.INSTALLED_MARKER}')} 2>")]
    commands, _ = run_deploy(gw.gateway, hosts, responses)
    assert ops(commands, "pip install") and ops(commands, "prisma generate")
    assert "systemctl restart llmkit-gateway.service" in commands
    assert not ops(commands, "openssl rand") and not ops(commands, "CREATE ROLE")
    assert index_of(commands, "systemctl restart llmkit-gateway") < index_of(
        commands, "find /opt/llmkit/gateway"
    )


def test_missing_secrets_are_added_and_the_role_rekeyed(hosts: dict[str, Any]) -> None:
    responses = everything_present(hosts)
    responses[gw.SECRETS_PATH] = [gw.MASTER_KEY_ENV, gw.SALT_KEY_ENV]
    commands, _ = run_deploy(gw.gateway, hosts, responses)
    (secrets,) = ops(commands, "openssl rand")
    assert "DATABASE_URL" in secrets and "LITELLM_SALT_KEY" not in secrets
    assert ops(commands, "ALTER ROLE litellm")
    assert "systemctl restart llmkit-gateway.service" in commands


def test_missing_prisma_bundle_fails_before_any_command(hosts: dict[str, Any]) -> None:
    del hosts["gateway"][0][1]["gateway_prisma_bundle"]
    error, commands = refused_before_any_command(hosts, FRESH_DEBIAN_12)
    assert str(error).startswith("gateway_prisma_bundle: required on gateway hosts")
    assert commands == []


def test_an_invalid_gateway_mapping_fails_before_any_command(hosts: dict[str, Any]) -> None:
    hosts["gateway"][0][1]["gateway"] = {"aliases": {"x": {"fallbacks": []}}}
    error, commands = refused_before_any_command(hosts, FRESH_DEBIAN_12)
    assert "gateway.aliases.x.model: missing required key" in str(error)
    assert commands == []


def test_an_alias_no_model_host_serves_fails_before_any_command(hosts: dict[str, Any]) -> None:
    hosts["gateway"][0][1]["gateway"] = {"aliases": {"x": {"model": "deepseek-r1:70b"}}}
    error, commands = refused_before_any_command(hosts, FRESH_DEBIAN_12)
    assert str(error).startswith("gateway.aliases.x.model: no model host serves this model")
    assert commands == []


# --- facts ----------------------------------------------------------------------------------------


def test_env_keys_fact_reports_names_only() -> None:
    assert parse_env_keys(["@@llmkit-file-absent"]) is None
    assert parse_env_keys(["LITELLM_MASTER_KEY", "DATABASE_URL", ""]) == {
        "LITELLM_MASTER_KEY",
        "DATABASE_URL",
    }


def test_env_keys_fact_command_runs_for_real(tmp_path: Path) -> None:
    from playbooks.facts.gateway import EnvFileKeys

    env = tmp_path / "secrets.env"
    env.write_text("LITELLM_MASTER_KEY=sk-abc\n# a comment\nDATABASE_URL=postgresql://u:p@h/d\n")
    command = EnvFileKeys().command(str(env))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["LITELLM_MASTER_KEY", "DATABASE_URL"]  # no value ever printed
    absent = subprocess.run(
        ["sh", "-c", EnvFileKeys().command(str(tmp_path / "x"))], capture_output=True, text=True
    )
    assert parse_env_keys(absent.stdout.splitlines()) is None


def test_postgres_fact_states() -> None:
    assert not parse_postgres_state(["@@llmkit-postgres-absent"]).installed
    down = parse_postgres_state(["@@llmkit-postgres-down"])
    assert down.installed and not down.running
    up = parse_postgres_state(["setting|ssl|on", "setting|listen_addresses|127.0.0.1", "role|litellm|"])
    assert up.running and up.settings == {"ssl": "on", "listen_addresses": "127.0.0.1"}
    assert up.roles == {"litellm"} and up.databases == frozenset()
    assert "WHERE name IN ('ssl', 'listen_addresses')" in postgres_query(
        ["ssl", "listen_addresses"], "r", "d"
    )
    with pytest.raises(ValueError, match="not a plain SQL name"):
        postgres_query(["ssl'; DROP TABLE x; --"], "r", "d")


# --- the shell that makes the secrets, run for real ----------------------------------------------


def _on_tmp(command: str, tmp_path: Path) -> str:
    text = command.replace(gw.SECRETS_PATH, str(tmp_path / "secrets.env"))
    return text if os.geteuid() == 0 else text.replace('chown root:root "$f"; ', "")


@pytest.mark.needs("openssl")
def test_secrets_are_made_once_on_the_host(tmp_path: Path) -> None:
    names = ["LITELLM_MASTER_KEY", "LITELLM_SALT_KEY", "DATABASE_URL"]
    script = _on_tmp(gw.secrets_command(names), tmp_path)
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    path = tmp_path / "secrets.env"
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in first.splitlines())
    assert re.fullmatch(r"sk-[0-9a-f]{64}", values["LITELLM_MASTER_KEY"])
    assert re.fullmatch(r"sk-[0-9a-f]{64}", values["LITELLM_SALT_KEY"])
    assert values["LITELLM_MASTER_KEY"] != values["LITELLM_SALT_KEY"]
    assert re.fullmatch(
        r"postgresql://litellm:[0-9a-f]{48}@127\.0\.0\.1:5432/litellm\?sslmode=require",
        values["DATABASE_URL"],
    )
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    assert path.read_text() == first  # present secrets are never replaced (the salt key must not change)

    # The role command reads the password back from the file and feeds it to psql on stdin.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    runuser = fake_bin / "runuser"
    runuser.write_text(f"#!/bin/sh\ncat > {tmp_path}/psql-stdin\n")
    runuser.chmod(0o755)
    role = gw.postgres_role_command().replace(gw.SECRETS_PATH, str(path))
    subprocess.run(
        ["sh", "-c", role], check=True, timeout=30, env={**os.environ, "PATH": f"{fake_bin}:/usr/bin:/bin"}
    )
    sql = (tmp_path / "psql-stdin").read_text()
    password = values["DATABASE_URL"].split(":")[2].split("@")[0]
    assert (
        "CREATE ROLE litellm WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"PASSWORD '{password}'" in sql
    )
    assert sql.startswith("DO $$ BEGIN") and sql.rstrip().endswith("END $$;")
    assert password not in role  # the command itself holds no secret


# --- the proxies with gateways --------------------------------------------------------------------

PROXY_DATA = {
    **site.group_defaults(),
    "proxy_server_name": "llm.example.com",
    "client_cidrs": ["203.0.113.0/24"],
}


def gateway_proxy_context(hosts: dict[str, Any]) -> dict[str, Any]:
    members = [(n, {**site.group_defaults(), **d}) for n, d in hosts["gateway"]]
    return rp.proxy_context(
        PROXY_DATA,
        ["10.20.1.11", "10.20.1.12"],
        gateways=[gw.gateway_upstream(n, d) for n, d in members],
        admin_cidrs=gw.admin_cidrs(members),
    )


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_proxy_with_gateways_routes_to_them_and_restricts_management(hosts: dict[str, Any]) -> None:
    text = rp.render("nginx-proxy.conf.j2", **gateway_proxy_context(hosts))
    body = lines(text)
    assert "upstream llmkit_gateways {" in body
    assert "server 10.30.0.10:4000 max_fails=3 fail_timeout=30s;" in body
    assert not any("11434" in line for line in body)  # the model hosts are the gateways' business
    assert body.count("proxy_pass https://llmkit_gateways;") == 2
    assert body.count(f"proxy_ssl_name {rp.GATEWAY_TLS_NAME};") == 2
    assert body.count("proxy_ssl_verify on;") == 2
    pattern = next(line for line in body if line.startswith("location ~"))
    regex = re.compile(pattern.split('"')[1])
    for prefix in MANAGEMENT_PATH_PREFIXES:
        assert regex.match(prefix + "generate"), prefix
    for path in ("/v1/chat/completions", "/chat/completions", "/health/liveliness", "/v1/models"):
        assert not regex.match(path), path
    block = body[body.index(pattern) : body.index("location / {")]
    assert block[1:3] == ["allow 10.99.0.0/24;", "deny all;"]
    # Without gateways: the model hosts, as before, and no management block.
    plain = lines(rp.render("nginx-proxy.conf.j2", **rp.proxy_context(PROXY_DATA, ["10.20.1.11"])))
    assert "upstream llmkit_models {" in plain and not any(line.startswith("location ~") for line in plain)


def test_gateways_must_agree_on_admin_cidrs(hosts: dict[str, Any]) -> None:
    other = {**hosts["gateway"][0][1], "gateway": {**GATEWAY_SECTION, "admin_cidrs": ["10.98.0.0/24"]}}
    members = [("gw-1", hosts["gateway"][0][1]), ("gw-2", other)]
    with pytest.raises(ConfigError, match=r"^gateway.admin_cidrs: the gateway hosts disagree \(gw-1, gw-2\)"):
        gw.admin_cidrs(members)
    assert gw.admin_cidrs([]) == []
    no_admins = {**GATEWAY_SECTION, "admin_cidrs": []}
    assert gw.admin_cidrs([("gw-1", {**hosts["gateway"][0][1], "gateway": no_admins})]) == []


def test_reverse_proxy_deploy_uses_the_gateway_pool(
    hosts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: dict[str, str] = {}
    real_render = rp.render

    def recording(template: str, **context: Any) -> str:
        rendered[template] = real_render(template, **context)
        return rendered[template]

    monkeypatch.setattr(rp, "render", recording)
    hosts["proxy"][0][1].update(proxy_server_name="llm.example.com", client_cidrs=["203.0.113.0/24"])
    run_deploy(rp.reverse_proxy, hosts, {}, target="@fake/proxy-1")
    body = lines(rendered["nginx-proxy.conf.j2"])
    assert "server 10.30.0.10:4000 max_fails=3 fail_timeout=30s;" in body
    assert "allow 10.99.0.0/24;" in body


NGINX = system.which("nginx")


def proxy_tls_dir(tmp_path: Path, hosts: dict[str, Any], pki: Pki) -> Path:
    """The proxy's certificate, key and CA in ``tmp_path/tls``, and ``tmp_path/logs`` for nginx."""
    tls = tmp_path / "tls"
    tls.mkdir()
    proxy = hosts["proxy"][0][1]
    (tls / "server.crt").write_text(proxy["tls_cert"])
    (tls / "server.key").write_text(proxy["tls_key"])
    (tls / "ca.crt").write_text(pki.ca)
    (tmp_path / "logs").mkdir()
    return tls


@pytest.mark.needs("nginx")
def test_nginx_accepts_the_proxy_config_with_gateways(
    tmp_path: Path, hosts: dict[str, Any], pki: Pki
) -> None:
    tls = proxy_tls_dir(tmp_path, hosts, pki)
    context = {
        **gateway_proxy_context(hosts),
        "tls_dir": str(tls),
        "access_log": str(tmp_path / "logs/a.log"),
    }
    (tmp_path / "site.conf").write_text(rp.render("nginx-proxy.conf.j2", **context))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\n    include {tmp_path}/site.conf;\n}}\n"
    )
    result = subprocess.run(
        [
            NGINX or "nginx",
            "-t",
            "-q",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "logs/error.log"),
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- the firewall with gateways -------------------------------------------------------------------

PEERS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "proxy": [("proxy-1", {"ssh_hostname": "10.10.0.5"})],
    "monitoring": [("mon-1", {"ssh_hostname": "10.40.0.9"})],
    "gateway": [("gw-1", {"ssh_hostname": GATEWAY_ADDRESS})],
}


def ruleset(groups: list[str], **overrides: Any) -> str:
    data = {**site.group_defaults(), "admin_cidrs": ["10.99.0.0/24"], **overrides}
    return fw.render_ruleset(fw.firewall_context("host-1", groups, data, PEERS))


def accepts(text: str, port: int) -> list[str]:
    return [line for line in lines(text) if re.search(rf"tcp dport {port} accept$", line)]


def test_firewall_gateway_port_only_from_the_proxies() -> None:
    text = ruleset(["gateway"])
    assert accepts(text, 4000) == ["ip saddr { 10.10.0.5/32 } tcp dport 4000 accept"]
    assert accepts(text, 11434) == [] and accepts(text, 443) == []
    assert accepts(ruleset(["gateway"], gateway_port=8443), 8443) == [
        "ip saddr { 10.10.0.5/32 } tcp dport 8443 accept"
    ]
    assert accepts(ruleset(["proxy"], client_cidrs=["203.0.113.0/24"]), 4000) == []


def test_firewall_model_port_also_from_the_gateway_group() -> None:
    text = ruleset(["gpu"], gateway_hosts=["10.30.0.20"])
    assert accepts(text, 11434) == [
        "ip saddr { 10.10.0.5/32, 10.30.0.10/32, 10.30.0.20/32 } tcp dport 11434 accept"
    ]
    assert accepts(ruleset(["gpu"]), 11434) == [
        "ip saddr { 10.10.0.5/32, 10.30.0.10/32 } tcp dport 11434 accept"
    ]


NFT = system.which("nft")


@pytest.mark.needs("nft", "root")  # nft -c needs CAP_NET_ADMIN
def test_nft_accepts_the_gateway_ruleset(tmp_path: Path) -> None:
    path = tmp_path / "nftables.conf"
    path.write_text(ruleset(["gateway"]))
    result = subprocess.run(
        [NFT or "nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# --- site.py ---------------------------------------------------------------------------------------


def test_site_runs_the_gateway_after_the_firewall_and_before_monitoring() -> None:
    steps = [f for _, f in site.steps_for(["gateway"])]
    assert steps == ["hardening", "firewall", "gateway", "monitoring"]
    assert site.GATEWAY == (("gateway", "gateway"),)


def test_group_data_documents_the_gateway_keys() -> None:
    defaults = site.group_defaults()
    assert defaults["gateway"] is None and defaults["gateway_prisma_bundle"] is None
    assert defaults["gateway_port"] is None  # the pinned release's port (llmkit/data/gateway.yaml)
    assert defaults["gateway_pip_index_url"] == "https://pypi.org/simple"
    assert defaults["gateway_master_key"] is None and defaults["gateway_database_url"] is None


# --- real nginx in front of a stand-in gateway, on 127.0.0.1 only ----------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Gateway(http.server.BaseHTTPRequestHandler):
    """Answers every request with the path it got: what a LiteLLM behind the proxy would see."""

    def do_GET(self) -> None:
        body = f"gateway saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in_gateway(tmp_path: Path, pki: Pki) -> Iterator[int]:
    tls = pki.issue("gw-1", [rp.GATEWAY_TLS_NAME, "IP:127.0.0.1"], [SERVER, CLIENT])
    (tmp_path / "gw.crt").write_text(tls["tls_cert"])
    (tmp_path / "gw.key").write_text(tls["tls_key"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "gw.crt", tmp_path / "gw.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), _Gateway)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _get(port: int, path: str, ca: Path) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="llm.example.com"
    )
    connection.request("GET", path, headers={"Host": "llm.example.com"})
    response = connection.getresponse()
    return response.status, response.read().decode(errors="replace")


@pytest.mark.needs("nginx")
@pytest.mark.parametrize("admin", [False, True])
def test_real_nginx_sends_requests_to_the_gateways_and_guards_management(
    tmp_path: Path, hosts: dict[str, Any], pki: Pki, stand_in_gateway: int, admin: bool
) -> None:
    tls = proxy_tls_dir(tmp_path, hosts, pki)
    for directory in (tmp_path, tls, tmp_path / "logs"):
        directory.chmod(0o755)  # nginx's workers may run as another user
    port = _free_port()
    context = rp.proxy_context(
        PROXY_DATA,
        [],
        gateways=[f"127.0.0.1:{stand_in_gateway}"],
        admin_cidrs=["127.0.0.1/32"] if admin else ["10.99.0.0/24"],
    )
    context.update(tls_dir=str(tls), access_log=str(tmp_path / "logs/access.log"))
    site_conf = rp.render("nginx-proxy.conf.j2", **context)
    site_conf = site_conf.replace("listen 443 ssl http2 default_server;", f"listen 127.0.0.1:{port} ssl;")
    site_conf = site_conf.replace("listen [::]:443 ssl http2 default_server;", "")
    (tmp_path / "site.conf").write_text(site_conf)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\n    include {tmp_path}/site.conf;\n}}\n"
    )
    nginx = subprocess.Popen(
        [
            NGINX or "nginx",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "logs/error.log"),
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert nginx.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "logs/error.log"
                ).read_text()
                time.sleep(0.05)
        ca = tls / "ca.crt"
        # Inference goes through to a gateway (TLS verified under gateway.llmkit.internal).
        assert _get(port, "/v1/models", ca) == (200, "gateway saw /v1/models")
        for path in (
            "/key/generate",
            "/user/info",
            "/spend/logs",
            "/ui/",
            "/%6Bey/generate",
            "//key/generate",
        ):
            status, body = _get(port, path, ca)
            if admin:  # the admin network reaches the management API
                assert status == 200 and body.startswith("gateway saw /"), path
            else:  # everyone else gets 403, however the path is spelled
                assert status == 403, path
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
