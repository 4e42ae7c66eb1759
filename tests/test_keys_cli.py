"""`llmkit keys` against a recorded-shape LiteLLM key API on 127.0.0.1, and a moto server.

Why not a real LiteLLM: the proxy keeps its keys in PostgreSQL through Prisma, whose native query
engines are downloaded at first use and cannot be had offline, so a real LiteLLM with a database
cannot run in this sandbox's CI. :class:`FakeLiteLLM` (a ``ThreadingHTTPServer`` started by the
tests, in a thread) answers the few endpoints the CLI calls with the shapes measured on a real
LiteLLM 1.108.7 (``/key/generate``'s flat answer with ``key``, ``token``, ``expires``, ...;
``/key/info``'s ``{"key", "info"}``; ``/key/delete``'s ``{"deleted_keys"}``; the
``{"error": {"message", "type", "param", "code"}}`` errors) and, for ``/key/list`` and
``/key/update``, with the parameters read in that release's
``litellm/proxy/management_endpoints/key_management_endpoints.py``. It records every request, so
the tests assert the exact bodies the CLI sends per role of the staging and prod stacks.

What is real: the CLI, its HTTP client, TLS (certificates from ``llmkit pki``, a self-signed
one, mutual TLS) and Secrets Manager (a moto server through boto3). The master key must never
appear in any output, log or exception: :func:`run` checks that on every invocation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmkit import pki
from llmkit.cli import main
from llmkit.gateway_client import (
    GatewayClient,
    GatewayError,
    MasterKey,
    master_key_from_file,
    parse_url,
    redact,
)

ROOT = Path(__file__).resolve().parent.parent
MASTER = "sk-master-" + secrets.token_urlsafe(24)
REGION = "eu-central-1"
DAY = 86400


# --- the recorded-shape LiteLLM ------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any


def _duration(text: str | None) -> int | None:
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": DAY}
    return int(text[:-1]) * units[text[-1]]


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeLiteLLM:
    """LiteLLM 1.108.7's /key endpoints, in memory, with its answer and error shapes."""

    master_key: str = MASTER
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> stored row (no secret)
    requests: list[Recorded] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # every secret handed out
    # path -> (status, body, headers): the next request to that path gets this answer instead
    scripted: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)

    def add(self, alias: str, metadata: dict[str, Any], *, age_s: int = 0, ttl_s: int = 30 * DAY) -> str:
        """A key made earlier (``age_s`` ago); returns its token."""
        secret = "sk-" + secrets.token_urlsafe(16)
        token = hashlib.sha256(secret.encode()).hexdigest()
        created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
        self.keys[token] = {
            "token": token,
            "key_alias": alias,
            "key_name": f"sk-...{secret[-4:]}",
            "models": ["general"],
            "spend": 1.25,
            "max_budget": 5000.0,
            "rpm_limit": 600,
            "tpm_limit": 2000000,
            "metadata": metadata,
            "allowed_routes": ["llm_api_routes"],
            "created_at": _iso(created),
            "expires": _iso(created + dt.timedelta(seconds=ttl_s)),
        }
        return token

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def by_alias(self, alias: str) -> dict[str, Any]:
        (row,) = [k for k in self.keys.values() if k["key_alias"] == alias]
        return row

    # the endpoints: (status, body)

    def generate(self, body: dict[str, Any]) -> tuple[int, Any]:
        alias = body.get("key_alias")
        if alias and any(k["key_alias"] == alias for k in self.keys.values()):
            return 400, _error(
                f"Key with alias '{alias}' already exists. Unique key aliases across all keys are required.",
                "bad_request_error",
                "400",
                "key_alias",
            )
        secret = "sk-" + secrets.token_urlsafe(16)
        token = hashlib.sha256(secret.encode()).hexdigest()
        now = dt.datetime.now(dt.UTC)
        ttl = _duration(body.get("duration"))
        row = {
            "token": token,
            "key_alias": alias,
            "key_name": f"sk-...{secret[-4:]}",
            "models": body.get("models", []),
            "spend": 0.0,
            "max_budget": body.get("max_budget"),
            "budget_duration": body.get("budget_duration"),
            "rpm_limit": body.get("rpm_limit"),
            "tpm_limit": body.get("tpm_limit"),
            "metadata": body.get("metadata", {}),
            "allowed_routes": body.get("allowed_routes", []),
            "created_at": _iso(now),
            "expires": _iso(now + dt.timedelta(seconds=ttl)) if ttl else None,
        }
        self.keys[token] = row
        self.issued.append(secret)
        return 200, {**row, "key": secret, "token_id": token, "duration": None}

    def list(self, query: dict[str, str]) -> tuple[int, Any]:
        page, size = int(query.get("page", "1")), int(query.get("size", "10"))
        if size > 100:
            return 422, {"detail": [{"msg": "Input should be less than or equal to 100"}]}
        rows = [
            k for k in self.keys.values() if "key_alias" not in query or k["key_alias"] == query["key_alias"]
        ]
        chunk = rows[(page - 1) * size : page * size]
        full = query.get("return_full_object") == "true"
        return 200, {
            "keys": [dict(r) for r in chunk] if full else [r["token"] for r in chunk],
            "total_count": len(rows),
            "current_page": page,
            "total_pages": -(-len(rows) // size),
        }

    def info(self, query: dict[str, str]) -> tuple[int, Any]:
        token = query.get("key", "")
        if token not in self.keys:
            return 404, _error("Key not found.", "not_found_error", "404", "key")
        return 200, {"key": token, "info": dict(self.keys[token])}

    def delete(self, body: dict[str, Any]) -> tuple[int, Any]:
        tokens = body.get("keys") or [
            t for t, k in self.keys.items() if k["key_alias"] in (body.get("key_aliases") or [])
        ]
        if not tokens or any(t not in self.keys for t in tokens):
            return 400, _error("Not all keys passed in were deleted.", "bad_request_error", "400", "keys")
        for token in tokens:
            del self.keys[token]
        return 200, {"deleted_keys": body.get("keys") or body.get("key_aliases")}

    def update(self, body: dict[str, Any]) -> tuple[int, Any]:
        row = self.keys.get(body.get("key", ""))
        if row is None:
            return 404, _error("Key not found.", "not_found_error", "404", "key")
        if "key_alias" in body:
            row["key_alias"] = body["key_alias"]
        if "metadata" in body:
            row["metadata"] = body["metadata"]
        if "duration" in body:
            seconds = _duration(body["duration"])
            row["expires"] = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds or 0))
        return 200, dict(row)


def _error(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _handler(fake: FakeLiteLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            auth = self.headers.get("Authorization")
            fake.requests.append(Recorded(method, parts.path, query, auth, body))
            if parts.path in fake.scripted:
                status, payload, headers = fake.scripted.pop(parts.path)
                return self._answer(status, payload, headers)
            if auth != f"Bearer {fake.master_key}":
                given = (auth or "").removeprefix("Bearer ")
                # worse than LiteLLM (which abbreviates): the whole key echoed, to test redaction
                return self._answer(
                    401,
                    _error(
                        "Authentication Error, Invalid proxy server token passed. "
                        f"Received API Key = {given}",
                        "token_not_found_in_db",
                        "401",
                        "key",
                    ),
                )
            routes = {
                ("POST", "/key/generate"): lambda: fake.generate(body or {}),
                ("GET", "/key/list"): lambda: fake.list(query),
                ("GET", "/key/info"): lambda: fake.info(query),
                ("POST", "/key/delete"): lambda: fake.delete(body or {}),
                ("POST", "/key/update"): lambda: fake.update(body or {}),
            }
            route = routes.get((method, parts.path))
            if route is None:
                return self._answer(404, {"detail": "Not Found"})
            status, payload = route()
            return self._answer(status, payload)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


@dataclass
class Served:
    fake: FakeLiteLLM
    url: str


@contextlib.contextmanager
def serve(fake: FakeLiteLLM, tls: ssl.SSLContext | None = None) -> Iterator[Served]:
    """``fake`` on 127.0.0.1 (an ephemeral port), over TLS with ``tls``; stopped afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield Served(fake, f"{scheme}://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def gw() -> Iterator[Served]:
    with serve(FakeLiteLLM()) as served:
        yield served


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LITELLM_MASTER_KEY", "LLMKIT_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)


def run(
    *args: str | Path,
    url: str | None = None,
    master: str | None = MASTER,
    caplog: pytest.LogCaptureFixture | None = None,
) -> Result:
    """``llmkit keys ARGS`` in-process, stdout and stderr apart; the master key never in either."""
    env = {"LITELLM_MASTER_KEY": master} if master is not None else {}
    argv = ["keys", *map(str, args)]
    if url is not None:
        argv += ["--url", url]
    result = CliRunner(env=env).invoke(main, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    for text in (result.stdout, result.stderr, caplog.text if caplog else ""):
        assert MASTER not in text
        if master is not None:
            assert master not in text
    assert "Traceback" not in result.output
    return result


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


STACK = ["--stack", "prod", "--project-dir", str(ROOT)]


# --- issue: the exact bodies per role ------------------------------------------------------------

EXPECTED_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("prod", "production"): {
        "models": ["general", "reasoning", "default"],
        "allowed_routes": ["llm_api_routes"],
        "duration": "30d",
        "metadata": {"llmkit_role": "production", "rotate_after_seconds": 7 * DAY, "owner": "team-search"},
        "max_budget": 5000,
        "budget_duration": "30d",
        "rpm_limit": 600,
        "tpm_limit": 2000000,
        "key_alias": "search-app",
    },
    ("prod", "dev-test"): {
        "models": ["general", "reasoning", "default"],
        "allowed_routes": ["/v1/chat/completions", "/chat/completions"],
        "duration": "7d",
        "metadata": {"llmkit_role": "dev-test", "owner": "team-search"},
        "max_budget": 50,
        "budget_duration": "30d",
        "rpm_limit": 60,
        "tpm_limit": 100000,
        "key_alias": "search-app",
    },
    ("prod", "admin"): {
        "models": ["general", "reasoning", "default"],
        "allowed_routes": ["management_routes", "info_routes"],
        "duration": "12h",
        "metadata": {"llmkit_role": "admin", "owner": "team-search"},
        "key_alias": "search-app",
    },
    ("staging", "production"): {
        "models": ["general", "default"],
        "allowed_routes": ["llm_api_routes"],
        "duration": "30d",
        "metadata": {"llmkit_role": "production", "rotate_after_seconds": 7 * DAY, "owner": "team-search"},
        "max_budget": 5000,
        "budget_duration": "30d",
        "rpm_limit": 600,
        "tpm_limit": 2000000,
        "key_alias": "search-app",
    },
}


@pytest.mark.parametrize(("stack", "role"), sorted(EXPECTED_BODIES))
def test_issue_sends_the_roles_body_and_prints_the_key_once(
    gw: Served, stack: str, role: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run(
        "issue", role, "--alias", "search-app", "--owner", "team-search",
        "--stack", stack, "--project-dir", ROOT,
        url=gw.url, caplog=caplog,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert gw.fake.calls() == [("POST", "/key/generate")]
    sent = gw.fake.requests[0]
    assert sent.body == EXPECTED_BODIES[(stack, role)]
    assert sent.authorization == f"Bearer {MASTER}"
    (secret,) = gw.fake.issued
    assert result.stdout == secret + "\n"  # the key, alone, once: pipeable
    assert secret not in result.stderr and secret not in caplog.text
    assert "issued 'search-app'" in result.stderr and f"role {role}" in result.stderr


def test_issue_to_a_0600_file_prints_no_key(gw: Served, tmp_path: Path) -> None:
    out = tmp_path / "search.key"
    result = run("issue", "production", "--alias", "search-app", *STACK, "--output", out, url=gw.url)
    assert result.exit_code == 0, result.output
    (secret,) = gw.fake.issued
    assert out.read_text() == secret + "\n"
    assert out.stat().st_mode & 0o777 == 0o600
    assert result.stdout == "" and secret not in result.stderr


def test_issue_with_a_bare_gateway_config_file(gw: Served, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "aliases: {chat: {model: 'deepseek-r1:32b'}}\n"
        "roles:\n  batch: {routes: [/v1/chat/completions], key_ttl: 2d, rpm_limit: 5}\n"
    )
    result = run("issue", "batch", "--alias", "nightly", "--gateway-config", config, url=gw.url)
    assert result.exit_code == 0, result.output
    assert gw.fake.requests[0].body == {
        "models": ["chat"],
        "allowed_routes": ["/v1/chat/completions"],
        "duration": "2d",
        "metadata": {"llmkit_role": "batch"},
        "rpm_limit": 5,
        "key_alias": "nightly",
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["issue", "root", "--alias", "x1", *STACK], "unknown gateway role"),
        (["issue", "production", "--alias", "bad alias", *STACK], "--alias"),
        (["issue", "production", "--alias", "a1"], "--stack"),
        (
            ["issue", "production", "--alias", "a1", "--stack", "dev", "--project-dir", str(ROOT)],
            "no gateway",
        ),
    ],
)
def test_issue_usage_errors_reach_no_gateway(gw: Served, args: list[str], needle: str) -> None:
    line = one_line_error(run(*args, url=gw.url), 2)
    assert needle in line
    assert gw.fake.requests == []


def test_a_refused_alias_is_the_gateways_error(gw: Served) -> None:
    gw.fake.add("search-app", {"llmkit_role": "production"})
    line = one_line_error(run("issue", "production", "--alias", "search-app", *STACK, url=gw.url), 1)
    assert f"POST {gw.url}/key/generate: HTTP 400 bad_request_error" in line and "already exists" in line


# --- list ----------------------------------------------------------------------------------------


def test_list_shows_a_table_of_keys_and_no_secret(gw: Served) -> None:
    for i in range(130):  # more than one page of /key/list
        gw.fake.add(f"app-{i:03d}", {"llmkit_role": "dev-test"})
    gw.fake.add("search-app", {"llmkit_role": "production", "rotate_after_seconds": 7 * DAY}, age_s=8 * DAY)
    result = run("list", url=gw.url)
    assert result.exit_code == 0, result.output
    assert "131 key(s)" in result.stdout and "search-app" in result.stdout
    assert "due for rotation" in result.stdout and "1.25/5000.00" in result.stdout
    assert "sk-" not in result.stdout
    lists = [r for r in gw.fake.requests if r.path == "/key/list"]
    assert [r.query for r in lists] == [
        {"return_full_object": "true", "page": str(page), "size": "100"} for page in (1, 2)
    ]


def test_list_role_filter_and_json(gw: Served) -> None:
    prod = gw.fake.add("search-app", {"llmkit_role": "production", "owner": "team-search"})
    gw.fake.add("playground", {"llmkit_role": "dev-test"})
    result = run("list", "--role", "production", "--json", url=gw.url)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["alias"] == "search-app" and record["token"] == prod and record["owner"] == "team-search"
    assert "sk-" not in result.stdout


# --- revoke --------------------------------------------------------------------------------------


def test_revoke_by_alias_deletes_that_keys_hash(gw: Served) -> None:
    token = gw.fake.add("search-app", {"llmkit_role": "production"})
    other = gw.fake.add("playground", {"llmkit_role": "dev-test"})
    result = run("revoke", "search-app", url=gw.url)
    assert result.exit_code == 0, result.output
    assert gw.fake.calls() == [("GET", "/key/list"), ("POST", "/key/delete")]
    assert gw.fake.requests[0].query["key_alias"] == "search-app"
    assert gw.fake.requests[1].body == {"keys": [token]}
    assert list(gw.fake.keys) == [other]


def test_revoke_by_token(gw: Served) -> None:
    token = gw.fake.add("search-app", {"llmkit_role": "production"})
    result = run("revoke", "--token", token, url=gw.url)
    assert result.exit_code == 0, result.output
    assert gw.fake.calls() == [("GET", "/key/info"), ("POST", "/key/delete")]
    assert gw.fake.requests[0].query == {"key": token}
    assert gw.fake.requests[1].body == {"keys": [token]} and gw.fake.keys == {}


def test_revoke_refuses_a_key_on_the_command_line_and_unknown_aliases(gw: Served) -> None:
    line = one_line_error(run("revoke", "--token", "sk-" + "a" * 22, url=gw.url), 2)
    assert "never put a key on a command line" in line and "sk-aaa" not in line
    assert gw.fake.requests == []
    line = one_line_error(run("revoke", "nobody", url=gw.url), 2)
    assert "no key with alias 'nobody'" in line


# --- rotate --------------------------------------------------------------------------------------


def test_rotate_replaces_the_key_under_the_same_alias_and_revokes_the_old(gw: Served) -> None:
    meta = {"llmkit_role": "production", "rotate_after_seconds": 7 * DAY, "owner": "team-search"}
    old = gw.fake.add("search-app", meta, age_s=8 * DAY)
    result = run("rotate", "search-app", *STACK, url=gw.url)
    assert result.exit_code == 0, result.output
    assert gw.fake.calls() == [
        ("GET", "/key/list"),
        ("POST", "/key/update"),
        ("POST", "/key/generate"),
        ("POST", "/key/delete"),
    ]
    rename, generate, delete = (r.body for r in gw.fake.requests[1:])
    assert rename["key"] == old and rename["key_alias"].startswith("search-app.rotated-")
    assert rename["metadata"] == {**meta, "llmkit_retired_at": rename["metadata"]["llmkit_retired_at"]}
    assert generate == EXPECTED_BODIES[("prod", "production")]  # today's role, the old owner
    assert delete == {"keys": [old]}
    (secret,) = gw.fake.issued
    assert result.stdout == secret + "\n"
    assert gw.fake.by_alias("search-app")["token"] != old and old not in gw.fake.keys


def test_rotate_with_a_grace_period_lets_the_gateway_expire_the_old_key(gw: Served) -> None:
    old = gw.fake.add("search-app", {"llmkit_role": "production"}, age_s=DAY)
    result = run("rotate", "search-app", "--grace", "2h", *STACK, url=gw.url)
    assert result.exit_code == 0, result.output
    assert gw.fake.calls()[-1] == ("POST", "/key/update")
    assert gw.fake.requests[-1].body == {"key": old, "duration": "2h"}
    retired = gw.fake.keys[old]
    assert (
        retired["key_alias"].startswith("search-app.rotated-") and "llmkit_retired_at" in retired["metadata"]
    )
    assert "valid until" in result.stderr


def test_a_failed_generate_renames_the_old_key_back(gw: Served) -> None:
    meta = {"llmkit_role": "production"}
    old = gw.fake.add("search-app", meta)
    gw.fake.scripted["/key/generate"] = (
        500,
        json.dumps(_error("db down", "internal_server_error", "500")).encode(),
        {},
    )
    line = one_line_error(run("rotate", "search-app", *STACK, url=gw.url), 1)
    assert "HTTP 500" in line and "unchanged" in line
    assert gw.fake.requests[-1].body == {"key": old, "key_alias": "search-app", "metadata": meta}
    assert gw.fake.keys[old]["key_alias"] == "search-app" and gw.fake.keys[old]["metadata"] == meta


def test_rotate_due_rotates_only_keys_past_rotate_after(gw: Served) -> None:
    rotating = {"llmkit_role": "production", "rotate_after_seconds": 7 * DAY}
    due = gw.fake.add("due-app", rotating, age_s=8 * DAY)
    fresh = gw.fake.add("fresh-app", rotating, age_s=DAY)
    dev = gw.fake.add("dev-app", {"llmkit_role": "dev-test"}, age_s=6 * DAY)
    retired = gw.fake.add(
        "old-app.rotated-20260101T000000Z", {**rotating, "llmkit_retired_at": "2026-01-01T00:00:00+00:00"},
        age_s=20 * DAY,
    )  # fmt: skip
    dry = run("rotate", "--due", "--dry-run", *STACK, url=gw.url)
    assert dry.exit_code == 0 and dry.stdout == "" and "due: 'due-app'" in dry.stderr
    assert {r.method for r in gw.fake.requests} == {"GET"}
    result = run("rotate", "--due", *STACK, url=gw.url)
    assert result.exit_code == 0, result.output
    assert "1 of 4 key(s) due" in result.stderr
    (secret,) = gw.fake.issued
    assert result.stdout == f"due-app\t{secret}\n"
    assert [r.body["keys"] for r in gw.fake.requests if r.path == "/key/delete"] == [[due]]
    assert {fresh, dev, retired} < set(gw.fake.keys) and due not in gw.fake.keys


def test_rotate_due_to_an_output_dir(gw: Served, tmp_path: Path) -> None:
    gw.fake.add("due-app", {"llmkit_role": "production", "rotate_after_seconds": 60}, age_s=120)
    result = run("rotate", "--due", "--output-dir", tmp_path, *STACK, url=gw.url)
    assert result.exit_code == 0, result.output
    (secret,) = gw.fake.issued
    assert result.stdout == "" and (tmp_path / "due-app.key").read_text() == secret + "\n"
    assert (tmp_path / "due-app.key").stat().st_mode & 0o777 == 0o600


# --- the master key ------------------------------------------------------------------------------


def test_master_key_file_of_mode_0644_is_refused(gw: Served, tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(MASTER + "\n")
    path.chmod(0o644)
    line = one_line_error(run("list", "--master-key-file", path, url=gw.url, master=None), 2)
    assert "mode 0644" in line and "refused" in line
    assert gw.fake.requests == []


@pytest.mark.parametrize(
    "content", [f"{MASTER}\n", f"# gateway\nLITELLM_SALT_KEY=sk-salt\nLITELLM_MASTER_KEY={MASTER}\n"]
)
def test_master_key_file_of_mode_0600(gw: Served, tmp_path: Path, content: str) -> None:
    path = tmp_path / "secrets.env"
    path.write_text(content)
    path.chmod(0o600)
    result = run("list", "--master-key-file", path, url=gw.url, master=None)
    assert result.exit_code == 0, result.output
    assert gw.fake.requests[0].authorization == f"Bearer {MASTER}"


def test_no_master_key_is_a_usage_error(gw: Served) -> None:
    line = one_line_error(run("list", url=gw.url, master=None), 2)
    assert "LITELLM_MASTER_KEY" in line and gw.fake.requests == []


def test_a_wrong_master_key_is_a_one_line_401_without_either_key(gw: Served) -> None:
    wrong = "sk-wrong-" + secrets.token_urlsafe(16)
    line = one_line_error(run("list", url=gw.url, master=wrong), 1)
    assert f"GET {gw.url}/key/list: HTTP 401 token_not_found_in_db" in line
    assert "did not accept the master key" in line
    assert wrong not in line and "Received API Key = [master key]" in line  # the fake echoed it all


def test_the_master_key_is_in_no_repr_or_exception() -> None:
    key = MasterKey(MASTER, "test")
    client = GatewayClient(parse_url(f"http://127.0.0.1:{free_port()}"), key)
    assert MASTER not in repr(key) + str(key) + repr(client)
    assert redact(f"x {MASTER} y", key) == "x [master key] y"
    assert redact("Received API Key = sk-...89pg, other sk-abcDEF_12-x") == (
        "Received API Key = sk-[redacted], other sk-[redacted]"
    )
    with pytest.raises(GatewayError) as caught:
        client.request("GET", "/key/list")  # nothing listens there
    assert MASTER not in str(caught.value) + repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # raised from None


def test_master_key_from_an_unreadable_or_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.key"
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(Exception, match="no master key found"):
        master_key_from_file(path)


# --- errors of the gateway and of the way to it ----------------------------------------------------


def test_403_from_the_edge_names_admin_cidrs(gw: Served) -> None:
    alb = b'{"error": "forbidden: this route answers only from the admin networks"}'
    gw.fake.scripted["/key/list"] = (403, alb, {"Content-Type": "application/json"})
    line = one_line_error(run("list", url=gw.url), 1)
    assert f"GET {gw.url}/key/list: HTTP 403" in line and "llmkit:gateway.admin_cidrs" in line
    html = b"<html><head><title>403 Forbidden</title></head><body>nginx</body></html>"
    gw.fake.scripted["/key/list"] = (403, html, {"Content-Type": "text/html"})
    line = one_line_error(run("list", url=gw.url), 1)
    assert "403 Forbidden" in line and "admin_cidrs" in line


def test_403_from_litellm_itself_is_its_error(gw: Served) -> None:
    body = _error("key not allowed to access model", "key_model_access_denied", "403", "model")
    gw.fake.scripted["/key/list"] = (403, json.dumps(body).encode(), {"Content-Type": "application/json"})
    line = one_line_error(run("list", url=gw.url), 1)
    assert "HTTP 403 key_model_access_denied: key not allowed" in line and "admin_cidrs" not in line


def test_429_says_when_to_retry(gw: Served) -> None:
    body = _error(f"Rate limit exceeded for api_key: {'ab' * 32}.", "throttling_error", "429")
    gw.fake.scripted["/key/generate"] = (429, json.dumps(body).encode(), {"Retry-After": "60"})
    line = one_line_error(run("issue", "production", "--alias", "a1", *STACK, url=gw.url), 1)
    assert "HTTP 429 throttling_error" in line and "retry after 60 s" in line


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(run("list", url=url), 1)
    assert f"GET {url}/key/list: connection refused" in line


def test_plain_http_is_refused_beyond_loopback() -> None:
    line = one_line_error(run("list", url="http://10.0.0.5:4000"), 2)
    assert "unencrypted" in line


# --- TLS -----------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self.crt", directory / "self.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "ca"
    pki.init_ca(directory)
    pki.issue(directory, "gateway.llmkit-app.svc", server=True, client=False, sans=["IP:127.0.0.1"])
    pki.issue(directory, "tunnel-only.svc", server=True, client=False)
    pki.issue(directory, "admin", server=False, client=True)
    return directory


def test_a_self_signed_gateway_certificate_fails_verification(tmp_path: Path) -> None:
    fake = FakeLiteLLM()
    with serve(fake, _server_tls(*_self_signed(tmp_path))) as served:
        line = one_line_error(run("list", url=served.url), 1)
    assert f"GET {served.url}/key/list: TLS verification of 127.0.0.1 failed" in line and "--ca" in line
    assert fake.requests == []


def test_https_with_the_ca_and_mutual_tls(ca: Path) -> None:
    fake = FakeLiteLLM()
    tls = _server_tls(ca / "gateway.llmkit-app.svc.crt", ca / "gateway.llmkit-app.svc.key", ca / "ca.crt")
    with serve(fake, tls) as served:
        result = run(
            "list",
            "--ca",
            ca / "ca.crt",
            "--cert",
            ca / "admin.crt",
            "--key",
            ca / "admin.key",
            url=served.url,
        )
        assert result.exit_code == 0, result.output
        assert fake.requests[0].authorization == f"Bearer {MASTER}"
        line = one_line_error(run("list", "--ca", ca / "ca.crt", url=served.url), 1)  # no client cert
    assert "TLS handshake failed" in line or "connection failed" in line


def test_server_name_for_a_tunnel(ca: Path) -> None:
    fake = FakeLiteLLM()
    with serve(fake, _server_tls(ca / "tunnel-only.svc.crt", ca / "tunnel-only.svc.key")) as served:
        line = one_line_error(run("list", "--ca", ca / "ca.crt", url=served.url), 1)
        assert "TLS verification of 127.0.0.1 failed" in line
        result = run("list", "--ca", ca / "ca.crt", "--server-name", "tunnel-only.svc", url=served.url)
        assert result.exit_code == 0, result.output


# --- the master key from AWS Secrets Manager (moto) --------------------------------------------------


@pytest.fixture
def aws(aws_env: str) -> Any:
    client = boto3.client("secretsmanager")
    assert client.meta.endpoint_url == aws_env
    return client


def test_master_key_from_secrets_manager_by_name_and_arn(
    gw: Served, aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    arn = aws.create_secret(Name="llmkit/prod/gateway/master-key", SecretString=MASTER)["ARN"]
    caplog.set_level(logging.DEBUG)  # botocore logs response bodies at DEBUG: not this one
    for secret_id in ("llmkit/prod/gateway/master-key", arn):
        result = run("list", "--master-key-secret", secret_id, url=gw.url, master=None, caplog=caplog)
        assert result.exit_code == 0, result.output
    assert [r.authorization for r in gw.fake.requests] == [f"Bearer {MASTER}"] * 2
    assert MASTER not in caplog.text


def test_a_missing_secret_is_one_line(gw: Served, aws: Any) -> None:
    line = one_line_error(
        run("list", "--master-key-secret", "llmkit/nope/gateway/master-key", url=gw.url, master=None), 2
    )
    assert "ResourceNotFoundException" in line and gw.fake.requests == []


def test_both_sources_are_refused(gw: Served, tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(MASTER)
    path.chmod(0o600)
    line = one_line_error(
        run("list", "--master-key-file", path, "--master-key-secret", "x", url=gw.url, master=None), 2
    )
    assert "both" in line
