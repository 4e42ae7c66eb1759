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
and to the realm the registry names; a redirect to another origin (blob storage, a CDN with a
presigned URL) drops the ``Authorization`` header (see :func:`strip_auth_on_redirect`).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmkit.mirror.manifest import MirrorError

PASSWORD_ENV = "LLMKIT_REGISTRY_PASSWORD"
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


# Query parameters that carry a credential: presigned S3/GCS/Azure URLs, token-in-URL mirrors.
_SECRET_PARAMS = re.compile(
    r"^(x-amz-(signature|credential|security-token)|x-goog-(signature|credential)|sig|signature|"
    r"token|access_token|api_key|apikey|key)$",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """A URL fit for a message, a log or a (published) manifest: credentials shown as ``***``.

    ``https://user:token@devpi.internal/simple/`` -> ``https://***@devpi.internal/simple/``
    (``PIP_INDEX_URL`` often looks like that), and the values of credential query parameters
    (a presigned URL's ``X-Amz-Signature``, ``token=``...) -> ``***``.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMS.match(k) for k, _ in pairs):
            shown = [(k, "***" if _SECRET_PARAMS.match(k) else v) for k, v in pairs]
            query = urllib.parse.urlencode(shown, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port: where a credential meant for ``a`` may also go."""
    return _origin(a) == _origin(b)


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
                raise MirrorError(f"{self.registry}: unsupported registry challenge {challenge!r}")
            self._header = "Bearer " + self._token(params)
            self.tokens_fetched += 1
            return True

    def _token(self, params: Mapping[str, str]) -> str:
        realm = params["realm"]
        if not re.match(r"^https?://", realm):
            raise MirrorError(f"{self.registry}: the token realm {realm!r} is not an http(s) URL")
        if _origin(realm)[0] == "http" and _origin(self.registry)[0] == "https":
            raise MirrorError(f"{self.registry}: refusing to send credentials to a plain-http realm {realm}")
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        url = f"{realm}{'&' if '?' in realm else '?'}{query}" if query else realm
        headers = {"Accept": "application/json"}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
                doc: Any = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            who = (
                f"as {self.username!r}"
                if self.username
                else f"anonymously (give --registry-user and {PASSWORD_ENV})"
            )
            raise MirrorError(
                f"{self.registry}: the token service {realm} refused a token {who}: "
                f"HTTP {exc.code} {exc.reason}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MirrorError(f"{self.registry}: no token from {realm}: {exc}") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise MirrorError(f"{self.registry}: the token service {realm} answered without a token")
        return token


class _StripAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin(newurl, req.full_url):
            new.remove_header("Authorization")
        return new


def strip_auth_on_redirect() -> urllib.request.OpenerDirector:
    """An opener that follows redirects but never carries Authorization to another origin."""
    return urllib.request.build_opener(_StripAuthOnRedirect())
