"""The kit's one HTTP policy: where credentials may go, how redirects are followed, what is read.

Every HTTP client of the kit follows these rules (``llmkit mirror pull`` and its registry token
flow, ``mirror bundle``'s index and release mirror, ``mirror push --to-http``, ``llmkit keys``):

- **Credentials go only to the origin they were given for** (scheme, host and port), and never
  over plain ``http://`` except to a loopback address (127.0.0.0/8, ::1, ``localhost``):
  :func:`check_credential_target`. A URL's user info (``https://user:token@host/``) becomes a
  Basic header for that origin alone (:func:`split_credentials`); urllib would otherwise put it
  in the host name (and in a DNS query).
- **Redirects** (:func:`opener`): one to another origin drops ``Authorization``, ``Cookie`` and
  ``Proxy-Authorization``; one from https to plain http of a request that carried credentials is
  refused, as is one to anything but http(s) or to a URL holding user info.
- **What is read into memory is bounded** (:func:`read_bounded`): a ``Content-Length`` above the
  limit is refused before a byte of the body is read, the read stops one byte past the limit,
  and a body shorter than its ``Content-Length`` is refused.

``llmkit keys`` follows no redirect at all and uses no proxy (:mod:`llmkit.gateway_client`); it
shares the loopback rule and the bounded read.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from llmkit.errors import LlmkitError

DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers that carry a credential, lower case: never carried to another origin.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
MAX_REDIRECTS = 10
_READ_BLOCK = 1 << 16
# Whitespace or control characters: never part of a URL the kit requests.
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")
# Query parameters that carry a credential: presigned S3/GCS/Azure URLs, token-in-URL mirrors.
_SECRET_PARAMS = re.compile(
    r"^(x-amz-(signature|credential|security-token)|x-goog-(signature|credential)|sig|signature|"
    r"token|access_token|api_key|apikey|key)$",
    re.IGNORECASE,
)


class UnsafeRequest(LlmkitError):
    """A request the HTTP policy refuses: credentials to the wrong place, a bad URL (exit 2)."""


def redact_url(url: str) -> str:
    """A URL fit for a message, a log or a (published) manifest: credentials shown as ``***``.

    ``https://user:token@devpi.internal/simple/`` -> ``https://***@devpi.internal/simple/``
    (``PIP_INDEX_URL`` often looks like that), and the values of credential query parameters
    (a presigned URL's ``X-Amz-Signature``, ``token=``...) -> ``***``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a malformed URL>" if "@" in url else url
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


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: where plain http may carry a credential."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> urllib.parse.SplitResult:
    """``url`` split, if it is an http(s) URL with a host and a valid port; UnsafeRequest otherwise."""
    if not isinstance(url, str):
        raise UnsafeRequest(f"{what}: not a URL ({type(url).__name__})")
    shown = redact_url(url)
    if _BAD_URL_CHARS.search(url):
        raise UnsafeRequest(f"{what} {shown!r}: not a URL (it holds spaces or control characters)")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UnsafeRequest(f"{what} {shown!r}: not a URL ({exc})") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise UnsafeRequest(f"{what} {shown!r}: expected an http(s):// URL with a host")
    return parts


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port made explicit: what "same origin" compares."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise UnsafeRequest(f"{redact_url(url)!r}: not a URL (bad port)") from None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port: where a credential meant for ``a`` may also go."""
    return origin(a) == origin(b)


def check_credential_target(url: str, what: str) -> None:
    """Refuse (UnsafeRequest) to send a credential to ``url``: anything but https, or loopback http."""
    scheme, host, _port = origin(url)
    if scheme == "https" or (scheme == "http" and is_loopback(host)):
        return
    raise UnsafeRequest(
        f"{what} {redact_url(url)}: refusing to send credentials over {scheme or 'an unknown scheme'}: "
        "use https (plain http carries credentials only to a loopback address)"
    )


def split_credentials(url: str, what: str = "URL") -> tuple[str, dict[str, str]]:
    """``https://user:token@host/simple/`` -> (``https://host/simple/``, a Basic auth header).

    No user info: ``(url, {})``. With user info the URL must be https (or loopback http):
    :func:`check_credential_target`. The header goes to that URL's origin only.
    """
    parts = check_url(url, what)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    raw = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    check_credential_target(url, what)
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return clean, {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def carries_credentials(headers: Any) -> bool:
    """Whether a mapping of headers holds a credential (names compared case-insensitively)."""
    return any(str(name).lower() in CREDENTIAL_HEADERS for name in headers)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects under the policy of this module (see the module docstring)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        def refuse(why: str) -> UnsafeRequest:
            fp.close()
            return UnsafeRequest(
                f"{redact_url(req.full_url)}: HTTP {code} redirect to {redact_url(newurl)} refused: {why}"
            )

        if _BAD_URL_CHARS.search(newurl):
            raise refuse("the location holds spaces or control characters")
        target = urllib.parse.urlsplit(newurl)
        if target.scheme.lower() not in DEFAULT_PORTS:
            raise refuse("only http and https are followed")
        if "@" in target.netloc:
            raise refuse("the location holds user info")
        credentials = carries_credentials(req.headers)
        if credentials and origin(req.full_url)[0] == "https" and target.scheme.lower() != "https":
            raise refuse("the request carried credentials and the redirect leaves https")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin(newurl, req.full_url):
            for name in [n for n in new.headers if n.lower() in CREDENTIAL_HEADERS]:
                new.remove_header(name)
        return new


def opener() -> urllib.request.OpenerDirector:
    """A urllib opener that follows redirects under the policy of this module."""
    return urllib.request.build_opener(_Redirects())


def read_bounded(
    resp: Any, limit: int, what: str, error: Callable[[str], Exception] = UnsafeRequest
) -> bytes:
    """At most ``limit`` bytes of ``resp``'s body, or ``error``: too large, cut short, or lost.

    A declared ``Content-Length`` above ``limit`` is refused before any of the body is read.
    """
    declared = resp.headers.get("Content-Length") if resp.headers is not None else None
    expected: int | None = None
    if declared is not None:
        text = declared.strip()
        if not (text.isascii() and text.isdigit()):
            raise error(f"{what}: a malformed Content-Length {text[:40]!r}")
        if len(text) > 18 or int(text) > limit:
            raise error(
                f"{what}: the answer is {text if len(text) <= 18 else 'over 10^18'} bytes, more than "
                f"the {limit} accepted; refused before reading it"
            )
        expected = int(text)
    chunks: list[bytes] = []
    total = 0
    try:
        while total <= limit:
            block = resp.read(min(_READ_BLOCK, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
    except (OSError, http.client.HTTPException) as exc:
        raise error(
            f"{what}: the connection failed while reading the answer ({type(exc).__name__})"
        ) from None
    if total > limit:
        raise error(f"{what}: the answer is larger than the {limit} bytes accepted; refused")
    if expected is not None and total != expected:
        raise error(f"{what}: the answer ended after {total} of its {expected} bytes")
    return b"".join(chunks)


__all__ = [
    "CREDENTIAL_HEADERS",
    "UnsafeRequest",
    "carries_credentials",
    "check_credential_target",
    "check_url",
    "is_loopback",
    "opener",
    "origin",
    "read_bounded",
    "redact_url",
    "same_origin",
    "split_credentials",
]
