"""Registry authentication of `llmkit mirror pull --registry`, against servers on 127.0.0.1.

The registry here speaks the distribution token flow the way Docker Distribution and Harbor do
(401 with a Bearer challenge, a token service that takes HTTP Basic credentials, short-lived
tokens, blobs redirected to another origin). The same flow against the real distribution
registry with its token authentication is in test_mirror_registry_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.errors import EXIT_USAGE
from llmkit.mirror.auth import PASSWORD_ENV, RegistryAuth, parse_challenge
from llmkit.mirror.download import Options
from llmkit.mirror.manifest import Manifest, MirrorError, verify_dir
from llmkit.mirror.pull import pull_registry

USER, PASSWORD = "mirror-bot", "s3cret-token"
GGUF = b"GGUF" + secrets.token_bytes(300_000)
CONFIG = b'{"model_format":"gguf"}'
TEMPLATE = b"{{ .Prompt }}"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": digest(GGUF), "size": len(GGUF)},
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": digest(TEMPLATE),
                "size": len(TEMPLATE),
            },
        ],
    }
).encode()
BLOBS = {digest(b): b for b in (GGUF, CONFIG, TEMPLATE)}


@dataclass
class Servers:
    registry: str = ""
    storage: str = ""
    anonymous_pull: bool = False
    tokens: set[str] = field(default_factory=set)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    # after this many accepted blob requests every token is revoked once (it "expired")
    expire_after: int | None = None
    blob_requests: int = 0
    storage_auth: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _registry_handler(st: Servers) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/token"):
                return self._token()
            auth = self.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and auth[7:] in st.tokens):
                challenge = (
                    f'Bearer realm="{st.registry}/token",service="test-registry",'
                    'scope="repository:library/tiny-r1:pull"'
                )
                return self._send(
                    401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge}
                )
            if self.path == "/v2/library/tiny-r1/manifests/latest":
                return self._send(
                    200, MANIFEST, {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}
                )
            name = self.path.removeprefix("/v2/library/tiny-r1/blobs/")
            if name in BLOBS:
                with st.lock:
                    st.blob_requests += 1
                    if st.expire_after is not None and st.blob_requests > st.expire_after:
                        st.tokens.clear()
                        st.expire_after = None
                # like S3-backed registries: a redirect to the storage's own (presigned) URL
                return self._send(307, headers={"Location": f"{st.storage}/{name}"})
            return self._send(404)

        def _token(self) -> None:
            auth = self.headers.get("Authorization")
            with st.lock:
                st.token_requests.append({"path": self.path, "auth": auth})
            good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if auth != good and not (auth is None and st.anonymous_pull):
                return self._send(401, b'{"details":"incorrect username or password"}')
            token = secrets.token_hex(16)
            st.tokens.add(token)
            return self._send(200, json.dumps({"token": token, "expires_in": 60}).encode())

    return Handler


def _storage_handler(st: Servers) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with st.lock:
                st.storage_auth.append(self.headers.get("Authorization"))
            data = BLOBS.get(self.path.lstrip("/"))
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = 0, len(data)
            rng = self.headers.get("Range")
            if rng:
                a, _, b = rng.removeprefix("bytes=").partition("-")
                start, end = int(a), min(int(b) + 1 if b else len(data), len(data))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            self.wfile.write(data[start:end])

    return Handler


@pytest.fixture
def servers() -> Iterator[Servers]:
    st = Servers()
    running = []
    for attr, handler in (("registry", _registry_handler(st)), ("storage", _storage_handler(st))):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        setattr(st, attr, f"http://127.0.0.1:{server.server_address[1]}")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
    yield st
    for server in running:
        server.shutdown()
        server.server_close()


FAST = Options(workers=4, chunk_size=1 << 20, retries=2, backoff_s=0.0, sleep=lambda _s: None)


def test_a_token_from_the_realm_with_the_users_credentials(servers: Servers, tmp_path: Path) -> None:
    auth = RegistryAuth(servers.registry, USER, PASSWORD)
    result = pull_registry("tiny-r1:latest", tmp_path / "m", servers.registry, FAST, auth)
    assert verify_dir(tmp_path / "m", strict=True) == []
    gguf = result.manifest.by_role("gguf")
    assert gguf is not None and (tmp_path / "m" / gguf.path).read_bytes() == GGUF
    (asked,) = servers.token_requests
    assert (
        "service=test-registry" in asked["path"]
        and "scope=repository%3Alibrary%2Ftiny-r1%3Apull" in asked["path"]
    )
    assert asked["auth"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    # the token went to the registry only: the storage behind its redirects never saw it
    assert servers.storage_auth and set(servers.storage_auth) == {None}


def test_an_expired_token_is_replaced_mid_pull(servers: Servers, tmp_path: Path) -> None:
    servers.expire_after = 1
    auth = RegistryAuth(servers.registry, USER, PASSWORD)
    pull_registry("tiny-r1:latest", tmp_path / "m", servers.registry, FAST, auth)
    assert verify_dir(tmp_path / "m", strict=True) == []
    assert auth.tokens_fetched == 2 == len(servers.token_requests)


def test_anonymous_pull_tokens(servers: Servers, tmp_path: Path) -> None:
    servers.anonymous_pull = True
    pull_registry("tiny-r1:latest", tmp_path / "m", servers.registry, FAST)
    assert [r["auth"] for r in servers.token_requests] == [None]
    assert Manifest.read(tmp_path / "m").source["registry"] == servers.registry


def test_refused_credentials_are_named_without_the_password(servers: Servers, tmp_path: Path) -> None:
    with pytest.raises(MirrorError) as err:
        pull_registry(
            "tiny-r1:latest",
            tmp_path / "m",
            servers.registry,
            FAST,
            RegistryAuth(servers.registry, USER, "wrong"),
        )
    assert f"refused a token as '{USER}': HTTP 401" in str(err.value)
    assert "wrong" not in str(err.value)
    with pytest.raises(
        MirrorError, match=f"refused a token anonymously \\(give --registry-user and {PASSWORD_ENV}\\)"
    ):
        pull_registry("tiny-r1:latest", tmp_path / "n", servers.registry, FAST)


def test_the_cli_takes_the_password_from_the_environment_only(servers: Servers, tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = ["mirror", "pull", "tiny-r1", "--to", str(out), "--registry", servers.registry, "--no-progress"]
    missing = CliRunner().invoke(main, [*args, "--registry-user", USER], env={PASSWORD_ENV: ""})
    assert missing.exit_code == EXIT_USAGE and f"set {PASSWORD_ENV}" in missing.output
    ok = CliRunner().invoke(main, [*args, "--registry-user", USER], env={PASSWORD_ENV: PASSWORD})
    assert ok.exit_code == 0, ok.output
    assert PASSWORD not in ok.output and PASSWORD not in (out / "manifest.json").read_text()


def test_challenges_are_parsed_like_distribution_writes_them() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


def test_a_plain_http_realm_never_gets_the_credentials_of_an_https_registry() -> None:
    auth = RegistryAuth("https://registry.example", USER, PASSWORD)
    with pytest.raises(MirrorError, match="plain-http realm"):
        auth.refresh('Bearer realm="http://127.0.0.1:9/token",service="x"')
