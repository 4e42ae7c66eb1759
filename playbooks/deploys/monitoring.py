"""Monitoring: node_exporter everywhere, the NVIDIA GPU exporter on GPU hosts, Prometheus to scrape them.

Decisions, for reviewers:

- **Pinned, verified binaries**: node_exporter and ``utkuozdemir/nvidia_gpu_exporter`` are the
  releases pinned in ``llmkit/data/artifacts.yaml`` (``llmkit.artifacts.artifact``), fetched by
  ``verified_download`` (resume, retries, sha256 check, atomic rename), checked again right before
  ``tar`` runs, unpacked into a temporary directory and renamed to
  ``/opt/llmkit/<exporter>/<version>`` only when complete and the binary runs (``--version``). An
  architecture without a pinned checksum is refused before anything runs.
- **Hardened units**: ``DynamicUser`` (no account to manage, nothing it owns survives) in a
  private user namespace, no capabilities, ``NoNewPrivileges``, ``ProtectSystem=strict``,
  kernel/cgroup/clock protection, other users' processes hidden, restricted socket families, a
  system call allow-list, ``MemoryDenyWriteExecute`` for node_exporter and mtail, and
  ``IPAddressDeny=any`` but the loopback, the unit's own address and the monitoring hosts. The
  GPU exporter keeps access to the NVIDIA devices only (``nvidia-smi`` opens ``/dev/nvidia*``)
  and runs nvidia-smi once per scrape (every :data:`SCRAPE_INTERVAL`). Each unit's
  ``systemd-analyze security`` score is recorded in ``tests/playbooks/test_unit_hardening.py``.
- **Listening on the host's address, never on all interfaces**: the exporters bind to the
  host's address as the inventory knows it (``ssh_hostname``, else the inventory name) when that
  is an IP address, else to the IPv4 default route's source address (a fact), which is what
  Prometheus resolves the name to. The host firewall (``firewall.py``) admits the exporter ports
  from the monitoring hosts only. Scrapes are plain HTTP inside that boundary.
- **The distro's ``prometheus-node-exporter`` is removed** where present: it listens on
  ``*:9100`` and would collide with ours; Prometheus is installed without recommends so it is not
  pulled back in.
- **Prometheus** (distro package, ``monitoring`` group): scrape targets from the inventory
  (every host's node_exporter, the gpu and ``model_<slug>`` hosts' GPU exporters, each with a
  ``host`` label), alert rules for the service-level targets whose numbers are the defaults of
  ``llmkit.config.Alarms`` (p99 latency, 5xx share, GPU utilization band, each for
  ``sustained_minutes``), plus an exporter-down alert. Its web UI listens on
  :data:`PROMETHEUS_LISTEN` only (reach it through an SSH tunnel). ``promtool check config`` (which
  also checks the rule file) runs before the reload, both only when a file changed; a failing check
  stops the deploy before the reload, so the running Prometheus keeps its last good configuration.
- **Air-gapped hosts**: with ``exporters_mirror_url`` the releases come from
  ``<mirror>/<name>/v<version>/<file>`` instead of GitHub, with the same pinned checksums;
  ``node_exporter_sha256`` / ``gpu_exporter_sha256`` name another checksum for a mirror's own
  build (the lab builds node_exporter from its Go module).
- **The GPU exporter needs a GPU**: on a gpu host with no NVIDIA device on the PCI bus (the same
  fact ``gpu_driver`` reads) it is skipped and said so; its scrape target then reports down.
- **SLO metrics from the proxy's access log**: on proxy hosts, Debian's ``mtail`` (pinned by the
  distribution, no download) tails the JSON access log and exports :data:`REQUESTS_METRIC` (a
  counter by ``status``), :data:`DURATION_METRIC` (whole request) and :data:`LATENCY_METRIC`
  (time to the upstream's response header: the first token when streaming, the same quantity as
  the ALB's TargetResponseTime on AWS) on ``proxy_metrics_port`` at the host's address. The p99
  alert reads :data:`LATENCY_METRIC`, the error alert :data:`REQUESTS_METRIC`. mtail runs as a
  dynamic user in group ``adm`` (the log's group) under the same hardening as the exporters.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Arch
from pyinfra.operations import apt, files, server, systemd

from llmkit.artifacts import Artifact, artifact, is_sha256
from llmkit.config import Alarms
from llmkit.errors import ConfigError
from llmkit.groups import MONITORING_GROUP, PROXY_GROUP, is_model_host
from playbooks.deploys.firewall import peer_address
from playbooks.deploys.host_paths import mirror_location
from playbooks.deploys.reverse_proxy import PROXY_ACCESS_LOG
from playbooks.deploys.sandbox import ip_allow
from playbooks.facts.nvidia import NvidiaGpus
from playbooks.facts.tls import DefaultRouteSource
from playbooks.operations.download import download_release
from playbooks.render import render

INSTALL_ROOT = "/opt/llmkit"
UNIT_DIR = "/etc/systemd/system"


PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_RULES = "/etc/prometheus/llmkit-rules.yml"
PROMETHEUS_DEFAULTS = "/etc/default/prometheus"
PROMETHEUS_LISTEN = "127.0.0.1:9090"
PROMETHEUS_RETENTION = "30d"
SCRAPE_INTERVAL = "15s"
#: The distro's node exporter: listens on *:9100, removed in favour of ours.
DISTRO_NODE_EXPORTER = "prometheus-node-exporter"

#: The SLO metrics the proxy's mtail program exports (see the module docstring).
LATENCY_METRIC = "llmkit_proxy_time_to_first_byte_seconds"
DURATION_METRIC = "llmkit_proxy_request_duration_seconds"
REQUESTS_METRIC = "llmkit_proxy_requests_total"
#: Histogram bucket upper bounds (seconds): first-byte times, and whole (long, streamed) requests.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
MTAIL = "/usr/bin/mtail"
MTAIL_PROGRAM_DIR = "/etc/llmkit/mtail"
MTAIL_PROGRAM = f"{MTAIL_PROGRAM_DIR}/llmkit_proxy.mtail"
PROXY_METRICS_SERVICE = "llmkit-proxy-metrics.service"
PROXY_METRICS_JOB = "proxy"
#: nvidia_gpu_exporter's utilization gauge (0..1).
GPU_UTILIZATION_METRIC = "nvidia_smi_utilization_gpu_ratio"
RATE_WINDOW = "5m"

RESTART_SEC = 5
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
START_LIMIT_INTERVAL_S = 300
START_LIMIT_BURST = 5


# --- exporters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exporter:
    """One exporter: its pinned artefact, binary, unit, template and the host data key of its port."""

    artifact_name: str
    binary_name: str
    service: str
    template: str
    port_key: str
    job: str

    def install_dir(self, version: str) -> str:
        return f"{INSTALL_ROOT}/{self.artifact_name}/{version}"

    def binary(self, version: str) -> str:
        return f"{self.install_dir(version)}/{self.binary_name}"

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.service}"


NODE_EXPORTER = Exporter(
    artifact_name="node_exporter",
    binary_name="node_exporter",
    service="llmkit-node-exporter.service",
    template="node_exporter.service.j2",
    port_key="node_exporter_port",
    job="node",
)
GPU_EXPORTER = Exporter(
    artifact_name="nvidia_gpu_exporter",
    binary_name="nvidia_gpu_exporter",
    service="llmkit-gpu-exporter.service",
    template="gpu_exporter.service.j2",
    port_key="gpu_exporter_port",
    job="nvidia_gpu",
)


def is_gpu_host(groups: Iterable[str]) -> bool:
    return is_model_host(groups)


def port(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(key, value, "a TCP port 1-65535", "invalid port")
    return value


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


def socket_address(address: str, port_number: int) -> str:
    """``address:port``, IPv6 in brackets."""
    parsed = _ip(address)
    if parsed is not None and parsed.version == 6:
        return f"[{parsed}]:{port_number}"
    return f"{address}:{port_number}"


def inventory_address(name: str, data: Mapping[str, Any]) -> str:
    """How the inventory reaches a host: ``ssh_hostname``, else its inventory name."""
    return str(data.get("ssh_hostname") or name)


def listen_address(name: str, data: Mapping[str, Any], route_source: str | None) -> str:
    """The address the exporters bind to: the inventory address if it is an IP, else the host's
    ``model_bind_address`` (the AWS hosts' user data sets it from the instance metadata: their
    inventory name is ``@local``), else the source address of the IPv4 default route."""
    address = (
        _ip(inventory_address(name, data)) or _ip(data.get("model_bind_address") or "") or _ip(route_source)
    )
    if address is None:
        raise ConfigError(
            "ssh_hostname",
            data.get("ssh_hostname") or name,
            "an IP address, a model_bind_address, or a host with an IPv4 default route",
            f"host {name}: cannot tell which address the exporters should listen on",
        )
    if address.is_unspecified:
        raise ConfigError(
            "ssh_hostname", str(address), "a specific address", "exporters never listen on every interface"
        )
    return str(address)


def needs_route_fact(name: str, data: Mapping[str, Any]) -> bool:
    return _ip(inventory_address(name, data)) is None


@dataclass(frozen=True)
class Release:
    version: str
    url: str
    sha256: str
    file: str
    size_budget: int


#: Host data naming another checksum for each exporter (a mirror's own build).
SHA256_KEYS = {"node_exporter": "node_exporter_sha256", "nvidia_gpu_exporter": "gpu_exporter_sha256"}
MIRROR_KEY = "exporters_mirror_url"
_MIRROR = re.compile(r"^(https?|file)://\S+$")


def release(art: Artifact, arch: str, data: Mapping[str, Any] | None = None) -> Release:
    """The pinned release for ``arch``, from GitHub or ``exporters_mirror_url``.

    ConfigError when no checksum is known (neither pinned nor in host data), or on a bad mirror
    URL or checksum in host data.
    """
    data = data or {}
    sha_key = SHA256_KEYS.get(art.name, f"{art.name}_sha256")
    override = data.get(sha_key)
    if override is not None:
        sha: str | None = str(override).strip().lower()
        if not is_sha256(sha):
            raise ConfigError(sha_key, override, "64 hex digits", "invalid checksum")
    else:
        sha = art.sha256(arch)
    if sha is None:
        raise ConfigError(
            "arch",
            arch,
            "an architecture with a pinned checksum in llmkit/data/artifacts.yaml",
            f"no published checksum is pinned for {art.name} {art.version} on {arch}; "
            f"refusing to install it unverified (or set {sha_key})",
        )
    mirror = data.get(MIRROR_KEY)
    if mirror is not None and not _MIRROR.match(str(mirror)):
        raise ConfigError(MIRROR_KEY, mirror, "an http(s):// or file:// URL", "invalid mirror")
    mirror_location(MIRROR_KEY, mirror)
    return Release(
        version=art.version,
        url=art.mirror_url(str(mirror), arch) if mirror else art.url(arch),
        sha256=sha,
        file=art.file(arch),
        size_budget=art.download_budget_bytes,
    )


def extract_command(archive: str, sha256: str, install_dir: str, binary_name: str) -> str:
    """Check the archive once more, unpack it aside, keep only the binary, rename into place."""
    parent, name = install_dir.rsplit("/", 1)
    return (
        "set -eu; "
        f"if ! echo '{sha256}  {archive}' | sha256sum --check --status; then "
        f"echo 'llmkit: {archive} does not have sha256 {sha256}; refusing to extract it' >&2; exit 1; fi; "
        f"mkdir -p {parent}; "
        f"tmp=$(mktemp -d {parent}/.{name}.XXXXXX); trap 'rm -rf \"$tmp\"' EXIT; "
        f'tar -xzf {archive} -C "$tmp" --no-same-owner --no-same-permissions; '
        f'bin=$(find "$tmp" -maxdepth 2 -type f -name {binary_name} | head -n 1); '
        f'if [ -z "$bin" ]; then echo "llmkit: no {binary_name} in {archive}" >&2; exit 1; fi; '
        f'mkdir "$tmp/out"; install -m 0755 "$bin" "$tmp/out/{binary_name}"; '
        f'"$tmp/out/{binary_name}" --version >/dev/null 2>&1; '
        f'chmod 0755 "$tmp/out"; rm -rf {install_dir}; mv "$tmp/out" {install_dir}; '
        f"rm -f {archive}"
    )


def unit_ip_allow(listen: str, scrapers: Iterable[str]) -> list[str]:
    """IPAddressAllow= of an exporter's unit: the loopback, its own address, the monitoring hosts."""
    address = listen.rpartition(":")[0].strip("[]")
    return ip_allow([address], scrapers)


def scraper_addresses(members: Iterable[InventoryHost]) -> list[str]:
    """The monitoring hosts' addresses (IP addresses, as the host firewall requires them)."""
    return [
        str(peer_address(m.name, m.data, MONITORING_GROUP).network_address)
        for m in members
        if MONITORING_GROUP in m.groups
    ]


def unit_context(
    exporter: Exporter, version: str, listen: str, scrapers: Iterable[str] = ()
) -> dict[str, Any]:
    return {
        "version": version,
        "binary": exporter.binary(version),
        "listen": listen,
        "ip_allow": unit_ip_allow(listen, scrapers),
        "nvidia_smi": "/usr/bin/nvidia-smi",
        "restart_sec": RESTART_SEC,
        "start_limit_interval_s": START_LIMIT_INTERVAL_S,
        "start_limit_burst": START_LIMIT_BURST,
    }


def render_unit(exporter: Exporter, version: str, listen: str, scrapers: Iterable[str] = ()) -> str:
    return render(exporter.template, **unit_context(exporter, version, listen, scrapers))


# --- proxy SLO metrics (mtail) --------------------------------------------------------------------


def mtail_buckets(bounds: Iterable[float]) -> str:
    """mtail's bucket list for these upper bounds.

    mtail 3.0.0~rc50 (Debian 12) takes the first listed value as the exclusive lower bound of the
    first bucket: listed plainly, an observation of exactly 0 (nginx logs ``0.000`` for a request
    it answers itself, such as a 429) would be counted but land in no bucket, and ``+Inf`` would
    disagree with ``_count``. A leading -1 makes the first bucket ``(-1, first]``.
    """
    return ", ".join(["-1", *(_number(float(b)) for b in bounds)])


def render_mtail_program() -> str:
    return render(
        "llmkit_proxy.mtail.j2",
        requests_metric=REQUESTS_METRIC,
        duration_metric=DURATION_METRIC,
        latency_metric=LATENCY_METRIC,
        duration_buckets=mtail_buckets(DURATION_BUCKETS),
        latency_buckets=mtail_buckets(LATENCY_BUCKETS),
    )


def render_proxy_metrics_unit(listen: str, scrapers: Iterable[str] = ()) -> str:
    address, _, port_text = listen.rpartition(":")
    return render(
        "proxy_metrics.service.j2",
        ip_allow=unit_ip_allow(listen, scrapers),
        mtail=MTAIL,
        program_dir=MTAIL_PROGRAM_DIR,
        access_log=PROXY_ACCESS_LOG,
        address=address.strip("[]"),
        port=port_text,
        restart_sec=RESTART_SEC,
        start_limit_interval_s=START_LIMIT_INTERVAL_S,
        start_limit_burst=START_LIMIT_BURST,
    )


def _proxy_metrics(listen: str, scrapers: list[str]) -> None:
    apt.packages(
        name="mtail from the distro (reads the proxy's access log)",
        packages=["mtail"],
        no_recommends=True,
        update=True,
        cache_time=3600,
    )
    files.directory(
        name="mtail program directory", path=MTAIL_PROGRAM_DIR, user="root", group="root", mode="755"
    )
    changes = [
        files.put(
            name="mtail program: the proxy's SLO metrics",
            src=StringIO(render_mtail_program()),
            dest=MTAIL_PROGRAM,
            user="root",
            group="root",
            mode="0644",
        ),
        files.put(
            name="Proxy metrics systemd unit",
            src=StringIO(render_proxy_metrics_unit(listen, scrapers)),
            dest=f"{UNIT_DIR}/{PROXY_METRICS_SERVICE}",
            user="root",
            group="root",
            mode="0644",
        ),
    ]
    changed = any(op.will_change for op in changes)
    systemd.service(
        name="Run the proxy metrics exporter (mtail)",
        service=PROXY_METRICS_SERVICE,
        running=True,
        enabled=True,
        daemon_reload=changes[1].will_change,
        restarted=changed,
    )


# --- Prometheus -----------------------------------------------------------------------------------


def _number(value: float) -> str:
    """A threshold as PromQL reads it: 2.0 -> 2, 0.001 -> 0.001."""
    return format(value, "g")


def rules_context(alarms: Alarms | None = None) -> dict[str, Any]:
    """The rule file's context; the thresholds are :class:`llmkit.config.Alarms`' (defaults unless given)."""
    a = alarms or Alarms()
    low, high = a.gpu_utilization_band_percent
    by_host = f"avg by (host) ({GPU_UTILIZATION_METRIC})"
    return {
        "sustained_minutes": a.sustained_minutes,
        "p99_latency_seconds": _number(a.p99_latency_seconds),
        "error_rate_percent": _number(a.error_rate_percent),
        "gpu_low_percent": low,
        "gpu_high_percent": high,
        "latency_metric": LATENCY_METRIC,
        "requests_metric": REQUESTS_METRIC,
        "p99_expr": (
            f"histogram_quantile(0.99, sum by (le) (rate({LATENCY_METRIC}_bucket[{RATE_WINDOW}]))) "
            f"> {_number(a.p99_latency_seconds)}"
        ),
        "error_expr": (
            f'sum(rate({REQUESTS_METRIC}{{status=~"5.."}}[{RATE_WINDOW}])) '
            f"/ sum(rate({REQUESTS_METRIC}[{RATE_WINDOW}])) > {_number(a.error_rate_percent / 100)}"
        ),
        "gpu_high_expr": f"{by_host} > {_number(high / 100)}",
        "gpu_low_expr": f"{by_host} < {_number(low / 100)}",
        "down_expr": f'up{{job=~"{NODE_EXPORTER.job}|{GPU_EXPORTER.job}|{PROXY_METRICS_JOB}"}} == 0',
    }


def render_rules(alarms: Alarms | None = None) -> str:
    return render("prometheus-rules.yml.j2", **rules_context(alarms))


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: list[str]
    data: Mapping[str, Any]


def scrape_target(member: InventoryHost, port_key: str) -> str:
    address = inventory_address(member.name, member.data)
    if _ip(address) is None and not _HOST_NAME.fullmatch(address):
        raise ConfigError(
            "ssh_hostname",
            address,
            "an IP address or DNS name Prometheus can reach",
            f"host {member.name}: cannot scrape it",
        )
    return socket_address(address, port(member.data, port_key))


def _scrape_groups(members: Iterable[InventoryHost], port_key: str) -> list[dict[str, Any]]:
    return [{"targets": [scrape_target(m, port_key)], "labels": {"host": m.name}} for m in members]


def prometheus_context(hosts: Iterable[InventoryHost], rules_path: str = PROMETHEUS_RULES) -> dict[str, Any]:
    """Scrape jobs: node_exporter on every host, the GPU exporter on GPU hosts, mtail on proxies."""
    members = list(hosts)
    jobs = []
    for exporter, selected in (
        (NODE_EXPORTER, members),
        (GPU_EXPORTER, [m for m in members if is_gpu_host(m.groups)]),
    ):
        jobs.append({"name": exporter.job, "groups": _scrape_groups(selected, exporter.port_key)})
    proxies = [m for m in members if PROXY_GROUP in m.groups]
    jobs.append({"name": PROXY_METRICS_JOB, "groups": _scrape_groups(proxies, "proxy_metrics_port")})
    return {
        "scrape_interval": SCRAPE_INTERVAL,
        "rules_path": rules_path,
        "self_target": PROMETHEUS_LISTEN,
        "jobs": jobs,
    }


def render_prometheus(hosts: Iterable[InventoryHost], rules_path: str = PROMETHEUS_RULES) -> str:
    return render("prometheus.yml.j2", **prometheus_context(hosts, rules_path))


def render_prometheus_defaults() -> str:
    return render("prometheus.default.j2", listen=PROMETHEUS_LISTEN, retention=PROMETHEUS_RETENTION)


def inventory_hosts() -> list[InventoryHost]:
    """Every host of the inventory, with its groups and data, in inventory order."""
    return [InventoryHost(name=m.name, groups=list(m.groups), data=m.data.dict()) for m in host.inventory]


# --- operations -----------------------------------------------------------------------------------


def _install_exporter(
    exporter: Exporter, arch: str, listen: str, data: Mapping[str, Any], scrapers: list[str]
) -> None:
    rel = release(artifact(exporter.artifact_name), arch, data)
    binary = exporter.binary(rel.version)
    binary_changed = False
    if host.get_fact(File, path=binary) is None:
        archive = download_release(
            exporter.artifact_name, rel.version, rel.url, rel.file, rel.sha256, rel.size_budget
        )
        server.shell(
            name=f"Unpack {exporter.artifact_name} {rel.version} into {exporter.install_dir(rel.version)}",
            commands=[
                extract_command(archive, rel.sha256, exporter.install_dir(rel.version), exporter.binary_name)
            ],
        )
        binary_changed = True
    else:
        host.noop(f"{exporter.artifact_name} {rel.version} is already in {exporter.install_dir(rel.version)}")
    unit = files.put(
        name=f"{exporter.artifact_name} systemd unit",
        src=StringIO(render_unit(exporter, rel.version, listen, scrapers)),
        dest=exporter.unit_path,
        user="root",
        group="root",
        mode="0644",
    )
    systemd.service(
        name=f"Run {exporter.artifact_name}",
        service=exporter.service,
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        restarted=unit.will_change or binary_changed,
    )


def _prometheus(hosts: list[InventoryHost]) -> None:
    apt.packages(
        name="Prometheus from the distro (without recommends)",
        packages=["prometheus"],
        no_recommends=True,
        update=True,
        cache_time=3600,
    )
    changes = [
        files.put(
            name="Prometheus listen address and retention",
            src=StringIO(render_prometheus_defaults()),
            dest=PROMETHEUS_DEFAULTS,
            user="root",
            group="root",
            mode="0644",
        ),
        files.put(
            name="Prometheus alert rules (llmkit service-level targets)",
            src=StringIO(render_rules()),
            dest=PROMETHEUS_RULES,
            user="root",
            group="root",
            mode="0644",
        ),
        files.put(
            name="Prometheus scrape configuration (from the inventory)",
            src=StringIO(render_prometheus(hosts)),
            dest=PROMETHEUS_CONFIG,
            user="root",
            group="root",
            mode="0644",
        ),
    ]

    def changed() -> bool:
        return any(op.did_change() for op in changes)

    defaults_changed = changes[0].did_change
    server.shell(
        name="Check the Prometheus configuration and rules",
        commands=[f"promtool check config {PROMETHEUS_CONFIG}"],
        _if=changed,
    )
    # A new listen address needs a restart; configuration and rules only a reload (SIGHUP).
    systemd.service(
        name="Restart Prometheus", service="prometheus.service", restarted=True, _if=defaults_changed
    )
    systemd.service(
        name="Reload Prometheus", service="prometheus.service", running=True, reloaded=True, _if=changed
    )
    systemd.service(
        name="Prometheus running and enabled", service="prometheus.service", running=True, enabled=True
    )


@deploy("Monitoring")
def monitoring() -> None:
    """node_exporter on every host, the GPU exporter on GPU hosts, Prometheus on monitoring hosts."""
    data = host.data.dict()
    route = host.get_fact(DefaultRouteSource) if needs_route_fact(host.name, data) else None
    address = listen_address(host.name, data, route)
    arch = str(host.get_fact(Arch))
    members = inventory_hosts()
    scrapers = scraper_addresses(members)

    apt.packages(
        name=f"Remove the distro's {DISTRO_NODE_EXPORTER} (*:9100)",
        packages=[DISTRO_NODE_EXPORTER],
        present=False,
    )
    node_listen = socket_address(address, port(data, NODE_EXPORTER.port_key))
    _install_exporter(NODE_EXPORTER, arch, node_listen, data, scrapers)
    if is_gpu_host(host.groups):
        if host.get_fact(NvidiaGpus):
            gpu_listen = socket_address(address, port(data, GPU_EXPORTER.port_key))
            _install_exporter(GPU_EXPORTER, arch, gpu_listen, data, scrapers)
        else:
            host.noop("No NVIDIA GPU on the PCI bus: the GPU exporter is not installed")
    if PROXY_GROUP in host.groups:
        _proxy_metrics(socket_address(address, port(data, "proxy_metrics_port")), scrapers)
    if MONITORING_GROUP in host.groups:
        _prometheus(members)
