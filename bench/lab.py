"""Benchmarks on the on-prem lab: model fetch, site deploy scaling, and the latency the proxy adds.

Needs root, systemd-nspawn, debootstrap, apt-cacher-ng and nginx (``llmkit lab up`` says what is
missing). It brings up its own lab (proxy + ``--gpus`` gpu hosts) on ``--subnet``, prints the
figures, and tears the lab down whatever happens. Run from the repository root::

    uv run --frozen python bench/lab.py [--gpus 3] [--file-mib 256]

Figures:

1. **Model fetch** from the lab mirror to a gpu host: the playbooks' ``verified_download`` script
   (resume, retries, sha256, atomic rename) against plain ``curl -o`` of the same file on the same
   link, as MiB/s and their ratio; then the bytes re-fetched after the download was killed at 50 %
   (from the mirror's access log), against the bytes that were still missing.
2. **Site deploy**: the first run on 1 gpu host, then on ``--gpus`` fresh gpu hosts at once (wall
   time and how it grows), then the second, no-change run on those hosts relative to their first.
   A first run on the proxy warms the apt cache, so both first runs meet the same warm cache.
3. **Proxy latency**: p50/p99 of ``GET /api/version`` and of a one-token ``/api/generate`` through
   the proxy (TLS 1.3, client certificate, mTLS to the model host) from the controller, against the
   same requests straight to Ollama on a gpu host (on its loopback, from inside its network
   namespace), each over one kept-alive connection, by the same client code, after warm-up
   requests that have every gpu host load the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._lab_client import percentile  # noqa: E402
from llmkit.lab import builds  # noqa: E402
from llmkit.lab import lab as labmod  # noqa: E402
from playbooks.operations.download import download_script  # noqa: E402

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
CLIENT = REPO / "bench" / "_lab_client.py"
MODEL = "tiny-r1:latest"


def site(lab: labmod.Lab, hosts: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    limits = [arg for host in hosts for arg in ("--limit", host)]  # pyinfra: one --limit per host
    result = subprocess.run(
        [PYINFRA, "-y", *limits, str(lab.inventory_path), "playbooks/site.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"site deploy on {hosts} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return wall, result


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def changed_operations(output: str) -> int:
    """Operation runs that executed commands: pyinfra's ``[host] Success`` lines (colours removed)."""
    return sum(
        1 for line in ANSI.sub("", output).splitlines() if re.match(r"^\s*\[[^\]]+\]\s+Success\b", line)
    )


def bench_site(lab: labmod.Lab, gpus: list[str]) -> None:
    warm, _ = site(lab, ["proxy"])
    one, _ = site(lab, gpus[:1])
    many, first = site(lab, gpus[1:])
    if changed_operations(first.stdout + first.stderr) == 0:
        raise SystemExit(f"the first run on {gpus[1:]} changed nothing: did --limit match the hosts?")
    again, second = site(lab, gpus[1:])
    n = len(gpus) - 1
    print("site deploy (wall time, seconds)")
    print(f"  proxy first run (warms the apt cache)    {warm:8.1f}")
    print(f"  first run, 1 gpu host                     {one:8.1f}")
    print(f"  first run, {n} gpu hosts at once           {many:8.1f}   x{many / one:.2f} of 1 host")
    print(
        f"  second run, {n} gpu hosts (no change)      {again:8.1f}   {again / many:.0%} of their first run"
    )
    unchanged = changed_operations(second.stdout + second.stderr)
    print(f"  operations that changed something on the second run: {unchanged}")


def ssh_time(lab: labmod.Lab, host: str, command: str) -> float:
    """Seconds the command took on the host (timed there, so SSH setup is not counted)."""
    out = lab.ssh(host, f"s=$(date +%s%N); {command} >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))")
    return int(out.stdout.strip().splitlines()[-1]) / 1e6


def bench_fetch(lab: labmod.Lab, host: str, mib: int) -> None:
    blob = lab.mirror_dir / "bench" / "blob.bin"
    blob.parent.mkdir(parents=True, exist_ok=True)
    with blob.open("wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(1 << 20))
    size = blob.stat().st_size
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    url = f"{lab.mirror_url.rstrip('/')}/bench/blob.bin"
    dest = "/var/tmp/llmkit-bench/blob.bin"
    lab.ssh(host, "mkdir -p /var/tmp/llmkit-bench")
    script = download_script(url, dest, sha)
    plain, ours = [], []
    for _ in range(3):
        lab.ssh(host, f"rm -f {dest} {dest}.part /var/tmp/llmkit-bench/plain")
        plain.append(ssh_time(lab, host, f"curl --silent --fail --output /var/tmp/llmkit-bench/plain {url}"))
        ours.append(ssh_time(lab, host, f"sh -c {shlex.quote(script)}"))
    mib_s = size / (1 << 20)
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"model fetch from the mirror ({mib} MiB, median of 3)")
    print(f"  plain curl -o                            {mib_s / p:8.1f} MiB/s")
    share = f"{p / o:.0%} of curl's throughput"
    print(f"  verified_download (resume+sha256+mv)     {mib_s / o:8.1f} MiB/s   {share}")

    # Interrupted at 50 %: throttle the mirror, kill the transfer half way, fetch again unthrottled.
    lab.ssh(host, f"rm -f {dest} {dest}.part")
    labmod.set_mirror_rate(lab, max(size // 20, 65536))
    part = f"{dest}.part"
    try:
        lab.ssh(host, f"nohup sh -c {shlex.quote(script)} >/dev/null 2>&1 &")
        kept = 0
        deadline = time.monotonic() + 300
        while kept < size // 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            kept = int(lab.ssh(host, f"stat -c %s {part} 2>/dev/null || echo 0").stdout.strip() or 0)
        lab.ssh(host, "pkill -KILL -f 'curl.*blob.bin' || true", check=False)
        time.sleep(0.5)
        kept = int(lab.ssh(host, f"stat -c %s {part} 2>/dev/null || echo 0").stdout.strip() or 0)
    finally:
        labmod.set_mirror_rate(lab, None)
    log = labmod.mirror_access_log(lab)
    before = len(log.read_text().splitlines())
    lab.ssh(host, f"sh -c {shlex.quote(script)}")
    refetched = 0
    for line in log.read_text().splitlines()[before:]:
        if "/bench/blob.bin" in line:
            refetched += int(line.split('"')[2].split()[1])
    print(
        f"  killed at {kept / size:.0%}: re-fetched {refetched / (1 << 20):.1f} MiB of the "
        f"{(size - kept) / (1 << 20):.1f} MiB still missing (a restart from zero: {mib_s:.1f} MiB)"
    )


def client(argv: list[str], netns_host: str | None, lab: labmod.Lab) -> dict[str, Any]:
    command = [sys.executable, str(CLIENT), *argv]
    if netns_host is not None:
        result = lab.netns_exec(netns_host, command)
    else:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"latency client failed: {result.stdout}{result.stderr}")
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def bench_latency(lab: labmod.Lab, gpu: str, requests: int) -> None:
    proxy = lab.host("proxy").address
    tls = [
        "--ca",
        str(lab.pki_dir / "ca.crt"),
        "--cert",
        str(lab.pki_dir / "lab-client.crt"),
        "--key",
        str(lab.pki_dir / "lab-client.key"),
    ]
    print(f"latency the proxy adds (ms, {requests} requests each, one kept-alive connection)")
    for label, extra in (("GET /api/version", []), ("generate, 1 token", ["--generate", MODEL])):
        warmup = ["--warmup", str(4 * len(lab.hosts))]  # every gpu host has loaded the model
        via = client(
            ["--url", f"https://{proxy}", "--requests", str(requests), *warmup, *tls, *extra], None, lab
        )
        direct = client(["--url", "http://127.0.0.1:11434", "--requests", str(requests), *extra], gpu, lab)
        v50, v99 = percentile(via["ms"], 50), percentile(via["ms"], 99)
        d50, d99 = percentile(direct["ms"], 50), percentile(direct["ms"], 99)
        print(
            f"  {label:18} direct p50 {d50:7.2f} p99 {d99:7.2f} | via proxy p50 {v50:7.2f} p99 {v99:7.2f}"
            f" | added p50 {v50 - d50:+7.2f} p99 {v99 - d99:+7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=3, help="gpu hosts for the scaling run (default 3)")
    parser.add_argument("--file-mib", type=int, default=256, help="size of the fetched file (default 256)")
    parser.add_argument("--requests", type=int, default=200, help="requests per latency series")
    parser.add_argument("--subnet", default="10.96.0.0/24")
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/llmkit/bench-lab"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.gpus < 1:
        raise SystemExit("--gpus must be at least 1")

    labmod.preflight()
    gpus = [f"gpu{i}" for i in range(1, args.gpus + 2)]  # one for the 1-host run, --gpus for the rest
    start = time.perf_counter()
    lab = labmod.up(["proxy", *gpus], args.state_dir, cache_dir=args.cache_dir, subnet=args.subnet)
    try:
        print(f"lab up: {len(gpus) + 1} hosts in {time.perf_counter() - start:.1f} s")
        builds.publish(lab.mirror_dir, args.cache_dir)
        # Wide rate limits: the latency series must not meet the 429 path.
        labmod.write_inventory(
            lab,
            {
                "mtls_client_ca": str(lab.pki_dir / "ca.crt"),
                "rate_limit_per_second": 10000,
                "rate_limit_burst": 10000,
            },
        )
        bench_site(lab, gpus)
        bench_fetch(lab, gpus[0], args.file_mib)
        bench_latency(lab, gpus[0], args.requests)
    finally:
        labmod.down(args.state_dir)


if __name__ == "__main__":
    main()
