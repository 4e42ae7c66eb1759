"""The model hosts' egress allow-list (``playbooks/deploys/firewall.py``, ``nftables.conf.j2``).

A model host reaches its mirrors, DNS, NTP, apt's proxy, the addresses in ``egress_allow`` and
nothing else. The ruleset is checked three ways: as text, by the real ``nft -c``, and loaded for
real into a network namespace this test creates (a model host) wired to a second one (its
mirror, name server and an address it must not reach), where TCP and UDP connections to the
allowed destinations succeed and the others are refused. Nothing leaves the namespaces.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmkit.errors import ConfigError
from llmkit.lab import system
from playbooks.deploys import firewall as fw
from tests.playbooks.test_ollama import run_deploy

PEERS = {
    "proxy": [("proxy-1", {"ssh_hostname": "10.10.0.5"})],
    "monitoring": [("mon-1", {"ssh_hostname": "10.30.0.9"})],
}
MODEL_HOST: dict[str, Any] = {
    "admin_cidrs": ["10.99.0.0/24"],
    "model_port": 11434,
    "node_exporter_port": 9100,
    "gpu_exporter_port": 9835,
    "proxy_metrics_port": 3903,
    "models_mirror_url": "http://10.40.0.2:8080/models/",
    "ollama_mirror_url": "http://10.40.0.2:8080",
    "exporters_mirror_url": "https://[fd00:40::2]/releases",
    "models": [{"name": "tiny-r1", "source": "mirror"}],
    "ntp_servers": ["10.40.0.123"],
    "egress_allow": ["10.50.0.0/24:514/udp", "10.60.0.7:3100"],
}
FACTS = fw.HostEgress(
    nameservers=("10.40.0.53", "127.0.0.53"),
    apt_proxies=(("http", "http://10.40.0.1:3142"),),
    apt_sources=("http://deb.debian.org", "https://10.40.0.9"),
)


def ruleset(groups: list[str], data: dict[str, Any], facts: fw.HostEgress | None = FACTS) -> str:
    return fw.render_ruleset(fw.firewall_context("gpu-1", groups, data, PEERS, facts))


def output_chain(text: str) -> list[str]:
    chain = text.split("chain output {", 1)[1].split("\n    }", 1)[0]
    return [line.strip() for line in chain.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_a_model_host_may_reach_only_its_mirrors_dns_ntp_apt_and_egress_allow() -> None:
    chain = output_chain(ruleset(["gpu"], MODEL_HOST))
    assert chain[0] == "type filter hook output priority filter; policy drop;"
    assert chain[1:4] == ["ct state established,related accept", "ct state invalid drop", 'oif "lo" accept']
    # replies of the services the input chain admits (SSH, the model port, the exporters)
    assert [line for line in chain if " daddr " in line and " sport " in line] == [
        "ip daddr { 10.99.0.0/24 } tcp sport 22 accept",
        "ip daddr { 10.10.0.5/32 } tcp sport 11434 accept",
        "ip daddr { 10.30.0.9/32 } tcp sport 9100 accept",
        "ip daddr { 10.30.0.9/32 } tcp sport 9835 accept",
    ]
    accepts = [line for line in chain if " dport " in line and " daddr " in line]
    assert accepts == [
        # the host's name server (not 127.0.0.53: loopback is open anyway)
        "ip daddr { 10.40.0.53/32 } tcp dport 53 accept",
        "ip daddr { 10.40.0.53/32 } udp dport 53 accept",
        "ip daddr { 10.40.0.123/32 } udp dport 123 accept",  # ntp_servers
        "ip daddr { 10.40.0.9/32 } tcp dport 443 accept",  # an https apt source (no https proxy)
        "ip6 daddr { fd00:40::2/128 } tcp dport 443 accept",  # exporters_mirror_url
        "ip daddr { 10.50.0.0/24 } udp dport 514 accept",  # egress_allow
        "ip daddr { 10.60.0.7/32 } tcp dport 3100 accept",  # egress_allow
        "ip daddr { 10.40.0.1/32 } tcp dport 3142 accept",  # apt's proxy (deb.debian.org goes through it)
        "ip daddr { 10.40.0.2/32 } tcp dport 8080 accept",  # models_mirror_url, ollama_mirror_url
    ]
    assert chain[-2:] == ["meta l4proto tcp reject with tcp reset", "reject with icmpx type admin-prohibited"]


def test_dns_servers_from_host_data_replace_the_hosts_own() -> None:
    chain = output_chain(ruleset(["gpu"], {**MODEL_HOST, "dns_servers": ["10.70.0.53"]}))
    assert "ip daddr { 10.70.0.53/32 } udp dport 53 accept" in chain
    assert not any("10.40.0.53" in line for line in chain)
    none = output_chain(ruleset(["gpu"], {**MODEL_HOST, "dns_servers": []}))
    assert not any("dport 53" in line for line in none)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dns_servers": ["dns.internal"]}, "dns_servers"),
        ({"dns_servers": "10.0.0.53"}, "dns_servers"),
        ({"ntp_servers": ["10.0.0.0/24"]}, "ntp_servers"),
        ({"egress_allow": ["10.0.0.1"]}, "egress_allow"),  # no port
        ({"egress_allow": ["mirror.internal:443"]}, "egress_allow"),  # a name
        ({"egress_allow": ["10.0.0.1/24:443"]}, "egress_allow"),  # host bits set
        ({"egress_allow": ["10.0.0.1:70000"]}, "egress_allow"),
        ({"egress_allow": ["0.0.0.0/0:443"]}, "egress_allow"),  # everything is not an allow-list
        ({"egress_allow": ["[::]/0:443"]}, "egress_allow"),
        ({"egress_allow": ["fd00::1:443"]}, "egress_allow"),  # IPv6 needs brackets
        ({"egress_allow": "10.0.0.1:443"}, "egress_allow"),
        ({"egress_allow_any": "yes"}, "egress_allow_any"),
    ],
)
def test_egress_keys_are_validated_naming_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ruleset(["gpu"], {**MODEL_HOST, **overrides})
    assert str(caught.value).startswith(f"{key}: "), caught.value


def test_sources_by_name_are_warned_about_naming_the_key() -> None:
    data = {
        **MODEL_HOST,
        "models_mirror_url": "https://mirror.internal/",
        "ollama_mirror_url": None,
        "models": [{"name": "llama3.1:8b"}],
        "egress_allow": [],
    }
    facts = fw.HostEgress(apt_sources=("http://deb.debian.org",))
    warnings = fw.firewall_context("gpu-1", ["gpu"], data, PEERS, facts)["warnings"]
    assert [w.split(":", 1)[0] for w in warnings] == [
        "models_mirror_url",
        "ollama_mirror_url",
        "models",
        "egress_allow",
    ]
    assert "mirror.internal (port 443) is a name" in warnings[0]
    assert "github.com (port 443)" in warnings[1] and "ollama_mirror_url is not set" in warnings[1]
    assert "registry.ollama.ai" in warnings[2]
    assert "deb.debian.org (port 80)" in warnings[3] and "apt's sources" in warnings[3]
    # listed in egress_allow (on that port): no warning, and the addresses are allowed
    covered = {**data, "egress_allow": ["192.0.2.10:443", "192.0.2.20:80"]}
    context = fw.firewall_context("gpu-1", ["gpu"], covered, PEERS, facts)
    assert context["warnings"] == []


def test_an_s3_model_store_allows_the_instance_metadata_and_the_cli_endpoint() -> None:
    data = {**MODEL_HOST, "models_mirror_url": "s3://llmkit-prod-models/", "egress_allow": []}
    endpoint = fw.HostEgress(aws_endpoint="http://10.93.0.1:41000")
    chain = output_chain(ruleset(["model_deepseek_r1_32b"], data, endpoint))
    assert "ip daddr { 169.254.169.254/32 } tcp dport 80 accept" in chain
    assert "ip daddr { 10.93.0.1/32 } tcp dport 41000 accept" in chain
    # the regional endpoint (no AWS_ENDPOINT_URL): the S3 prefix list must come in egress_allow
    warnings = fw.firewall_context("gpu-1", ["gpu"], data, PEERS, fw.HostEgress())["warnings"]
    assert any(w.startswith("models_mirror_url: the model mirror: the S3 endpoint") for w in warnings)


@pytest.mark.parametrize(
    ("groups", "overrides", "note"),
    [
        (["proxy"], {}, "egress is open: not a model host"),
        (["gpu", "proxy"], {}, "egress is open: also a proxy or gateway"),
        (
            ["gpu"],
            {"egress_allow_any": True},
            "egress is open: egress_allow_any is true (an explicit choice)",
        ),
    ],
)
def test_other_hosts_and_the_explicit_opt_out_keep_open_egress(
    groups: list[str], overrides: dict[str, Any], note: str
) -> None:
    text = ruleset(groups, {**MODEL_HOST, "client_cidrs": ["203.0.113.0/24"], **overrides})
    assert f"# {note}" in text
    assert output_chain(text) == ["type filter hook output priority filter; policy accept;"]


def test_the_host_egress_fact(tmp_path: Path) -> None:
    fact = fw.HostEgressFacts()
    output = [
        "@@llmkit-resolv",
        "# generated",
        "nameserver 127.0.0.53",
        "options edns0",
        "nameserver 10.40.0.53",
        "nameserver fd00::53",
        "@@llmkit-apt-proxy",
        'Acquire::http::Proxy "http://10.40.0.1:3142";',
        'Acquire::https::Proxy "DIRECT";',
        "@@llmkit-apt-sources",
        "http://deb.debian.org",
        "@@llmkit-aws",
        "http://10.93.0.1:41000",
    ]
    assert fact.process(output) == fw.HostEgress(
        nameservers=("127.0.0.53", "10.40.0.53", "fd00::53"),
        apt_proxies=(("http", "http://10.40.0.1:3142"),),
        apt_sources=("http://deb.debian.org",),
        aws_endpoint="http://10.93.0.1:41000",
    )
    # the command, for real on this machine (Debian: apt-config, apt-get), exits 0 and parses
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True, env=env, check=True)
    parsed = fact.process(result.stdout.splitlines())
    assert parsed.aws_endpoint == "http://127.0.0.1:9"
    assert all(re.match(r"^[a-z+]+://[^/]+$", source) for source in parsed.apt_sources), parsed


def test_the_deploy_reads_the_hosts_view_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    data = {**MODEL_HOST, "models_mirror_url": "https://mirror.internal/", "egress_allow": []}
    answer = {"@@llmkit-resolv": ["@@llmkit-resolv", "nameserver 10.40.0.53", "@@llmkit-apt-proxy"]}
    commands = run_deploy(fw.firewall, data, answer)
    assert any("apt-get indextargets" in c for c in commands)
    assert "mirror.internal (port 443) is a name" in caplog.text


# --- nft ------------------------------------------------------------------------------------------

NFT = system.which("nft")
IP = system.which("ip")


@pytest.mark.needs("nft", "root")  # nft -c needs CAP_NET_ADMIN
def test_nft_accepts_the_egress_allow_list(tmp_path: Path) -> None:
    path = tmp_path / "nftables.conf"
    path.write_text(ruleset(["gpu"], MODEL_HOST))
    result = subprocess.run(
        [NFT or "nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    path.write_text(ruleset(["gpu"], MODEL_HOST).replace("udp dport 514", "udp dport 70000"))
    assert (
        subprocess.run([NFT or "nft", "-c", "-f", str(path)], capture_output=True, check=False).returncode
        != 0
    )


# --- for real, in network namespaces --------------------------------------------------------------

HOST_ADDRESS = "10.251.0.1"
MIRROR = "10.251.0.2"  # the mirror (8080) and the name server (53/udp)
FORBIDDEN = "10.251.0.3"  # listens too, but is no destination of the model host
SERVER = """
import socket, sys, threading
def tcp(address, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"ok"); c.close()
def udp(address, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((address, port))
    while True:
        data, peer = s.recvfrom(512); s.sendto(b"ok:" + data, peer)
for args in (("%(mirror)s", 8080), ("%(mirror)s", 9999), ("%(forbidden)s", 8080)):
    threading.Thread(target=tcp, args=args, daemon=True).start()
threading.Thread(target=udp, args=("%(mirror)s", 53), daemon=True).start()
threading.Thread(target=udp, args=("%(forbidden)s", 53), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""
SESSION_SERVER = """
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%(host)s", 22)); s.listen()
print("ready", flush=True)
c, _ = s.accept()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
try:
    c.sendall(b"after the ruleset")  # the host speaks first, as pyinfra's commands answer
    print(c.recv(16).decode(), flush=True)
except OSError as e:
    print(type(e).__name__, flush=True)
"""
SESSION_CLIENT = """
import socket
s = socket.create_connection(("%(host)s", 22), timeout=5)
print("connected", flush=True)
try:
    print(s.recv(64).decode(), flush=True)
    s.sendall(b"bye")
except OSError as e:
    print(type(e).__name__, flush=True)
"""
CLIENT = """
import socket, sys
kind, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        with socket.create_connection((address, port), timeout=3) as s:
            print(s.recv(16).decode())
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2); s.sendto(b"q", (address, port)); print(s.recv(64).decode())
except OSError as e:
    print(type(e).__name__)
"""


def netns(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IP or "ip", "netns", "exec", name, *args], capture_output=True, text=True, check=False, timeout=30
    )


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """A model host namespace and a servers namespace joined by a veth pair on 10.251.0.0/24."""
    tag = uuid.uuid4().hex[:6]
    model, servers = f"llmkit-eg-m-{tag}", f"llmkit-eg-s-{tag}"
    ip = IP or "ip"
    made: list[str] = []
    try:
        for name in (model, servers):
            subprocess.run([ip, "netns", "add", name], check=True)
            made.append(name)
            netns(name, ip, "link", "set", "lo", "up")
        subprocess.run(
            [
                ip,
                "link",
                "add",
                f"eg{tag}m",
                "netns",
                model,
                "type",
                "veth",
                "peer",
                "name",
                f"eg{tag}s",
                "netns",
                servers,
            ],
            check=True,
        )
        netns(model, ip, "addr", "add", f"{HOST_ADDRESS}/24", "dev", f"eg{tag}m")
        netns(model, ip, "link", "set", f"eg{tag}m", "up")
        for address in (MIRROR, FORBIDDEN):
            netns(servers, ip, "addr", "add", f"{address}/24", "dev", f"eg{tag}s")
        netns(servers, ip, "link", "set", f"eg{tag}s", "up")
        yield model, servers
    finally:
        for name in made:
            subprocess.run([ip, "netns", "del", name], check=False)


@pytest.mark.needs("nft", "ip", "root")
def test_in_a_network_namespace_only_the_allow_list_gets_out(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    model, servers = namespaces
    data = {
        **MODEL_HOST,
        "admin_cidrs": ["10.251.0.0/24"],
        "models_mirror_url": f"http://{MIRROR}:8080/models/",
        "ollama_mirror_url": f"http://{MIRROR}:8080",
        "exporters_mirror_url": f"http://{MIRROR}:8080",
        "dns_servers": [MIRROR],
        "ntp_servers": [],
        "egress_allow": [],
    }
    rules = tmp_path / "nftables.conf"
    rules.write_text(ruleset(["gpu"], data, fw.HostEgress()))
    script = tmp_path / "server.py"
    script.write_text(SERVER % {"mirror": MIRROR, "forbidden": FORBIDDEN})
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    server = subprocess.Popen(
        [IP or "ip", "netns", "exec", servers, sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        def connect(kind: str, address: str, port: int) -> str:
            return netns(model, sys.executable, str(client), kind, address, str(port)).stdout.strip()

        # before the ruleset: everything gets through (the test would prove nothing otherwise)
        assert connect("tcp", FORBIDDEN, 8080) == "ok"
        loaded = netns(model, NFT or "nft", "-f", str(rules))
        assert loaded.returncode == 0, loaded.stderr
        assert connect("tcp", MIRROR, 8080) == "ok"  # the mirror
        assert connect("udp", MIRROR, 53) == "ok:q"  # the name server
        assert connect("tcp", "127.0.0.1", 22) == "ConnectionRefusedError"  # loopback: open, no listener
        started = time.monotonic()
        assert connect("tcp", FORBIDDEN, 8080) == "ConnectionRefusedError"  # refused at once (reset)
        assert connect("tcp", MIRROR, 9999) == "ConnectionRefusedError"  # the mirror's address, another port
        assert time.monotonic() - started < 2.5
        assert connect("udp", FORBIDDEN, 53) == "PermissionError"  # rejected: admin-prohibited
        counted = netns(model, NFT or "nft", "list", "chain", "inet", "llmkit", "output").stdout
        assert "policy drop" in counted
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.needs("nft", "ip", "root")
def test_a_session_opened_before_the_first_load_survives_it(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    """The deploy's own SSH session: open before the ruleset exists, the host's next packet is new
    to conntrack; the output chain lets replies of admitted services out (not a reset)."""
    model, servers = namespaces
    data = {**MODEL_HOST, "admin_cidrs": ["10.251.0.0/24"], "egress_allow": []}
    rules = tmp_path / "nftables.conf"
    rules.write_text(ruleset(["gpu"], data, fw.HostEgress()))
    trigger = tmp_path / "loaded"
    (tmp_path / "server.py").write_text(SESSION_SERVER % {"host": HOST_ADDRESS})
    (tmp_path / "client.py").write_text(SESSION_CLIENT % {"host": HOST_ADDRESS})
    ip = IP or "ip"
    server = subprocess.Popen(
        [ip, "netns", "exec", model, sys.executable, str(tmp_path / "server.py"), str(trigger)],
        stdout=subprocess.PIPE,
        text=True,
    )
    client: subprocess.Popen[str] | None = None
    try:
        # The client starts only once the server listens: on a busy machine it could connect first.
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = subprocess.Popen(
            [ip, "netns", "exec", servers, sys.executable, str(tmp_path / "client.py")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        loaded = netns(model, NFT or "nft", "-f", str(rules))
        assert loaded.returncode == 0, loaded.stderr
        trigger.touch()
        assert client.stdout.readline().strip() == "after the ruleset"
        assert server.stdout.readline().strip() == "bye"
    finally:
        for process in (server, client):
            if process is not None:
                process.kill()
                process.wait(timeout=10)
