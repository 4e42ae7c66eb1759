"""The controller's services for the lab: a caching proxy for packages and the artefact mirror.

Both listen on the controller's lab address only (the bridge's ``.1``), never on 0.0.0.0, so
nothing outside the lab reaches them, and both run as processes of the lab (config, logs, pid
files and temporary files under the state directory), not as the system's services.

Decisions, for reviewers:

- **apt-cacher-ng** (port :data:`APT_PROXY_PORT`): an HTTP proxy that caches Debian packages and
  indexes in ``<cache>/apt-cacher-ng/<lab>`` (kept between labs, one directory per lab subnet so
  two labs never share one). HTTPS cannot be cached without breaking TLS, so the only HTTPS it
  carries is CONNECT pass-through to PyPI (:data:`PASS_THROUGH_HOSTS`, port 443 only); any other
  CONNECT is refused with 403. pip on a host therefore uses the proxy for PyPI but caches nothing
  on the controller. The report page is off. It runs as root: its directories may sit below a
  private (0700) state directory.
- **nginx** (port :data:`MIRROR_PORT`) serves ``<state>/mirror/`` read-only (GET and HEAD),
  with Range requests (nginx's static handler answers them with 206, so a download resumes) and
  an optional ``limit_rate`` (bytes per second) a test uses to interrupt a download halfway;
  :func:`set_mirror_rate` rewrites the config, checks it (``nginx -t``) and reloads (SIGHUP).
  Workers run as ``nobody`` when the mirror is reachable for that user, else as root (a private
  state directory, as in tests). No directory listings, no server tokens.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmkit.errors import ConfigError, LlmkitError
from llmkit.lab import network, system

APT_PROXY_PORT = 3142
MIRROR_PORT = 8080
PASS_THROUGH_HOSTS: tuple[str, ...] = ("pypi.org", "files.pythonhosted.org")
ACNG_SUPPORT_DIR = Path("/usr/lib/apt-cacher-ng")
NGINX_MIME_TYPES = Path("/etc/nginx/mime.types")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServicePaths:
    """Where one lab's services keep their files."""

    state_dir: Path
    cache_dir: Path
    tag: str

    @property
    def acng_conf_dir(self) -> Path:
        return self.state_dir / "apt-cacher-ng"

    @property
    def acng_cache(self) -> Path:
        return self.cache_dir / "apt-cacher-ng" / self.tag

    @property
    def acng_log_dir(self) -> Path:
        return self.state_dir / "logs" / "apt-cacher-ng"

    @property
    def acng_out(self) -> Path:
        return self.acng_log_dir / "stdout.log"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def mirror_dir(self) -> Path:
        return self.state_dir / "mirror"

    @property
    def nginx_conf(self) -> Path:
        return self.state_dir / "mirror-nginx.conf"

    @property
    def nginx_pid(self) -> Path:
        return self.run_dir / "mirror-nginx.pid"

    @property
    def nginx_error_log(self) -> Path:
        return self.state_dir / "logs" / "mirror-error.log"

    @property
    def nginx_access_log(self) -> Path:
        return self.state_dir / "logs" / "mirror-access.log"

    @property
    def nginx_out(self) -> Path:
        return self.state_dir / "logs" / "mirror-nginx.out"


# --- apt-cacher-ng --------------------------------------------------------------------------------


def pass_through_pattern(hosts: Sequence[str] = PASS_THROUGH_HOSTS) -> str:
    """apt-cacher-ng's PassThroughPattern: CONNECT to exactly these hosts, port 443."""
    return "^(" + "|".join(re.escape(h) for h in hosts) + "):443$"


def acng_conf(paths: ServicePaths, address: ipaddress.IPv4Address) -> str:
    return "\n".join(
        [
            "# Written by llmkit lab: this lab's apt-cacher-ng (not the system service).",
            f"CacheDir: {paths.acng_cache}",
            f"LogDir: {paths.acng_log_dir}",
            f"SupportDir: {ACNG_SUPPORT_DIR}",
            f"Port: {APT_PROXY_PORT}",
            f"BindAddress: {address}",
            f"PidFile: {paths.run_dir / 'apt-cacher-ng.pid'}",
            f"SocketPath: {paths.run_dir / 'apt-cacher-ng.socket'}",
            "ForeGround: 1",
            f"PassThroughPattern: {pass_through_pattern()}",
            "ExThreshold: 4",
            "VerboseLog: 1",
            "UnbufferLogs: 1",
            "",
        ]
    )


def acng_argv(paths: ServicePaths) -> list[str]:
    return ["apt-cacher-ng", "-c", str(paths.acng_conf_dir), "ForeGround=1"]


def acng_markers(paths: ServicePaths) -> list[str]:
    return ["apt-cacher-ng", str(paths.acng_conf_dir)]


def start_apt_proxy(paths: ServicePaths, address: ipaddress.IPv4Address) -> int:
    for directory in (paths.acng_conf_dir, paths.acng_cache, paths.acng_log_dir, paths.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    system.write_text(paths.acng_conf_dir / "acng.conf", acng_conf(paths, address))
    binary = system.which("apt-cacher-ng") or "apt-cacher-ng"
    return system.spawn([binary, *acng_argv(paths)[1:]], paths.acng_out)


# --- nginx mirror ---------------------------------------------------------------------------------


def check_rate(rate: int | None) -> int | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ConfigError("limit_rate", rate, "an integer >= 1 (bytes per second), or None", "not a rate")
    return rate


def _world_reachable(path: Path) -> bool:
    """Every directory from / down to ``path`` lets others traverse it (and ``path`` read it)."""
    current = Path(os.path.realpath(path))
    if not current.exists() or (current.stat().st_mode & 0o005) != 0o005:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in current.parents)


def nginx_conf(paths: ServicePaths, address: ipaddress.IPv4Address, rate: int | None, user: str) -> str:
    temp = paths.run_dir / "nginx-temp"
    mime = f'    include "{NGINX_MIME_TYPES}";\n' if NGINX_MIME_TYPES.is_file() else ""
    return (
        "# Written by llmkit lab: the lab's artefact mirror (read-only, lab address only).\n"
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        f"user {user};\n"
        f'pid "{paths.nginx_pid}";\n'
        f'error_log "{paths.nginx_error_log}" info;\n'
        "events { worker_connections 256; }\n"
        "http {\n"
        f"{mime}"
        "    default_type application/octet-stream;\n"
        f'    access_log "{paths.nginx_access_log}";\n'
        f'    client_body_temp_path "{temp}/body";\n'
        f'    proxy_temp_path "{temp}/proxy";\n'
        f'    fastcgi_temp_path "{temp}/fastcgi";\n'
        f'    uwsgi_temp_path "{temp}/uwsgi";\n'
        f'    scgi_temp_path "{temp}/scgi";\n'
        "    sendfile on;\n"
        "    server_tokens off;\n"
        "    autoindex off;\n"
        "    server {\n"
        f"        listen {address}:{MIRROR_PORT};\n"
        "        server_name _;\n"
        f'        root "{paths.mirror_dir}";\n'
        "        location / {\n"
        "            limit_except GET { deny all; }\n"
        f"            limit_rate {rate or 0};\n"
        "            try_files $uri =404;\n"
        "        }\n"
        "    }\n"
        "}\n"
    )


def nginx_markers(paths: ServicePaths) -> list[str]:
    return ["nginx", str(paths.nginx_conf)]


def _nginx(paths: ServicePaths, *args: str) -> subprocess.CompletedProcess[str]:
    binary = system.which("nginx") or "nginx"
    return subprocess.run(
        [binary, "-e", str(paths.nginx_error_log), "-c", str(paths.nginx_conf), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def write_nginx_conf(paths: ServicePaths, address: ipaddress.IPv4Address, rate: int | None) -> None:
    check_rate(rate)
    (paths.run_dir / "nginx-temp").mkdir(parents=True, exist_ok=True)
    paths.nginx_error_log.parent.mkdir(parents=True, exist_ok=True)
    user = "nobody nogroup" if _world_reachable(paths.mirror_dir) else "root root"
    system.write_text(paths.nginx_conf, nginx_conf(paths, address, rate, user))
    checked = _nginx(paths, "-t", "-q")
    if checked.returncode != 0:
        raise LlmkitError(f"nginx rejects {paths.nginx_conf}: {checked.stderr.strip()}")


def start_mirror(paths: ServicePaths, address: ipaddress.IPv4Address, rate: int | None = None) -> int:
    paths.mirror_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.mirror_dir, 0o755)
    write_nginx_conf(paths, address, rate)
    binary = system.which("nginx") or "nginx"
    return system.spawn(
        [binary, "-e", str(paths.nginx_error_log), "-c", str(paths.nginx_conf)], paths.nginx_out
    )


def reload_mirror(paths: ServicePaths, pid: int, address: ipaddress.IPv4Address, rate: int | None) -> None:
    """Rewrite the config with ``rate``, check it, SIGHUP the master, wait for a new worker."""
    if not system.matches(pid, nginx_markers(paths)):
        raise LlmkitError(f"the mirror's nginx (pid {pid}) is not running: see {paths.nginx_error_log}")
    before = set(system.children(pid))
    write_nginx_conf(paths, address, rate)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if set(system.children(pid)) - before:
            return
        time.sleep(0.1)
    raise LlmkitError(f"nginx (pid {pid}) did not reload within 15 s: see {paths.nginx_error_log}")


# --- both -----------------------------------------------------------------------------------------


def wait_listening(
    name: str, pid: int, address: str, port: int, log: Path, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not system.alive(pid):
            raise LlmkitError(f"{name} (pid {pid}) exited at start; see {log}:\n{system.tail(log)}")
        if network.tcp_open(address, port, timeout=0.5):
            return
        time.sleep(0.2)
    raise LlmkitError(
        f"{name} (pid {pid}) is not listening on {address}:{port} after {timeout:.0f} s; see {log}"
    )
