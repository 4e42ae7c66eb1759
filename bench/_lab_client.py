"""The latency client of ``bench/lab.py``: N sequential requests over one kept-alive connection.

Run by the benchmark twice with the same code: on the controller against the proxy (TLS 1.3 with
a client certificate), and inside a gpu host's network namespace against Ollama on its loopback.
Prints ``{"ms": [...]}``, one figure per request after ``--warmup`` unmeasured ones (enough to
reach, and load the model on, every host behind the proxy).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import ssl
import time
from urllib.parse import urlsplit


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--generate", metavar="MODEL", default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    parts = urlsplit(args.url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=args.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, parts.port or 443, context=context, timeout=120
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=120)

    if args.generate:
        body = json.dumps(
            {
                "model": args.generate,
                "prompt": "Hi",
                "stream": False,
                "options": {"num_predict": 1, "seed": 1},
            }
        ).encode()
        method, path, headers = "POST", "/api/generate", {"Content-Type": "application/json"}
    else:
        body, method, path, headers = None, "GET", "/api/version", {}

    times = []
    for i in range(args.warmup + args.requests):
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {response.status}")
        if i >= args.warmup:
            times.append(elapsed)
    conn.close()
    print(json.dumps({"ms": times}))


if __name__ == "__main__":
    main()
