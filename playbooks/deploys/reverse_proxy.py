"""nginx (from the distro) in front of the model hosts, and the TLS terminator on each model host.

Decisions, for reviewers:

- **Proxy** (:func:`reverse_proxy`, the ``proxy`` group): TLS 1.3 only with pinned key exchange
  groups (:data:`TLS_GROUPS`), optional mutual TLS (``mtls_client_ca``: PEM text or a controller
  path), HSTS, ``server_tokens off``, ``Cache-Control: no-store`` on every answer,
  ``client_max_body_size``, rate limits per client address and, with ``api_key_header``, per API
  key (a second zone keyed by that header), answered with 429. Upstreams are the gpu group's hosts
  (and the ``model_<slug>`` groups) on ``model_port``, reached over TLS 1.3 with the proxy's own
  certificate as client certificate, theirs verified against the internal CA under the name
  :data:`UPSTREAM_TLS_NAME` (every model host's certificate must carry it as a DNS SAN). Passive
  health checks (``max_fails``/``fail_timeout``), a retry on another host on connect
  error/timeout or a 502/503 from its terminator (its Ollama is down), POSTs included since
  inference changes nothing, never once a response started and never on 504; long timeouts and
  no response buffering for streamed generation.
- **Only the runtime's inference and read-only API** (without gateways, and on every terminator):
  the allow-list of :data:`MODEL_RUNTIME` in ``llmkit/data/runtimes.yaml`` (``routes``: exact path
  and methods, :func:`api_routes`). nginx matches the decoded, normalised path (``$uri``) and
  answers 403 for any other path, 405 (with ``Allow``) for another method, so Ollama's admin API
  (pull, push, create, copy, delete, blobs) is never reached from outside the host; the upstream
  is sent exactly the allow-listed path, so it cannot read the request differently.
- **With gateways** (an inventory ``gateway`` group, :mod:`playbooks.deploys.gateway`): the pool is
  the gateway hosts on ``gateway_port`` instead, over TLS 1.3 verified under the name every
  gateway's certificate carries (``gateway.llmkit.internal``); LiteLLM's management API (the path
  prefixes of ``llmkit.gateway.MANAGEMENT_PATH_PREFIXES``: keys, users, teams, budgets, spend,
  models, config, UI) answers 403 to every client outside ``gateway.admin_cidrs``.
- **Logs**: one JSON object per request (``escape=json``; no query string, no API key) under
  :data:`LOG_DIR`, rotated daily and kept ``log_retention_days`` days (a directory of its own, so
  the distro's ``/etc/logrotate.d/nginx`` and ours never claim the same file).
- **Key material** comes from ``pki_dir`` on the controller (``<pki_dir>/<host>.crt|.key`` and
  ``ca.crt``, as ``llmkit pki`` writes them) or from host data PEM (``tls_cert``, ``tls_key``,
  ``tls_ca``), and is written on the host only, under :data:`TLS_DIR`, 0600 root: never into the
  repository.
- **Reload only on change**: the configuration is uploaded, ``nginx -t`` checks it and nginx is
  reloaded, both only when a managed file changed; a failing check stops the deploy before the
  reload, so the running nginx keeps its last good configuration.
- **Terminator** (:func:`tls_terminator`, gpu hosts): an nginx HTTP server on
  ``model_bind_address:model_port`` (the default route's source address when unset: never
  0.0.0.0 by default), TLS 1.3 and a client certificate signed by the internal CA, proxying to
  Ollama on ``127.0.0.1:ollama_port`` with a loopback Host header.
- **Which clients a terminator accepts**: not every certificate of the internal CA (an admin's or
  a client's would reach the model port directly), only the subjects of the inventory's proxies'
  and gateways' own certificates (:func:`model_client_subjects`, read on the controller as the
  deploys read them: ``llmkit pki`` names each certificate after its inventory host, and refuses a
  second certificate of a name); any other gets 403.
- **nginx's sandbox** (:data:`NGINX_DROPIN`, ``nginx-hardening.conf.j2``): the distro's
  ``nginx.service`` runs as root with no sandbox. The drop-in runs it as ``www-data`` from the
  start (the master too: it needs no root once it may bind 443 through an ambient
  ``CAP_NET_BIND_SERVICE``, given only to proxies), on a read-only system where it may write only
  its logs, ``/var/lib/nginx`` and its PID file, with a system call filter, no devices, no kernel
  or namespace access and an IP allow-list (:func:`nginx_unit_context`). Hence the key and the
  log files belong to ``www-data``'s reach: keys ``root:www-data 0640`` (the workers hold them in
  memory anyway), log files ``www-data:adm 0640`` made by the deploy and by logrotate, in
  directories nginx itself cannot write (:data:`LOG_DIR` is ``root:adm 0751``: nginx may pass
  through to its files, not list or add any). A changed drop-in means a daemon-reload and a restart;
  a changed configuration, a reload.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from llmkit.catalog import load_catalog
from llmkit.gateway import MANAGEMENT_PATH_PREFIXES
from playbooks.render import render
from playbooks.tls_material import TlsMaterial, certificate_pem, client_ca_pem, tls_material
from playbooks.topology import (
    GATEWAY_GROUP,
    GATEWAY_TLS_NAME,
    HTTPS_PORT,
    PROXY_GROUP,
    UPSTREAM_TLS_NAME,
    admin_cidrs,
    gateway_members,
    gateway_upstream,
    is_model_host,
    model_host_address,
    model_hosts,
    socket_address,
)

from ..facts.tls import DefaultRouteSource

#: Where the proxy and the terminator keep their certificates and keys on the host.
TLS_DIR = "/etc/nginx/llmkit-tls"
#: The JSON access logs (rotated by our own logrotate file).
LOG_DIR = "/var/log/llmkit-nginx"
#: The proxy's JSON access log (mtail reads it for the SLO metrics: ``monitoring.py``).
PROXY_ACCESS_LOG = f"{LOG_DIR}/proxy-access.log"
#: The terminator's JSON access log.
MODEL_ACCESS_LOG = f"{LOG_DIR}/model-access.log"
PROXY_CONF = "/etc/nginx/conf.d/llmkit-proxy.conf"
TERMINATOR_CONF = "/etc/nginx/conf.d/llmkit-model-tls.conf"
#: nginx's sandbox: a drop-in for the distro's unit (``nginx-hardening.conf.j2``).
NGINX_DROPIN = "/etc/systemd/system/nginx.service.d/llmkit-hardening.conf"
#: The distro's nginx user, which the whole of nginx runs as under the drop-in (master included).
NGINX_USER = "www-data"
#: The distro's PID file (``pid`` in /etc/nginx/nginx.conf, ``PIDFile=`` of its unit).
NGINX_PID_FILE = "/run/nginx.pid"
#: Where the distro's nginx writes besides its PID file: its logs, its temporary files.
DISTRO_LOG_DIR = "/var/log/nginx"
STATE_DIR = "/var/lib/nginx"
LOGROTATE_CONF = "/etc/logrotate.d/llmkit-nginx"
#: The distro's default site (port 80, a symlink into sites-available): removed on proxy and model hosts.
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
#: Ports below this one need CAP_NET_BIND_SERVICE.
FIRST_UNPRIVILEGED_PORT = 1024
#: The runtime the model hosts serve (what ``deploys/ollama.py`` installs): its API allow-list
#: (``routes`` in ``llmkit/data/runtimes.yaml``) is what the proxy and the terminators pass.
MODEL_RUNTIME = "ollama"
#: TLS key exchange groups, in order of preference (``ssl_ecdh_curve``), not OpenSSL's default list.
TLS_GROUPS = ("X25519", "prime256v1", "secp384r1")
#: nginx upstream pools: the model hosts, or the gateways in front of them.
MODEL_UPSTREAM = "llmkit_models"
GATEWAY_UPSTREAM = "llmkit_gateways"

MAX_FAILS = 3
FAIL_TIMEOUT = "30s"
CONNECT_TIMEOUT = "5s"
GENERATION_TIMEOUT = "900s"

_SIZE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9*_.-]+$")


# --- settings -------------------------------------------------------------------------------------


def _positive_int(data: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _port(data: Mapping[str, Any], key: str) -> int:
    value = _positive_int(data, key)
    if value > 65535:
        raise ValueError(f"{key} must be a TCP port (1-65535), got {value}")
    return value


def _body_size(data: Mapping[str, Any]) -> str:
    value = str(data.get("client_max_body_size"))
    if not _SIZE.match(value):
        raise ValueError(f"client_max_body_size must be an nginx size like '1m' or '512k', got {value!r}")
    return value


def api_routes(runtime: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(path, nginx regular expression, methods) of the runtime's API allow-list (the catalog's)."""
    routes = load_catalog().runtime(runtime).routes
    return [(path, re.escape(path), tuple(methods)) for path, methods in routes.items()]


# --- who may use the model port --------------------------------------------------------------------

#: Subject attributes whose names OpenSSL (nginx's $ssl_client_s_dn, RFC 2253) and cryptography
#: (RFC 4514) write alike; values of plain characters only, so the two strings are equal.
_SUBJECT_ATTRIBUTES = {
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.COUNTRY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.DOMAIN_COMPONENT,
}
_SUBJECT_VALUE = re.compile(r"[A-Za-z0-9._@:-]+(?: [A-Za-z0-9._@:-]+)*")


def certificate_subject(pem: str, what: str) -> str:
    """The certificate's subject as nginx's ``$ssl_client_s_dn`` shows it (RFC 2253)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as error:
        raise ValueError(f"{what}: not a PEM certificate ({error})") from None
    rdns = list(cert.subject.rdns)
    plain = bool(rdns) and all(
        len(rdn) == 1
        and next(iter(rdn)).oid in _SUBJECT_ATTRIBUTES
        and _SUBJECT_VALUE.fullmatch(str(next(iter(rdn)).value))
        for rdn in rdns
    )
    if not plain:
        raise ValueError(
            f"{what}: its subject ({cert.subject.rfc4514_string()!r}) cannot identify it to the model "
            "hosts: it needs a subject of CN (O, OU, C, ST, L, DC) attributes of letters, digits and "
            ". _ @ : - (as `llmkit pki issue` makes)"
        )
    return cert.subject.rfc4514_string()


def model_client_subjects(clients: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The subjects of the model port's clients' certificates: (name, data) of each proxy and gateway."""
    subjects: list[str] = []
    for name, data in clients:
        subject = certificate_subject(certificate_pem(name, data), f"certificate of {name}")
        if subject not in subjects:
            subjects.append(subject)
    return subjects


def management_pattern(prefixes: Iterable[str]) -> str:
    """An nginx regular expression matching every path under one of ``prefixes``."""
    parts = [re.escape(p) for p in prefixes]
    if not parts or any(not re.fullmatch(r"/[A-Za-z0-9_/-]*", p) for p in prefixes):
        raise ValueError(f"management path prefixes must be plain paths, got {list(prefixes)!r}")
    return "^(?:" + "|".join(parts) + ")"


def proxy_context(
    data: Mapping[str, Any],
    upstreams: Iterable[str],
    *,
    gateways: Sequence[str] = (),
    admin_cidrs: Sequence[str] = (),
) -> dict[str, Any]:
    """The proxy template's context from host data and the model hosts' addresses.

    With ``gateways`` (``address:port`` of each gateway host) the pool is the gateways, and the
    management paths answer only to ``admin_cidrs`` (the gateways' ``gateway.admin_cidrs``).
    """
    upstream_list = list(upstreams)
    if not upstream_list and not gateways:
        raise ValueError(
            "reverse_proxy: no model hosts: the inventory's gpu (or model_<slug>) group is empty"
        )
    port = _port(data, "model_port")
    server_name = str(data.get("proxy_server_name") or "")
    if not _SERVER_NAME.match(server_name):
        raise ValueError(f"proxy_server_name must be a host name, got {server_name!r}")
    header = data.get("api_key_header")
    api_key_variable = None
    if header:
        if not _HEADER.match(str(header)):
            raise ValueError(f"api_key_header must be an HTTP header name, got {header!r}")
        api_key_variable = "$http_" + str(header).lower().replace("-", "_")
    admin = [str(ipaddress.ip_network(str(c), strict=True)) for c in admin_cidrs]
    return {
        "server_name": server_name,
        "tls_groups": ":".join(TLS_GROUPS),
        # Through gateways, LiteLLM's API (its own routes, management restricted below) is the API.
        "runtime": MODEL_RUNTIME,
        "routes": None if gateways else api_routes(MODEL_RUNTIME),
        "upstreams": list(gateways) if gateways else [socket_address(a, port) for a in upstream_list],
        "upstream_name": GATEWAY_UPSTREAM if gateways else MODEL_UPSTREAM,
        "via_gateway": bool(gateways),
        "management_pattern": management_pattern(MANAGEMENT_PATH_PREFIXES) if gateways else None,
        "admin_cidrs": admin,
        "model_port": port,
        "max_fails": MAX_FAILS,
        "fail_timeout": FAIL_TIMEOUT,
        "connect_timeout": CONNECT_TIMEOUT,
        "generation_timeout": GENERATION_TIMEOUT,
        "rate_per_second": _positive_int(data, "rate_limit_per_second"),
        "rate_burst": _positive_int(data, "rate_limit_burst", minimum=0),
        "api_key_header": header,
        "api_key_variable": api_key_variable,
        "client_max_body_size": _body_size(data),
        "client_ca": bool(data.get("mtls_client_ca")),
        "tls_dir": TLS_DIR,
        "access_log": PROXY_ACCESS_LOG,
        "upstream_tls_name": GATEWAY_TLS_NAME if gateways else UPSTREAM_TLS_NAME,
    }


# How a model host's TLS terminator gets its certificate:
# - "internal-ca" (bare metal): from the internal PKI, and clients must present a certificate
#   from it (the proxy and the gateway do);
# - "self-signed-behind-alb" (AWS): AWS's internal load balancer can present no client
#   certificate and does not verify target certificates, so the host makes its own key and
#   certificate once, and the security group (only the model load balancer's group may reach the
#   model port) is the access control.
INTERNAL_CA = "internal-ca"
SELF_SIGNED_BEHIND_ALB = "self-signed-behind-alb"
MODEL_TLS_MODES = (INTERNAL_CA, SELF_SIGNED_BEHIND_ALB)


def terminator_context(
    data: Mapping[str, Any], bind_address: str | None, client_subjects: Sequence[str] = ()
) -> dict[str, Any]:
    """The terminator template's context; ``bind_address`` is the default route's source (a fact).

    ``client_subjects``: the certificate subjects that may use the model port (the proxies' and
    the gateways', :func:`model_client_subjects`); required unless the model TLS mode verifies no
    client certificate.
    """
    address = data.get("model_bind_address") or bind_address
    if not address:
        raise ValueError(
            "tls_terminator: no model_bind_address and no IPv4 default route to take it from: "
            "set model_bind_address to the host's model-tier address"
        )
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        raise ValueError(f"model_bind_address must be an IP address, got {address!r}") from None
    port = _port(data, "model_port")
    ollama_port = _port(data, "ollama_port")
    mode = data.get("model_tls_mode") or INTERNAL_CA
    if mode not in MODEL_TLS_MODES:
        raise ValueError(f"model_tls_mode must be one of {', '.join(MODEL_TLS_MODES)}, got {mode!r}")
    verify_client = mode == INTERNAL_CA
    if verify_client and not client_subjects:
        raise ValueError(
            "tls_terminator: the inventory has no proxy or gateway host, so no certificate may use the "
            "model port: add the proxies (group proxy) or gateways (group gateway) to the inventory"
        )
    return {
        "verify_client": verify_client,
        "client_subjects": [(s, re.escape(s)) for s in client_subjects] if verify_client else [],
        "tls_groups": ":".join(TLS_GROUPS),
        "runtime": MODEL_RUNTIME,
        "routes": api_routes(MODEL_RUNTIME),
        "bind_address": str(address),
        "listen": socket_address(str(address), port),
        "model_port": port,
        "ollama_port": ollama_port,
        "client_max_body_size": _body_size(data),
        "connect_timeout": CONNECT_TIMEOUT,
        "generation_timeout": GENERATION_TIMEOUT,
        "tls_dir": TLS_DIR,
        "access_log": MODEL_ACCESS_LOG,
    }


def logrotate_context(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "retention_days": _positive_int(data, "log_retention_days"),
        "log_dir": LOG_DIR,
        "user": NGINX_USER,
        "pid_file": NGINX_PID_FILE,
    }


def nginx_unit_context(ports: Iterable[int], peers: Iterable[str]) -> dict[str, Any]:
    """The drop-in's context: the ports nginx listens on, and every address or network it talks to.

    ``peers``: its clients' networks and the hosts it proxies to (or that connect to it). An IP
    allow-list needs them all as addresses: with a host name among them (nginx resolves it,
    through DNS) the drop-in has none.
    """
    listening = sorted(set(ports))
    if not listening:
        raise ValueError("nginx_unit_context: nginx listens on no port")
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    unaddressed: list[str] = []
    for peer in peers:
        try:
            network = ipaddress.ip_network(str(peer), strict=False)
        except ValueError:
            if str(peer) not in unaddressed:
                unaddressed.append(str(peer))
            continue
        if isinstance(network, ipaddress.IPv4Network):
            v4.append(network)
        else:
            v6.append(network)
    collapsed = [str(n) for n in ipaddress.collapse_addresses(v4)]
    collapsed += [str(n) for n in ipaddress.collapse_addresses(v6)]
    return {
        "user": NGINX_USER,
        "ports": listening,
        "bind_low_ports": any(port < FIRST_UNPRIVILEGED_PORT for port in listening),
        "pid_file": NGINX_PID_FILE,
        "pid_dir": str(Path(NGINX_PID_FILE).parent),
        "read_write_paths": [DISTRO_LOG_DIR, LOG_DIR],
        "state_directory": Path(STATE_DIR).name,
        "ip_allow": None if unaddressed else collapsed,
        "unaddressed": unaddressed,
    }


def _members(group: str) -> list[tuple[str, dict[str, Any]]]:
    return [(member.name, member.data.dict()) for member in host.inventory.get_group(group, [])]


def _peer_address(name: str, data: Mapping[str, Any]) -> str:
    """Where a peer's connections come from, as the host firewall sees it: ``ssh_hostname``, else its name."""
    return str(data.get("ssh_hostname") or name)


def _host_of(socket: str) -> str:
    """The address part of ``address:port`` (``[v6]:port``)."""
    address = socket.rsplit(":", 1)[0]
    return address[1:-1] if address.startswith("[") else address


# --- operations -----------------------------------------------------------------------------------


def _secret(content: str, dest: str, name: str) -> Any:
    """Key material: root's, readable by nginx (which runs as NGINX_USER, master included)."""
    return files.put(name=name, src=StringIO(content), dest=dest, user="root", group=NGINX_USER, mode="640")


def _tls_directory() -> Any:
    return files.directory(
        name="TLS directory (root's, nginx may read)", path=TLS_DIR, user="root", group=NGINX_USER, mode="750"
    )


def _install_tls(material: TlsMaterial, client_ca: str | None, manage_client_ca: bool = True) -> list[Any]:
    _tls_directory()
    ops = [
        _secret(material.cert, f"{TLS_DIR}/server.crt", "Host certificate"),
        _secret(material.key, f"{TLS_DIR}/server.key", "Host key"),
        _secret(material.ca, f"{TLS_DIR}/ca.crt", "Internal CA certificate"),
    ]
    if not manage_client_ca:
        return ops
    if client_ca is not None:
        ops.append(_secret(client_ca, f"{TLS_DIR}/clients-ca.crt", "Client CA certificate (mTLS)"))
    else:
        ops.append(
            files.file(name="No client CA (mTLS off)", path=f"{TLS_DIR}/clients-ca.crt", present=False)
        )
    return ops


def _nginx_unit() -> dict[str, Any]:
    """:func:`nginx_unit_context` for this host, from all its roles (a host may be proxy and model host)."""
    data = host.data.dict()
    ports: list[int] = []
    peers: list[str] = []
    if PROXY_GROUP in host.groups:
        ports.append(HTTPS_PORT)
        peers += [str(c) for c in data.get("client_cidrs") or []]
        pool = _gateway_pool()
        if pool:
            peers += [_host_of(g) for g in pool["gateways"]]
        else:
            peers += _model_addresses()
    if is_model_host(host.groups):
        ports.append(_port(data, "model_port"))
        peers += [_peer_address(n, d) for group in (PROXY_GROUP, GATEWAY_GROUP) for n, d in _members(group)]
        peers += [str(c) for c in data.get("gateway_hosts") or []]
    return nginx_unit_context(ports, peers)


def _log_file(path: str) -> Any:
    """An access log, made by the deploy for nginx (which may not create files in LOG_DIR)."""
    return files.file(
        name=f"Access log {Path(path).name} (nginx's to write)",
        path=path,
        user=NGINX_USER,
        group="adm",
        mode="640",
        create_remote_dir=False,  # LOG_DIR is root's (made above): never handed to nginx
    )


def _nginx_base(data: Mapping[str, Any]) -> list[Any]:
    apt.packages(name="nginx from the distro", packages=["nginx"], update=True, cache_time=3600)
    # root's, read by adm (mtail); others (nginx) may only pass through to the files made for them.
    files.directory(name="JSON access log directory", path=LOG_DIR, user="root", group="adm", mode="751")
    return [
        files.link(name="Remove the distro's default site", path=DEFAULT_SITE, present=False),
        files.put(
            name="Rotate the access logs",
            src=StringIO(render("logrotate-llmkit-nginx.j2", **logrotate_context(data))),
            dest=LOGROTATE_CONF,
            user="root",
            group="root",
            mode="644",
        ),
    ]


def _check_and_reload(changes: list[Any]) -> None:
    """Check, then reload nginx when its configuration changed; restart it in a changed sandbox."""
    unit = files.put(
        name="nginx's sandbox (systemd drop-in)",
        src=StringIO(render("nginx-hardening.conf.j2", **_nginx_unit())),
        dest=NGINX_DROPIN,
        user="root",
        group="root",
        mode="644",
    )

    def changed() -> bool:
        return unit.did_change() or any(op.did_change() for op in changes)

    def reload() -> bool:
        return not unit.did_change() and any(op.did_change() for op in changes)

    server.shell(name="Check the nginx configuration", commands=["nginx -t -q"], _if=changed)
    systemd.service(
        name="Restart nginx in its new sandbox",
        service="nginx.service",
        running=True,
        restarted=True,
        daemon_reload=True,
        _if=unit.did_change,
    )
    systemd.service(name="Reload nginx", service="nginx.service", running=True, reloaded=True, _if=reload)
    systemd.service(name="nginx running and enabled", service="nginx.service", running=True, enabled=True)


def _model_addresses() -> list[str]:
    return [model_host_address(name, hdata) for name, hdata in model_hosts()]


def _gateway_pool() -> dict[str, Any]:
    """``gateways`` and ``admin_cidrs`` for :func:`proxy_context` when the inventory has gateway hosts."""
    members = gateway_members()
    if not members:
        return {}
    return {
        "gateways": [gateway_upstream(name, hdata) for name, hdata in members],
        "admin_cidrs": admin_cidrs(members),
    }


@deploy("Reverse proxy")
def reverse_proxy() -> None:
    """nginx on a proxy host: TLS 1.3 (+ mTLS) in, mutual TLS to the model hosts out."""
    data = host.data.dict()
    context = proxy_context(data, _model_addresses(), **_gateway_pool())
    material = tls_material(data, host.name)
    client_ca = client_ca_pem(data.get("mtls_client_ca"))

    changes = _nginx_base(data)
    _log_file(PROXY_ACCESS_LOG)
    changes += _install_tls(material, client_ca)
    changes.append(
        files.put(
            name="Proxy configuration",
            src=StringIO(render("nginx-proxy.conf.j2", **context)),
            dest=PROXY_CONF,
            user="root",
            group="root",
            mode="644",
        )
    )
    _check_and_reload(changes)


@deploy("TLS terminator")
def tls_terminator() -> None:
    """nginx on a model host: TLS 1.3, client certificates from the internal CA, to Ollama on loopback."""
    data = host.data.dict()
    bind = None if data.get("model_bind_address") else host.get_fact(DefaultRouteSource)
    verifies = (data.get("model_tls_mode") or INTERNAL_CA) == INTERNAL_CA
    clients = _members(PROXY_GROUP) + _members(GATEWAY_GROUP) if verifies else []
    context = terminator_context(data, bind, model_client_subjects(clients))
    if context["verify_client"]:
        material = tls_material(data, host.name)
        changes = _nginx_base(data)
        changes += _install_tls(material, None, manage_client_ca=False)
    else:
        changes = _nginx_base(data)
        _tls_directory()
        # Not a change that needs a reload on its own: the first run also writes the config.
        if host.get_fact(File, path=f"{TLS_DIR}/server.key") is None:
            server.shell(
                name="Self-signed host certificate (behind the AWS load balancer), made once",
                commands=[
                    f"test -s {TLS_DIR}/server.key || (umask 077 && openssl req -x509 -newkey ec "
                    f"-pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN={context['bind_address']} "
                    f"-addext subjectAltName=IP:{context['bind_address']} "
                    f"-keyout {TLS_DIR}/server.key -out {TLS_DIR}/server.crt)"
                ],
            )
        for name in ("server.key", "server.crt"):
            files.file(
                name=f"Self-signed {name}: root's, nginx may read",
                path=f"{TLS_DIR}/{name}",
                user="root",
                group=NGINX_USER,
                mode="640",
                create_remote_dir=False,
            )
    _log_file(MODEL_ACCESS_LOG)
    changes.append(
        files.put(
            name="TLS terminator configuration",
            src=StringIO(render("nginx-terminator.conf.j2", **context)),
            dest=TERMINATOR_CONF,
            user="root",
            group="root",
            mode="644",
        )
    )
    _check_and_reload(changes)
