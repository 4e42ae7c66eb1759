"""Real servers on 127.0.0.1 for the mirror tests: an HTTP file server with faults, and moto."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

REGION = "eu-central-1"


@dataclass
class FileServer:
    """Serves ``files`` (name -> bytes) with Range support; faults switched on per test.

    - ``cut_at``: name -> byte offset; a response covering it stops there and closes the
      connection, ``cut_times`` times (then the file is served whole).
    - ``corrupt``: name -> byte offset whose value is flipped in every response.
    - ``ranges``: False ignores Range (plain 200).
    - ``content_types``: name -> the Content-Type header it is served with (default: none).
    - ``require_auth``: (name prefix, Authorization value): other requests for those names get 401.
    - PUT stores the body (``--to-http``).
    """

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_at: dict[str, int] = field(default_factory=dict)
    cut_times: int = 1
    corrupt: dict[str, int] = field(default_factory=dict)
    ranges: bool = True
    content_types: dict[str, str] = field(default_factory=dict)
    # names starting with one of these prefixes answer 401 without this Authorization header
    require_auth: tuple[tuple[str, ...], str] | None = None
    body_bytes: int = 0
    body_by_name: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.files.clear()
        self.cut_at.clear()
        self.corrupt.clear()
        self.content_types.clear()
        self.require_auth = None
        self.cut_times, self.ranges, self.body_bytes = 1, True, 0
        self.body_by_name.clear()
        self.requests.clear()


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _name(self) -> str:
            return self.path.lstrip("/").split("?")[0]

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            with state.lock:
                state.files[self._name()] = data
                state.requests.append(("PUT", self._name(), None))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            name = self._name()
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append(("HEAD" if head else "GET", name, rng))
            guard = state.require_auth
            if guard and name.startswith(guard[0]) and self.headers.get("Authorization") != guard[1]:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="index"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files.get(name)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if name in state.corrupt:
                i = state.corrupt[name]
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
            start, end = 0, len(data)
            if rng and state.ranges:
                a, _, b = rng.removeprefix("bytes=").partition("-")
                start, end = int(a), min(int(b) + 1 if b else len(data), len(data))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            if name in state.content_types:
                self.send_header("Content-Type", state.content_types[name])
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if head:
                return
            stop = end
            with state.lock:
                cut = state.cut_at.get(name)
                if cut is not None and start <= cut < end and state.cut_times > 0:
                    state.cut_times -= 1
                    stop = cut
            body = data[start:stop]
            # counted before it is sent: the client may have read it all and moved on (a test
            # asserting the count) before this thread would count it afterwards
            with state.lock:
                state.body_bytes += len(body)
                state.body_by_name[name] = state.body_by_name.get(name, 0) + len(body)
            try:
                self.wfile.write(body)
                self.wfile.flush()
            except OSError:
                return
            if stop != end:
                self.close_connection = True
                self.connection.shutdown(2)

    return Handler


@pytest.fixture(scope="session")
def _file_server() -> Iterator[FileServer]:
    state = FileServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


@pytest.fixture
def file_server(_file_server: FileServer) -> FileServer:
    _file_server.reset()
    return _file_server


@dataclass
class S3:
    endpoint: str
    client: Any
    bucket: str
    key_arn: str


@pytest.fixture
def s3(aws_env: str) -> S3:
    """An empty moto server with a versioned bucket and a KMS key (the stack's data key)."""
    moto_endpoint = aws_env
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name=REGION)
    key_arn = kms.create_key(Description="data")["KeyMetadata"]["Arn"]
    bucket = "llmkit-test-models-123456789012-eu-central-1"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3(moto_endpoint, client, bucket, key_arn)
