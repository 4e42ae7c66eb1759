"""Registry authentication for ``llmkit mirror pull --registry``: the OCI distribution token flow.

A registry that wants credentials answers ``401`` with a challenge (``WWW-Authenticate``):

- ``Bearer realm="<token URL>",service="<svc>",scope="repository:<name>:pull"`` (Docker
  Distribution, Harbor, GitLab, Artifactory, ECR's Docker endpoint, ...): ``GET <realm>?service=
  <svc>&scope=<scope>``, with HTTP Basic credentials when given (anonymous otherwise), answers
  ``{"token": ...}`` (or ``access_token``); requests then carry ``Authorization: Bearer <token>``.
  Tokens are short-lived: a ``401`` in the middle of a pull fetches a new one and the request is
  retried (:meth:`RegistryAuth.refresh`).
- ``Basic realm=...``: requests carry the credentials themselves (only when given).

Credentials: a user name, and the password (or an access token) from an environment variable,
never the command line (:data:`PASSWORD_ENV`). They are sent only to the registry's own origin
and to the realm the registry names, never over plain http except to a loopback address, and an
https registry's token never comes from a plain-http realm. Every request follows the kit's HTTP
policy (:mod:`llmkit.net`): a redirect to another origin (blob storage, a CDN with a presigned
URL; a realm that redirects elsewhere) drops the ``Authorization`` header, a redirect from https
to http of a request with credentials is refused, and the token answer is read with a bound
(:data:`MAX_TOKEN_BYTES`) and must hold a token that fits in a header.
"""

from __future__ import annotations

import base64
import http.client
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmkit import net
from llmkit.mirror.manifest import MirrorError
from llmkit.net import redact_url, same_origin
from llmkit.untrusted import parse_json, printable

PASSWORD_ENV = "LLMKIT_REGISTRY_PASSWORD"
MAX_TOKEN_BYTES = 1 << 20
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
# RFC 6750's b64token, widened to any visible ASCII: what may follow "Bearer " in a header.
_TOKEN = re.compile(r"[\x21-\x7e]{1,65536}")
_OPENER = net.opener()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


@dataclass
class RegistryAuth:
    """The credentials and the current token for one registry; shared by the download threads."""

    registry: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    _header: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    tokens_fetched: int = 0

    def headers(self, url: str) -> dict[str, str]:
        """The Authorization header for ``url``: only for the registry's own origin."""
        with self._lock:
            header = self._header
        if header and same_origin(url, self.registry):
            return {"Authorization": header}
        return {}

    def __post_init__(self) -> None:
        net.check_url(self.registry, "--registry")
        if self.username is not None:
            net.check_credential_target(self.registry, "--registry")

    def _basic(self) -> str | None:
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def refresh(self, challenge: str | None, rejected: str | None = None) -> bool:
        """Answer a 401's challenge; True when there is something new to try.

        ``rejected`` is the header the refused request carried: another thread may already have
        replaced it, and then the caller just retries with the new one.
        """
        if not challenge:
            return False
        with self._lock:
            if rejected is not None and self._header is not None and self._header != rejected:
                return True
            scheme, params = parse_challenge(challenge)
            if scheme == "basic":
                basic = self._basic()
                if basic is None or basic == self._header:
                    return False
                self._header = basic
                return True
            if scheme != "bearer" or "realm" not in params:
                raise MirrorError(f"{self.registry}: unsupported registry challenge {challenge[:200]!r}")
            self._header = "Bearer " + self._token(params)
            self.tokens_fetched += 1
            return True

    def _token(self, params: Mapping[str, str]) -> str:
        realm = params["realm"]
        net.check_url(realm, f"{self.registry}: the token realm")
        shown = redact_url(realm)
        if net.origin(realm)[0] == "http" and net.origin(self.registry)[0] == "https":
            raise MirrorError(f"{self.registry}: refusing to send credentials to a plain-http realm {shown}")
        basic = self._basic()
        if basic:
            net.check_credential_target(realm, f"{self.registry}: the token realm")
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        url = f"{realm}{'&' if '?' in realm else '?'}{query}" if query else realm
        headers = {"Accept": "application/json"}
        if basic:
            headers["Authorization"] = basic
        what = f"{self.registry}: the token service {shown}"
        try:
            with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=60) as resp:
                body = net.read_bounded(resp, MAX_TOKEN_BYTES, what, MirrorError)
        except urllib.error.HTTPError as exc:
            who = (
                f"as {self.username!r}"
                if self.username
                else f"anonymously (give --registry-user and {PASSWORD_ENV})"
            )
            raise MirrorError(
                f"{what} refused a token {who}: HTTP {exc.code} {printable(exc.reason)}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise MirrorError(f"{self.registry}: no token from {shown}: {printable(exc)}") from None
        doc: Any = parse_json(body, what, MirrorError)
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise MirrorError(f"{what} answered without a token")
        if not _TOKEN.fullmatch(token):
            raise MirrorError(f"{what} answered with a token that is not visible ASCII of at most 64 KiB")
        return token


def strip_auth_on_redirect() -> urllib.request.OpenerDirector:
    """An opener under the kit's HTTP policy (:func:`llmkit.net.opener`): credentials never go
    to another origin, nor from https to http."""
    return net.opener()


__all__ = [
    "MAX_TOKEN_BYTES",
    "PASSWORD_ENV",
    "RegistryAuth",
    "parse_challenge",
    "redact_url",
    "same_origin",
    "strip_auth_on_redirect",
]
