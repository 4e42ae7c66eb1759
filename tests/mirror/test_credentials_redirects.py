"""Credentials go only to the origin they were given for, and never over plain http except to
loopback: every HTTP client of the kit, against real servers on 127.0.0.1 (llmkit.net).

The registry token flow, the registry's blobs, a package index given as ``user:pass@``, ``mirror
push --to-http`` and the policy itself. Redirects to another origin are followed without the
credentials; a redirect from https to plain http of a request with credentials is refused. An
address outside 127.0.0.0/8 is never connected to: :func:`no_egress` refuses and records any
attempt (192.0.2.0/24 is TEST-NET-1).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmkit import net
from llmkit.cli import main
from llmkit.errors import EXIT_USAGE, LlmkitError
from llmkit.mirror import wheels
from llmkit.mirror.auth import PASSWORD_ENV, RegistryAuth
from llmkit.mirror.download import Options
from llmkit.mirror.manifest import Manifest, verify_dir
from llmkit.mirror.pull import pull_registry
from llmkit.mirror.push import push_http
from llmkit.net import UnsafeRequest
from tests.mirror.hostile_http import Answer, Pki, Seen, Server, digest, make_pki, no_egress, serve, trust

USER, PASSWORD = "mirror-bot", "s3cret-registry-token"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "registry-token-for-tiny"
GGUF = b"GGUF" + bytes(range(256)) * 300
TEMPLATE = b"{{ .Prompt }}"
CONFIG = b'{"model_format":"gguf"}'
REPO = "/v2/library/tiny"
FAST = Options(workers=2, chunk_size=1 << 20, retries=0, backoff_s=0.0, sleep=lambda _s: None)
OFF_LOOPBACK = "192.0.2.10"  # TEST-NET-1: never reached (no_egress)


def manifest() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": digest(CONFIG),
                "size": len(CONFIG),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.ollama.image.model",
                    "digest": digest(GGUF),
                    "size": len(GGUF),
                },
                {
                    "mediaType": "application/vnd.ollama.image.template",
                    "digest": digest(TEMPLATE),
                    "size": len(TEMPLATE),
                },
            ],
        }
    ).encode()


def registry(server: Server, realm: str, blobs_at: str | None = None) -> None:
    """A registry of library/tiny:latest whose reads want ``Bearer TOKEN`` (else a challenge for
    ``realm``); blobs are served here, or redirected to ``blobs_at``."""

    def protected(answer: Answer) -> object:
        def route(seen: Seen) -> Answer:
            if seen.authorization != f"Bearer {TOKEN}":
                challenge = f'Bearer realm="{realm}",service="test",scope="repository:library/tiny:pull"'
                return Answer(401, b"{}", {"WWW-Authenticate": challenge})
            return answer

        return route

    server.routes[f"{REPO}/manifests/latest"] = protected(  # type: ignore[assignment]
        Answer(200, manifest(), {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
    )
    for blob in (GGUF, TEMPLATE, CONFIG):
        answer = (
            Answer(307, headers={"Location": f"{blobs_at}/{digest(blob)}"})
            if blobs_at
            else Answer(200, blob, ranges=True)
        )
        server.routes[f"{REPO}/blobs/{digest(blob)}"] = protected(answer)  # type: ignore[assignment]


def storage(server: Server) -> None:
    for blob in (GGUF, TEMPLATE, CONFIG):
        server.routes[f"/{digest(blob)}"] = Answer(200, blob, ranges=True)


def token_answer() -> Answer:
    return Answer(200, json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "ca")


@pytest.fixture
def https(tls: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    trust(monkeypatch, tls.ca)
    with serve(tls.server) as server:
        yield server


# --- the registry's token flow -----------------------------------------------------------------


def test_a_token_realm_that_redirects_to_another_origin_gets_no_credentials_there(tmp_path: Path) -> None:
    with serve() as reg, serve() as elsewhere:
        registry(reg, f"{reg.url}/token")
        reg.routes["/token"] = Answer(307, headers={"Location": f"{elsewhere.url}/token"})
        elsewhere.routes["/token"] = token_answer()
        pull_registry("tiny", tmp_path / "m", reg.url, FAST, RegistryAuth(reg.url, USER, PASSWORD))
        # the realm the registry named got the credentials; where it redirected to did not
        assert [s.authorization for s in reg.requests_to("/token")] == [BASIC]
        assert [s.authorization for s in elsewhere.seen] == [None]
    assert verify_dir(tmp_path / "m", strict=True) == []


def test_an_https_realm_that_redirects_to_plain_http_is_refused(https: Server, tmp_path: Path) -> None:
    with serve() as plain:
        registry(https, f"{https.url}/token")
        https.routes["/token"] = Answer(302, headers={"Location": f"{plain.url}/token"})
        plain.routes["/token"] = token_answer()
        with pytest.raises(
            UnsafeRequest, match=r"redirect to http://127\.0\.0\.1:\d+/token refused: the request carried"
        ):
            pull_registry("tiny", tmp_path / "m", https.url, FAST, RegistryAuth(https.url, USER, PASSWORD))
        assert plain.seen == []


def test_a_registry_over_https_may_not_send_a_blob_request_with_its_token_to_plain_http(
    https: Server, tmp_path: Path
) -> None:
    with serve() as plain:
        registry(https, f"{https.url}/token", blobs_at=plain.url)
        https.routes["/token"] = token_answer()
        storage(plain)
        with pytest.raises(LlmkitError, match="leaves https"):
            pull_registry("tiny", tmp_path / "m", https.url, FAST, RegistryAuth(https.url, USER, PASSWORD))
        assert plain.seen == []


def test_blobs_redirected_to_another_https_origin_go_there_without_the_token(
    https: Server, tls: Pki, tmp_path: Path
) -> None:
    with serve(tls.server) as other:
        registry(https, f"{https.url}/token", blobs_at=other.url)
        https.routes["/token"] = token_answer()
        storage(other)
        pull_registry("tiny", tmp_path / "m", https.url, FAST, RegistryAuth(https.url, USER, PASSWORD))
        assert other.seen and {s.authorization for s in other.seen} == {None}
    assert verify_dir(tmp_path / "m", strict=True) == []


def test_credentials_never_go_over_plain_http_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    egress = no_egress(monkeypatch)
    with pytest.raises(UnsafeRequest, match="refusing to send credentials over http"):
        RegistryAuth(f"http://{OFF_LOOPBACK}:5000", USER, PASSWORD)
    result = CliRunner().invoke(
        main,
        [
            *("mirror", "pull", "tiny", "--to", str(tmp_path / "m")),
            *("--registry", f"http://{OFF_LOOPBACK}:5000", "--registry-user", USER, "--no-progress"),
        ],
        env={PASSWORD_ENV: PASSWORD},
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert "refusing to send credentials over http" in result.output and PASSWORD not in result.output
    # a loopback registry that names a plain-http realm elsewhere: refused before connecting there
    with serve() as reg:
        registry(reg, f"http://{OFF_LOOPBACK}/token")
        with pytest.raises(UnsafeRequest, match=r"the token realm http://192\.0\.2\.10/token: refusing"):
            pull_registry("tiny", tmp_path / "n", reg.url, FAST, RegistryAuth(reg.url, USER, PASSWORD))
    assert egress.attempts == []


def test_a_plain_http_realm_elsewhere_still_serves_anonymous_pulls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials, nothing to protect: the policy applies to credentials only."""
    with serve() as reg, serve() as realm:
        registry(reg, f"{realm.url}/token")
        realm.routes["/token"] = token_answer()
        pull_registry("tiny", tmp_path / "m", reg.url, FAST)
        assert [s.authorization for s in realm.seen] == [None]


# --- a package index given as https://user:pass@... ---------------------------------------------


PIP = "pip-26.3-py3-none-any.whl"


def index_page(files_at: str) -> Answer:
    name = PIP
    link = f'<a href="{files_at}/{name}#sha256={"a" * 64}">{name}</a>'
    return Answer(200, f"<html><body>{link}</body></html>".encode(), {"Content-Type": "text/html"})


def test_an_index_that_redirects_elsewhere_never_gets_the_credentials(tmp_path: Path) -> None:
    with serve() as index, serve() as elsewhere:
        index.routes["/simple/pip/"] = Answer(302, headers={"Location": f"{elsewhere.url}/simple/pip/"})
        elsewhere.routes["/simple/pip/"] = index_page(elsewhere.url)
        url = index.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "/simple/"
        (found,) = wheels.index_files(url, "pip")
        assert [s.authorization for s in index.seen] == [BASIC]
        assert [s.authorization for s in elsewhere.seen] == [None]
        # and the wheel, on the other origin, is fetched without them too
        assert found.url.startswith(elsewhere.url) and dict(found.headers) == {}


def test_an_index_keeps_its_credentials_on_its_own_origin_only(tmp_path: Path) -> None:
    with serve() as index, serve() as cdn:
        index.routes["/simple/pip"] = Answer(301, headers={"Location": "/simple/pip/"})
        index.routes["/simple/pip/"] = Answer(
            200,
            (
                f'<a href="/packages/{PIP}#sha256={"a" * 64}">{PIP}</a>'
                f'<a href="{cdn.url}/{PIP}#sha256={"b" * 64}">{PIP}</a>'
            ).encode(),
        )
        url = index.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "/simple"
        ours, theirs = wheels.index_files(url.removesuffix("/simple") + "/simple", "pip")
        assert [s.authorization for s in index.seen] == [BASIC]
        assert dict(ours.headers) == {"Authorization": BASIC} and dict(theirs.headers) == {}


def test_an_https_index_with_credentials_may_not_redirect_to_plain_http(https: Server) -> None:
    with serve() as plain:
        https.routes["/simple/pip/"] = Answer(302, headers={"Location": f"{plain.url}/simple/pip/"})
        plain.routes["/simple/pip/"] = index_page(plain.url)
        url = https.url.replace("https://", f"https://{USER}:{PASSWORD}@") + "/simple/"
        with pytest.raises(UnsafeRequest, match="leaves https"):
            wheels.index_files(url, "pip")
        assert plain.seen == []
        # without credentials there is nothing to protect: followed
        assert len(wheels.index_files(https.url + "/simple/", "pip")) == 1


def test_an_index_url_with_credentials_must_be_https_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    egress = no_egress(monkeypatch)
    result = CliRunner().invoke(
        main,
        [
            *("mirror", "bundle", "--to", str(tmp_path / "b")),
            *("--index-url", f"http://{USER}:{PASSWORD}@{OFF_LOOPBACK}/simple/", "--no-progress"),
        ],
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert (
        "--index-url http://***@192.0.2.10/simple/: refusing to send credentials over http" in result.output
    )
    assert PASSWORD not in result.output and egress.attempts == []


# --- mirror push --to-http ----------------------------------------------------------------------


def staged(tmp_path: Path) -> Path:
    from llmkit.mirror.pull import pull_local

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(GGUF)
    pull_local("tiny:v1", tmp_path / "staged", [gguf], None)
    return tmp_path / "staged"


def test_push_to_http_sends_url_credentials_as_a_header_to_that_origin_only(tmp_path: Path) -> None:
    directory = staged(tmp_path)
    with serve() as mirror, serve() as elsewhere:
        # the published manifest is looked up first: its redirect elsewhere carries nothing
        moved = Answer(302, headers={"Location": f"{elsewhere.url}/manifest.json"})
        mirror.routes["/m/models/tiny-v1/manifest.json"] = lambda seen: (
            moved if seen.method == "GET" else Answer(201)
        )
        url = mirror.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "/m"
        result = push_http(directory, url)
        assert result.target == f"{mirror.url}/m/models/tiny-v1/"
        puts = [s for s in mirror.seen if s.method == "PUT"]
        assert [s.path for s in puts] == ["/m/models/tiny-v1/tiny.gguf", "/m/models/tiny-v1/manifest.json"]
        assert {s.authorization for s in mirror.seen} == {BASIC}
        assert [s.authorization for s in elsewhere.seen] == [None]
    assert Manifest.loads(mirror.put["/m/models/tiny-v1/manifest.json"], "pushed").name == "tiny:v1"


def test_push_to_http_with_credentials_must_be_https_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = staged(tmp_path)
    egress = no_egress(monkeypatch)
    result = CliRunner().invoke(
        main, ["mirror", "push", str(directory), "--to-http", f"http://{USER}:{PASSWORD}@{OFF_LOOPBACK}/m"]
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--to-http http://***@192.0.2.10/m: refusing to send credentials over http" in result.output
    assert PASSWORD not in result.output and egress.attempts == []


# --- the policy itself --------------------------------------------------------------------------


def test_origins_compare_scheme_host_and_the_effective_port() -> None:
    assert net.same_origin("https://Registry.Example/v2/", "https://registry.example:443/token")
    assert net.same_origin("http://127.0.0.1/a", "http://127.0.0.1:80/b")
    assert not net.same_origin("https://registry.example/", "http://registry.example/")
    assert not net.same_origin("https://registry.example/", "https://registry.example:8443/")
    assert not net.same_origin("https://registry.example/", "https://auth.registry.example/")
    assert not net.same_origin("https://registry.example/", "https://registry.example.evil/")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.0.0.5", False),
        ("::ffff:127.0.0.1", False),  # not taken as loopback: refused, the safe side
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_loopback_is_127_0_0_0_8_and_the_ipv6_one(host: str, loopback: bool) -> None:
    assert net.is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("ftp://127.0.0.1/x", "only http and https are followed"),
        ("http://user:pw@127.0.0.1:9/x", "the location holds user info"),
    ],
)
def test_redirects_anywhere_but_http_s_or_with_user_info_are_refused(location: str, why: str) -> None:
    with serve() as server:
        server.routes["/go"] = Answer(302, headers={"Location": location})
        with pytest.raises(UnsafeRequest, match=why):
            net.opener().open(urllib.request.Request(f"{server.url}/go"), timeout=10)
