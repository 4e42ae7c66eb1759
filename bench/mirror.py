"""`llmkit mirror pull` throughput next to curl, and the bytes re-fetched after a cut at 50 %.

Run from the repo root: `uv run python bench/mirror.py [--size-mib 512] [--workers 8]`.
A local HTTP server (127.0.0.1, Range support, reading from a file) serves one random file.
Figures: curl's time for the file (one stream), the mirror's time for the same file (parallel
ranged requests plus the sha256 check), their ratio; then a pull whose connection is cut at
50 % and not retried, a second pull that resumes it, and the bytes the server sent beyond the
file's size (what the resume fetched twice).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from llmkit.mirror.download import Options
from llmkit.mirror.manifest import MirrorError
from llmkit.mirror.pull import pull_urls


class Server:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.sent = 0
        self.cut_at: int | None = None
        self.lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                start, end = 0, state.size
                rng = self.headers.get("Range")
                if rng:
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start, end = int(a), min(int(b) + 1 if b else state.size, state.size)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{state.size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                stop = end
                with state.lock:
                    if state.cut_at is not None and start <= state.cut_at < end:
                        stop, state.cut_at = state.cut_at, None
                with state.path.open("rb") as f:
                    f.seek(start)
                    left = stop - start
                    while left:
                        block = f.read(min(1 << 20, left))
                        self.wfile.write(block)
                        left -= len(block)
                        with state.lock:
                            state.sent += len(block)
                if stop != end:
                    self.close_connection = True
                    self.connection.shutdown(2)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{path.name}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--chunk-mib", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.gguf"
        digest = hashlib.sha256()
        with src.open("wb") as f:
            for _ in range(args.size_mib):
                block = os.urandom(1 << 20)
                digest.update(block)
                f.write(block)
        server = Server(src)
        url = f"{server.url}#sha256={digest.hexdigest()}"
        size = server.size
        opts = Options(workers=args.workers, chunk_size=args.chunk_mib << 20)

        t = time.perf_counter()
        subprocess.run(["curl", "-sS", "-o", str(Path(tmp) / "curl.out"), server.url], check=True)
        curl_s = time.perf_counter() - t
        (Path(tmp) / "curl.out").unlink()

        t = time.perf_counter()
        pull_urls("bench", Path(tmp) / "a", [url], None, opts)
        pull_s = time.perf_counter() - t
        mib = size / (1 << 20)
        print(f"file: {mib:.0f} MiB from {server.url}")
        print(f"curl:            {curl_s:6.2f} s  {mib / curl_s:8.1f} MiB/s")
        print(
            f"mirror pull:     {pull_s:6.2f} s  {mib / pull_s:8.1f} MiB/s  "
            f"(incl. sha256; {args.workers} workers)"
        )
        print(f"ratio mirror/curl throughput: {curl_s / pull_s:.2f}")

        server.sent, server.cut_at = 0, size // 2
        dest = Path(tmp) / "b"
        try:
            pull_urls(
                "bench",
                dest,
                [url],
                None,
                Options(workers=args.workers, chunk_size=opts.chunk_size, retries=0),
            )
        except MirrorError as exc:
            print(f"interrupted at 50 %: {exc}")
        first = server.sent
        server.sent = 0
        result = pull_urls("bench", dest, [url], None, opts)
        second = server.sent
        refetched = first + second - size
        print(
            f"first run sent {first} bytes, resume sent {second} bytes "
            f"(resumed {result.stats.resumed_bytes} from disk)"
        )
        print(f"bytes re-fetched after the cut: {refetched} ({100 * refetched / size:.2f} % of the file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
