"""End to end on the lab: ``playbooks/site.py`` on proxy, gpu1 and gpu2, then the whole path.

The lab (``llmkit.lab``) boots three systemd-nspawn Debian 12 hosts on a private /24 that this
test creates and removes; the controller serves them a caching apt proxy and the artefact mirror.
Ollama is built from its Go module and the model is a tiny random qwen2 GGUF
(``llmkit.lab.builds``), installed by the ``ollama`` and ``models`` deploys exactly as an
official release and an air-gapped model would be. The gpu hosts have no GPU, so the driver and
CUDA deploys take their no-GPU path.

Every request goes to the lab's own addresses. The lab is torn down even when a check fails.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from llmkit.lab import builds
from llmkit.lab import lab as labmod
from llmkit.mirror.manifest import Manifest
from llmkit.mirror.pull import pull_local
from llmkit.mirror.push import push_dir
from playbooks.deploys.reverse_proxy import TLS_DIR, UPSTREAM_TLS_NAME
from tests.conftest import NEEDS_LAB

pytestmark = [pytest.mark.e2e, NEEDS_LAB]

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["proxy", "gpu1", "gpu2"]
SUBNET = "10.94.0.0/24"  # not `llmkit lab up`'s default, so an admin's lab is never touched
MODEL = "tiny-r1:latest"
RATE_PER_SECOND = 5
RATE_BURST = 10
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
SITE_TIMEOUT_S = 1800


def cache_dir() -> Path:
    return Path(os.environ.get("LLMKIT_LAB_CACHE", "/var/cache/llmkit/lab"))


def site_data(lab: labmod.Lab, **extra: Any) -> dict[str, Any]:
    """Site data for the lab's inventory: a small rate limit (the lab turns mutual TLS on itself)."""
    return {
        "rate_limit_per_second": RATE_PER_SECOND,
        "rate_limit_burst": RATE_BURST,
        **extra,
    }


def run_site(
    lab: labmod.Lab, *args: str, timeout: float = SITE_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``pyinfra <lab inventory> playbooks/site.py`` from the repository root, as an admin runs it."""
    return subprocess.run(
        [PYINFRA, "-y", *args, str(lab.inventory_path), "playbooks/site.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(result: subprocess.CompletedProcess[str], chars: int = 6000) -> str:
    return (result.stdout + result.stderr)[-chars:]


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, terminal_progress: Callable[[str], None]
) -> Iterator[labmod.Lab]:
    labmod.preflight()  # NEEDS_LAB has failed the test already when a program is missing
    state_dir = tmp_path_factory.mktemp("lab")
    try:
        made = labmod.up(HOSTS, state_dir, cache_dir=cache_dir(), subnet=SUBNET, progress=terminal_progress)
        builds.publish(made.mirror_dir, cache_dir(), progress=terminal_progress)
        labmod.write_inventory(made, site_data(made))
        yield made
    finally:
        removed = labmod.down(state_dir)
        print(f"lab down: removed {len(removed)} things", file=sys.stderr)


@pytest.fixture(scope="module")
def deployed(lab: labmod.Lab) -> subprocess.CompletedProcess[str]:
    result = run_site(lab)
    assert result.returncode == 0, tail(result)
    return result


# --- talking to the proxy from the controller (a client in client_cidrs) ------------------------


def client_context(lab: labmod.Lab, *, certificate: bool = True, tls12: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(lab.pki_dir / "ca.crt"))
    if certificate:
        context.load_cert_chain(str(lab.pki_dir / "lab-client.crt"), str(lab.pki_dir / "lab-client.key"))
    if tls12:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def proxy_request(
    lab: labmod.Lab,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    *,
    context: ssl.SSLContext | None = None,
    connection: http.client.HTTPSConnection | None = None,
    timeout: float = 120,
) -> tuple[int, bytes, str]:
    """(status, body, TLS version) of one request to the proxy on 443."""
    own = connection is None
    conn = connection or http.client.HTTPSConnection(
        lab.host("proxy").address, 443, context=context or client_context(lab), timeout=timeout
    )
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        sock = conn.sock
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else ""
        return response.status, data, version or ""
    finally:
        if own:
            conn.close()


def generate(lab: labmod.Lab, prompt: str = "Why is the sky blue?") -> dict[str, Any]:
    status, data, version = proxy_request(
        lab,
        "POST",
        "/api/generate",
        {"model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": 8, "seed": 7}},
    )
    assert status == 200, data[:500]
    assert version == "TLSv1.3"
    answer: dict[str, Any] = json.loads(data)
    return answer


# --- the checks (in the order) -----------------------------------------------------------


def test_generate_through_the_proxy_returns_tokens(lab: labmod.Lab, deployed: Any) -> None:
    answer = generate(lab)
    assert answer["model"] == MODEL
    assert answer["done"] is True
    assert answer["eval_count"] > 0
    assert answer["response"] != ""
    status, data, _ = proxy_request(
        lab,
        "POST",
        "/api/chat",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": False,
            "options": {"num_predict": 8, "seed": 7},
        },
    )
    assert status == 200, data[:500]
    chat = json.loads(data)
    assert chat["message"]["role"] == "assistant"
    assert chat["eval_count"] > 0


def test_tls12_and_requests_without_a_client_certificate_are_refused(lab: labmod.Lab, deployed: Any) -> None:
    with pytest.raises(ssl.SSLError):
        proxy_request(lab, "GET", "/api/version", context=client_context(lab, tls12=True), timeout=10)
    try:
        status, _, _ = proxy_request(
            lab, "GET", "/api/version", context=client_context(lab, certificate=False), timeout=10
        )
    except (ssl.SSLError, ConnectionError):
        return  # refused in the handshake
    assert status == 400  # nginx: "No required SSL certificate was sent"


def test_a_burst_above_the_rate_limit_gets_429_then_requests_succeed(lab: labmod.Lab, deployed: Any) -> None:
    time.sleep((RATE_BURST / RATE_PER_SECOND) + 1)  # an empty bucket, whatever ran before
    conn = http.client.HTTPSConnection(
        lab.host("proxy").address, 443, context=client_context(lab), timeout=30
    )
    try:
        statuses = [
            proxy_request(lab, "GET", "/api/version", connection=conn)[0] for _ in range(4 * RATE_BURST)
        ]
    finally:
        conn.close()
    assert statuses.count(429) > 0, statuses
    assert statuses.count(200) >= RATE_BURST, statuses
    assert set(statuses) <= {200, 429}, statuses
    time.sleep((RATE_BURST / RATE_PER_SECOND) + 1)
    assert proxy_request(lab, "GET", "/api/version")[0] == 200
    generate(lab)


def test_requests_still_succeed_with_ollama_stopped_on_gpu1(lab: labmod.Lab, deployed: Any) -> None:
    lab.ssh("gpu1", "systemctl stop ollama.service")
    try:
        assert lab.ssh("gpu1", "systemctl is-active ollama.service", check=False).stdout.strip() != "active"
        for i in range(4):
            assert generate(lab, f"question {i}")["eval_count"] > 0
    finally:
        lab.ssh("gpu1", "systemctl start ollama.service")


def test_model_port_is_reachable_from_the_proxy_only(lab: labmod.Lab, deployed: Any) -> None:
    for gpu in ("gpu1", "gpu2"):
        address = lab.host(gpu).address
        with pytest.raises(OSError):  # dropped by the host firewall: a timeout, never an answer
            socket.create_connection((address, 11434), timeout=3).close()
        # From the proxy, with the proxy's own client certificate, as nginx connects.
        tls = TLS_DIR
        code = lab.ssh(
            "proxy",
            f"curl --silent --output /dev/null --write-out '%{{http_code}}' --max-time 10 "
            f"--cert {tls}/server.crt --key {tls}/server.key --cacert {tls}/ca.crt --tlsv1.3 "
            f"--resolve {UPSTREAM_TLS_NAME}:11434:{address} https://{UPSTREAM_TLS_NAME}:11434/api/version",
            check=False,
        ).stdout.strip()
        assert code == "200", f"{gpu} from the proxy: HTTP {code}"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def changes_by_host(output: str) -> dict[str, int]:
    """Operations that executed commands, per host, from pyinfra's per-operation status lines.

    pyinfra logs ``[host] Success`` for an operation that ran commands and ``[host] No changes``
    for one that did not; every host that ran an operation appears.
    """
    counts: dict[str, int] = {}
    for line in ANSI.sub("", output).splitlines():
        match = re.match(r"^\s*\[([^\]]+)\]\s+(Success|No changes)\b", line)
        if match:
            counts.setdefault(match.group(1), 0)
            counts[match.group(1)] += match.group(2) == "Success"
    return counts


def test_a_second_site_run_changes_nothing(lab: labmod.Lab, deployed: Any) -> None:
    again = run_site(lab)
    assert again.returncode == 0, tail(again)
    counts = changes_by_host(again.stdout + again.stderr)
    assert set(counts) == set(HOSTS), tail(again)
    assert counts == dict.fromkeys(HOSTS, 0), tail(again)


def mirror_model(lab: labmod.Lab) -> dict[str, Any]:
    artifacts = json.loads((lab.mirror_dir / "artifacts.json").read_text())
    (model,) = [m for m in artifacts["models"] if m["name"] == MODEL]
    return dict(model)


def copy_on_mirror(lab: labmod.Lab, source: str, dest: str, *, flip_byte_at: int | None = None) -> Path:
    models = lab.mirror_dir / "models"
    target = models / dest
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(models / source, target)
    if flip_byte_at is not None:
        with target.open("r+b") as handle:
            handle.seek(flip_byte_at)
            byte = handle.read(1)
            handle.seek(flip_byte_at)
            handle.write(bytes([byte[0] ^ 0xFF]))
    return target


def test_a_tampered_model_fails_clearly_and_the_served_one_keeps_answering(
    lab: labmod.Lab, deployed: Any
) -> None:
    good = mirror_model(lab)
    tampered_file = f"tiny-r1-tampered/{Path(good['file']).name}"
    copy_on_mirror(lab, good["file"], tampered_file, flip_byte_at=good["size"] // 2)
    bad = {**good, "name": "tiny-r1-tampered:latest", "file": tampered_file}  # the good model's sha256
    labmod.write_inventory(lab, site_data(lab, models=[good, bad]))
    try:
        result = run_site(lab, "--limit", "gpu1")
        assert result.returncode != 0, tail(result)
        output = result.stdout + result.stderr
        assert Path(tampered_file).name in output and "sha256" in output, tail(result)
        listed = lab.ssh("gpu1", "OLLAMA_HOST=127.0.0.1:11434 ollama list").stdout
        assert "tiny-r1-tampered" not in listed
        assert "tiny-r1" in listed
        for _ in range(3):
            assert generate(lab)["eval_count"] > 0
    finally:
        labmod.write_inventory(lab, site_data(lab))


def test_a_model_pushed_by_llmkit_mirror_is_installed_by_its_manifest(
    lab: labmod.Lab, deployed: Any, tmp_path: Path
) -> None:
    """The on-prem path: `mirror pull --gguf` + `mirror push --to-dir` onto the mirror, and host
    data naming only the model: the host reads the manifest over HTTP and verifies against it."""
    good = mirror_model(lab)
    source = lab.mirror_dir / "models" / good["file"]
    modelfile = lab.mirror_dir / "models" / good["modelfile"]["file"]
    staged = tmp_path / "staged"
    pull_local("tiny-r1-pushed:latest", staged, [source], modelfile)
    published = push_dir(staged, lab.mirror_dir)  # <mirror>/models/tiny-r1-pushed-latest/
    assert published.prefix == "models/tiny-r1-pushed-latest/"
    # models_mirror_url is <mirror>/models/ in the lab: the manifest's path is relative to it
    pushed = {"name": "tiny-r1-pushed", "source": "mirror", "manifest": "tiny-r1-pushed-latest/manifest.json"}
    labmod.write_inventory(lab, site_data(lab, models=[good, pushed]))
    try:
        result = run_site(lab, "--limit", "gpu1")
        assert result.returncode == 0, tail(result)
    finally:
        labmod.write_inventory(lab, site_data(lab))
    assert mirror_bytes_sent(lab, "tiny-r1-pushed-latest/manifest.json"), "the host never read the manifest"
    assert [s for s, _ in mirror_bytes_sent(lab, "tiny-r1-pushed-latest/tiny-r1.gguf")] == [200]
    listed = lab.ssh("gpu1", "OLLAMA_HOST=127.0.0.1:11434 ollama list").stdout
    assert "tiny-r1-pushed:latest" in listed
    manifest = Manifest.read(staged)
    gguf = manifest.by_role("gguf")
    assert gguf is not None and gguf.sha256 == good["sha256"]
    lab.ssh("gpu1", f"test -f /var/lib/ollama/models/blobs/sha256-{gguf.sha256}")


def mirror_bytes_sent(lab: labmod.Lab, path: str) -> list[tuple[int, int]]:
    """(status, body bytes) of every mirror request for ``path``, from its access log (combined)."""
    entries = []
    for line in labmod.mirror_access_log(lab).read_text().splitlines():
        match = re.search(r'"GET (\S+) HTTP/[\d.]+" (\d{3}) (\d+)', line)
        if match and match.group(1).endswith(path):
            entries.append((int(match.group(2)), int(match.group(3))))
    return entries


def test_an_interrupted_model_download_resumes(lab: labmod.Lab, deployed: Any) -> None:
    good = mirror_model(lab)
    resume_file = f"tiny-r1-resume/{Path(good['file']).name}"
    copy_on_mirror(lab, good["file"], resume_file)
    model = {**good, "name": "tiny-r1-resume:latest", "file": resume_file}
    labmod.write_inventory(lab, site_data(lab, models=[good, model]))
    size = int(good["size"])
    staging = "/var/lib/ollama/llmkit-staging/tiny-r1-resume_latest"
    part = f"{staging}/{Path(resume_file).name}.part"
    labmod.set_mirror_rate(lab, max(size // 20, 4096))  # about 20 s for the whole file
    try:
        run = subprocess.Popen(
            [PYINFRA, "-y", "--limit", "gpu2", str(lab.inventory_path), "playbooks/site.py"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        fetched = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and fetched < size // 2:
            time.sleep(0.5)
            out = lab.ssh("gpu2", f"stat -c %s {part} 2>/dev/null || echo 0", check=False).stdout.strip()
            fetched = int(out or 0)
        assert fetched >= size // 2, "the download never got half way"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        lab.ssh("gpu2", f"pkill -KILL -f 'curl.*{Path(resume_file).parent.name}' || true", check=False)
        kept = int(lab.ssh("gpu2", f"stat -c %s {part}").stdout.strip())
        assert size // 2 <= kept < size
    finally:
        labmod.set_mirror_rate(lab, None)
    before = len(mirror_bytes_sent(lab, resume_file))
    try:
        result = run_site(lab, "--limit", "gpu2")
        assert result.returncode == 0, tail(result)
    finally:
        labmod.write_inventory(lab, site_data(lab))
    resumed = mirror_bytes_sent(lab, resume_file)[before:]
    assert resumed, "the second run fetched nothing"
    assert all(status == 206 for status, _ in resumed), resumed
    refetched = sum(sent for _, sent in resumed)
    assert refetched <= size - kept + 1024, (refetched, size, kept)  # not started from zero
    assert "tiny-r1-resume" in lab.ssh("gpu2", "OLLAMA_HOST=127.0.0.1:11434 ollama list").stdout


def test_the_proxy_exports_its_slo_metrics(lab: labmod.Lab, deployed: Any) -> None:
    generate(lab)
    address = lab.host("proxy").address
    metrics = lab.ssh("proxy", f"curl --silent --max-time 10 http://{address}:3903/metrics").stdout
    assert re.search(r'^llmkit_proxy_requests_total\{status="200"\} [1-9]', metrics, re.M), metrics[:2000]
    assert re.search(r"^llmkit_proxy_time_to_first_byte_seconds_count [1-9]", metrics, re.M), metrics[:2000]
