"""The lab's machines: a cached Debian image, one copy of it per host, booted with systemd-nspawn.

Decisions, for reviewers:

- **Image**: ``debootstrap --variant=minbase`` of Debian 12 (bookworm) with :data:`IMAGE_PACKAGES`
  from the controller's own Debian mirror (read from ``/etc/apt/sources.list.d``). It is cached
  in ``<cache>/images/<suite>-<key>``, the key a hash of the suite, variant, architecture and
  package list, so a change of any of them builds a new image (and removes the outdated one). It
  is built in a temporary directory next to it and renamed into place only when complete, under
  a lock: a crash or a concurrent ``up`` never leaves a half image under the real name. The image
  holds no SSH host keys and no machine id: every host gets its own.
- **Hosts**: a copy (``cp -a --reflink=auto``) of the image per host, with its host name, a new
  machine id, new sshd host keys, the lab's public key in root's ``authorized_keys`` (root logs
  in with keys only, sshd's default), the networkd file for its static address (no default
  route), the caching proxy for apt (and for pip, with the controller's CA bundle, since HTTPS
  reaches PyPI through the controller's egress) and the lab's ``/etc/hosts``.
- **Boot**: ``systemd-nspawn -b --register=no --keep-unit`` (there is no system bus or machined
  on the controller), a private network namespace with a veth into the lab's bridge
  (``--network-bridge``), no journal link into the controller, no resolv.conf from it (the hosts
  need no DNS: every way out is the proxy), no ``.nspawn`` settings files. nspawn grants
  ``CAP_NET_ADMIN`` inside the private namespace, so nftables works in the machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmkit.errors import LlmkitError
from llmkit.lab import network, system
from llmkit.lab.network import HostEntry

IMAGE_SUITE = "bookworm"
IMAGE_VARIANT = "minbase"
#: What every lab host has. The issue's list, plus netbase (/etc/protocols and /etc/services,
#: on every standard Debian install but not in minbase: nft cannot parse ``ipv6-icmp`` without
#: it), nftables (the firewall deploy's tool, so ``nft`` can be checked before any deploy) and
#: iputils-ping (host-to-host checks).
IMAGE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "python3",
    "dbus",
    "iproute2",
    "ca-certificates",
    "curl",
    "sudo",
    "libgomp1",
    "gnupg",
    "netbase",
    "nftables",
    "iputils-ping",
)
DEFAULT_CACHE_DIR = Path("/var/cache/llmkit/lab")
CACHE_ENV = "LLMKIT_LAB_CACHE"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
APT_SOURCES = Path("/etc/apt")
CONTROLLER_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Paths inside a machine.
NETWORKD_FILE = "etc/systemd/network/80-container-host0.network"
APT_PROXY_FILE = "etc/apt/apt.conf.d/01llmkit-lab-proxy"
PIP_CONF = "etc/pip.conf"
CA_BUNDLE_IN_HOST = "etc/ssl/llmkit-lab/controller-ca-bundle.crt"

DEBOOTSTRAP_TIMEOUT = 1800
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# --- cache and mirrors ----------------------------------------------------------------------------


def resolve_cache_dir(explicit: Path | str | None = None) -> Path:
    """``explicit``, else ``$LLMKIT_LAB_CACHE``, else :data:`DEFAULT_CACHE_DIR` (absolute)."""
    value = explicit or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(value).expanduser().absolute()


@dataclass(frozen=True)
class DebianMirrors:
    archive: str
    security: str | None


def _sources_entries(apt_dir: Path) -> list[tuple[list[str], list[str]]]:
    """(URIs, suites) of every enabled ``deb`` entry in sources.list(.d), both formats."""
    entries: list[tuple[list[str], list[str]]] = []
    files = [apt_dir / "sources.list"] if (apt_dir / "sources.list").is_file() else []
    directory = apt_dir / "sources.list.d"
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                entries.append((fields.get("uris", "").split(), fields.get("suites", "").split()))
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "deb":
                    rest = parts[1:]
                    if rest[0].startswith("["):  # options: [arch=amd64 signed-by=...]
                        while rest and not rest[0].endswith("]"):
                            rest = rest[1:]
                        rest = rest[1:]
                    if len(rest) >= 2:
                        entries.append(([rest[0]], [rest[1]]))
    return entries


def debian_mirrors(apt_dir: Path = APT_SOURCES, suite: str = IMAGE_SUITE) -> DebianMirrors:
    """The controller's Debian archive and security mirrors (http/https), else deb.debian.org."""
    archive = security = None
    for uris, suites in _sources_entries(apt_dir):
        web = [u.rstrip("/") for u in uris if u.startswith(("http://", "https://"))]
        if not web:
            continue
        if archive is None and suite in suites:
            archive = web[0]
        if security is None and f"{suite}-security" in suites:
            security = web[0]
    return DebianMirrors(archive=archive or DEFAULT_MIRROR, security=security or DEFAULT_SECURITY_MIRROR)


def architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def image_key(
    suite: str, packages: Sequence[str], variant: str = IMAGE_VARIANT, arch: str | None = None
) -> str:
    spec = {"suite": suite, "variant": variant, "arch": arch or architecture(), "packages": sorted(packages)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def image_path(cache_dir: Path, suite: str = IMAGE_SUITE, packages: Sequence[str] = IMAGE_PACKAGES) -> Path:
    return cache_dir / "images" / f"{suite}-{image_key(suite, packages)}"


def debootstrap_argv(
    target: Path, mirror: str, suite: str = IMAGE_SUITE, packages: Sequence[str] = IMAGE_PACKAGES
) -> list[str]:
    return [
        "debootstrap",
        f"--variant={IMAGE_VARIANT}",
        f"--include={','.join(packages)}",
        suite,
        str(target),
        mirror,
    ]


def sources_list(mirrors: DebianMirrors, suite: str = IMAGE_SUITE) -> str:
    lines = [
        "# Written by llmkit lab: the controller's mirrors, reached through the lab's caching proxy.",
        f"deb {mirrors.archive} {suite} main",
        f"deb {mirrors.archive} {suite}-updates main",
    ]
    if mirrors.security:
        lines.append(f"deb {mirrors.security} {suite}-security main")
    return "\n".join(lines) + "\n"


def run_checked(argv: Sequence[str], what: str, *, timeout: float = 600, log: Path | None = None) -> None:
    if log is not None:
        with open(log, "ab") as out:
            result = subprocess.run(
                list(argv), stdout=out, stderr=subprocess.STDOUT, check=False, timeout=timeout
            )
        if result.returncode != 0:
            raise LlmkitError(f"{what} failed (exit {result.returncode}); see {log}:\n{system.tail(log)}")
        return
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise LlmkitError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")


def prepare_image(root: Path, mirrors: DebianMirrors, suite: str = IMAGE_SUITE) -> None:
    """What every host shares: sources, networkd on, no host keys, no machine id, no apt cache."""
    (root / "etc/apt/sources.list").write_text(sources_list(mirrors, suite))
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    run_checked(
        ["systemctl", f"--root={root}", "enable", "systemd-networkd.service"], "enabling systemd-networkd"
    )
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()


def ensure_image(
    cache_dir: Path,
    *,
    mirrors: DebianMirrors | None = None,
    suite: str = IMAGE_SUITE,
    packages: Sequence[str] = IMAGE_PACKAGES,
    progress: Progress = _quiet,
) -> tuple[Path, bool]:
    """The cached image (built now if missing) and whether it was built by this call."""
    images = cache_dir / "images"
    target = image_path(cache_dir, suite, packages)
    images.mkdir(parents=True, exist_ok=True)
    with system.waiting_lock(images / ".lock"):
        if (target / "etc/os-release").is_file():
            return target, False
        # Holding the lock: any build directory left here is from a crashed build.
        for stale in images.glob(".build-*"):
            system.remove_tree(stale, inside=images)
        mirrors = mirrors or debian_mirrors(suite=suite)
        build = Path(tempfile.mkdtemp(prefix=f".build-{target.name}-", dir=images))
        log = cache_dir / "logs" / f"debootstrap-{target.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        progress(
            f"building the {suite} image from {mirrors.archive} (debootstrap, about a minute; log {log})"
        )
        started = time.monotonic()
        try:
            os.chmod(build, 0o755)
            with system.heartbeat(progress, "debootstrap", log):
                run_checked(
                    debootstrap_argv(build / "root", mirrors.archive, suite, packages),
                    "debootstrap",
                    timeout=DEBOOTSTRAP_TIMEOUT,
                    log=log,
                )
                prepare_image(build / "root", mirrors, suite)
            system.unmount_below(build)
            os.rename(build / "root", target)
        finally:
            system.remove_tree(build, inside=images)
        meta = {
            "suite": suite,
            "variant": IMAGE_VARIANT,
            "arch": architecture(),
            "packages": list(packages),
            "mirror": mirrors.archive,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        system.write_text(images / f"{target.name}.json", json.dumps(meta, indent=2) + "\n")
        # Images of other package lists or suites are not used again (hosts run from copies).
        for old in images.iterdir():
            if old.is_dir() and old != target and re.fullmatch(r"[a-z]+-[0-9a-f]{16}", old.name):
                system.remove_tree(old, inside=images)
                (images / f"{old.name}.json").unlink(missing_ok=True)
                progress(f"removed the outdated image {old}")
        progress(f"image ready: {target} ({meta['build_seconds']} s)")
        return target, True


# --- one host -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostSetup:
    """Everything that makes a copy of the image into one lab host."""

    name: str
    address: ipaddress.IPv4Address
    network: ipaddress.IPv4Network
    controller: ipaddress.IPv4Address
    hosts: tuple[HostEntry, ...]
    public_key: str
    apt_proxy_url: str


def apt_proxy_conf(apt_proxy_url: str) -> str:
    return (
        "// Written by llmkit lab: packages come through the controller's caching proxy.\n"
        f'Acquire::http::Proxy "{apt_proxy_url}";\n'
    )


def pip_conf(proxy_url: str) -> str:
    return (
        "# Written by llmkit lab: PyPI through the controller's proxy (CONNECT, not cached), the\n"
        "# controller's CA bundle to verify it (the controller's egress may inspect TLS).\n"
        "[global]\n"
        f"proxy = {proxy_url}\n"
        f"cert = /{CA_BUNDLE_IN_HOST}\n"
    )


def copy_image(image: Path, root: Path) -> None:
    if os.path.lexists(root):
        raise LlmkitError(f"{root} already exists: run `llmkit lab down` first")
    root.parent.mkdir(parents=True, exist_ok=True)
    run_checked(["cp", "-a", "--reflink=auto", str(image), str(root)], f"copying the image to {root}")


def configure_root(root: Path, setup: HostSetup, ca_bundle: Path | None = CONTROLLER_CA_BUNDLE) -> None:
    """Turn a fresh copy of the image into host ``setup.name``."""
    etc = root / "etc"
    (etc / "hostname").write_text(setup.name + "\n")
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    (etc / "hosts").write_text(network.hosts_file(setup.hosts, setup.controller))
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    run_checked(["ssh-keygen", "-A", "-f", str(root)], f"sshd host keys of {setup.name}")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(setup.public_key.strip() + "\n")
    os.chmod(keys, 0o600)
    unit = root / NETWORKD_FILE
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(network.networkd_unit(setup.address, setup.network))
    (root / APT_PROXY_FILE).write_text(apt_proxy_conf(setup.apt_proxy_url))
    if ca_bundle is not None and ca_bundle.is_file():
        bundle = root / CA_BUNDLE_IN_HOST
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca_bundle, bundle)
        os.chmod(bundle, 0o644)
        (root / PIP_CONF).write_text(pip_conf(setup.apt_proxy_url))


def nspawn_argv(root: Path, machine: str, bridge: str) -> list[str]:
    return [
        "systemd-nspawn",
        "--boot",
        f"--directory={root}",
        f"--machine={machine}",
        "--register=no",
        "--keep-unit",
        f"--network-bridge={bridge}",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--settings=no",
        "--console=read-only",
    ]


def nspawn_markers(root: Path) -> list[str]:
    """What identifies this host's nspawn process in /proc (see :func:`llmkit.lab.system.stop`)."""
    return ["systemd-nspawn", f"--directory={root}"]


def boot(root: Path, machine: str, bridge: str, log: Path) -> int:
    """Start the machine (detached); the pid of its systemd-nspawn process."""
    with open(log, "a") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} llmkit lab: booting {machine} from {root}\n")
    return system.spawn(nspawn_argv(root, machine, bridge), log)


def leader(nspawn_pid: int | None) -> int | None:
    """The machine's init (systemd, pid 1 inside): nspawn's child in another network namespace."""
    if not nspawn_pid or not system.alive(nspawn_pid):
        return None
    ours = system.net_namespace(nspawn_pid)
    for child in system.children(nspawn_pid):
        namespace = system.net_namespace(child)
        if namespace is not None and namespace != ours:
            return child
    return None


def host_veth(nspawn_pid: int | None) -> str | None:
    """The controller side of the machine's ``host0`` (``vb-<machine>``, maybe hashed)."""
    pid = leader(nspawn_pid)
    if pid is None:
        return None
    result = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show", "host0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )
    if result.returncode != 0 or not result.stdout.strip():
        return None
    links = json.loads(result.stdout)
    index = links[0].get("link_index") if links else None
    return network.link_by_index(int(index)) if index else None


def stop_machines(machines: Sequence[tuple[int | None, Path]], *, timeout: float = 60.0) -> list[bool]:
    """Power machines off together: SIGTERM to every nspawn, wait, SIGKILL what is left.

    ``machines``: (nspawn pid, root) pairs. For each, True if it was running and is now stopped;
    False if there was nothing to stop (no pid, gone, or the pid is now another process).
    """
    running: list[tuple[int, Path, int | None]] = []
    results = []
    for pid, root in machines:
        # The recorded pid, and any other nspawn of this root (one started just before a crash
        # kept ``up`` from recording its pid).
        pids = set(system.find(nspawn_markers(root)))
        if pid is not None and system.matches(pid, nspawn_markers(root)):
            pids.add(pid)
        for each in sorted(pids):
            running.append((each, root, leader(each)))
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGTERM)
        results.append(bool(pids))
    deadline = time.monotonic() + timeout
    for pid, _, _ in running:
        system.wait_gone(pid, max(0.0, deadline - time.monotonic()))
    for pid, root, init in running:
        # Still there after the timeout: SIGKILL (stop() re-checks the command line first).
        system.stop(pid, nspawn_markers(root), timeout=0.0)
        if init is not None and system.alive(init):
            system.kill_now(init)  # nspawn was killed: kill the machine's init, and the machine with it
            system.wait_gone(init, 10)
    return results
