"""Edge hosts: reverse proxy, TLS terminator, host firewall, hardening.

Templates are rendered with realistic host data and their security lines asserted; where the real
tools are installed (``nginx``, ``nft``) the rendered files are also checked by them. The deploys run
against pyinfra's ``@fake`` connector: facts in (canned command output), commands out.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from llmkit.lab import system
from playbooks.deploys import firewall as fw
from playbooks.deploys import hardening as hd
from playbooks.deploys import reverse_proxy as rp
from playbooks.facts.tls import parse_route_source

# --- test PKI (generated here: no key material in the repository) --------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert(
    subject: str, issuer: str, public: Any, signer: ec.EllipticCurvePrivateKey, ca: bool, sans: list[str]
) -> str:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki() -> dict[str, str]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("llmkit test CA", "llmkit test CA", ca_key.public_key(), ca_key, True, [])
    out = {"ca": ca}
    for host_name, sans in (("proxy", ["llm.example.com"]), ("gpu", [rp.UPSTREAM_TLS_NAME])):
        key = ec.generate_private_key(ec.SECP256R1())
        out[f"{host_name}_cert"] = _cert(host_name, "llmkit test CA", key.public_key(), ca_key, False, sans)
        out[f"{host_name}_key"] = _pem_key(key)
    return out


# --- realistic host data --------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "model_port": 11434,
    "ollama_port": 11434,
    "model_bind_address": None,
    "proxy_server_name": "llm.example.com",
    "client_cidrs": ["203.0.113.0/24", "2001:db8:100::/48"],
    "mtls_client_ca": None,
    "rate_limit_per_second": 5,
    "rate_limit_burst": 20,
    "api_key_header": None,
    "client_max_body_size": "1m",
    "log_retention_days": 180,
    "admin_cidrs": ["10.99.0.0/24"],
    "gateway_hosts": ["10.20.5.10"],
    "node_exporter_port": 9100,
    "gpu_exporter_port": 9835,
    "proxy_metrics_port": 3903,
    "ssh_permit_root_login": "prohibit-password",
    "unattended_upgrades": True,
}


def data(**overrides: Any) -> dict[str, Any]:
    return {**DEFAULTS, **overrides}


UPSTREAMS = ["10.20.1.11", "10.20.1.12"]
#: The certificate subjects that may use a terminator's model port (the proxies', the gateways').
CLIENTS = ["CN=proxy-1.llm.example.internal"]


def lines(text: str) -> list[str]:
    """Non-comment lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


# --- reverse proxy --------------------------------------------------------------------------------


def test_proxy_config_has_the_security_lines() -> None:
    conf = rp.render("nginx-proxy.conf.j2", **rp.proxy_context(data(), UPSTREAMS))
    body = lines(conf)
    assert [line for line in body if line.startswith("ssl_protocols")] == ["ssl_protocols TLSv1.3;"]
    assert "server_tokens off;" in body
    assert 'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;' in body
    assert "client_max_body_size 1m;" in body
    assert "limit_req_zone $binary_remote_addr zone=llmkit_per_address:10m rate=5r/s;" in body
    assert "limit_req zone=llmkit_per_address burst=20 nodelay;" in body
    assert "limit_req_status 429;" in body
    # Upstreams: every model host, passive health checks, mutual TLS 1.3 with verification.
    assert "server 10.20.1.11:11434 max_fails=3 fail_timeout=30s;" in body
    assert "server 10.20.1.12:11434 max_fails=3 fail_timeout=30s;" in body
    # Only the runtime's allow-list reaches the model hosts, under exactly the allow-listed path.
    assert "proxy_pass https://llmkit_models$uri$is_args$args;" in body
    assert 'if ($llmkit_proxy_route_methods = "") {' in body
    assert "if ($llmkit_proxy_route_allowed = 0) {" in body
    assert body.count("return 403;") == 1 and body.count("return 405;") == 1
    # Pinned key exchange groups, no caching of prompts and answers.
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in body
    assert 'add_header Cache-Control "no-store" always;' in body
    assert "proxy_hide_header Cache-Control;" in body
    assert "proxy_ssl_certificate /etc/nginx/llmkit-tls/server.crt;" in body
    assert "proxy_ssl_verify on;" in body
    assert "proxy_ssl_trusted_certificate /etc/nginx/llmkit-tls/ca.crt;" in body
    assert "proxy_ssl_protocols TLSv1.3;" in body
    assert f"proxy_ssl_name {rp.UPSTREAM_TLS_NAME};" in body
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in body
    assert f"proxy_next_upstream_tries {len(UPSTREAMS)};" in body  # each model host once
    assert "proxy_buffering off;" in body
    assert any(re.fullmatch(r"proxy_read_timeout (\d+)s;", x) and int(x.split()[1][:-2]) >= 600 for x in body)
    # JSON access log that never records the query string.
    assert "log_format llmkit_proxy_json escape=json" in body
    assert "access_log /var/log/llmkit-nginx/proxy-access.log llmkit_proxy_json;" in body
    log_format = conf.split("log_format llmkit_proxy_json", 1)[1].split(";", 1)[0]
    assert "$request_uri" not in log_format and "$args" not in log_format and "$uri" in log_format
    # No client certificates and no key zone unless asked for.
    assert "ssl_verify_client" not in conf
    assert "llmkit_per_api_key" not in conf


def test_proxy_mtls_and_api_key_zone() -> None:
    ctx = rp.proxy_context(
        data(mtls_client_ca="/controller/clients-ca.crt", api_key_header="X-API-Key"), UPSTREAMS
    )
    body = lines(rp.render("nginx-proxy.conf.j2", **ctx))
    assert "ssl_verify_client on;" in body
    assert "ssl_client_certificate /etc/nginx/llmkit-tls/clients-ca.crt;" in body
    assert "limit_req_zone $http_x_api_key zone=llmkit_per_api_key:10m rate=5r/s;" in body
    assert "limit_req zone=llmkit_per_api_key burst=20 nodelay;" in body
    assert "limit_req_status 429;" in body


def test_proxy_ipv6_upstreams_are_bracketed() -> None:
    ctx = rp.proxy_context(data(), ["fd00:20::11"])
    assert ctx["upstreams"] == ["[fd00:20::11]:11434"]


@pytest.mark.parametrize(
    ("overrides", "upstreams", "message"),
    [
        ({}, [], "no model hosts"),
        ({"api_key_header": "X-Key; evil"}, UPSTREAMS, "api_key_header"),
        ({"client_max_body_size": "1m; return 200"}, UPSTREAMS, "client_max_body_size"),
        ({"rate_limit_per_second": 0}, UPSTREAMS, "rate_limit_per_second"),
        ({"proxy_server_name": "a b"}, UPSTREAMS, "proxy_server_name"),
        ({"model_port": 70000}, UPSTREAMS, "model_port"),
    ],
)
def test_proxy_refuses_bad_settings(overrides: dict[str, Any], upstreams: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rp.proxy_context(data(**overrides), upstreams)


def test_logrotate_keeps_the_retention() -> None:
    body = lines(rp.render("logrotate-llmkit-nginx.j2", **rp.logrotate_context(data(log_retention_days=365))))
    assert "daily" in body
    assert "rotate 365" in body
    assert "/var/log/llmkit-nginx/*.log {" in body
    with pytest.raises(ValueError, match="log_retention_days"):
        rp.logrotate_context(data(log_retention_days=0))


def test_terminator_config_requires_client_certificates() -> None:
    ctx = rp.terminator_context(data(model_bind_address="10.20.1.11"), None, CLIENTS)
    body = lines(rp.render("nginx-terminator.conf.j2", **ctx))
    assert "listen 10.20.1.11:11434 ssl;" in body
    assert [line for line in body if line.startswith("ssl_protocols")] == ["ssl_protocols TLSv1.3;"]
    assert "ssl_verify_client on;" in body
    assert "ssl_client_certificate /etc/nginx/llmkit-tls/ca.crt;" in body
    # Of the internal CA's certificates, only the proxies' and gateways' subjects: 403 for others.
    block = body[body.index("map $ssl_client_s_dn $llmkit_model_client {") :]
    assert block[1:4] == [
        "default 0;",
        r'"~^CN=proxy\-1\.llm\.example\.internal$" 1;  # CN=proxy-1.llm.example.internal',
        "}",
    ]
    assert "if ($llmkit_model_client = 0) {" in body
    assert "server 127.0.0.1:11434;" in body
    assert "proxy_pass http://llmkit_ollama$uri$is_args$args;" in body
    assert "server_tokens off;" in body
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in body
    assert 'add_header Cache-Control "no-store" always;' in body
    assert not any("0.0.0.0" in line for line in body)
    with pytest.raises(ValueError, match="no proxy or gateway host"):
        rp.terminator_context(data(model_bind_address="10.20.1.11"), None, [])


def test_terminator_behind_the_aws_load_balancer_skips_client_certificates() -> None:
    # The internal ALB presents no client certificate; the security groups restrict the port.
    ctx = rp.terminator_context(
        data(model_bind_address="10.40.12.7", model_tls_mode="self-signed-behind-alb"), None
    )
    assert ctx["verify_client"] is False
    body = lines(rp.render("nginx-terminator.conf.j2", **ctx))
    assert "listen 10.40.12.7:11434 ssl;" in body
    assert [line for line in body if line.startswith("ssl_protocols")] == ["ssl_protocols TLSv1.3;"]
    assert not [line for line in body if line.startswith(("ssl_verify_client", "ssl_client_certificate"))]
    with pytest.raises(ValueError, match="model_tls_mode must be one of internal-ca, self-signed-behind-alb"):
        rp.terminator_context(data(model_bind_address="10.40.12.7", model_tls_mode="none"), None)


def test_terminator_binds_to_the_default_route_address_not_everywhere() -> None:
    source = parse_route_source(["192.0.2.1 via 10.20.1.1 dev ens5 src 10.20.1.37 uid 0", "    cache"])
    assert source == "10.20.1.37"
    ctx = rp.terminator_context(data(), source, CLIENTS)
    assert ctx["listen"] == "10.20.1.37:11434"
    with pytest.raises(ValueError, match="model_bind_address"):
        rp.terminator_context(data(), parse_route_source([]), CLIENTS)
    with pytest.raises(ValueError, match="model_bind_address must be an IP address"):
        rp.terminator_context(data(model_bind_address="gpu-1.internal"), None, CLIENTS)


def test_tls_material_from_pki_dir_and_host_data(tmp_path: Path, pki: dict[str, str]) -> None:
    (tmp_path / "proxy-1.crt").write_text(pki["proxy_cert"])
    (tmp_path / "proxy-1.key").write_text(pki["proxy_key"])
    (tmp_path / "ca.crt").write_text(pki["ca"])
    material = rp.tls_material({"pki_dir": str(tmp_path)}, "proxy-1")
    assert material.cert == pki["proxy_cert"] and material.ca == pki["ca"]
    with pytest.raises(ValueError, match=r"missing .*proxy-2\.crt"):
        rp.tls_material({"pki_dir": str(tmp_path)}, "proxy-2")
    inline = rp.tls_material(
        {"tls_cert": pki["gpu_cert"], "tls_key": pki["gpu_key"], "tls_ca": pki["ca"]}, "g"
    )
    assert inline.key == pki["gpu_key"]
    with pytest.raises(ValueError, match="tls_key"):
        rp.tls_material({"tls_cert": pki["gpu_cert"], "tls_ca": pki["ca"]}, "g")
    with pytest.raises(ValueError, match="not PEM"):
        rp.tls_material({"tls_cert": "hello", "tls_key": pki["gpu_key"], "tls_ca": pki["ca"]}, "g")


# --- real nginx -t --------------------------------------------------------------------------------

NGINX = system.which("nginx")


def nginx_check(tmp_path: Path, site: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "logs").mkdir(exist_ok=True)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\n    include {tmp_path}/site.conf;\n}}\n"
    )
    return subprocess.run(
        [
            NGINX or "nginx",
            "-t",
            "-q",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "logs/error.log"),
            "-c",
            str(main),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def write_tls(tmp_path: Path, pki: dict[str, str], role: str, client_ca: bool) -> Path:
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "server.crt").write_text(pki[f"{role}_cert"])
    (tls / "server.key").write_text(pki[f"{role}_key"])
    (tls / "ca.crt").write_text(pki["ca"])
    if client_ca:
        (tls / "clients-ca.crt").write_text(pki["ca"])
    return tls


@pytest.mark.needs("nginx")
@pytest.mark.parametrize("mtls", [False, True])
def test_nginx_accepts_the_proxy_config(tmp_path: Path, pki: dict[str, str], mtls: bool) -> None:
    ctx = rp.proxy_context(
        data(mtls_client_ca="x" if mtls else None, api_key_header="X-API-Key" if mtls else None), UPSTREAMS
    )
    ctx["tls_dir"] = str(write_tls(tmp_path, pki, "proxy", mtls))
    ctx["access_log"] = str(tmp_path / "logs/access.log")
    result = nginx_check(tmp_path, rp.render("nginx-proxy.conf.j2", **ctx))
    assert result.returncode == 0, result.stderr


@pytest.mark.needs("nginx")
@pytest.mark.parametrize("mode", rp.MODEL_TLS_MODES)
def test_nginx_accepts_the_terminator_config(tmp_path: Path, pki: dict[str, str], mode: str) -> None:
    settings = data(model_bind_address="127.0.0.1", model_port=18443, model_tls_mode=mode)
    ctx = rp.terminator_context(settings, None, CLIENTS)
    ctx["tls_dir"] = str(write_tls(tmp_path, pki, "gpu", False))
    ctx["access_log"] = str(tmp_path / "logs/access.log")
    result = nginx_check(tmp_path, rp.render("nginx-terminator.conf.j2", **ctx))
    assert result.returncode == 0, result.stderr


@pytest.mark.needs("nginx")
def test_nginx_check_can_fail(tmp_path: Path) -> None:
    """The check above is real: a broken directive is rejected."""
    result = nginx_check(tmp_path, "server { ssl_protocols TLSv9; }\n")
    assert result.returncode != 0


# --- firewall -------------------------------------------------------------------------------------

PEERS = {
    "proxy": [("proxy-1", {"ssh_hostname": "10.10.0.5"}), ("proxy-2", {"ssh_hostname": "10.10.0.6"})],
    "monitoring": [("mon-1", {"ssh_hostname": "10.30.0.9"})],
}


def ruleset(groups: list[str], **overrides: Any) -> str:
    return fw.render_ruleset(fw.firewall_context("host-1", groups, data(**overrides), PEERS))


def accepts(text: str, port: int) -> list[str]:
    return [line for line in lines(text) if re.search(rf"tcp dport {port} accept$", line)]


def test_firewall_drops_by_default_and_keeps_ssh_to_admins() -> None:
    text = ruleset(["proxy"])
    body = lines(text)
    assert "type filter hook input priority filter; policy drop;" in body
    assert "type filter hook forward priority filter; policy drop;" in body
    assert "ct state established,related accept" in body
    assert 'iif "lo" accept' in body
    assert accepts(text, 22) == ["ip saddr { 10.99.0.0/24 } tcp dport 22 accept"]


def test_firewall_proxy_opens_443_only_to_clients() -> None:
    text = ruleset(["proxy"])
    assert accepts(text, 443) == [
        "ip saddr { 203.0.113.0/24 } tcp dport 443 accept",
        "ip6 saddr { 2001:db8:100::/48 } tcp dport 443 accept",
    ]
    assert accepts(text, 11434) == []
    assert accepts(text, 9835) == []
    assert accepts(text, 9100) == ["ip saddr { 10.30.0.9/32 } tcp dport 9100 accept"]
    assert accepts(text, 3903) == ["ip saddr { 10.30.0.9/32 } tcp dport 3903 accept"]
    assert accepts(ruleset(["gpu"]), 3903) == []


@pytest.mark.parametrize("groups", [["gpu"], ["model_deepseek_r1_32b"]])
def test_firewall_gpu_opens_model_port_only_to_proxies_and_gateways(groups: list[str]) -> None:
    text = ruleset(groups)
    assert accepts(text, 11434) == [
        "ip saddr { 10.10.0.5/32, 10.10.0.6/32, 10.20.5.10/32 } tcp dport 11434 accept"
    ]
    assert accepts(text, 443) == []
    assert accepts(text, 9835) == ["ip saddr { 10.30.0.9/32 } tcp dport 9835 accept"]
    assert accepts(text, 9100) == ["ip saddr { 10.30.0.9/32 } tcp dport 9100 accept"]


@pytest.mark.parametrize(
    ("groups", "overrides", "message"),
    [
        (["gpu"], {"admin_cidrs": []}, "admin_cidrs is empty"),
        (["proxy"], {"client_cidrs": []}, "client_cidrs is empty"),
        (["gpu"], {"admin_cidrs": ["10.99.0.1/24"]}, "admin_cidrs"),
        (["gpu"], {"gateway_hosts": "10.20.5.10"}, "gateway_hosts must be a list"),
    ],
)
def test_firewall_refuses_lockouts_and_typos(
    groups: list[str], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ruleset(groups, **overrides)


def test_firewall_refuses_peers_without_an_address() -> None:
    peers: dict[str, list[tuple[str, dict[str, Any]]]] = {"proxy": [("proxy-1.example.com", {})]}
    with pytest.raises(ValueError, match=r"proxy-1\.example\.com"):
        fw.firewall_context("gpu-1", ["gpu"], data(), peers)


NFT = system.which("nft")


def nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NFT or "nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.mark.needs("nft", "root")  # nft -c needs CAP_NET_ADMIN
@pytest.mark.parametrize("groups", [["proxy"], ["gpu"], ["proxy", "gpu"], []])
def test_nft_accepts_the_ruleset(tmp_path: Path, groups: list[str]) -> None:
    path = tmp_path / "nftables.conf"
    path.write_text(ruleset(groups))
    result = nft_check(path)
    assert result.returncode == 0, result.stderr
    path.write_text(ruleset(groups).replace("policy drop;", "policy dropp;"))
    assert nft_check(path).returncode != 0


# --- hardening ------------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["prohibit-password", "no"])
def test_sshd_dropin(choice: str) -> None:
    body = lines(hd.render_sshd(data(ssh_permit_root_login=choice)))
    assert "PasswordAuthentication no" in body
    assert "KbdInteractiveAuthentication no" in body
    assert f"PermitRootLogin {choice}" in body
    # Read before cloud-init's 50-cloud-init.conf, which may turn passwords back on.
    assert Path(hd.SSHD_DROPIN).name < "50-cloud-init.conf"


@pytest.mark.parametrize(("value", "message"), [("yes", "'yes' would allow"), ("maybe", "must be one of")])
def test_sshd_refuses_root_password_logins(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hd.render_sshd(data(ssh_permit_root_login=value))


def test_unattended_upgrades_security_only() -> None:
    ubuntu = [x.strip() for x in hd.render_unattended("Ubuntu").splitlines()]
    debian = [x.strip() for x in hd.render_unattended("Debian").splitlines()]
    for body in (ubuntu, debian):
        assert "#clear Unattended-Upgrade::Origins-Pattern;" in body
        assert "#clear Unattended-Upgrade::Allowed-Origins;" in body
        assert 'APT::Periodic::Unattended-Upgrade "1";' in body
        patterns = [x for x in body if x.startswith('"origin=')]
        assert patterns and all("security" in x for x in patterns)
    assert '"origin=Ubuntu,archive=${distro_codename}-security,label=Ubuntu";' in ubuntu
    assert '"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";' in debian
    with pytest.raises(ValueError, match="Ubuntu and Debian"):
        hd.render_unattended("CentOS")


# --- deploys on pyinfra's @fake connector: facts in, commands out ---------------------------------

OS_RELEASE = {
    "ubuntu-22.04": ['NAME="Ubuntu"', "ID=ubuntu", 'VERSION_ID="22.04"', "VERSION_CODENAME=jammy"],
    "ubuntu-24.04": ['NAME="Ubuntu"', "ID=ubuntu", 'VERSION_ID="24.04"', "VERSION_CODENAME=noble"],
    "debian-12": ['NAME="Debian GNU/Linux"', "ID=debian", 'VERSION_ID="12"', "VERSION_CODENAME=bookworm"],
}


def present(
    path: str,
    content: str,
    mode: str = "-rw-r--r--",
    dir_mode: str = "drwxr-xr-x",
    *,
    user: str = "root",
    group: str = "root",
    dir_group: str = "root",
) -> dict[Any, Any]:
    """Fake responses: ``path`` (``mode``, holding ``content``) and its root-owned directory exist."""
    sha1 = hashlib.sha1(content.encode()).hexdigest()
    parent = str(Path(path).parent)
    return {
        f"sha1sum {path} ": f"{sha1}  {path}",
        re.compile(rf"stat -c .* {re.escape(path)} "): (
            f"user={user} group={group} mode={mode} atime=0 mtime=0 ctime=0 size={len(content)} '{path}'"
        ),
        re.compile(rf"stat -c .* {re.escape(parent)} "): (
            f"user=root group={dir_group} mode={dir_mode} atime=0 mtime=0 ctime=0 size=4096 '{parent}'"
        ),
    }


NGINX_RUNNING = {"--property SubState nginx.service": ["Id=nginx.service", "SubState=running"]}


def run_deploy(
    deploy_func: Any,
    target: str,
    groups: dict[str, list[tuple[str, dict[str, Any]]]],
    responses: dict[Any, Any],
) -> list[str]:
    """Run a deploy on fake hosts; the commands the target host was sent."""
    fake = {"fake_delay": 0, "fake_delay_jitter": 0}
    with_responses = {
        group: [
            (name, {**hdata, "fake_responses": responses} if name == target else hdata)
            for name, hdata in members
        ]
        for group, members in groups.items()
    }
    inventory = Inventory(
        ([name for members in groups.values() for name, _ in members], {**DEFAULTS, **fake}),
        **{group: (members, {}) for group, members in with_responses.items()},
    )
    state = State(inventory, Config())
    connect_all(state)
    add_deploy(state, deploy_func, host=inventory.get_host(target))
    run_ops(state)
    connector = inventory.get_host(target).connector
    assert isinstance(connector, FakeConnector)
    return list(connector.executed_commands)


@pytest.fixture
def edge(pki: dict[str, str]) -> Iterator[dict[str, list[tuple[str, dict[str, Any]]]]]:
    tls = {"tls_ca": pki["ca"]}
    yield {
        "proxy": [
            (
                "@fake/proxy-1",
                {
                    "ssh_hostname": "10.10.0.5",
                    "tls_cert": pki["proxy_cert"],
                    "tls_key": pki["proxy_key"],
                    **tls,
                },
            )
        ],
        "gpu": [
            (
                "@fake/gpu-1",
                {
                    "ssh_hostname": "10.20.1.11",
                    "model_bind_address": "10.20.1.11",
                    "tls_cert": pki["gpu_cert"],
                    "tls_key": pki["gpu_key"],
                    **tls,
                },
            )
        ],
        "monitoring": [("@fake/mon-1", {"ssh_hostname": "10.30.0.9"})],
    }


def test_reverse_proxy_first_run_writes_checks_and_restarts_in_the_sandbox(edge: dict[str, Any]) -> None:
    commands = run_deploy(rp.reverse_proxy, "@fake/proxy-1", edge, NGINX_RUNNING)
    assert any("install nginx" in c for c in commands)
    # Key material is root's; nginx (www-data, master included) may read it, nobody else.
    assert "chmod 640 /etc/nginx/llmkit-tls/server.key" in commands
    assert "chown root:www-data /etc/nginx/llmkit-tls/server.key" in commands
    assert "chmod 750 /etc/nginx/llmkit-tls" in commands
    # The access log is made for nginx, which may not create files in the root-owned log directory.
    assert "chown www-data:adm /var/log/llmkit-nginx/proxy-access.log" in commands
    assert "chown root:adm /var/log/llmkit-nginx" in commands
    assert "chmod 751 /var/log/llmkit-nginx" in commands
    assert "chown www-data:adm /var/log/llmkit-nginx" not in commands
    # A new sandbox: checked, then daemon-reload and a restart (a reload keeps the old process).
    assert f"chmod 644 {rp.NGINX_DROPIN}" in commands
    check = commands.index("nginx -t -q")
    assert (
        check < commands.index("systemctl daemon-reload") < commands.index("systemctl restart nginx.service")
    )
    assert "systemctl reload nginx.service" not in commands


def proxy_files(pki: dict[str, str]) -> dict[Any, Any]:
    """Fake responses: everything the proxy deploy writes on proxy-1 is there, unchanged."""
    responses: dict[Any, Any] = dict(NGINX_RUNNING)
    secrets = {"server.crt": pki["proxy_cert"], "server.key": pki["proxy_key"], "ca.crt": pki["ca"]}
    for name, content in secrets.items():
        responses.update(
            present(
                f"{rp.TLS_DIR}/{name}",
                content,
                "-rw-r-----",
                "drwxr-x---",
                group="www-data",
                dir_group="www-data",
            )
        )
    responses.update(
        present(
            rp.PROXY_ACCESS_LOG, "", "-rw-r-----", "drwxr-x--x", user="www-data", group="adm", dir_group="adm"
        )
    )
    for path, content in {
        rp.PROXY_CONF: rp.render("nginx-proxy.conf.j2", **rp.proxy_context(data(), ["10.20.1.11"])),
        rp.LOGROTATE_CONF: rp.render("logrotate-llmkit-nginx.j2", **rp.logrotate_context(data())),
        rp.NGINX_DROPIN: proxy_dropin(),
    }.items():
        responses.update(present(path, content))
    return responses


def proxy_dropin() -> str:
    """The drop-in of proxy-1: port 443, its clients and its one model host."""
    return rp.render(
        "nginx-hardening.conf.j2", **rp.nginx_unit_context([443], [*DEFAULTS["client_cidrs"], "10.20.1.11"])
    )


def test_reverse_proxy_unchanged_does_not_reload(edge: dict[str, Any], pki: dict[str, str]) -> None:
    commands = run_deploy(rp.reverse_proxy, "@fake/proxy-1", edge, proxy_files(pki))
    assert "nginx -t -q" not in commands
    assert not {
        "systemctl reload nginx.service",
        "systemctl daemon-reload",
        "systemctl restart nginx.service",
    } & set(commands)
    assert not any(c.startswith(("touch", "chmod", "chown")) and rp.LOG_DIR in c for c in commands)


def test_a_changed_configuration_reloads_a_changed_sandbox_restarts(
    edge: dict[str, Any], pki: dict[str, str]
) -> None:
    responses = proxy_files(pki)
    responses.update(present(rp.PROXY_CONF, "# an older configuration\n"))
    commands = run_deploy(rp.reverse_proxy, "@fake/proxy-1", edge, responses)
    assert commands.index("nginx -t -q") < commands.index("systemctl reload nginx.service")
    assert not any("daemon-reload" in c or "restart" in c for c in commands)

    responses = proxy_files(pki)
    responses.update(present(rp.NGINX_DROPIN, "[Service]\n"))
    commands = run_deploy(rp.reverse_proxy, "@fake/proxy-1", edge, responses)
    assert commands.index("nginx -t -q") < commands.index("systemctl daemon-reload")
    assert commands.index("systemctl daemon-reload") < commands.index("systemctl restart nginx.service")
    assert "systemctl reload nginx.service" not in commands


def test_tls_terminator_deploy(edge: dict[str, Any]) -> None:
    rendered: dict[str, str] = {}
    real_render = rp.render

    def recording(template: str, **context: Any) -> str:
        rendered[template] = real_render(template, **context)
        return rendered[template]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rp, "render", recording)
        commands = run_deploy(rp.tls_terminator, "@fake/gpu-1", edge, NGINX_RUNNING)
    assert "chmod 644 /etc/nginx/conf.d/llmkit-model-tls.conf" in commands
    assert "chown www-data:adm /var/log/llmkit-nginx/model-access.log" in commands
    assert commands.index("nginx -t -q") < commands.index("systemctl restart nginx.service")
    assert not any("clients-ca.crt" in c for c in commands)
    # The model port admits the inventory's proxy (its certificate's subject), no other certificate.
    assert '"~^CN=proxy$" 1;  # CN=proxy' in rendered["nginx-terminator.conf.j2"]
    # gpu-1's nginx: no capability (port 11434), packets only from the proxy and gateway_hosts.
    dropin = lines(rendered["nginx-hardening.conf.j2"])
    assert "CapabilityBoundingSet=" in dropin and "AmbientCapabilities=" in dropin
    assert "IPAddressAllow=localhost 10.10.0.5/32 10.20.5.10/32" in dropin


def test_self_signed_terminator_makes_its_certificate_once(edge: dict[str, Any]) -> None:
    edge["gpu"][0][1]["model_tls_mode"] = "self-signed-behind-alb"
    first = run_deploy(rp.tls_terminator, "@fake/gpu-1", edge, NGINX_RUNNING)
    assert sum("openssl req -x509" in c for c in first) == 1
    key = present(f"{rp.TLS_DIR}/server.key", "k", "-rw-------", "drwx------")
    again = run_deploy(rp.tls_terminator, "@fake/gpu-1", edge, {**NGINX_RUNNING, **key})
    assert not any("openssl" in c for c in again)  # an unchanged host runs nothing for it


def test_tls_terminator_takes_the_default_route_address(edge: dict[str, Any]) -> None:
    edge["gpu"][0][1]["model_bind_address"] = None
    route = {"route get": "192.0.2.1 via 10.20.1.1 dev ens5 src 10.20.1.37 uid 0"}
    commands = run_deploy(rp.tls_terminator, "@fake/gpu-1", edge, route)
    assert any("ip -4 -o route get" in c for c in commands)
    assert "nginx -t -q" in commands


def test_firewall_deploy_checks_before_loading(edge: dict[str, Any]) -> None:
    commands = run_deploy(fw.firewall, "@fake/gpu-1", edge, {})
    assert commands.index("nft -c -f /etc/nftables.conf") < commands.index("nft -f /etc/nftables.conf")
    assert "systemctl enable nftables.service" in commands


def test_firewall_deploy_unchanged_loads_nothing(edge: dict[str, Any]) -> None:
    text = fw.render_ruleset(
        fw.firewall_context(
            "@fake/gpu-1",
            ["gpu"],
            data(),
            {
                "proxy": [("p", {"ssh_hostname": "10.10.0.5"})],
                "monitoring": [("m", {"ssh_hostname": "10.30.0.9"})],
            },
        )
    )
    commands = run_deploy(fw.firewall, "@fake/gpu-1", edge, present(fw.NFTABLES_CONF, text, "-rw-------"))
    assert not any(c.startswith("nft ") for c in commands)


@pytest.mark.parametrize("distro", sorted(OS_RELEASE))
def test_hardening_deploy(edge: dict[str, Any], distro: str) -> None:
    release = {"-release": ["/etc/os-release", *OS_RELEASE[distro], "---"]}
    commands = run_deploy(hd.hardening, "@fake/gpu-1", edge, release)
    assert commands.index("/usr/sbin/sshd -t") < commands.index("systemctl try-reload-or-restart ssh.service")
    assert any("install unattended-upgrades" in c for c in commands)
    assert f"chmod 644 {hd.UNATTENDED_CONF}" in commands


def test_hardening_unchanged_does_not_reload_sshd(edge: dict[str, Any]) -> None:
    responses = {
        "-release": ["/etc/os-release", *OS_RELEASE["debian-12"], "---"],
        **present(hd.SSHD_DROPIN, hd.render_sshd(data())),
    }
    commands = run_deploy(hd.hardening, "@fake/gpu-1", edge, responses)
    assert "/usr/sbin/sshd -t" not in commands
    assert not any("ssh.service" in c for c in commands)


def test_hardening_refuses_root_password_login_before_any_command(edge: dict[str, Any]) -> None:
    edge["gpu"][0][1]["ssh_permit_root_login"] = "yes"
    with pytest.raises(ValueError, match="ssh_permit_root_login"):
        run_deploy(hd.hardening, "@fake/gpu-1", edge, {})
