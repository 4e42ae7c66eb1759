"""The proxy and the model hosts' TLS terminators, attacked through real nginx.

The proxy and the terminator configurations are rendered as the deploys render them and served by
one real nginx on 127.0.0.1 (as on a host with both roles), with certificates issued by
``llmkit.pki``. Behind the terminator a stand-in Ollama (a small HTTP server on 127.0.0.1)
records every request that reaches it. Checked: only the runtime's allow-list gets through (403 for
other paths, however spelled, 405 for other methods), a certificate of the internal CA that is not
the proxy's is refused by the terminator, the TLS groups are pinned (real ``openssl s_client``),
answers carry ``Cache-Control: no-store`` and no server version; and nginx's systemd sandbox,
scored by the real ``systemd-analyze security --offline=yes``.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmkit import pki
from llmkit.catalog import load_catalog
from llmkit.lab import system
from playbooks.deploys import reverse_proxy as rp

NGINX = system.which("nginx")
OPENSSL = system.which("openssl")
SYSTEMD_ANALYZE = system.which("systemd-analyze")
#: The distro's unit that the drop-in hardens (Debian 12's nginx package).
DISTRO_UNIT = Path("/lib/systemd/system/nginx.service")

PROXY = "proxy-1.llm.example.internal"
GPU = "gpu-1.llm.example.internal"
#: A client certificate of the same internal CA that is not the proxy's (an admin's, a client's).
OTHER_CLIENT = "admin-laptop"
SERVER_NAME = "llm.example.com"

HOST_DATA: dict[str, Any] = {
    "proxy_server_name": SERVER_NAME,
    "mtls_client_ca": None,
    "rate_limit_per_second": 1000,
    "rate_limit_burst": 1000,
    "api_key_header": None,
    "client_max_body_size": "1m",
    "model_tls_mode": None,
}

# Ollama's admin API (v0.13.3 server/routes.go): none of it may be reached from outside the host.
ADMIN_REQUESTS = [
    ("DELETE", "/api/delete"),
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/create"),
    ("POST", "/api/copy"),
    ("POST", "/api/blobs/sha256:" + "0" * 64),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64),
    ("POST", "/api/me"),
    ("POST", "/api/signout"),
    ("GET", "/v1/models/tiny-r1:latest"),  # not listed: exact paths only
    # The same, spelled to slip past a prefix or string match.
    ("POST", "/api/%70ull"),
    ("POST", "/api/generate/../pull"),
    ("POST", "/api/generate/%2e%2e/pull"),
    ("POST", "//api/pull"),
    ("POST", "/api/./pull"),
    ("POST", "/API/GENERATE"),
    ("POST", "/api/generate/"),
    ("POST", "/api/generatex"),
    ("GET", "/metrics"),
]
WRONG_METHODS = [
    ("GET", "/api/generate", "POST"),
    ("PUT", "/api/chat", "POST"),
    ("DELETE", "/api/tags", "GET, HEAD"),
    ("POST", "/v1/models", "GET"),
    ("DELETE", "/", "GET, HEAD"),
]
ALLOWED = [
    ("GET", "/", "/"),
    ("HEAD", "/api/version", "/api/version"),
    ("GET", "/api/tags", "/api/tags"),
    ("POST", "/api/show", "/api/show"),
    ("POST", "/api/generate", "/api/generate"),
    ("POST", "/api/chat", "/api/chat"),
    ("POST", "/v1/chat/completions", "/v1/chat/completions"),
    ("GET", "/v1/models", "/v1/models"),
    # Spelled otherwise, sent on as the allow-listed path (the query string as it came).
    ("POST", "/api//generate", "/api/generate"),
    ("POST", "/api/%67enerate", "/api/generate"),
    ("POST", "/api/tags/../generate", "/api/generate"),
    ("GET", "/api/tags?verbose=1", "/api/tags?verbose=1"),
]


# --- the internal PKI, as `llmkit pki` makes it ----------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "llmkit-pki"
    pki.init_ca(directory)
    pki.issue(directory, PROXY, server=True, client=True, sans=[SERVER_NAME])
    pki.issue(directory, GPU, server=True, client=False, sans=[rp.UPSTREAM_TLS_NAME, "IP:127.0.0.1"])
    pki.issue(directory, OTHER_CLIENT, server=False, client=True)
    return directory


# --- a stand-in Ollama that records what reaches it -----------------------------------------------


@dataclass
class Upstream:
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)


def _handler(seen: list[tuple[str, str]]) -> type[http.server.BaseHTTPRequestHandler]:
    class Ollama(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen.append((self.command, self.path))
            body = json.dumps({"saw": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            # What a careless upstream might say: the proxy and the terminator must not pass it on.
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Ollama


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- one nginx with the proxy's and the terminator's configurations --------------------------------


@dataclass
class Edge:
    proxy_port: int
    model_port: int
    upstream: Upstream
    pki_dir: Path
    directory: Path


def _tls_dir(directory: Path, pki_dir: Path, host_name: str) -> Path:
    """What the deploy writes under TLS_DIR for ``host_name``, from ``pki_dir`` as the deploy reads it."""
    material = rp.tls_material({"pki_dir": str(pki_dir)}, host_name)
    tls = directory / f"tls-{host_name}"
    tls.mkdir()
    (tls / "server.crt").write_text(material.cert)
    (tls / "server.key").write_text(material.key)
    (tls / "ca.crt").write_text(material.ca)
    return tls


def _wait_for(port: int, nginx: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert nginx.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Edge]:
    directory = tmp_path_factory.mktemp("edge")
    (directory / "logs").mkdir()
    upstream = Upstream(port=_free_port())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", upstream.port), _handler(upstream.seen))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    proxy_port, model_port = _free_port(), _free_port()
    # The terminator: the model port admits the inventory's proxy, by its certificate's subject.
    subjects = rp.model_client_subjects([(PROXY, {"pki_dir": str(pki_dir)})])
    terminator = rp.terminator_context(
        {
            **HOST_DATA,
            "model_bind_address": "127.0.0.1",
            "model_port": model_port,
            "ollama_port": upstream.port,
        },
        None,
        subjects,
    )
    terminator.update(
        tls_dir=str(_tls_dir(directory, pki_dir, GPU)), access_log=str(directory / "logs/model.log")
    )
    # The proxy: the one model host above.
    proxy = rp.proxy_context({**HOST_DATA, "model_port": model_port}, ["127.0.0.1"])
    proxy.update(
        tls_dir=str(_tls_dir(directory, pki_dir, PROXY)), access_log=str(directory / "logs/proxy.log")
    )
    proxy_conf = rp.render("nginx-proxy.conf.j2", **proxy)
    proxy_conf = proxy_conf.replace(
        "listen 443 ssl http2 default_server;", f"listen 127.0.0.1:{proxy_port} ssl;"
    )
    proxy_conf = proxy_conf.replace("listen [::]:443 ssl http2 default_server;", "")
    (directory / "proxy.conf").write_text(proxy_conf)
    (directory / "terminator.conf").write_text(rp.render("nginx-terminator.conf.j2", **terminator))
    for path in directory.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)  # nginx's workers may run as another user
    directory.chmod(0o755)
    (directory / "nginx.conf").write_text(
        f"daemon off;\npid {directory}/nginx.pid;\nerror_log {directory}/logs/error.log;\nevents {{}}\n"
        f"http {{\n    include {directory}/proxy.conf;\n    include {directory}/terminator.conf;\n}}\n"
    )
    nginx = subprocess.Popen(
        [
            NGINX or "nginx",
            "-p",
            str(directory),
            "-e",
            str(directory / "logs/error.log"),
            "-c",
            str(directory / "nginx.conf"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(proxy_port, nginx, directory / "logs/error.log")
        _wait_for(model_port, nginx, directory / "logs/error.log")
        yield Edge(proxy_port, model_port, upstream, pki_dir, directory)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        server.shutdown()
        server.server_close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _request(
    port: int,
    method: str,
    path: str,
    *,
    server_name: str,
    ca: Path,
    client: tuple[Path, Path] | None = None,
) -> Answer:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=server_name
    )
    body = b'{"model": "tiny-r1:latest"}' if method in ("POST", "PUT") else None
    connection.request(method, path, body=body, headers={"Host": server_name})
    response = connection.getresponse()
    answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    connection.close()
    return answer


def via_proxy(edge: Edge, method: str, path: str) -> Answer:
    return _request(edge.proxy_port, method, path, server_name=SERVER_NAME, ca=edge.pki_dir / "ca.crt")


def to_model_port(edge: Edge, method: str, path: str, client: str | None = PROXY) -> Answer:
    """A request straight to the terminator, with ``client``'s certificate of the internal CA."""
    pair = None if client is None else (edge.pki_dir / f"{client}.crt", edge.pki_dir / f"{client}.key")
    return _request(
        edge.model_port,
        method,
        path,
        server_name=rp.UPSTREAM_TLS_NAME,
        ca=edge.pki_dir / "ca.crt",
        client=pair,
    )


# --- the API allow-list -----------------------------------------------------------------------------


def test_the_allow_list_has_one_home_and_no_admin_route() -> None:
    """The catalog holds each runtime's routes; both configurations are made from it, nothing else."""
    catalog = load_catalog()
    ollama = catalog.runtime("ollama").routes
    assert ollama["/api/generate"] == ("POST",) and ollama["/api/tags"] == ("GET", "HEAD")
    for admin in ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs"):
        assert admin not in ollama
    vllm = catalog.runtime("vllm").routes
    assert set(vllm) == {
        "/health",
        "/version",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
    for runtime in catalog.runtimes.values():
        for methods in runtime.routes.values():
            assert set(methods) <= {"GET", "HEAD", "POST"}
    proxy = rp.render(
        "nginx-proxy.conf.j2", **rp.proxy_context({**HOST_DATA, "model_port": 11434}, ["10.20.1.11"])
    )
    terminator = rp.render(
        "nginx-terminator.conf.j2",
        **rp.terminator_context(
            {**HOST_DATA, "model_bind_address": "10.20.1.11", "model_port": 11434, "ollama_port": 11434},
            None,
            ["CN=proxy-1"],
        ),
    )
    for text in (proxy, terminator):
        listed = re.findall(r'^\s+"~\^(/[^"$]*)\$" "', text, flags=re.MULTILINE)
        assert [p.replace("\\", "") for p in listed] == list(ollama)


def test_the_load_balancers_health_check_is_on_the_allow_list() -> None:
    """The AWS target groups probe each runtime's health path through the terminator: never a 403."""
    from components.fleet import HEALTH_CHECK_PATHS

    for runtime, path in HEALTH_CHECK_PATHS.items():
        assert "GET" in load_catalog().runtime(runtime).routes[path], runtime


@pytest.mark.needs("nginx")
@pytest.mark.parametrize(("method", "path", "sent"), ALLOWED)
def test_inference_and_read_only_routes_reach_the_model_host(
    edge: Edge, method: str, path: str, sent: str
) -> None:
    before = len(edge.upstream.seen)
    answer = via_proxy(edge, method, path)
    assert answer.status == 200, answer.body
    assert edge.upstream.seen[before:] == [(method, sent)]
    # Answers are never stored on the way, whatever the runtime says; no version in Server.
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["server"] == "nginx"
    assert "allow" not in answer.headers


@pytest.mark.needs("nginx")
@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
def test_the_admin_api_is_refused_at_the_proxy_and_at_the_model_port(
    edge: Edge, method: str, path: str
) -> None:
    before = len(edge.upstream.seen)
    for answer in (via_proxy(edge, method, path), to_model_port(edge, method, path)):
        assert answer.status == 403, (method, path, answer.status)
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["server"] == "nginx"
    assert edge.upstream.seen[before:] == []


@pytest.mark.needs("nginx")
@pytest.mark.parametrize(("method", "path", "allow"), WRONG_METHODS)
def test_another_method_gets_405_with_allow(edge: Edge, method: str, path: str, allow: str) -> None:
    before = len(edge.upstream.seen)
    for answer in (via_proxy(edge, method, path), to_model_port(edge, method, path)):
        assert answer.status == 405, (method, path, answer.status)
        assert answer.headers["allow"] == allow
    assert edge.upstream.seen[before:] == []


# --- who may use the model port ---------------------------------------------------------------------


@pytest.mark.needs("nginx")
def test_the_model_port_admits_the_proxy_only(edge: Edge) -> None:
    before = len(edge.upstream.seen)
    assert to_model_port(edge, "GET", "/api/tags").status == 200  # the proxy's own certificate
    assert edge.upstream.seen[before:] == [("GET", "/api/tags")]
    # Another certificate of the same internal CA: valid, but not the proxy's.
    refused = to_model_port(edge, "POST", "/api/generate", client=OTHER_CLIENT)
    assert refused.status == 403
    assert to_model_port(edge, "GET", "/api/tags", client=None).status == 400  # no certificate at all
    assert edge.upstream.seen[before + 1 :] == []


def test_a_subject_that_cannot_identify_a_client_is_refused(tmp_path: Path, pki_dir: Path) -> None:
    assert rp.model_client_subjects([(PROXY, {"pki_dir": str(pki_dir)})]) == [f"CN={PROXY}"]
    assert rp.model_client_subjects(
        [(PROXY, {"pki_dir": str(pki_dir)}), (PROXY, {"tls_cert": (pki_dir / f"{PROXY}.crt").read_text()})]
    ) == [f"CN={PROXY}"]
    with pytest.raises(ValueError, match="missing"):
        rp.model_client_subjects([("proxy-9", {"pki_dir": str(pki_dir)})])
    with pytest.raises(ValueError, match="not a PEM certificate"):
        rp.certificate_subject("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "x")
    odd = subprocess.run(
        [
            OPENSSL or "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=a\\,b/emailAddress=x@example.com",
            "-keyout",
            str(tmp_path / "k"),
            "-days",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    with pytest.raises(ValueError, match="cannot identify it to the model hosts"):
        rp.certificate_subject(odd, "certificate of proxy-2")


# --- TLS groups --------------------------------------------------------------------------------------


#: X25519 first, then the NIST curves every TLS stack speaks.
PINNED_GROUPS = ("X25519", "prime256v1", "secp384r1")


def s_client(port: int, groups: str, pki_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            OPENSSL or "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-tls1_3",
            "-groups",
            groups,
            "-servername",
            SERVER_NAME,
            "-CAfile",
            str(pki_dir / "ca.crt"),
            "-cert",
            str(pki_dir / f"{PROXY}.crt"),
            "-key",
            str(pki_dir / f"{PROXY}.key"),
        ],
        input="",
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.needs("nginx", "openssl")
@pytest.mark.parametrize("role", ["proxy", "terminator"])
def test_the_tls_groups_are_pinned(edge: Edge, role: str) -> None:
    port = edge.proxy_port if role == "proxy" else edge.model_port
    assert rp.TLS_GROUPS == PINNED_GROUPS
    for group in PINNED_GROUPS:
        result = s_client(port, group, edge.pki_dir)
        assert result.returncode == 0, result.stderr
        shown = {"prime256v1": "ECDH, prime256v1", "secp384r1": "ECDH, secp384r1"}.get(group, group)
        assert f"Server Temp Key: {shown}" in result.stdout, result.stdout
    # Groups OpenSSL offers by default, but not on this list: no handshake.
    for group in ("secp521r1", "X448", "ffdhe2048"):
        result = s_client(port, group, edge.pki_dir)
        assert result.returncode != 0 and "Server Temp Key" not in result.stdout, group


# --- nginx's systemd sandbox ---------------------------------------------------------------------------

#: systemd-analyze security --offline=yes of Debian 12's nginx.service (systemd 252): before, and
#: with the drop-in on a proxy (CAP_NET_BIND_SERVICE for 443) and on a model host (no capability).
SCORE_WITHOUT_DROPIN = 9.6
SCORES = {"proxy": 1.3, "model host": 1.1}
UNIT_CONTEXTS = {
    "proxy": ([443], ["203.0.113.0/24", "2001:db8:100::/48", "10.20.1.11", "10.20.1.12"]),
    "model host": ([11434], ["10.10.0.5", "10.20.5.0/24"]),
}


def unit_tree(root: Path, dropin: str | None) -> Path:
    """A root with the distro's nginx.service and, given, the drop-in where the deploy puts it."""
    unit = root / DISTRO_UNIT.relative_to("/")
    unit.parent.mkdir(parents=True)
    shutil.copyfile(DISTRO_UNIT, unit)
    if dropin is not None:
        path = root / Path(rp.NGINX_DROPIN).relative_to("/")
        path.parent.mkdir(parents=True)
        path.write_text(dropin)
    return root


def exposure(root: Path) -> float:
    result = subprocess.run(
        [
            SYSTEMD_ANALYZE or "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={root}",
            "--no-pager",
            "nginx.service",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    found = re.search(r"Overall exposure level for nginx\.service: (\d+\.\d)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def dropin(role: str) -> str:
    ports, peers = UNIT_CONTEXTS[role]
    return rp.render("nginx-hardening.conf.j2", **rp.nginx_unit_context(ports, peers))


@pytest.mark.needs("systemd-analyze", str(DISTRO_UNIT))
@pytest.mark.parametrize("role", sorted(SCORES))
def test_systemd_scores_the_sandboxed_nginx(tmp_path: Path, role: str) -> None:
    assert exposure(unit_tree(tmp_path / "before", None)) == SCORE_WITHOUT_DROPIN
    score = exposure(unit_tree(tmp_path / "after", dropin(role)))
    assert score == SCORES[role]
    assert score < 2.0


@pytest.mark.needs("systemd-analyze", "nginx", str(DISTRO_UNIT))
@pytest.mark.parametrize("role", sorted(SCORES))
def test_systemd_accepts_the_unit_with_the_dropin(tmp_path: Path, role: str) -> None:
    def verify(text: str) -> subprocess.CompletedProcess[str]:
        unit = tmp_path / "nginx.service"  # the distro's unit with the drop-in appended: one file
        unit.write_text(DISTRO_UNIT.read_text() + "\n" + text)
        return subprocess.run(
            [SYSTEMD_ANALYZE or "systemd-analyze", "verify", str(unit)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    result = verify(dropin(role))
    assert result.returncode == 0 and "nginx.service" not in result.stderr, result.stderr
    assert (
        "nginx.service"
        in verify(dropin(role).replace("ProtectSystem=strict", "ProtectSystem=sometimes")).stderr
    )


def test_the_dropin_follows_the_roles() -> None:
    proxy = dropin("proxy").splitlines()
    assert (
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in proxy
        and "AmbientCapabilities=CAP_NET_BIND_SERVICE" in proxy
    )
    assert "IPAddressAllow=localhost 10.20.1.11/32 10.20.1.12/32 203.0.113.0/24 2001:db8:100::/48" in proxy
    model = dropin("model host").splitlines()
    assert "CapabilityBoundingSet=" in model and "AmbientCapabilities=" in model
    assert "IPAddressAllow=localhost 10.10.0.5/32 10.20.5.0/24" in model
    for lines in (proxy, model):
        assert "User=www-data" in lines and "ProtectSystem=strict" in lines and "IPAddressDeny=any" in lines
    # A peer known only by name: nginx resolves it through DNS, so no IP allow-list at all.
    named = rp.render(
        "nginx-hardening.conf.j2", **rp.nginx_unit_context([443], ["203.0.113.0/24", "gpu-1.internal"])
    )
    assert "IPAddressDeny" not in named and "gpu-1.internal named, not addressed" in named
