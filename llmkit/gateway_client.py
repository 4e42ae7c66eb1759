"""A client of LiteLLM's key management API (``/key/*``), for ``llmkit keys``.

What it calls on the gateway (LiteLLM proxy 1.108.7, the version pinned in
``llmkit/data/gateway.yaml``), with the master key as ``Authorization: Bearer``:

- ``POST /key/generate`` with the body of :func:`llmkit.gateway.key_request`; the answer is flat
  JSON whose ``key`` (``sk-...``) is the secret and ``token`` its hash (what LiteLLM stores).
- ``GET /key/list?return_full_object=true&page=N&size=100[&key_alias=A]``: full key objects, one
  page at a time (``size`` is at most 100; ``key_alias`` matches exactly).
- ``GET /key/info?key=HASH`` -> ``{"key": HASH, "info": {...}}``.
- ``POST /key/delete {"keys": [HASH]}`` -> ``{"deleted_keys": [...]}``.
- ``POST /key/update {"key": HASH, ...}``: a merge patch (``metadata`` replaces the stored
  metadata as a whole, ``duration`` sets a new expiry counted from now).

**Rotation without** ``/key/{key}/regenerate``: in 1.108.7 that endpoint raises "Regenerating
Virtual Keys is an Enterprise feature" unless the proxy has a premium licence (only the master
key may be regenerated without one). So :func:`rotate` does it with the open endpoints, keeping
the alias stable (LiteLLM requires aliases to be unique): the old key is renamed to
``<alias>.rotated-<UTC time>`` and marked ``llmkit_retired_at`` in its metadata; a new key of the
same role is generated from the *current* config under ``<alias>`` (the old owner kept); then the
old key is deleted at once, or, with a grace period, given ``duration`` = the grace period so that
the gateway itself expires it (no second run is needed to clean up). If the new key cannot be
made, the rename is undone.

**Transport**: ``http.client`` directly (no new dependency). No redirect is followed and no
``HTTP(S)_PROXY`` is used, so the master key goes to the URL given and nowhere else; plain
``http://`` is accepted only for a loopback address (a port-forward or an SSH tunnel; the kit's
one rule, :func:`llmkit.net.check_credential_target`). An answer is read with a bound
(:data:`MAX_BODY_BYTES`, a larger ``Content-Length`` refused before reading) and parsed as data
(:func:`llmkit.untrusted.parse_json`: no deep nesting, no out-of-range numbers); paging stops
after :data:`MAX_PAGES`. TLS is
verified against ``--ca`` or the system's trust store (at least TLS 1.2), optionally against
another name than the URL's host (``server_name``, for a tunnel), with an optional client
certificate for mutual TLS at the proxy.

**The master key** is held by :class:`MasterKey`, whose ``repr``/``str`` never show it. Every
message built from a gateway answer goes through :func:`redact`, which removes the master key and
anything shaped like a LiteLLM key (LiteLLM echoes abbreviated keys in its errors), and shows
control characters as escapes (:func:`llmkit.untrusted.printable`). Errors are raised
``from None``: no chained exception carries a request or a header.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import logging
import os
import re
import socket
import ssl
import stat
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llmkit import net
from llmkit.config import duration_seconds
from llmkit.errors import EXIT_FINDINGS, ConfigError, LlmkitError
from llmkit.gateway import MASTER_KEY_ENV, ROLE_METADATA
from llmkit.untrusted import parse_json, printable

URL_ENV = "LLMKIT_GATEWAY_URL"
DEFAULT_TIMEOUT_S = 30.0
PAGE_SIZE = 100  # the largest page /key/list serves
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PAGES = 1000  # 100,000 keys: a gateway that says there are more pages is not believed further
ROTATE_AFTER_METADATA = "rotate_after_seconds"
OWNER_METADATA = "owner"
RETIRED_METADATA = "llmkit_retired_at"
RETIRED_INFIX = ".rotated-"
#: What ``--alias`` accepts: LiteLLM's key alias format (2..255 characters, letters, digits and
#: ``_-/.@``, starting and ending with a letter or digit), at most 200 so a rotation suffix fits.
ALIAS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./@-]{0,198}[A-Za-z0-9]")
ALIAS_TEXT = "2..200 letters, digits and _-/.@, starting and ending with a letter or digit"
TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")
# LiteLLM keys (also its abbreviations such as "sk-...89pg") in any text shown to the user.
_KEY_SHAPE = re.compile(r"sk-[A-Za-z0-9_\-.~+/=]*")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_ADMIN_CIDRS_HINT = (
    "refused in front of LiteLLM: the management API (/key/*) answers only from "
    "llmkit:gateway.admin_cidrs, and this machine may be outside them (run it from an admin "
    "network, or through a tunnel from one)"
)


class GatewayError(LlmkitError):
    """The gateway, or the way to it, failed: an HTTP error, no connection, a TLS failure (exit 1)."""

    exit_code = EXIT_FINDINGS

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None) -> None:
        self.status = status
        self.error_type = error_type
        super().__init__(message)


# --- the master key -------------------------------------------------------------------------------


class MasterKey:
    """LiteLLM's master key; ``repr`` and ``str`` name its source, never its value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        if not _PRINTABLE.fullmatch(value):
            raise LlmkitError(f"the master key from {source} is empty or holds spaces or control characters")
        if not value.startswith("sk-"):
            raise LlmkitError(
                f"the master key from {source} does not start with sk- (LiteLLM's master keys do)"
            )
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"MasterKey(from {self.source})"

    __str__ = __repr__


def _env_file_value(text: str) -> str:
    """The key in a file: its only line, or the ``LITELLM_MASTER_KEY=`` line of an env file."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line in lines:
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep and name.strip() == MASTER_KEY_ENV:
            return value.strip().strip("'\"")
    return lines[0] if len(lines) == 1 and "=" not in lines[0] else ""


def master_key_from_file(path: Path) -> MasterKey:
    """The master key in ``path``, refused unless only its owner may read it (mode 0600 or 0400)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(
            key="--master-key-file",
            value=str(path),
            accepted="a readable file of mode 0600",
            message=f"cannot open: {exc.strerror}",
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                key="--master-key-file", value=str(path), accepted="a regular file", message="not a file"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ConfigError(
                key="--master-key-file",
                value=str(path),
                accepted="a file only its owner may read (chmod 600)",
                message=f"mode {mode:04o} lets other users read the master key; refused",
            )
        data = handle.read(64 * 1024)
    try:
        value = _env_file_value(data.decode("utf-8"))
    except UnicodeDecodeError:
        value = ""
    if not value:
        raise ConfigError(
            key="--master-key-file",
            value=str(path),
            accepted=f"a file holding the key alone, or an env file with a {MASTER_KEY_ENV}= line",
            message="no master key found in it",
        )
    return MasterKey(value, f"--master-key-file {path}")


@contextlib.contextmanager
def _quiet_botocore() -> Iterator[None]:
    """botocore logs whole response bodies at DEBUG: with the secret's value in them. Not here."""
    logger = logging.getLogger("botocore.parsers")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)


def master_key_from_secret(secret_id: str) -> MasterKey:
    """The master key from AWS Secrets Manager (``llmkit/<stack>/gateway/master-key``, AWSCURRENT).

    The region is the ARN's, or boto3's default (``AWS_REGION``, the profile) for a name.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"--master-key-secret {secret_id}"
    parts = secret_id.split(":")
    region = parts[3] if secret_id.startswith("arn:") and len(parts) > 3 and parts[3] else None
    try:
        client = boto3.client("secretsmanager", region_name=region)
        with _quiet_botocore():
            answer = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise LlmkitError(
            f"{where}: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        ) from None
    except BotoCoreError as exc:
        raise LlmkitError(f"{where}: {exc}") from None
    value = answer.get("SecretString")
    if not isinstance(value, str):
        raise LlmkitError(f"{where}: the secret has no string value")
    if value.lstrip().startswith("{"):
        try:
            document = parse_json(value, where)
        except LlmkitError:
            document = None
        if isinstance(document, dict):
            value = str(document.get(MASTER_KEY_ENV, ""))
    return MasterKey(value.strip(), where)


def resolve_master_key(
    *, file: Path | None, secret: str | None, environ: Mapping[str, str] | None = None
) -> MasterKey:
    """The master key from ``--master-key-file``, ``--master-key-secret`` or the environment."""
    if file is not None and secret is not None:
        raise ConfigError(
            key="--master-key-file",
            value=str(file),
            accepted="one source of the master key",
            message="both --master-key-file and --master-key-secret given",
        )
    if file is not None:
        return master_key_from_file(file)
    if secret is not None:
        return master_key_from_secret(secret)
    value = (os.environ if environ is None else environ).get(MASTER_KEY_ENV)
    if value:
        return MasterKey(value.strip(), f"${MASTER_KEY_ENV}")
    raise ConfigError(
        key="master key",
        value=None,
        accepted=f"${MASTER_KEY_ENV}, --master-key-file FILE (mode 0600) or --master-key-secret ARN|NAME",
        message="no master key given (it is never taken on the command line)",
    )


def redact(text: str, master_key: MasterKey | None = None) -> str:
    """``text`` without the master key or anything shaped like a LiteLLM key, on one line."""
    if master_key is not None:
        text = text.replace(master_key.reveal(), "[master key]")
    text = _KEY_SHAPE.sub("sk-[redacted]", text)
    text = printable(" ".join(text.split()))
    return text if len(text) <= 400 else text[:399] + "…"


# --- transport ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """The gateway's base URL, checked: https, or http to a loopback address only."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.base_path}"


def parse_url(url: str | None) -> Endpoint:
    if not url:
        raise ConfigError(
            key="--url",
            value=url,
            accepted=f"the gateway's base URL, https://HOST[:PORT] (or ${URL_ENV})",
            message="no gateway URL given",
        )
    accepted = "https://HOST[:PORT][/PATH], or http:// to a loopback address (a tunnel)"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(key="--url", value=url, accepted=accepted, message=str(exc)) from None
    problem = None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problem = "not an http(s) URL"
    elif parts.username or parts.password:
        problem = "credentials in the URL: give the master key another way"
    elif parts.query or parts.fragment:
        problem = "a query or fragment in the base URL"
    elif parts.scheme == "http" and not net.is_loopback(parts.hostname):
        problem = "plain http would send the master key unencrypted; use https"
    if problem or not parts.hostname:
        raise ConfigError(key="--url", value=url, accepted=accepted, message=problem or "no host")
    return Endpoint(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
    )


def tls_context(
    *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """Verifying TLS (>= 1.2) against ``ca`` or the system's store; ``cert``/``key`` for mutual TLS."""
    if key is not None and cert is None:
        raise ConfigError(
            key="--key", value=str(key), accepted="--key together with --cert", message="a key without --cert"
        )
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            key="--ca", value=str(ca), accepted="a PEM file of CA certificates", message=str(exc)
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                key="--cert",
                value=str(cert),
                accepted="a PEM client certificate and its unencrypted key (in --cert or --key)",
                message=str(exc),
            ) from None
    return context


class _HTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that verifies the certificate against ``server_name`` (SNI too)."""

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext, timeout: float, server_name: str
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls = context
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    """(LiteLLM's error type, a message) from an error body; no type when LiteLLM did not answer."""
    try:
        document = parse_json(raw, "the error")
    except LlmkitError:
        title = re.search(rb"<title>(.*?)</title>", raw, flags=re.S | re.I)
        text = title.group(1) if title else raw[:200]
        return None, text.decode("utf-8", "replace").strip() or None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):  # LiteLLM's ProxyException: {message, type, param, code}
            kind = error.get("type")
            return (str(kind) if kind else "error"), str(error.get("message") or "")
        if error is not None:
            return None, str(error)
        if "detail" in document:  # FastAPI's own
            detail = document["detail"]
            if isinstance(detail, dict) and "error" in detail:
                return "error", str(detail["error"])
            return "error", str(detail)
    return None, str(document)


class GatewayClient:
    """LiteLLM's management API at ``endpoint``, with the master key. One connection per request."""

    def __init__(
        self,
        endpoint: Endpoint,
        master_key: MasterKey,
        *,
        context: ssl.SSLContext | None = None,
        server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self._master_key = master_key
        self._context = context if context is not None else tls_context()
        self._server_name = server_name or endpoint.host
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"GatewayClient({self.endpoint.url}, {self._master_key!r})"

    def _connection(self) -> http.client.HTTPConnection:
        if self.endpoint.scheme == "http":
            return http.client.HTTPConnection(self.endpoint.host, self.endpoint.port, timeout=self.timeout)
        return _HTTPSConnection(
            self.endpoint.host,
            self.endpoint.port,
            context=self._context,
            timeout=self.timeout,
            server_name=self._server_name,
        )

    def request(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The JSON answer of ``method path``; a :class:`GatewayError` (one line) otherwise."""
        target = self.endpoint.base_path + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        shown = redact(f"{method} {self.endpoint.url}{path}", self._master_key)
        headers = {
            "Authorization": f"Bearer {self._master_key.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"llmkit/{version('llmkit')}",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = self._connection()
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            raw = net.read_bounded(response, MAX_BODY_BYTES, shown, GatewayError)
            status = response.status
            retry_after = response.getheader("Retry-After")
            location = response.getheader("Location")
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or exc.reason or "certificate not trusted"
            raise GatewayError(
                f"{shown}: TLS verification of {self._server_name} failed ({reason}): give the CA that "
                "signed the gateway's certificate with --ca FILE (and --server-name if the certificate "
                "names another host)"
            ) from None
        except ssl.SSLError as exc:
            raise GatewayError(
                f"{shown}: TLS handshake failed ({exc.reason or exc.__class__.__name__}); if the proxy "
                "wants a client certificate, give --cert/--key"
            ) from None
        except ConnectionRefusedError:
            raise GatewayError(
                f"{shown}: connection refused (is the gateway up, and the URL right?)"
            ) from None
        except TimeoutError:
            raise GatewayError(f"{shown}: no answer within {self.timeout:g} s") from None
        except socket.gaierror as exc:
            raise GatewayError(f"{shown}: cannot resolve {self.endpoint.host} ({exc.strerror})") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise GatewayError(
                f"{shown}: connection failed ({redact(str(reason), self._master_key)})"
            ) from None
        finally:
            connection.close()
        if status >= 400:
            raise self._http_error(shown, status, raw, retry_after)
        if status >= 300:
            raise GatewayError(
                f"{shown}: HTTP {status}, a redirect to {redact(location or '?', self._master_key)}; the "
                "master key is never sent after a redirect: give the final URL with --url",
                status=status,
            )
        if not raw.strip():
            return None
        return parse_json(
            raw, f"{shown}: HTTP {status}", GatewayError, not_json="not JSON, is this LiteLLM's proxy?"
        )

    def _http_error(self, shown: str, status: int, raw: bytes, retry_after: str | None) -> GatewayError:
        error_type, message = _error_fields(raw)
        line = f"{shown}: HTTP {status}"
        if error_type and error_type != "error":
            line += f" {error_type}"
        if message:
            line += f": {message}"
        hint = None
        if status == 401:
            hint = (
                "the gateway did not accept the master key (after a rotation of the master key, "
                "gateways keep the old one until they restart)"
            )
        elif status == 403 and error_type is None:
            hint = _ADMIN_CIDRS_HINT
        elif status == 429:
            hint = (
                f"rate limited; retry after {retry_after} s" if retry_after else "rate limited; retry later"
            )
        line = redact(line, self._master_key)
        if hint:
            line += f" ({hint})"
        return GatewayError(line, status=status, error_type=error_type)

    # --- the key endpoints ---

    def generate(self, body: Mapping[str, Any]) -> NewKey:
        answer = self.request("POST", "/key/generate", body=dict(body))
        secret = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(secret, str) or not secret.startswith("sk-") or not _PRINTABLE.fullmatch(secret):
            raise GatewayError(f"POST {self.endpoint.url}/key/generate: the answer holds no key")
        return NewKey(secret=secret, record=KeyRecord.from_api(answer))

    def list_keys(self, *, key_alias: str | None = None) -> list[KeyRecord]:
        """Every key (every page), or the one with ``key_alias``."""
        records: list[KeyRecord] = []
        page = 1
        while True:
            answer = self.request(
                "GET",
                "/key/list",
                query={
                    "return_full_object": "true",
                    "page": page,
                    "size": PAGE_SIZE,
                    "key_alias": key_alias,
                },
            )
            keys = answer.get("keys") if isinstance(answer, dict) else None
            if not isinstance(keys, list):
                raise GatewayError(f"GET {self.endpoint.url}/key/list: no list of keys in the answer")
            records += [KeyRecord.from_api(k) for k in keys if isinstance(k, dict)]
            pages = answer.get("total_pages")
            if not isinstance(pages, int) or page >= pages or not keys:
                return records
            if page >= MAX_PAGES:
                raise GatewayError(
                    f"GET {self.endpoint.url}/key/list: the gateway reports {pages} pages of keys; "
                    f"refused after {MAX_PAGES}"
                )
            page += 1

    def find(self, alias: str) -> KeyRecord:
        found = [r for r in self.list_keys(key_alias=alias) if r.alias == alias]
        if not found:
            raise LlmkitError(f"{self.endpoint.url}: no key with alias {alias!r} (see `llmkit keys list`)")
        if len(found) > 1:
            raise LlmkitError(
                f"{self.endpoint.url}: {len(found)} keys with alias {alias!r}; revoke by --token"
            )
        return found[0]

    def info(self, token: str) -> KeyRecord:
        answer = self.request("GET", "/key/info", query={"key": token})
        info = answer.get("info") if isinstance(answer, dict) else None
        if not isinstance(info, dict):
            raise GatewayError(f"GET {self.endpoint.url}/key/info: no key info in the answer")
        return KeyRecord.from_api({"token": answer.get("key", token), **info})

    def delete(self, tokens: list[str]) -> list[str]:
        answer = self.request("POST", "/key/delete", body={"keys": tokens})
        deleted = answer.get("deleted_keys") if isinstance(answer, dict) else None
        return [str(t) for t in deleted] if isinstance(deleted, list) else []

    def update(self, token: str, **fields: Any) -> Any:
        return self.request("POST", "/key/update", body={"key": token, **fields})


# --- keys -----------------------------------------------------------------------------------------


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class KeyRecord:
    """A virtual key as the gateway describes it: never the secret, only its hash (``token``)."""

    token: str
    alias: str | None
    models: list[str]
    expires: dt.datetime | None
    created_at: dt.datetime | None
    spend: float
    max_budget: float | None
    rpm_limit: int | None
    tpm_limit: int | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> KeyRecord:
        metadata = data.get("metadata")
        models = data.get("models")
        alias = data.get("key_alias")
        return cls(
            token=str(data.get("token") or data.get("token_id") or ""),
            alias=str(alias) if alias else None,
            models=[str(m) for m in models] if isinstance(models, list) else [],
            expires=parse_time(data.get("expires")),
            created_at=parse_time(data.get("created_at")),
            spend=_number(data.get("spend")) or 0.0,
            max_budget=_number(data.get("max_budget")),
            rpm_limit=_integer(data.get("rpm_limit")),
            tpm_limit=_integer(data.get("tpm_limit")),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )

    @property
    def role(self) -> str | None:
        role = self.metadata.get(ROLE_METADATA)
        return str(role) if role else None

    @property
    def owner(self) -> str | None:
        owner = self.metadata.get(OWNER_METADATA)
        return str(owner) if owner else None

    @property
    def retired(self) -> bool:
        return RETIRED_METADATA in self.metadata

    @property
    def rotate_after_seconds(self) -> int | None:
        return _integer(self.metadata.get(ROTATE_AFTER_METADATA))

    @property
    def due_at(self) -> dt.datetime | None:
        """When the key is due for rotation: created_at + rotate_after_seconds (None: never)."""
        after = self.rotate_after_seconds
        if after is None or self.created_at is None or self.retired:
            return None
        return self.created_at + dt.timedelta(seconds=after)

    def is_due(self, now: dt.datetime) -> bool:
        due = self.due_at
        return due is not None and due <= now

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def public(self) -> dict[str, Any]:
        """The record as JSON (``llmkit keys list --json``)."""

        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "alias": self.alias,
            "role": self.role,
            "owner": self.owner,
            "token": self.token,
            "models": self.models,
            "expires": iso(self.expires),
            "created_at": iso(self.created_at),
            "due_at": iso(self.due_at),
            "retired": self.retired,
            "spend": self.spend,
            "max_budget": self.max_budget,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
        }


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``secret`` is shown once and never again (LiteLLM keeps only its hash)."""

    secret: str = field(repr=False)
    record: KeyRecord


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.fullmatch(alias) or RETIRED_INFIX in alias:
        raise ConfigError(
            key="--alias",
            value=alias,
            accepted=f"{ALIAS_TEXT}, without {RETIRED_INFIX!r}",
            message="not a usable key alias",
        )
    return alias


def check_token(token: str) -> str:
    if token.startswith("sk-"):
        raise LlmkitError(
            "--token: that is a key itself, not its hash; never put a key on a command line. Give the "
            "64-hex-digit token that `llmkit keys list --json` shows"
        )
    if not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError(
            key="--token",
            value=token,
            accepted="a key's hash: 64 lowercase hex digits (`llmkit keys list --json`)",
            message="not a key hash",
        )
    return token


def grace_to_seconds(grace: str) -> int:
    """``"0"`` -> 0, ``"12h"`` -> 43200; anything else is refused."""
    if grace == "0":
        return 0
    try:
        return duration_seconds(grace)
    except ValueError:
        raise ConfigError(
            key="--grace",
            value=grace,
            accepted="0 (revoke the old key at once) or a duration such as 30m, 12h or 1d",
            message="not a grace period",
        ) from None


def retired_alias(alias: str, now: dt.datetime) -> str:
    return f"{alias}{RETIRED_INFIX}{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


@dataclass(frozen=True)
class Rotation:
    old: KeyRecord
    new: NewKey
    retired_alias: str
    old_deleted: bool
    old_expires: dt.datetime | None


def rotate(
    client: GatewayClient,
    old: KeyRecord,
    body: Mapping[str, Any],
    *,
    grace: str,
    now: dt.datetime,
    on_issued: Callable[[NewKey], None],
) -> Rotation:
    """Replace ``old`` by a new key made from ``body`` (same alias); see the module docstring.

    ``on_issued`` gets the new key as soon as it exists, before the old one is touched again,
    so that a failure afterwards never loses it. ``grace`` is ``"0"`` (delete the old key at once)
    or a duration (``30m``, ``12h``, ``1d``) after which the gateway expires it.
    """
    grace_seconds = grace_to_seconds(grace)
    if old.alias is None:
        raise LlmkitError(f"key {old.token[:12]}…: no alias, so it was not issued by `llmkit keys`")
    alias = old.alias
    renamed = retired_alias(alias, now)
    marked = {**old.metadata, RETIRED_METADATA: now.astimezone(dt.UTC).isoformat()}
    client.update(old.token, key_alias=renamed, metadata=marked)
    try:
        new = client.generate(body)
    except LlmkitError as exc:
        try:
            client.update(old.token, key_alias=alias, metadata=old.metadata)
        except LlmkitError:
            raise GatewayError(
                f"{exc} -- and the old key, still valid, keeps the alias {renamed!r} (rename it back "
                "or run the rotation again)"
            ) from None
        raise GatewayError(f"{exc} (the old key {alias!r} is unchanged)") from None
    on_issued(new)
    failure = (
        f"the new key of {alias!r} is issued, but the old key (token {old.token}, now {renamed!r}) is "
        "still valid: revoke it with `llmkit keys revoke --token TOKEN`"
    )
    grace_end = now + dt.timedelta(seconds=grace_seconds)
    try:
        if grace_seconds == 0:
            client.delete([old.token])
            return Rotation(old, new, renamed, old_deleted=True, old_expires=now)
        if old.expires is not None and old.expires <= grace_end:
            return Rotation(old, new, renamed, old_deleted=False, old_expires=old.expires)
        client.update(old.token, duration=grace)
    except LlmkitError as exc:
        raise GatewayError(f"{exc}; {failure}") from None
    return Rotation(old, new, renamed, old_deleted=False, old_expires=grace_end)


__all__ = [
    "ALIAS_PATTERN",
    "URL_ENV",
    "Endpoint",
    "GatewayClient",
    "GatewayError",
    "KeyRecord",
    "MasterKey",
    "NewKey",
    "Rotation",
    "check_alias",
    "check_token",
    "grace_to_seconds",
    "master_key_from_file",
    "master_key_from_secret",
    "parse_url",
    "redact",
    "resolve_master_key",
    "rotate",
    "tls_context",
]
