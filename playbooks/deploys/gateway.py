"""The app tier's LLM gateway on bare metal: LiteLLM's proxy between the reverse proxy and the model hosts.

Decisions, for reviewers:

- **One config for every platform**: the ``gateway`` host data has the shape of the stack's
  ``llmkit:gateway`` section and is validated by the same schema (``llmkit.config.Gateway``, through
  ``llmkit.config.from_mapping``, so an error names the key: ``gateway.aliases.general.model``).
  ``llmkit.gateway.litellm_config`` / ``render_config`` write LiteLLM's ``config.yaml``, which holds
  no secret: it names the environment variables the unit fills in.
- **Backends** are the model hosts (the ``gpu`` group and ``model_<slug>`` groups, found as the
  reverse proxy finds them), one LiteLLM deployment per (alias, host serving the alias's model),
  ``api_base`` ``https://<model host address>:<model_port>`` (``model_bind_address``, else
  ``ssh_hostname``, else the inventory name: the address the proxy uses too). LiteLLM (httpx)
  verifies the server certificate against the host of ``api_base`` and cannot be told another
  name, so the shared name the proxy verifies (``model.llmkit.internal``) does not do: each model
  host's certificate must carry its own address as a SAN (``llmkit pki issue ... --san
  IP:<address>``; the lab PKI does). The deploy reads every model host's certificate on the
  controller and refuses to run, naming the host, when it does not. Mutual TLS: ``ssl_verify`` is
  the internal CA, ``ssl_certificate`` a PEM holding the gateway's own certificate and key (the
  terminators require a client certificate from that CA).
- **Its own TLS**: LiteLLM serves HTTPS with the gateway's certificate (``pki_dir`` or
  ``tls_cert``/``tls_key``/``tls_ca``, as for the proxy), which must carry
  :data:`GATEWAY_TLS_NAME` (the name the proxies verify, one name for every gateway) and client
  usage (it is the model hosts' client). Checked on the controller before any change.
- **Python**: Debian's ``python3-venv``; a virtualenv per lock (``/opt/llmkit/gateway/venv-<sha>``,
  ``/opt/llmkit/gateway/venv`` links to the current one) made with ``pip install --require-hashes
  --no-deps -r`` of the hashed lock (``playbooks/files/gateway-requirements.txt``, copied to the
  host) from ``gateway_pip_index_url`` (through ``gateway_pip_proxy``). An unchanged lock installs
  nothing; a changed one builds a new virtualenv beside the running one, switches the link,
  restarts, and only then removes the old one.
- **Prisma** (LiteLLM's database layer): its CLI (a Node.js program, run by Debian's ``nodejs``)
  and native engines are normally downloaded at first start from npm and binaries.prisma.sh,
  which the hosts cannot reach. ``gateway_prisma_bundle`` names a tarball of both on the internal
  mirror (``playbooks/README.md`` says what it holds and how to make it); it is fetched by
  ``verified_download``, checked again, unpacked aside and renamed into
  ``/opt/llmkit/gateway/prisma/<sha>``; ``gateway.env`` points Prisma at it
  (``PRISMA_QUERY_ENGINE_BINARY``, ``PRISMA_SCHEMA_ENGINE_BINARY``, ``PRISMA_CLI_PATH``...) and
  ``prisma generate`` runs once per (virtualenv, bundle). Without the bundle the deploy stops
  before any change.
- **Secrets are made on the host** on the first run and never leave it: the master key
  (``sk-`` + 256 random bits), LiteLLM's salt key (it encrypts the credentials LiteLLM stores: it
  must never change, so it is only ever added, never replaced) and the local database's password
  go into :data:`SECRETS_PATH` (0600 root, read by systemd for the unit), each only when absent
  (the file's variable *names* are a fact; values are never read back). ``gateway_master_key`` /
  ``gateway_database_url`` in host data (from the inventory's secret store) go into
  :data:`INVENTORY_SECRETS_PATH` instead, uploaded by ``secret_file`` (never in a command line,
  never in a ``--diff``), and win over the generated ones.
- **PostgreSQL**: the distribution's, on the gateway host, unless ``gateway_database_url`` names
  an external one (which must ask for ``sslmode=require`` or stricter). Set with ``ALTER SYSTEM``
  (no version-specific paths): ``listen_addresses`` 127.0.0.1 only, ``ssl = on`` with a
  self-signed certificate made on the host, TLS 1.3, SCRAM passwords; role and database
  ``litellm`` made when the facts say they are missing; the URL asks for ``sslmode=require``.
- **The unit** runs as the system user :data:`GATEWAY_USER` with no capabilities, a read-only
  system, no /home, private /tmp and /dev, writable only :data:`GATEWAY_HOME`; it restarts only when
  the unit, config, environment, secrets, certificates, virtualenv or Prisma client changed, and
  the deploy then waits until ``/health/liveliness`` answers over TLS under
  :data:`GATEWAY_TLS_NAME`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy
from pyinfra.api.hiddenvalue import HiddenValue
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from llmkit.artifacts import is_sha256
from llmkit.catalog import load_catalog
from llmkit.config import Gateway
from llmkit.errors import ConfigError, ConfigErrors
from llmkit.gateway import (
    DATABASE_URL_ENV,
    MASTER_KEY_ENV,
    SALT_KEY_ENV,
    Backend,
    litellm_config,
    litellm_release,
    render_config,
)
from llmkit.pki import sans_of
from llmkit.tls import TLS_PROTOCOL
from playbooks.deploys.sandbox import egress_allow, ip_allow
from playbooks.facts.gateway import EnvFileKeys, LocalPostgres, PostgresState
from playbooks.facts.tls import DefaultRouteSource
from playbooks.operations.download import DOWNLOAD_DIR, verified_download
from playbooks.operations.secret import secret_file
from playbooks.render import render
from playbooks.tls_material import TlsMaterial, certificate_pem, tls_material
from playbooks.topology import (
    GATEWAY_TLS_NAME,
    PROXY_GROUP,
    gateway_config,
    gateway_port,
    model_host_address,
    model_hosts,
    socket_address,
)

# What the proxies need of the gateways lives in playbooks.topology; named here too for readers
# of this deploy (the proxy's deploy imports it from there, never from here).
from playbooks.topology import admin_cidrs as admin_cidrs
from playbooks.topology import gateway_members as gateway_members
from playbooks.topology import gateway_upstream as gateway_upstream

GATEWAY_USER = "llmkit-gateway"
GATEWAY_HOME = "/var/lib/llmkit-gateway"
NOLOGIN = "/usr/sbin/nologin"
SERVICE = "llmkit-gateway.service"
UNIT_PATH = f"/etc/systemd/system/{SERVICE}"

INSTALL_ROOT = "/opt/llmkit/gateway"
VENV_LINK = f"{INSTALL_ROOT}/venv"
PRISMA_ROOT = f"{INSTALL_ROOT}/prisma"
LOCK_FILE = Path(__file__).resolve().parent.parent / "files" / "gateway-requirements.txt"
LOCK_DEST = f"{INSTALL_ROOT}/gateway-requirements.txt"
INSTALLED_MARKER = ".llmkit-installed"

CONFIG_DIR = "/etc/llmkit/gateway"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
ENV_PATH = f"{CONFIG_DIR}/gateway.env"
SECRETS_PATH = f"{CONFIG_DIR}/secrets.env"
INVENTORY_SECRETS_PATH = f"{CONFIG_DIR}/inventory-secrets.env"
TLS_DIR = f"{CONFIG_DIR}/tls"
SERVER_CERT = f"{TLS_DIR}/server.crt"
SERVER_KEY = f"{TLS_DIR}/server.key"
CA_CERT = f"{TLS_DIR}/ca.crt"
CLIENT_PEM = f"{TLS_DIR}/client.pem"

#: prisma-client-py 0.11.0 (the lock's) runs Prisma CLI 5.4.2 with the engines of this commit.
PRISMA_CLI_VERSION = litellm_release().prisma_cli_version
PRISMA_ENGINE_VERSION = litellm_release().prisma_engine_version
#: Debian 12 / Ubuntu 22.04+ (OpenSSL 3): the engine build the bundle must hold.
DEFAULT_BINARY_TARGET = "debian-openssl-3.0.x"

DB_NAME = "litellm"
DB_ROLE = "litellm"
PG_ADDRESS = "127.0.0.1"
PG_PORT = 5432
PG_TLS_DIR = "/var/lib/postgresql/llmkit-tls"
PG_SETTINGS: dict[str, str] = {
    "listen_addresses": PG_ADDRESS,
    "ssl": "on",
    "ssl_cert_file": f"{PG_TLS_DIR}/server.crt",
    "ssl_key_file": f"{PG_TLS_DIR}/server.key",
    "ssl_min_protocol_version": TLS_PROTOCOL,
    "password_encryption": "scram-sha-256",
}

DEFAULT_PIP_INDEX = "https://pypi.org/simple"
READY_TIMEOUT_S = 600  # the first start applies every database migration
RESTART_SEC = 5
START_LIMIT_INTERVAL_S = 600
START_LIMIT_BURST = 5
SECRET = "[secret]"  # what an error shows instead of a secret's value

_URL = re.compile(r"^(https?|file)://[^\s'\"]+$")
_HTTP_URL = re.compile(r"^https?://[^\s'\"]+$")
_BINARY_TARGET = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_MASTER_KEY = re.compile(r"^sk-[A-Za-z0-9_-]{16,}$")
_SAFE_DB_URL = re.compile(r"^[^\s'\"\\`$]+$")
_STRICT_SSLMODES = ("require", "verify-ca", "verify-full")


# --- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrismaBundle:
    """The Prisma CLI and engines for hosts without internet access (see playbooks/README.md)."""

    url: str
    sha256: str
    size: int | None
    binary_target: str

    @property
    def id(self) -> str:
        return self.sha256[:16]

    @property
    def archive(self) -> str:
        return f"{DOWNLOAD_DIR}/gateway-prisma-{self.id}.tar.gz"

    @property
    def directory(self) -> str:
        return f"{PRISMA_ROOT}/{self.id}"

    @property
    def query_engine(self) -> str:
        return f"{self.directory}/engines/query-engine"

    @property
    def schema_engine(self) -> str:
        return f"{self.directory}/engines/schema-engine"

    @property
    def cli_cache(self) -> str:
        """``PRISMA_BINARY_CACHE_DIR``: where prisma-client-py finds the npm-installed CLI."""
        return f"{self.directory}/binaries"

    @property
    def cli(self) -> str:
        return f"{self.cli_cache}/node_modules/.bin/prisma"


@dataclass(frozen=True)
class GatewaySettings:
    config: Gateway
    port: int
    bind_address: str | None
    pip_index_url: str = field(repr=False)
    pip_proxy: str | None = field(repr=False)
    bundle: PrismaBundle
    master_key: str | None = field(repr=False)
    database_url: str | None = field(repr=False)

    @property
    def local_database(self) -> bool:
        return self.database_url is None


def prisma_bundle(value: Any) -> PrismaBundle:
    key = "gateway_prisma_bundle"
    if value is None:
        raise ConfigError(
            key,
            None,
            "a mapping {url: <http(s):// or file:// URL on the internal mirror>, sha256: <64 hex>} "
            "(optional: size in bytes, binary_target); playbooks/README.md says how to make the bundle",
            "required on gateway hosts: LiteLLM's database layer needs Prisma's CLI and engines, "
            "which hosts without internet access cannot download",
        )
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a mapping with keys url, sha256, size, binary_target", "not a mapping")
    unknown = sorted(set(value) - {"url", "sha256", "size", "binary_target"})
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}", value[unknown[0]], "url, sha256, size, binary_target", "unknown key"
        )
    url = value.get("url")
    if not isinstance(url, str) or not _URL.match(url):
        raise ConfigError(f"{key}.url", url, "an http(s):// or file:// URL", "invalid URL")
    sha = str(value.get("sha256") or "").strip().lower()
    if not is_sha256(sha):
        raise ConfigError(
            f"{key}.sha256",
            value.get("sha256"),
            "64 hex digits (sha256sum of the tarball)",
            "invalid checksum",
        )
    size = value.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ConfigError(f"{key}.size", size, "a positive integer (bytes)", "invalid size")
    target = value.get("binary_target") or DEFAULT_BINARY_TARGET
    if not isinstance(target, str) or not _BINARY_TARGET.match(target):
        raise ConfigError(
            f"{key}.binary_target", target, "a Prisma binary target such as debian-openssl-3.0.x", "invalid"
        )
    return PrismaBundle(url=url, sha256=sha, size=size, binary_target=target)


def _master_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _MASTER_KEY.match(value):
        raise ConfigError(
            "gateway_master_key",
            SECRET,
            "sk- followed by at least 16 letters, digits, _ or - (LiteLLM's master key format)",
            "invalid master key",
        )
    return value


def _database_url(value: Any) -> str | None:
    if value is None:
        return None
    key, accepted = (
        "gateway_database_url",
        "postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=require (or verify-ca, verify-full)",
    )
    if not isinstance(value, str) or not _SAFE_DB_URL.match(value):
        raise ConfigError(key, SECRET, accepted, "not a URL without spaces, quotes or shell characters")
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(key, SECRET, accepted, "not a postgresql:// URL with a host")
    modes = parse_qs(parts.query).get("sslmode", [])
    if not modes or modes[-1] not in _STRICT_SSLMODES:
        raise ConfigError(
            key,
            SECRET,
            accepted,
            "the database connection must use TLS: sslmode=require or stricter is missing",
        )
    return value


def _index_url(data: Mapping[str, Any]) -> str:
    value = data.get("gateway_pip_index_url") or DEFAULT_PIP_INDEX
    if not isinstance(value, str) or not _HTTP_URL.match(value):
        shown = value if isinstance(value, str) and "@" not in value else SECRET
        raise ConfigError(
            "gateway_pip_index_url", shown, "an http(s):// URL of a PyPI simple index", "invalid URL"
        )
    return value


def _pip_proxy(data: Mapping[str, Any]) -> str | None:
    value = data.get("gateway_pip_proxy")
    if value is None:
        return None
    if not isinstance(value, str) or not _HTTP_URL.match(value):
        raise ConfigError(
            "gateway_pip_proxy", SECRET, "an http(s):// proxy URL ([user:password@]host:port)", "invalid"
        )
    return value


def _bind_address(data: Mapping[str, Any]) -> str | None:
    value = data.get("gateway_bind_address")
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise ConfigError(
            "gateway_bind_address", value, "an IP address of the host", "invalid address"
        ) from None
    if address.is_unspecified:
        raise ConfigError(
            "gateway_bind_address", value, "a specific address", "the gateway never listens everywhere"
        )
    return str(address)


def gateway_settings(data: Mapping[str, Any], source: str = "host data") -> GatewaySettings:
    """Every gateway setting from host data, validated; ConfigError(s) naming the key otherwise."""
    return GatewaySettings(
        config=gateway_config(data.get("gateway"), source),
        port=gateway_port(data),
        bind_address=_bind_address(data),
        pip_index_url=_index_url(data),
        pip_proxy=_pip_proxy(data),
        bundle=prisma_bundle(data.get("gateway_prisma_bundle")),
        master_key=_master_key(data.get("gateway_master_key")),
        database_url=_database_url(data.get("gateway_database_url")),
    )


# --- certificates and backends --------------------------------------------------------------------


def _certificate(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise ValueError(f"{what}: not a PEM certificate ({exc})") from None


def names_address(cert: x509.Certificate, address: str) -> bool:
    """Whether the certificate's SANs name ``address`` (an IP address or a DNS name)."""
    sans = sans_of(cert)
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return f"DNS:{address.lower()}" in sans
    return any(san.startswith("IP:") and ipaddress.ip_address(san[3:]) == wanted for san in sans)


def served_models(data: Mapping[str, Any]) -> list[str]:
    """The catalog models a model host serves (its ``models`` host data, by name or Ollama tag)."""
    catalog = load_catalog().models
    by_tag = {model.ollama_tag: name for name, model in catalog.items()}
    out: list[str] = []
    for entry in data.get("models") or []:
        name = str(entry.get("name") if isinstance(entry, Mapping) else entry or "")
        tag = str(entry.get("tag") or "") if isinstance(entry, Mapping) else ""
        for candidate in (name, tag, f"{name}:latest" if name and ":" not in name else ""):
            found = candidate if candidate in catalog else by_tag.get(candidate)
            if found:
                out.append(found)
                break
    return list(dict.fromkeys(out))


def backend(name: str, data: Mapping[str, Any]) -> Backend:
    """One model host as a LiteLLM backend; refused when its certificate does not name its address."""
    address = model_host_address(name, data)
    port = data.get("model_port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError("model_port", port, "a TCP port 1-65535", f"model host {name}: invalid port")
    cert = _certificate(certificate_pem(name, data), f"certificate of model host {name}")
    if not names_address(cert, address):
        san = f"IP:{address}" if _is_ip(address) else address
        raise ValueError(
            f"gateway: the certificate of model host {name} does not name {address} (its SANs: "
            f"{', '.join(sans_of(cert)) or 'none'}); LiteLLM verifies the address it connects to, so "
            f"reissue it with `llmkit pki issue <pki_dir> {name} --server --san model.llmkit.internal "
            f"--san {san} --force`"
        )
    return Backend(name=name, api_base=f"https://{socket_address(address, port)}")


def gateway_backends(hosts: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, list[Backend]]:
    """Catalog model name -> the model hosts serving it."""
    out: dict[str, list[Backend]] = {}
    for name, data in hosts:
        models = served_models(data)
        if not models:
            continue
        entry = backend(name, data)
        for model in models:
            out.setdefault(model, []).append(entry)
    return out


def check_served(config: Gateway, backends: Mapping[str, Sequence[Backend]]) -> None:
    """Each alias's model must be served by a model host (errors name ``gateway.aliases.<a>.model``)."""
    served = ", ".join(sorted(backends)) or "none: no model host lists a catalog model in its models"
    problems = [
        ConfigError(
            f"gateway.aliases.{alias}.model",
            spec.model,
            f"a model the model hosts serve: {served}",
            "no model host serves this model",
        )
        for alias, spec in config.aliases.items()
        if spec.model not in backends
    ]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


def check_own_certificate(material: TlsMaterial, host_name: str) -> None:
    """The gateway's certificate: the pool name the proxies verify, server and client usage."""
    cert = _certificate(material.cert, f"certificate of gateway {host_name}")
    if f"DNS:{GATEWAY_TLS_NAME}" not in sans_of(cert):
        raise ValueError(
            f"gateway {host_name}: its certificate does not carry {GATEWAY_TLS_NAME}, the name the "
            f"proxies verify: reissue it with `llmkit pki issue <pki_dir> {host_name} --server --client "
            f"--san {GATEWAY_TLS_NAME} --force`"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    for oid, what in (
        (ExtendedKeyUsageOID.SERVER_AUTH, "--server"),
        (ExtendedKeyUsageOID.CLIENT_AUTH, "--client"),
    ):
        if oid not in usage:
            raise ValueError(
                f"gateway {host_name}: its certificate lacks {what} usage (it serves the proxies and "
                "is the model hosts' client): reissue it with --server --client"
            )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def listen_address(name: str, data: Mapping[str, Any], route_source: str | None) -> str:
    """``gateway_bind_address``, else ``ssh_hostname`` when an IP, else the default route's source."""
    explicit = _bind_address(data)
    if explicit:
        return explicit
    inventory = str(data.get("ssh_hostname") or name)
    for candidate in (inventory, route_source):
        if candidate and _is_ip(candidate) and not ipaddress.ip_address(candidate).is_unspecified:
            return str(ipaddress.ip_address(candidate))
    raise ConfigError(
        "gateway_bind_address",
        None,
        "an IP address of the host",
        f"gateway {name}: cannot tell which address to listen on (no IP ssh_hostname, no default route)",
    )


def needs_route_fact(name: str, data: Mapping[str, Any]) -> bool:
    return not data.get("gateway_bind_address") and not _is_ip(str(data.get("ssh_hostname") or name))


# --- commands -------------------------------------------------------------------------------------


def lock_digest(path: Path = LOCK_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def venv_dir(digest: str) -> str:
    return f"{INSTALL_ROOT}/venv-{digest[:16]}"


def _maybe_hidden(value: str) -> str | HiddenValue:
    """A URL with credentials (``user:password@``) is masked in pyinfra's output."""
    quoted = shlex.quote(value)
    return HiddenValue(quoted) if "@" in (urlsplit(value).netloc or "") else quoted


def install_command(directory: str, index_url: str, proxy: str | None) -> StringCommand:
    """A fresh virtualenv, the hashed lock installed into it, its LiteLLM version checked, marked done."""
    version = litellm_release().version
    check = f'import importlib.metadata as m; v = m.version("litellm"); assert v == "{version}", v'
    bits: list[Any] = [
        f"set -eu; umask 022; rm -rf {directory}; python3 -m venv {directory};",
        f"{directory}/bin/pip install --disable-pip-version-check --no-input --no-cache-dir",
        "--require-hashes --no-deps --index-url",
        _maybe_hidden(index_url),
    ]
    if proxy:
        bits += ["--proxy", HiddenValue(shlex.quote(proxy))]
    bits += [
        f"-r {LOCK_DEST};",
        f"{directory}/bin/python -c {shlex.quote(check)};",
        f"touch {directory}/{INSTALLED_MARKER}",
    ]
    return StringCommand(*bits)


def extract_bundle_command(bundle: PrismaBundle) -> str:
    """Check the tarball once more, unpack it aside, check its layout and engines, rename into place."""
    parent, name = bundle.directory.rsplit("/", 1)
    return (
        "set -eu; "
        f"if ! echo '{bundle.sha256}  {bundle.archive}' | sha256sum --check --status; then "
        f"echo 'llmkit: {bundle.archive} does not have sha256 {bundle.sha256}; refusing to extract it' >&2; "
        "exit 1; fi; "
        f"mkdir -p {parent}; "
        f"tmp=$(mktemp -d {parent}/.{name}.XXXXXX); trap 'rm -rf \"$tmp\"' EXIT; "
        f'tar -xzf {bundle.archive} -C "$tmp" --no-same-owner --no-same-permissions; '
        "for f in engines/query-engine engines/schema-engine binaries/package.json "
        "binaries/node_modules/prisma/build/index.js; do "
        'if [ ! -f "$tmp/$f" ]; then '
        'echo "llmkit: the Prisma bundle has no $f (see playbooks/README.md)" >&2; exit 1; fi; done; '
        'chmod 0755 "$tmp" "$tmp/engines/query-engine" "$tmp/engines/schema-engine"; '
        'chmod -R u+rwX,go+rX,go-w "$tmp"; '
        "for e in query-engine schema-engine; do "
        f'if ! "$tmp/engines/$e" --version | grep -q {PRISMA_ENGINE_VERSION}; then '
        f'echo "llmkit: engines/$e in the Prisma bundle is not the engine build {PRISMA_ENGINE_VERSION} '
        f'that prisma-client-py needs (Prisma {PRISMA_CLI_VERSION})" >&2; exit 1; fi; done; '
        f'rm -rf {bundle.directory}; mv "$tmp" {bundle.directory}; trap - EXIT; '
        f"rm -f {bundle.archive}"
    )


def generated_marker(directory: str, bundle: PrismaBundle) -> str:
    return f"{directory}/.llmkit-prisma-{bundle.id}"


def generate_command(directory: str, bundle: PrismaBundle) -> str:
    """``prisma generate`` with LiteLLM's schema into the virtualenv (as root: it writes there)."""
    return (
        "set -eu; "
        f"set -a; . {ENV_PATH}; set +a; "
        f'export HOME=/root PATH="{directory}/bin:$PATH"; '
        f"schema=$(ls -d {directory}/lib/python3*/site-packages/litellm/proxy/schema.prisma | head -n 1); "
        'test -f "$schema"; '
        f"cd {bundle.directory}; "
        f'{directory}/bin/prisma generate --schema "$schema"; '
        f"touch {generated_marker(directory, bundle)}"
    )


def secrets_command(names: Sequence[str]) -> str:
    """Add each missing secret to secrets.env, made on the host (values never in a command line)."""
    makers = {
        MASTER_KEY_ENV: "sk-$(openssl rand -hex 32)",
        SALT_KEY_ENV: "sk-$(openssl rand -hex 32)",
        DATABASE_URL_ENV: (
            f"postgresql://{DB_ROLE}:$(openssl rand -hex 24)@{PG_ADDRESS}:{PG_PORT}/{DB_NAME}?sslmode=require"
        ),
    }
    lines = [f'grep -q \'^{n}=\' "$f" || echo "{n}={makers[n]}" >> "$f";' for n in names]
    return (
        f'set -eu; umask 077; f={SECRETS_PATH}; touch "$f"; chown root:root "$f"; chmod 600 "$f"; '
        + " ".join(lines)
    )


def _psql(database: str = "postgres") -> str:
    return f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {database}"


def postgres_certificate_command() -> str:
    key, cert = PG_SETTINGS["ssl_key_file"], PG_SETTINGS["ssl_cert_file"]
    return (
        f"set -eu; umask 077; test -s {key} || "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=localhost "
        f"-addext subjectAltName=IP:{PG_ADDRESS},DNS:localhost -keyout {key} -out {cert}; "
        f"chown postgres:postgres {key} {cert}; chmod 600 {key}; chmod 644 {cert}"
    )


def postgres_settings_command() -> str:
    sets = " ".join(f"-c \"ALTER SYSTEM SET {k} = '{v}'\"" for k, v in PG_SETTINGS.items())
    return f"systemctl start postgresql.service && {_psql()} {sets} && systemctl restart postgresql.service"


def postgres_role_command() -> str:
    """Create (or re-key) the role with the password of secrets.env's DATABASE_URL, over stdin."""
    # sed (BRE): the password of the local URL that secrets_command wrote (hex only).
    address = PG_ADDRESS.replace(".", "\\.")
    pattern = (
        f"^{DATABASE_URL_ENV}=postgresql://{DB_ROLE}:\\([0-9a-f]\\{{1,\\}}\\)@"
        f"{address}:{PG_PORT}/{DB_NAME}?sslmode=require$"
    )
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
    return (
        "set -eu; "
        f"pw=$(sed -n 's|{pattern}|\\1|p' {SECRETS_PATH} | tail -n 1); "
        f'if [ -z "$pw" ]; then echo "llmkit: no local {DATABASE_URL_ENV} in {SECRETS_PATH}" >&2; '
        "exit 1; fi; "
        "printf '%s\\n' \"DO \\$\\$ BEGIN "
        f"IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_ROLE}') "
        f"THEN ALTER ROLE {DB_ROLE} WITH {attributes} PASSWORD '$pw'; "
        f"ELSE CREATE ROLE {DB_ROLE} WITH {attributes} PASSWORD '$pw'; END IF; END \\$\\$;\" "
        f"| {_psql()}"
    )


def postgres_database_command() -> str:
    return (
        f"runuser -u postgres -- createdb --owner={DB_ROLE} --encoding=UTF8 --template=template0 "
        f"{DB_NAME} && "
        f"{_psql()} -c 'REVOKE ALL ON DATABASE {DB_NAME} FROM PUBLIC'"
    )


def wait_command(address: str, port: int) -> str:
    """Poll ``/health/liveliness`` over TLS under the name the proxies verify, until it answers."""
    resolve_address = f"[{address}]" if ":" in address else address
    return (
        "curl --fail --silent --show-error --output /dev/null --max-time 5 "
        f"--retry {READY_TIMEOUT_S // 2} --retry-delay 2 --retry-all-errors "
        f"--retry-max-time {READY_TIMEOUT_S} "
        f"--cacert {CA_CERT} --resolve {GATEWAY_TLS_NAME}:{port}:{resolve_address} "
        f"https://{GATEWAY_TLS_NAME}:{port}/health/liveliness"
    )


def prune_command(keep_venv: str, keep_bundle: str) -> str:
    """Remove the virtualenvs and Prisma bundles the running gateway no longer uses."""
    return (
        f"find {INSTALL_ROOT} -mindepth 1 -maxdepth 1 -name 'venv-*' "
        f"! -name {keep_venv.rsplit('/', 1)[1]} -exec rm -rf {{}} +; "
        f"find {PRISMA_ROOT} -mindepth 1 -maxdepth 1 "
        f"! -name {keep_bundle.rsplit('/', 1)[1]} -exec rm -rf {{}} +"
    )


# --- rendered files -------------------------------------------------------------------------------


def env_context(settings: GatewaySettings) -> dict[str, Any]:
    bundle = settings.bundle
    return {
        "home": GATEWAY_HOME,
        "venv": VENV_LINK,
        "migrations": f"{GATEWAY_HOME}/migrations",
        "prisma": {
            "PRISMA_BINARY_CACHE_DIR": bundle.cli_cache,
            "PRISMA_QUERY_ENGINE_BINARY": bundle.query_engine,
            "PRISMA_SCHEMA_ENGINE_BINARY": bundle.schema_engine,
            "PRISMA_CLI_QUERY_ENGINE_TYPE": "binary",
            "PRISMA_CLI_BINARY_TARGETS": bundle.binary_target,
            "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
            "PRISMA_HIDE_UPDATE_MESSAGE": "1",
            "PRISMA_GENERATE_SKIP_AUTOINSTALL": "1",
            "PRISMA_USE_NODEJS_BIN": "false",
            "PRISMA_USE_GLOBAL_NODE": "true",
            "PRISMA_OFFLINE_MODE": "true",
            "PRISMA_CLI_PATH": bundle.cli,
            "CHECKPOINT_DISABLE": "1",
            "NPM_CONFIG_OFFLINE": "true",
        },
    }


def render_env(settings: GatewaySettings) -> str:
    return render("gateway-env.j2", **env_context(settings))


def unit_ip_allow(
    settings: GatewaySettings,
    listen: str,
    proxies: Iterable[tuple[str, Mapping[str, Any]]] = (),
    backends: Mapping[str, Sequence[Backend]] | None = None,
    extra: Iterable[str] = (),
) -> tuple[list[str], list[str]]:
    """The unit's IPAddressAllow= (the loopback, its own address, the proxies, the model hosts
    LiteLLM calls, the external database when its URL names an address, and ``extra``: the
    addresses egress_allow lists) and warnings for what it cannot admit by address."""
    peers: list[str] = [listen]
    warnings: list[str] = []
    extra = [str(e) for e in extra]
    for name, data in proxies:
        address = str(data.get("ssh_hostname") or name)
        if not _is_ip(address):
            raise ValueError(
                f"gateway: proxy host {name} has no IP address ({address!r}); set its ssh_hostname"
            )
        peers.append(address)
    for entry in (b for group in (backends or {}).values() for b in group):
        address = urlsplit(entry.api_base).hostname or ""
        if not _is_ip(address):
            raise ConfigError(
                "model_bind_address",
                address,
                "an IP address",
                f"model host {entry.name}: the gateway's unit admits the model hosts by address",
            )
        peers.append(address)
    if settings.database_url:
        database = urlsplit(settings.database_url).hostname or ""
        if _is_ip(database):
            peers.append(database)
        elif not extra:
            warnings.append(
                f"gateway_database_url: the database {database} is a name, and the gateway's unit admits "
                "addresses only (IPAddressAllow): list its addresses in egress_allow (ADDRESS:PORT), or "
                "LiteLLM cannot reach it"
            )
    return ip_allow(peers, extra), warnings


def unit_context(
    settings: GatewaySettings, listen: str, allow: Sequence[str] | None = None
) -> dict[str, Any]:
    return {
        "ip_allow": list(allow) if allow is not None else unit_ip_allow(settings, listen)[0],
        "version": litellm_release().version,
        "user": GATEWAY_USER,
        "home": GATEWAY_HOME,
        "litellm": f"{VENV_LINK}/bin/litellm",
        "config": CONFIG_PATH,
        "listen": listen,
        "port": settings.port,
        "ssl_key": SERVER_KEY,
        "ssl_cert": SERVER_CERT,
        "env_file": ENV_PATH,
        "secrets_file": SECRETS_PATH,
        "inventory_secrets_file": INVENTORY_SECRETS_PATH,
        "local_database": settings.local_database,
        "restart_sec": RESTART_SEC,
        "start_limit_interval_s": START_LIMIT_INTERVAL_S,
        "start_limit_burst": START_LIMIT_BURST,
    }


def render_unit(settings: GatewaySettings, listen: str, allow: Sequence[str] | None = None) -> str:
    return render("gateway-litellm.service.j2", **unit_context(settings, listen, allow))


def render_litellm_config(settings: GatewaySettings, backends: Mapping[str, Sequence[Backend]]) -> str:
    return render_config(
        litellm_config(settings.config, backends, ca_file=CA_CERT, client_certificate=CLIENT_PEM)
    )


def inventory_secrets(settings: GatewaySettings) -> str | None:
    """The env file of the secrets the inventory gives (None: it gives none)."""
    lines = []
    if settings.master_key:
        lines.append(f"{MASTER_KEY_ENV}={settings.master_key}")
    if settings.database_url:
        lines.append(f"{DATABASE_URL_ENV}={settings.database_url}")
    return "".join(f"{line}\n" for line in lines) or None


def secrets_to_make(settings: GatewaySettings, present: frozenset[str] | None) -> list[str]:
    """The secrets secrets.env still lacks (those the inventory gives are not made)."""
    wanted = [SALT_KEY_ENV]
    if settings.master_key is None:
        wanted.insert(0, MASTER_KEY_ENV)
    if settings.local_database:
        wanted.append(DATABASE_URL_ENV)
    return [name for name in wanted if name not in (present or frozenset())]


# --- operations -----------------------------------------------------------------------------------


def _packages(settings: GatewaySettings) -> None:
    packages = ["python3-venv", "nodejs", "openssl", "curl", "ca-certificates"]
    if settings.local_database:
        packages.append("postgresql")
    apt.packages(
        name="Gateway packages from the distro (Python venv, Node.js for the Prisma CLI"
        + (", PostgreSQL)" if settings.local_database else ")"),
        packages=packages,
        no_recommends=True,
        update=True,
        cache_time=3600,
    )


def _account_and_directories() -> None:
    server.group(name="Gateway system group", group=GATEWAY_USER, system=True)
    server.user(
        name="Gateway system user (no login shell)",
        user=GATEWAY_USER,
        group=GATEWAY_USER,
        system=True,
        home=GATEWAY_HOME,
        shell=NOLOGIN,
        create_home=False,
    )
    for path, user, group, mode in (
        (GATEWAY_HOME, GATEWAY_USER, GATEWAY_USER, "0750"),
        ("/etc/llmkit", "root", "root", "0755"),
        (CONFIG_DIR, "root", GATEWAY_USER, "0750"),
        (TLS_DIR, "root", GATEWAY_USER, "0750"),
        (INSTALL_ROOT, "root", "root", "0755"),
        (PRISMA_ROOT, "root", "root", "0755"),
    ):
        files.directory(name=f"Gateway directory {path}", path=path, user=user, group=group, mode=mode)


def _tls(material: TlsMaterial) -> list[Any]:
    return [
        files.put(
            name="Gateway certificate",
            src=StringIO(material.cert),
            dest=SERVER_CERT,
            user="root",
            group="root",
            mode="0644",
            create_remote_dir=False,  # else files.put chowns the directory to the file's owner
        ),
        files.put(
            name="Internal CA certificate",
            src=StringIO(material.ca),
            dest=CA_CERT,
            user="root",
            group="root",
            mode="0644",
            create_remote_dir=False,  # else files.put chowns the directory to the file's owner
        ),
        secret_file(
            name="Gateway key", dest=SERVER_KEY, content=material.key, group=GATEWAY_USER, mode="0640"
        ),
        secret_file(
            name="Gateway client certificate and key (mutual TLS to the model hosts)",
            dest=CLIENT_PEM,
            content=material.cert + material.key,
            group=GATEWAY_USER,
            mode="0640",
        ),
    ]


def _virtualenv(settings: GatewaySettings) -> tuple[str, bool]:
    """The virtualenv of the lock: (its directory, whether this run installs or switches to it)."""
    digest = lock_digest()
    directory = venv_dir(digest)
    files.put(
        name="Gateway lock (hashed requirements)",
        src=str(LOCK_FILE),
        dest=LOCK_DEST,
        user="root",
        group="root",
        mode="0644",
    )
    installed = host.get_fact(File, path=f"{directory}/{INSTALLED_MARKER}") is not None
    if not installed:
        server.shell(
            name=f"Install LiteLLM {litellm_release().version} into {directory} (pip --require-hashes)",
            commands=[install_command(directory, settings.pip_index_url, settings.pip_proxy)],  # type: ignore[list-item]
        )
    else:
        host.noop(f"{directory} already holds the lock {digest[:16]}")
    link = files.link(name=f"Link {VENV_LINK}", path=VENV_LINK, target=directory)
    return directory, (not installed) or link.will_change


def _prisma(bundle: PrismaBundle) -> bool:
    """Download and unpack the Prisma bundle unless it is in place; whether this run unpacks it."""
    if host.get_fact(File, path=bundle.query_engine) is not None:
        host.noop(f"The Prisma bundle {bundle.id} is already in {bundle.directory}")
        return False
    files.directory(name="Download cache", path=DOWNLOAD_DIR, user="root", group="root", mode="0700")
    verified_download(
        name=f"Download the Prisma bundle (sha256 {bundle.sha256[:12]}...)",
        src=bundle.url,
        dest=bundle.archive,
        sha256=bundle.sha256,
        size=bundle.size,
    )
    server.shell(
        name=f"Unpack the Prisma bundle into {bundle.directory}",
        commands=[extract_bundle_command(bundle)],
    )
    return True


def _generate(directory: str, bundle: PrismaBundle, changed: bool) -> bool:
    if not changed and host.get_fact(File, path=generated_marker(directory, bundle)) is not None:
        host.noop("The Prisma client of this virtualenv and bundle is generated")
        return False
    server.shell(
        name="Generate LiteLLM's Prisma client (prisma generate)",
        commands=[generate_command(directory, bundle)],
    )
    return True


def _secrets(settings: GatewaySettings) -> tuple[list[str], bool]:
    """Make the missing secrets on the host; (the names made, whether the inventory's changed)."""
    missing = secrets_to_make(settings, host.get_fact(EnvFileKeys, path=SECRETS_PATH))
    if missing:
        server.shell(
            name=f"Make the gateway's secrets on the host ({', '.join(missing)})",
            commands=[secrets_command(missing)],
        )
    else:
        host.noop(f"{SECRETS_PATH} holds every secret")
    content = inventory_secrets(settings)
    if content is None:
        given = files.file(name="No secrets from the inventory", path=INVENTORY_SECRETS_PATH, present=False)
    else:
        given = secret_file(name="Secrets from the inventory", dest=INVENTORY_SECRETS_PATH, content=content)
    return missing, given.will_change


def _local_postgres(made: Sequence[str]) -> None:
    """The distribution's PostgreSQL on 127.0.0.1 with TLS, its role and its database."""
    state: PostgresState = host.get_fact(
        LocalPostgres, settings=tuple(PG_SETTINGS), role=DB_ROLE, database=DB_NAME
    )
    files.directory(
        name="PostgreSQL TLS directory", path=PG_TLS_DIR, user="postgres", group="postgres", mode="0700"
    )
    if host.get_fact(File, path=PG_SETTINGS["ssl_key_file"]) is None:
        server.shell(
            name="Self-signed PostgreSQL certificate (loopback only), made once",
            commands=[postgres_certificate_command()],
        )
    if not state.running or any(state.settings.get(k) != v for k, v in PG_SETTINGS.items()):
        server.shell(
            name="PostgreSQL: 127.0.0.1 only, TLS 1.3, SCRAM (ALTER SYSTEM, restart)",
            commands=[postgres_settings_command()],
        )
    if DB_ROLE not in state.roles or DATABASE_URL_ENV in made:
        server.shell(
            name=f"PostgreSQL role {DB_ROLE} (password from {SECRETS_PATH})",
            commands=[postgres_role_command()],
        )
    if DB_NAME not in state.databases:
        server.shell(name=f"PostgreSQL database {DB_NAME}", commands=[postgres_database_command()])
    systemd.service(
        name="PostgreSQL running and enabled", service="postgresql.service", running=True, enabled=True
    )


@deploy("LLM gateway")
def gateway() -> None:
    """LiteLLM's proxy on a gateway host: pinned, hashed venv; Prisma bundle; secrets made on the host."""
    data = host.data.dict()
    # Everything the controller can check, before any command reaches the host.
    settings = gateway_settings(data)
    backends = gateway_backends(model_hosts())
    check_served(settings.config, backends)
    material = tls_material(data, host.name)
    check_own_certificate(material, host.name)
    config_text = render_litellm_config(settings, backends)

    route = host.get_fact(DefaultRouteSource) if needs_route_fact(host.name, data) else None
    listen = listen_address(host.name, data, route)
    proxies = [(m.name, m.data.dict()) for m in host.inventory.get_group(PROXY_GROUP, [])]
    extra = [str(d.network) for d in egress_allow(data)]
    allow, warnings = unit_ip_allow(settings, listen, proxies, backends, extra)
    for warning in warnings:
        logger.warning(f"{host.name}: gateway: {warning}")

    _packages(settings)
    _account_and_directories()
    changes = [op.will_change for op in _tls(material)]
    directory, venv_changed = _virtualenv(settings)
    bundle_changed = _prisma(settings.bundle)
    env = files.put(
        name="Gateway environment (Prisma, LiteLLM; no secrets)",
        src=StringIO(render_env(settings)),
        dest=ENV_PATH,
        user="root",
        group="root",
        mode="0644",
        create_remote_dir=False,  # else files.put chowns the directory to the file's owner
    )
    generated = _generate(directory, settings.bundle, venv_changed or bundle_changed)
    made, given_changed = _secrets(settings)
    if settings.local_database:
        _local_postgres(made)
    config = files.put(
        name="LiteLLM configuration (no secrets)",
        src=StringIO(config_text),
        dest=CONFIG_PATH,
        user="root",
        group=GATEWAY_USER,
        mode="0640",
        create_remote_dir=False,  # else files.put chowns the directory to the file's owner
    )
    unit = files.put(
        name="Gateway systemd unit",
        src=StringIO(render_unit(settings, listen, allow)),
        dest=UNIT_PATH,
        user="root",
        group="root",
        mode="0644",
    )
    restart = any(changes) or any(
        (
            venv_changed,
            bundle_changed,
            generated,
            bool(made),
            given_changed,
            env.will_change,
            config.will_change,
        )
    )
    service = systemd.service(
        name="Run the gateway",
        service=SERVICE,
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        restarted=restart or unit.will_change,
    )
    server.shell(
        name=f"Wait until the gateway answers on https://{GATEWAY_TLS_NAME}:{settings.port}",
        commands=[wait_command(listen, settings.port)],
        _if=service.did_change,
    )
    if venv_changed or bundle_changed:
        server.shell(
            name="Remove the virtualenvs and Prisma bundles no longer used",
            commands=[prune_command(directory, settings.bundle.directory)],
        )
