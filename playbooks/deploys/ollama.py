"""Ollama: the pinned release, verified before it is unpacked, run by a sandboxed systemd unit.

Decisions:
- The release is ``llmkit/data/artifacts.yaml``'s pin (``ollama_version`` may choose another,
  then ``ollama_sha256`` is required). It comes from the official GitHub release or, with
  ``ollama_mirror_url``, from ``<mirror>/ollama/v<version>/<file>`` (or, when the mirror URL
  holds ``{version}``/``{arch}``/``{file}``, from that template filled in); either way it must have
  the pinned sha256 (``ollama_sha256`` overrides it for a mirror's own build). An architecture
  or version without a known checksum is refused before anything runs: a download is never
  trusted on its own say-so.
- The tarball is fetched by ``verified_download`` (free-disk preflight, resume, retries, sha256
  check, atomic rename), checked again right before ``tar`` runs, and unpacked into a temporary
  directory that is renamed to ``/opt/ollama/<version>`` only when complete. Old versions stay
  for a rollback; ``/usr/local/bin/ollama`` links to the current one.
- The server runs as the system user ``ollama`` (no login shell, home ``/var/lib/ollama``)
  under a unit that drops every capability, makes the file system read-only except the home
  and model directories, hides /home, and restricts sockets to IP and Unix ones.
- ``ollama_models_path`` (chown'ed to ``ollama``, writable in the unit) and its parent (the
  models deploy's staging directory, the model cache's mount point) must be accepted host paths
  (``host_paths``: below ``/var/lib/ollama``, ``/var/lib/llmkit``, ``/opt/llmkit``, ``/srv/``,
  ``/mnt/``, ``/data/``); the host resolves them first and a link elsewhere is refused, before
  any operation. ``ollama_mirror_url`` as ``file://`` is checked the same way.
- It listens on ``ollama_bind:ollama_port`` (127.0.0.1:11434): the TLS terminator is the only
  way in from the network. A wildcard address (0.0.0.0, ::) is refused unless
  ``ollama_allow_any_address`` is explicitly true.
- The unit restarts only when the unit or the binary changed; after a start or restart the
  deploy waits until ``/api/version`` answers.
- The unit's sandbox (``templates/ollama.service.j2`` says what each setting is for and what it
  cannot have) admits only the NVIDIA devices (``DevicePolicy=closed``), a system call allow-list,
  a private user namespace and the IP addresses it serves or pulls from (``IPAddressAllow``). On
  hosts with an NVIDIA GPU the deploy loads ``nvidia-uvm`` at boot (modules-load.d) and now, so
  the device exists when the unit starts.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Arch
from pyinfra.operations import files, server, systemd

from llmkit.artifacts import artifact, canonical_arch, is_sha256
from llmkit.errors import ConfigError
from playbooks.deploys.host_paths import ResolvedPaths, check_resolved, host_path, mirror_location
from playbooks.deploys.sandbox import ANY, egress_allow, ip_allow
from playbooks.facts.nvidia import NvidiaGpus
from playbooks.operations.download import download_release
from playbooks.render import render

OLLAMA_USER = "ollama"
OLLAMA_HOME = "/var/lib/ollama"
INSTALL_ROOT = "/opt/ollama"
BIN_LINK = "/usr/local/bin/ollama"
UNIT_PATH = "/etc/systemd/system/ollama.service"
NOLOGIN = "/usr/sbin/nologin"
DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 11434
DEFAULT_MODELS_PATH = "/var/lib/ollama/models"
LIMIT_NOFILE = 65536
RESTART_SEC = 5
START_LIMIT_INTERVAL_S = 300
START_LIMIT_BURST = 5
READY_TIMEOUT_S = 120
NVIDIA_MODULES_CONF = "/etc/modules-load.d/llmkit-nvidia.conf"
NVIDIA_MODULES_TEXT = "# Managed by llmkit (playbooks/deploys/ollama.py).\nnvidia\nnvidia-uvm\n"
# Go durations as OLLAMA_KEEP_ALIVE takes them ("5m", "1h30m", "-1"), or plain seconds.
_KEEP_ALIVE = re.compile(r"^-?(\d+|(\d+(\.\d+)?(ns|us|ms|s|m|h))+)$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(-rc\d+)?$")


def _positive_int(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "a positive integer", "invalid Ollama setting")
    return value


def unit_ip_allow(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, registry: bool, data: Mapping[str, Any] | Any
) -> list[str]:
    """The unit's IPAddressAllow=: the loopback; the bind address when it is another one (``any``
    when Ollama listens on every interface: then whoever reaches the port is a client); with
    registry models, the addresses egress_allow lists on port 443 (the registry, by address)."""
    if address.is_unspecified:
        return [ANY]
    registry_addresses = [str(d.network) for d in egress_allow(data) if d.port == 443] if registry else []
    return ip_allow([str(address)], registry_addresses)


def models_path_of(data: Mapping[str, Any] | Any) -> str:
    """``ollama_models_path`` (default :data:`DEFAULT_MODELS_PATH`), and its parent, accepted host
    paths (``host_paths``): the models directory is chown'ed to Ollama and writable in its unit,
    the parent holds the staging directory and is the model cache volume's mount point."""
    path = host_path("ollama_models_path", data.get("ollama_models_path") or DEFAULT_MODELS_PATH)
    host_path("ollama_models_path", posixpath.dirname(path), role="its parent (staging, model cache mount)")
    return path


def host_writes(settings: OllamaSettings) -> dict[str, str]:
    """The host paths from host data the model host deploys write to: path -> what it is."""
    return {
        settings.models_path: "models directory (ollama_models_path)",
        posixpath.dirname(settings.models_path): "parent of ollama_models_path",
    }


def check_on_host(settings: OllamaSettings) -> None:
    """Refuse, before any operation, a models path the host resolves (a link) outside the roots."""
    paths = host_writes(settings)
    resolved: dict[str, str] = host.get_fact(ResolvedPaths, paths=tuple(paths))
    check_resolved("ollama_models_path", paths, resolved)


@dataclass(frozen=True)
class OllamaSettings:
    version: str
    sha256: str | None  # ollama_sha256 from host data (None: the pinned checksum)
    mirror_url: str | None
    bind: str
    port: int
    models_path: str
    num_parallel: int | None
    max_loaded_models: int | None
    keep_alive: str | None
    registry: bool = False  # a model comes from the Ollama registry (the server pulls it)
    ip_allow: tuple[str, ...] = ("localhost",)  # IPAddressAllow= of the unit

    @property
    def listen(self) -> str:
        """``OLLAMA_HOST``: ``127.0.0.1:11434``, ``[::1]:11434``."""
        address = ipaddress.ip_address(self.bind)
        return f"[{address}]:{self.port}" if address.version == 6 else f"{address}:{self.port}"

    @property
    def client_host(self) -> str:
        """Where local clients (the CLI, the readiness check) reach the server."""
        address = ipaddress.ip_address(self.bind)
        if address.is_unspecified:
            return f"127.0.0.1:{self.port}" if address.version == 4 else f"[::1]:{self.port}"
        return self.listen

    @property
    def api_version_url(self) -> str:
        return f"http://{self.client_host}/api/version"

    @property
    def install_dir(self) -> str:
        return f"{INSTALL_ROOT}/{self.version}"

    @property
    def binary(self) -> str:
        return f"{self.install_dir}/bin/ollama"


def ollama_settings(data: Mapping[str, Any] | Any) -> OllamaSettings:
    """Validated Ollama settings from host data (anything with ``.get``); ConfigError on a bad one."""
    pinned = artifact("ollama")
    version = str(data.get("ollama_version") or pinned.version)
    if not _VERSION.match(version):
        raise ConfigError("ollama_version", version, "a release number such as 0.13.3", "invalid version")
    sha = data.get("ollama_sha256")
    if sha is not None:
        sha = str(sha).strip().lower()
        if not is_sha256(sha):
            raise ConfigError("ollama_sha256", data.get("ollama_sha256"), "64 hex digits", "invalid checksum")
    mirror = data.get("ollama_mirror_url")
    if mirror is not None and not re.match(r"^(https?|file)://\S+$", str(mirror)):
        raise ConfigError("ollama_mirror_url", mirror, "an http(s):// or file:// URL", "invalid mirror")
    mirror_location("ollama_mirror_url", mirror)
    models_path = models_path_of(data)

    bind = str(data.get("ollama_bind") or DEFAULT_BIND)
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise ConfigError("ollama_bind", bind, "an IPv4 or IPv6 address", "invalid bind address") from None
    if address.is_unspecified and data.get("ollama_allow_any_address") is not True:
        raise ConfigError(
            "ollama_bind",
            bind,
            "a specific address (default 127.0.0.1)",
            "refusing to expose Ollama, which has no authentication, on every interface; "
            "set ollama_allow_any_address: true to accept that",
        )
    port = data.get("ollama_port")
    port = DEFAULT_PORT if port is None else port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError("ollama_port", port, "1-65535", "invalid port")

    num_parallel = data.get("ollama_num_parallel")
    if num_parallel is None:
        models = data.get("models") or []
        first = models[0] if models and isinstance(models[0], Mapping) else {}
        num_parallel = first.get("concurrency")
    keep_alive = data.get("ollama_keep_alive")
    if keep_alive is not None:
        keep_alive = str(keep_alive)
        if not _KEEP_ALIVE.match(keep_alive):
            raise ConfigError("ollama_keep_alive", keep_alive, "a duration such as 5m, 24h or -1", "invalid")
    models = [m for m in data.get("models") or [] if isinstance(m, Mapping)]
    registry = any((m.get("source") or "registry") == "registry" for m in models)
    return OllamaSettings(
        registry=registry,
        ip_allow=tuple(unit_ip_allow(address, registry, data)),
        version=version,
        sha256=sha,
        mirror_url=str(mirror).rstrip("/") if mirror else None,
        bind=str(address),
        port=port,
        models_path=models_path,
        num_parallel=_positive_int("ollama_num_parallel", num_parallel),
        max_loaded_models=_positive_int("ollama_max_loaded_models", data.get("ollama_max_loaded_models")),
        keep_alive=keep_alive,
    )


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str
    file: str
    size_budget: int


def ollama_download(settings: OllamaSettings, arch: str) -> Download:
    """Where the release tarball comes from and the sha256 it must have.

    ConfigError when no checksum is known (another version than the pin, or an architecture
    whose published checksum is not pinned) and host data gives none in ``ollama_sha256``.
    """
    pinned = artifact("ollama")
    art = (
        pinned
        if settings.version == pinned.version
        else pinned.model_copy(update={"version": settings.version})
    )
    file = art.file(arch)
    sha = settings.sha256 or (pinned.sha256(arch) if art is pinned else None)
    if sha is None:
        raise ConfigError(
            "ollama_sha256",
            None,
            "the sha256 of the release file, from the release's sha256sum.txt",
            f"no published checksum is pinned for Ollama {settings.version} {canonical_arch(arch)} ({file}); "
            "refusing to install it unverified",
        )
    if settings.mirror_url and "{" in settings.mirror_url:
        # A URL template ("https://m/ollama/{version}/{file}"), as group_data documents.
        arch_name = art.arch_names[canonical_arch(arch)]
        url = settings.mirror_url.format(version=settings.version, arch=arch_name, file=file)
    elif settings.mirror_url:
        url = art.mirror_url(settings.mirror_url, arch)
    else:
        url = art.url(arch)
    return Download(url=url, sha256=sha, file=file, size_budget=art.download_budget_bytes)


def unit_context(settings: OllamaSettings) -> dict[str, Any]:
    extra: list[tuple[str, str]] = []
    if settings.num_parallel is not None:
        extra.append(("OLLAMA_NUM_PARALLEL", str(settings.num_parallel)))
    if settings.max_loaded_models is not None:
        extra.append(("OLLAMA_MAX_LOADED_MODELS", str(settings.max_loaded_models)))
    if settings.keep_alive is not None:
        extra.append(("OLLAMA_KEEP_ALIVE", settings.keep_alive))
    rw = [OLLAMA_HOME] + (
        [settings.models_path] if not settings.models_path.startswith(OLLAMA_HOME + "/") else []
    )
    return {
        "version": settings.version,
        "user": OLLAMA_USER,
        "home": OLLAMA_HOME,
        "binary": settings.binary,
        "listen": settings.listen,
        "models_path": settings.models_path,
        "extra_env": extra,
        "read_write_paths": rw,
        "registry": settings.registry,
        "ip_allow": settings.ip_allow,
        "limit_nofile": LIMIT_NOFILE,
        "restart_sec": RESTART_SEC,
        "start_limit_interval_s": START_LIMIT_INTERVAL_S,
        "start_limit_burst": START_LIMIT_BURST,
    }


def render_unit(settings: OllamaSettings) -> str:
    return render("ollama.service.j2", **unit_context(settings))


def extract_command(archive: str, sha256: str, install_dir: str) -> str:
    """Check the archive's sha256 once more, unpack into a temporary dir, rename it into place."""
    parent = install_dir.rsplit("/", 1)[0]
    name = install_dir.rsplit("/", 1)[1]
    return (
        "set -eu; "
        f"if ! echo '{sha256}  {archive}' | sha256sum --check --status; then "
        f"echo 'llmkit: {archive} does not have sha256 {sha256}; refusing to extract it' >&2; exit 1; fi; "
        f"mkdir -p {parent}; "
        f"tmp=$(mktemp -d {parent}/.{name}.XXXXXX); trap 'rm -rf \"$tmp\"' EXIT; "
        f'tar -xzf {archive} -C "$tmp" --no-same-owner --no-same-permissions; '
        'test -x "$tmp/bin/ollama"; '
        'chmod 0755 "$tmp"; chmod -R u+rwX,go+rX,go-w "$tmp"; '
        f'rm -rf {install_dir}; mv "$tmp" {install_dir}; trap - EXIT; '
        f"rm -f {archive}"
    )


def wait_command(settings: OllamaSettings) -> str:
    """Poll ``/api/version`` (every 2 s, each try at most 5 s) until it answers or the timeout passes."""
    return (
        "curl --fail --silent --show-error --output /dev/null --max-time 5 "
        f"--retry {READY_TIMEOUT_S // 2} --retry-delay 2 --retry-all-errors "
        f"--retry-max-time {READY_TIMEOUT_S} {settings.api_version_url}"
    )


@deploy("Ollama")
def ollama() -> None:
    settings = ollama_settings(host.data)
    check_on_host(settings)
    arch = str(host.get_fact(Arch))
    download = ollama_download(settings, arch)

    server.group(name="Ollama system group", group=OLLAMA_USER, system=True)
    server.user(
        name="Ollama system user (no login shell)",
        user=OLLAMA_USER,
        group=OLLAMA_USER,
        system=True,
        home=OLLAMA_HOME,
        shell=NOLOGIN,
        create_home=False,
    )
    for path in dict.fromkeys([OLLAMA_HOME, settings.models_path]):
        files.directory(
            name=f"Ollama directory {path}", path=path, user=OLLAMA_USER, group=OLLAMA_USER, mode="0750"
        )

    binary_changed = False
    if host.get_fact(File, path=settings.binary) is None:
        archive = download_release(
            "ollama", settings.version, download.url, download.file, download.sha256, download.size_budget
        )
        server.shell(
            name=f"Unpack Ollama {settings.version} into {settings.install_dir}",
            commands=[extract_command(archive, download.sha256, settings.install_dir)],
        )
        binary_changed = True
    else:
        host.noop(f"Ollama {settings.version} is already unpacked in {settings.install_dir}")

    # The unit admits the NVIDIA devices by driver name (DeviceAllow=char-nvidia-uvm...), which
    # systemd resolves when the unit starts: the unified-memory module must be loaded by then (at
    # boot, and now), not on demand by CUDA (nvidia-modprobe is setuid: NoNewPrivileges stops it).
    modules_changed = False
    if host.get_fact(NvidiaGpus):
        modules = files.put(
            name="Load the NVIDIA modules at boot, before Ollama",
            src=StringIO(NVIDIA_MODULES_TEXT),
            dest=NVIDIA_MODULES_CONF,
            user="root",
            group="root",
            mode="0644",
        )
        server.shell(name="Load nvidia-uvm", commands=["modprobe nvidia-uvm"], _if=modules.did_change)
        modules_changed = modules.will_change

    link = files.link(name=f"Link {BIN_LINK}", path=BIN_LINK, target=settings.binary)
    unit = files.put(
        name="Ollama systemd unit",
        src=StringIO(render_unit(settings)),
        dest=UNIT_PATH,
        user="root",
        group="root",
        mode="0644",
    )
    unit_changed = unit.will_change
    service = systemd.service(
        name="Run Ollama",
        service="ollama.service",
        running=True,
        enabled=True,
        daemon_reload=unit_changed,
        restarted=unit_changed or binary_changed or link.will_change or modules_changed,
    )
    # Only after a (re)start: an unchanged, running server is not polled, so a run that changes
    # nothing reports no change.
    server.shell(
        name=f"Wait until Ollama answers on {settings.api_version_url}",
        commands=[wait_command(settings)],
        _if=service.did_change,
    )
