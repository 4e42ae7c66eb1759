"""`llmkit mirror pull` from a real registry: distribution's registry (built from its Go module)
holding the tiny model that real Ollama (the lab build) pushed into it, all on 127.0.0.1; and the
same registry with token authentication (``auth: token``), whose tokens come from a token
service the test runs (RS256 JWTs signed by a certificate in the registry's rootcertbundle)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from llmkit.files import sha256_file
from llmkit.lab import builds, tiny_model
from llmkit.mirror.auth import RegistryAuth
from llmkit.mirror.manifest import MirrorError, verify_dir
from llmkit.mirror.pull import pull_registry

pytestmark = pytest.mark.e2e

REGISTRY_MODULE = "github.com/distribution/distribution/v3/cmd/registry"
REGISTRY_VERSION = "v3.1.2"


def build_registry() -> Path:
    """``go install`` of the pinned registry into ``<lab cache>/builds/registry-<version>/``."""
    tc = builds.go_toolchain()
    dest = builds.default_cache_dir() / "builds" / f"registry-{REGISTRY_VERSION}-{tc.version}"
    binary = dest / "registry"
    if binary.is_file():
        return binary
    env = {k: v for k, v in os.environ.items() if k != "GOFLAGS"}
    env |= {"GOBIN": str(dest), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [tc.go, "install", f"{REGISTRY_MODULE}@{REGISTRY_VERSION}"], env=env, check=True, timeout=1800
    )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60, retry_http_errors: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            if not retry_http_errors or time.monotonic() > deadline:
                raise  # the server answers: with an error the caller may expect
            time.sleep(0.2)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    binary = build_registry()
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "log:\n  level: warn\n"
    )
    proc = subprocess.Popen(
        [str(binary), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def ollama(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    build = builds.build_ollama()
    root = tmp_path / "ollama"
    with tarfile.open(build.path) as tar:
        tar.extractall(root, filter="data")
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
    }
    (tmp_path / "home").mkdir()
    binary = root / "bin" / "ollama"
    log = (tmp_path / "ollama.log").open("wb")
    proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield binary, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_pull_from_a_registry_that_ollama_pushed_to(registry: str, ollama, tmp_path: Path) -> None:
    binary, env = ollama
    gguf, modelfile = tiny_model.write_model(tmp_path / "tiny")
    name = f"{registry}/library/tiny-r1:latest"
    run = {"env": env, "check": True, "capture_output": True, "timeout": 300, "cwd": tmp_path / "tiny"}
    subprocess.run([str(binary), "create", name, "-f", str(modelfile)], **run)
    subprocess.run([str(binary), "push", "--insecure", name], **run)

    out = tmp_path / "mirror"
    result = pull_registry("tiny-r1:latest", out, registry=f"http://{registry}")
    m = result.manifest
    assert (m.model, m.tag, m.source["type"], m.source["repository"]) == (
        "tiny-r1",
        "latest",
        "registry",
        "library/tiny-r1",
    )
    model = m.by_role("gguf")
    assert model is not None and model.sha256 == sha256_file(gguf)
    assert (out / model.path).read_bytes() == gguf.read_bytes()
    paths = {f.path for f in m.files}
    assert {"config.json", "template", "Modelfile", "ollama-manifest.json"} <= paths
    assert (out / "Modelfile").read_text().startswith("FROM ./model.gguf\n")
    assert verify_dir(out, strict=True) == []
    # the mirror's Modelfile recreates the model in Ollama
    subprocess.run(
        [str(binary), "create", "tiny-r1-mirrored", "-f", str(out / "Modelfile")], **{**run, "cwd": out}
    )


# --- the same registry with token authentication ---------------------------------------------

TOKEN_USER, TOKEN_PASSWORD = "mirror-bot", "pull-only-token"
SERVICE, ISSUER = "llmkit-test-registry", "llmkit-test-token-service"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A token service for the registry's ``auth: token`` (RS256 JWTs with the signing
    certificate in ``x5c``, as the distribution token specification describes), on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = self._certificate(self.key)
        self.root_bundle = directory / "token-root.crt"
        self.root_bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        # forge: sign with a key the registry does not trust (to prove it checks signatures)
        self.forge = False
        self.issued: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmkit test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )

    def token(self, subject: str, scope: str) -> str:
        key, cert = self.key, self.cert
        if self.forge:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            cert = self._certificate(key)
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [
                {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a == "pull"]}
            ],
        }
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        self.issued.append(claims)
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                good = "Basic " + base64.b64encode(f"{TOKEN_USER}:{TOKEN_PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != good or query.get("service") != [SERVICE]:
                    body = b'{"details":"bad credentials"}'
                    self.send_response(401)
                else:
                    token = service.token(TOKEN_USER, query.get("scope", [""])[0])
                    body = json.dumps({"token": token, "expires_in": 300}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _serve_registry(binary: Path, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(binary), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[str, str, TokenService]]:
    """(open registry for the push, token-auth registry for the pull, its token service), one storage."""
    binary = build_registry()
    service = TokenService(tmp_path)
    storage = f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
    open_port, auth_port = free_port(), free_port()
    (tmp_path / "open.yml").write_text(
        f"version: 0.1\n{storage}http:\n  addr: 127.0.0.1:{open_port}\nlog:\n  level: warn\n"
    )
    (tmp_path / "auth.yml").write_text(
        f"version: 0.1\n{storage}http:\n  addr: 127.0.0.1:{auth_port}\nlog:\n  level: warn\n"
        f"auth:\n  token:\n    realm: {service.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
        f"    rootcertbundle: {service.root_bundle}\n"
    )
    procs = [_serve_registry(binary, tmp_path / "open.yml"), _serve_registry(binary, tmp_path / "auth.yml")]
    try:
        wait_http(f"http://127.0.0.1:{open_port}/v2/")
        with pytest.raises(urllib.error.HTTPError) as challenge:
            wait_http(f"http://127.0.0.1:{auth_port}/v2/", retry_http_errors=False)
        assert challenge.value.code == 401
        yield f"127.0.0.1:{open_port}", f"127.0.0.1:{auth_port}", service
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        service.server.shutdown()


def test_pull_with_a_token_from_the_registrys_token_service(token_registry, ollama, tmp_path: Path) -> None:
    open_registry, auth_registry, service = token_registry
    binary, env = ollama
    gguf, modelfile = tiny_model.write_model(tmp_path / "tiny")
    name = f"{open_registry}/library/tiny-r1:latest"
    run = {"env": env, "check": True, "capture_output": True, "timeout": 300, "cwd": tmp_path / "tiny"}
    subprocess.run([str(binary), "create", name, "-f", str(modelfile)], **run)
    subprocess.run([str(binary), "push", "--insecure", name], **run)

    registry = f"http://{auth_registry}"
    # no credentials: the registry's challenge leads to the token service, which refuses
    with pytest.raises(MirrorError, match="refused a token anonymously"):
        pull_registry("tiny-r1:latest", tmp_path / "anon", registry=registry)
    # a token the registry cannot verify (signed by an untrusted key) is not accepted
    service.forge = True
    with pytest.raises(MirrorError, match=r"HTTP 401: the registry refused the credentials it asked for"):
        pull_registry(
            "tiny-r1:latest",
            tmp_path / "forged",
            registry,
            auth=RegistryAuth(registry, TOKEN_USER, TOKEN_PASSWORD),
        )
    service.forge = False
    service.issued.clear()
    out = tmp_path / "mirror"
    auth = RegistryAuth(registry, TOKEN_USER, TOKEN_PASSWORD)
    result = pull_registry("tiny-r1:latest", out, registry, auth=auth)
    model = result.manifest.by_role("gguf")
    assert model is not None and (out / model.path).read_bytes() == gguf.read_bytes()
    assert verify_dir(out, strict=True) == []
    assert [c["access"] for c in service.issued] == [
        [{"type": "repository", "name": "library/tiny-r1", "actions": ["pull"]}]
    ]
