"""The real lab: ``up`` two hosts (proxy, gpu1), use them, ``down``, and check nothing is left.

Needs root, systemd-nspawn, debootstrap, apt-cacher-ng and nginx (skipped, with what to install,
otherwise). The lab lives on 10.98.0.0/24 with a temporary state directory, so it never meets a
lab on the default subnet; the image cache is the usual one (``$LLMKIT_LAB_CACHE`` or
/var/cache/llmkit/lab), so only the first run builds the image. ``down`` runs in the fixture's
finalizer even when a check fails. Every address used is the lab's own or loopback; the only
traffic leaving the controller is the caching proxy fetching Debian indexes and one PyPI page.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmkit.lab import lab as labmod
from llmkit.lab import machines, network, system
from tests.conftest import NEEDS_LAB

pytestmark = [pytest.mark.e2e, NEEDS_LAB]

SUBNET = "10.98.0.0/24"
HOSTS = ["proxy", "gpu1"]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, terminal_progress: Callable[[str], None]
) -> Iterator[labmod.Lab]:
    labmod.preflight()  # NEEDS_LAB has failed the test already when a program is missing
    state_dir = tmp_path_factory.mktemp("lab")
    try:
        started = time.monotonic()
        made = labmod.up(HOSTS, state_dir, subnet=SUBNET, progress=terminal_progress)
        print(f"lab up in {time.monotonic() - started:.1f} s ({made.timings})", file=sys.stderr)
        yield made
    finally:
        labmod.down(state_dir)  # idempotent: test_down_removes_everything already ran it when it passed


def test_up_records_the_lab(lab: labmod.Lab) -> None:
    assert lab.subnet == SUBNET and lab.controller_address == "10.98.0.1"
    assert [(h.name, h.address) for h in lab.hosts] == [("proxy", "10.98.0.10"), ("gpu1", "10.98.0.11")]
    assert labmod.load(lab.state_dir) == lab
    for host in lab.hosts:
        assert system.matches(host.pid, machines.nspawn_markers(host.root)), host
        assert host.veth and network.link_exists(host.veth)
    assert lab.inventory_path.is_file() and (lab.pki_dir / "ca.crt").is_file()
    assert (lab.pki_dir / "proxy.crt").is_file() and (lab.pki_dir / "lab-client.crt").is_file()


def test_ssh_works_on_every_host_each_its_own_machine(lab: labmod.Lab) -> None:
    seen_ids, seen_keys = set(), set()
    for host in lab.hosts:
        out = lab.ssh(
            host.name, "hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub"
        ).stdout
        name, machine_id, host_key = out.splitlines()
        assert name == host.name
        seen_ids.add(machine_id)
        seen_keys.add(host_key.split()[1])
        assert lab.ssh(host.name, "systemctl is-system-running --wait || true").stdout.strip() in (
            "running",
            "degraded",
        )
    assert len(seen_ids) == len(seen_keys) == len(lab.hosts)


def test_each_machine_has_its_own_network_namespace_and_no_way_out(lab: labmod.Lab) -> None:
    namespaces = {system.net_namespace(lab.leader_pid(h.name)) for h in lab.hosts}
    assert len(namespaces) == len(lab.hosts) and system.net_namespace(os.getpid()) not in namespaces
    for host in lab.hosts:
        routes = lab.ssh(host.name, "ip -4 route show table all").stdout
        assert "default" not in routes, routes
        assert f"{host.address}/24" in lab.ssh(host.name, "ip -4 -o addr show dev host0").stdout
        via_nsenter = lab.netns_exec(host.name, ["ip", "-4", "-o", "addr", "show", "dev", "host0"]).stdout
        assert f"{host.address}/24" in via_nsenter


def test_hosts_reach_each_other_and_the_controller(lab: labmod.Lab) -> None:
    assert "1 received" in lab.ssh("gpu1", "ping -c 1 -W 5 proxy").stdout
    assert "1 received" in lab.ssh("proxy", f"ping -c 1 -W 5 {lab.controller_address}").stdout
    connect = (
        "python3 -c \"import socket; socket.create_connection(('{0}', 22), timeout=5).close(); print('ok')\""
    )
    assert lab.ssh("gpu1", connect.format("10.98.0.10")).stdout.strip() == "ok"
    assert lab.ssh("proxy", connect.format("gpu1")).stdout.strip() == "ok"


def test_nftables_works_inside_a_machine(lab: labmod.Lab) -> None:
    lab.ssh("proxy", "nft add table inet llmkit_lab_check && nft list ruleset")
    assert "llmkit_lab_check" in lab.ssh("proxy", "nft list ruleset").stdout
    lab.ssh("proxy", "nft delete table inet llmkit_lab_check")
    # The machine's ruleset is its own: the controller's namespace does not see it.
    host_rules = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    assert "llmkit_lab_check" not in host_rules.stdout


def test_apt_get_update_goes_through_the_caching_proxy(lab: labmod.Lab) -> None:
    assert lab.apt_proxy_url in lab.ssh("gpu1", "apt-config dump Acquire::http::Proxy").stdout
    lab.ssh("gpu1", "apt-get update -q", timeout=600)
    logs = (lab.state_dir / "logs/apt-cacher-ng/apt-cacher.log").read_text()
    assert "bookworm" in logs and "InRelease" in logs
    cached = list((lab.cache_dir / "apt-cacher-ng" / "10-98-0").rglob("*InRelease*"))
    assert cached, "apt-cacher-ng cached no index"


def test_the_proxy_tunnels_to_pypi_only(lab: labmod.Lab) -> None:
    code = "curl -sS -o /dev/null -w '%{http_code}' --max-time 60 https://pypi.org/simple/pip/"
    assert (
        lab.ssh("proxy", f"{code} --proxy {lab.apt_proxy_url} --cacert /{machines.CA_BUNDLE_IN_HOST}").stdout
        == "200"
    )
    refused = lab.ssh(
        "proxy", f"curl -sS -o /dev/null --proxy {lab.apt_proxy_url} https://example.com/", check=False
    )
    assert refused.returncode != 0 and "403" in refused.stderr
    # No route out: the kernel refuses before any packet is sent (nothing outside is contacted).
    no_route = lab.ssh("proxy", "ip route get 1.1.1.1", check=False)
    assert no_route.returncode != 0 and "unreachable" in no_route.stderr


def test_the_services_listen_on_the_lab_address_only(lab: labmod.Lab) -> None:
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    for port in (3142, 8080):
        local = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
        assert f"{lab.controller_address}:{port}" in local
        assert f"0.0.0.0:{port}" not in local and f"*:{port}" not in local and f"[::]:{port}" not in local


def test_the_mirror_serves_ranges_and_resumes_after_a_slow_interrupted_download(lab: labmod.Lab) -> None:
    blob = lab.mirror_dir / "check" / "blob.bin"
    blob.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(400_000)
    blob.write_bytes(data)
    blob.chmod(0o644)
    url = f"{lab.mirror_url}/check/blob.bin"
    ranged = lab.ssh("gpu1", f"curl -sS -r 100-199 -o /tmp/r -w '%{{http_code}}\\n' {url}; wc -c < /tmp/r")
    assert ranged.stdout.split() == ["206", "100"]
    assert lab.ssh("gpu1", f"curl -sS -o /dev/null -w '%{{http_code}}' -X PUT {url}").stdout == "403"

    labmod.set_mirror_rate(lab, 40_000)
    assert labmod.load(lab.state_dir).mirror_rate == 40_000
    try:
        slow = lab.ssh("gpu1", f"rm -f /tmp/blob; curl -sS --max-time 2 -o /tmp/blob {url}", check=False)
        assert slow.returncode == 28  # timed out halfway
        kept = int(lab.ssh("gpu1", "stat -c %s /tmp/blob").stdout)
        assert 0 < kept < len(data)
    finally:
        labmod.set_mirror_rate(lab, None)
    resumed = lab.ssh("gpu1", f"curl -sS -C - -o /tmp/blob -w '%{{http_code}}\\n' {url}; sha256sum /tmp/blob")
    code, digest = resumed.stdout.split()[:2]
    assert code == "206" and digest == hashlib.sha256(data).hexdigest()
    log = labmod.mirror_access_log(lab).read_text()
    assert re.search(rf'"GET /check/blob.bin HTTP/1.1" 206 {len(data) - kept} ', log), log[-500:]


def test_pyinfra_reaches_every_host_with_the_inventory(lab: labmod.Lab) -> None:
    done = subprocess.run(
        [PYINFRA, "-y", str(lab.inventory_path), "exec", "--", "hostname"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for host in lab.hosts:
        assert f"[{host.name}]" in done.stdout + done.stderr


def test_status_lists_machines_interfaces_and_services(lab: labmod.Lab) -> None:
    report = labmod.status(lab.state_dir)
    assert report.healthy
    assert [(h.name, h.address, h.running, h.ssh) for h in report.hosts] == [
        ("proxy", "10.98.0.10", True, True),
        ("gpu1", "10.98.0.11", True, True),
    ]
    assert {i.name for i in report.interfaces} == {lab.bridge, *(h.veth for h in lab.hosts if h.veth)}
    assert f"{lab.controller_address}/24" in report.interfaces[0].detail
    assert {s.name: (s.running, s.listening) for s in report.services} == {
        "apt-cacher-ng": (True, True),
        "nginx mirror": (True, True),
    }
    cli = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", "lab", "status", "--state-dir", str(lab.state_dir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "proxy" in cli.stdout and "gpu1" in cli.stdout and "lab is up" in cli.stdout


def test_down_removes_everything(lab: labmod.Lab) -> None:
    pids = [h.pid for h in lab.hosts] + [s.pid for s in lab.services.values()]
    started = time.monotonic()
    removed = labmod.down(lab.state_dir)
    print(f"lab down in {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert any(item.startswith("machine proxy") for item in removed)
    assert any(item.startswith("bridge ") for item in removed)
    assert not any(system.alive(pid) for pid in pids)
    assert not network.link_exists(lab.bridge)
    assert not any(network.link_exists(h.veth) for h in lab.hosts if h.veth)
    assert not [
        p for p in Path("/sys/class/net").iterdir() if p.name.startswith("vb-") and "10-98-0" in p.name
    ]
    assert not any(h.root.exists() for h in lab.hosts)
    assert not system.mounts_below(lab.state_dir)
    assert not lab.state_file.exists() and not lab.inventory_path.exists()
    nspawns = subprocess.run(["pgrep", "-af", "systemd-nspawn"], capture_output=True, text=True).stdout
    assert str(lab.state_dir) not in nspawns
    network_gone = ipaddress.IPv4Network(SUBNET)
    assert not network.subnet_conflicts(network_gone)
    assert machines.image_path(lab.cache_dir).is_dir()  # the image cache is kept
    assert labmod.down(lab.state_dir) == []  # idempotent
