"""The on-prem lab: ``up``, ``status`` and ``down`` of a few systemd-nspawn hosts on a private /24.

What ``up`` makes, in order (each recorded in ``<state>/lab.json`` *before* it is made, so
``down`` can remove it after a crash or a half-failed ``up``):

1. the lab's SSH key (``<state>/ssh/id_ed25519``) and PKI (``<state>/pki``, :mod:`llmkit.pki`);
2. the Debian image, cached in ``<cache>/images`` (:mod:`llmkit.lab.machines`);
3. the bridge with the controller's ``.1`` (:mod:`llmkit.lab.network`);
4. the caching proxy and the artefact mirror on that address (:mod:`llmkit.lab.services`);
5. one root per host (``<state>/machines/<name>``), booted with systemd-nspawn, each waited for
   until sshd answers and ``ssh root@host true`` succeeds with the lab key;
6. ``<state>/inventory.py`` (:mod:`llmkit.lab.inventory`).

If any step fails, ``up`` tears down what it made and raises. ``down`` stops machines and
services (checking every pid's command line first), deletes the interfaces, unmounts and removes
the host roots and the state files; it keeps the image cache, the apt cache, the mirror's content,
the PKI and the logs. It is idempotent.

Safety: the lab's only addresses are its own /24 (RFC 1918, refused if the controller already
uses it) and loopback; hosts have no default route, and all their way out is the proxy, which
relays plain HTTP (Debian) and CONNECT to PyPI only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import ConfigError, LlmkitError
from llmkit.lab import inventory as inv
from llmkit.lab import machines, network, prereqs, services, system
from llmkit.lab.services import ServicePaths

DEFAULT_STATE_DIR = Path("/var/lib/llmkit/lab")
DEFAULT_HOSTS: tuple[str, ...] = ("proxy", "gpu1")
STATE_FILE = "lab.json"
INVENTORY_FILE = "inventory.py"
LOCK_FILE = ".lab.lock"
STATE_VERSION = 1
BOOT_TIMEOUT = 240.0
SSH_OPTIONS: tuple[str, ...] = (
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
)

#: Every program ``up`` runs on the controller (their Debian packages: llmkit/data/prereqs.yaml).
REQUIRED_PROGRAMS: tuple[str, ...] = (
    "systemd-nspawn",
    "debootstrap",
    "apt-cacher-ng",
    "nginx",
    "ip",
    "nsenter",
    "ssh",
    "ssh-keygen",
    "systemctl",
)

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@:=,-]*$")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class LabCommandError(LlmkitError, subprocess.CalledProcessError):
    """A command run on a lab host (``Lab.ssh``/``Lab.netns_exec``) failed; ``check=True`` raises it."""

    def __init__(self, host: str, cmd: Any, returncode: int, output: str, stderr: str) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.host = host
        LlmkitError.__init__(self, self.__str__())

    def __str__(self) -> str:
        detail = (self.stderr or self.output or "").strip()[-2000:]
        return f"on lab host {self.host}: {self.cmd!r} exited {self.returncode}" + (
            f":\n{detail}" if detail else ""
        )


# --- preflight ------------------------------------------------------------------------------------


#: What ``down`` needs: it only signals processes and deletes interfaces and files.
DOWN_PROGRAMS: tuple[str, ...] = ("ip", "umount")


def preflight(programs: Sequence[str] = REQUIRED_PROGRAMS) -> None:
    """Refuse (exit 2) without root or without the programs ``up`` needs, with the one message
    that names ``llmkit lab prereqs``."""
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "llmkit lab must run as root (it creates network interfaces and boots machines): use sudo"
        )
    lacking = prereqs.missing(programs)
    if lacking:
        problems.append(prereqs.missing_message(lacking))
    if problems:
        raise LlmkitError("; ".join(problems))


def check_dir(value: Path | str, option: str) -> Path:
    """An absolute path without characters that would need quoting in the generated configs."""
    path = Path(value).expanduser().absolute()
    if not _SAFE_PATH.match(str(path)):
        raise ConfigError(
            option,
            str(value),
            "a path of letters, digits and . _ / + @ : = , -",
            "the path would need quoting in the services' configuration files",
        )
    return path


# --- state ----------------------------------------------------------------------------------------


@dataclass
class LabHost:
    name: str
    address: str
    machine: str
    root: Path
    log: Path
    pid: int | None = None
    veth: str | None = None


@dataclass
class Service:
    name: str
    address: str
    port: int
    log: Path
    pid: int | None = None


@dataclass
class Lab:
    """One lab, as ``lab.json`` records it."""

    state_dir: Path
    subnet: str
    controller_address: str
    hosts: list[LabHost]
    ssh_key: Path
    mirror_dir: Path
    mirror_url: str
    apt_proxy_url: str
    inventory_path: Path
    pki_dir: Path
    cache_dir: Path
    bridge: str
    image: Path | None = None
    services: dict[str, Service] = field(default_factory=dict)
    mirror_rate: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    # -- lookups --

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def machines_dir(self) -> Path:
        return self.state_dir / "machines"

    @property
    def service_paths(self) -> ServicePaths:
        return ServicePaths(self.state_dir, self.cache_dir, network.lab_tag(self.network))

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LlmkitError(f"no host {name!r} in the lab (hosts: {', '.join(h.name for h in self.hosts)})")

    # -- commands on the hosts --

    def ssh_argv(self, name: str, command: str) -> list[str]:
        host = self.host(name)
        return ["ssh", "-i", str(self.ssh_key), *SSH_OPTIONS, f"root@{host.address}", command]

    def ssh(
        self, name: str, command: str, check: bool = True, timeout: float = 120.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on host ``name`` over real SSH (root, the lab key)."""
        argv = self.ssh_argv(name, command)
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise LabCommandError(name, command, result.returncode, result.stdout, result.stderr)
        return result

    def leader_pid(self, name: str) -> int:
        pid = machines.leader(self.host(name).pid)
        if pid is None:
            raise LlmkitError(f"lab host {name} is not running (log {self.host(name).log})")
        return pid

    def netns_exec(
        self, name: str, argv: Sequence[str], check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a controller program inside host ``name``'s network namespace (nsenter -n)."""
        full = ["nsenter", "-t", str(self.leader_pid(name)), "-n", "--", *argv]
        result = subprocess.run(full, capture_output=True, text=True, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise LabCommandError(name, list(argv), result.returncode, result.stdout, result.stderr)
        return result

    # -- persistence --

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        return {"version": STATE_VERSION, **plain(data)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lab:
        def path(value: Any) -> Path | None:
            return Path(value) if value else None

        hosts = [
            LabHost(
                name=h["name"],
                address=h["address"],
                machine=h["machine"],
                root=Path(h["root"]),
                log=Path(h["log"]),
                pid=h.get("pid"),
                veth=h.get("veth"),
            )
            for h in data.get("hosts", [])
        ]
        svc = {
            key: Service(
                name=s["name"],
                address=s["address"],
                port=int(s["port"]),
                log=Path(s["log"]),
                pid=s.get("pid"),
            )
            for key, s in (data.get("services") or {}).items()
        }
        return cls(
            state_dir=Path(data["state_dir"]),
            subnet=data["subnet"],
            controller_address=data["controller_address"],
            hosts=hosts,
            ssh_key=Path(data["ssh_key"]),
            mirror_dir=Path(data["mirror_dir"]),
            mirror_url=data["mirror_url"],
            apt_proxy_url=data["apt_proxy_url"],
            inventory_path=Path(data["inventory_path"]),
            pki_dir=Path(data["pki_dir"]),
            cache_dir=Path(data["cache_dir"]),
            bridge=data["bridge"],
            image=path(data.get("image")),
            services=svc,
            mirror_rate=data.get("mirror_rate"),
            timings=dict(data.get("timings") or {}),
        )

    def save(self) -> None:
        system.write_text(self.state_file, json.dumps(self.to_json(), indent=2) + "\n", 0o644)


def new_lab(hosts: Sequence[str], state_dir: Path, cache_dir: Path, subnet: str) -> Lab:
    """The lab's plan (nothing made): names, addresses and paths."""
    names = network.validate_hosts(hosts)
    net = network.parse_subnet(subnet)
    controller = network.controller_address(net)
    addresses = network.host_addresses(net, names)
    lab_hosts = [
        LabHost(
            name=name,
            address=str(addresses[name]),
            machine=network.machine_name(name, net),
            root=state_dir / "machines" / name,
            log=state_dir / "logs" / f"{name}.log",
        )
        for name in names
    ]
    return Lab(
        state_dir=state_dir,
        subnet=str(net),
        controller_address=str(controller),
        hosts=lab_hosts,
        ssh_key=state_dir / "ssh" / "id_ed25519",
        mirror_dir=state_dir / "mirror",
        mirror_url=f"http://{controller}:{services.MIRROR_PORT}",
        apt_proxy_url=f"http://{controller}:{services.APT_PROXY_PORT}",
        inventory_path=state_dir / INVENTORY_FILE,
        pki_dir=state_dir / "pki",
        cache_dir=cache_dir,
        bridge=network.bridge_name(net),
    )


def load(state_dir: Path | str) -> Lab:
    """The lab recorded in ``<state_dir>/lab.json``."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise LlmkitError(f"no lab in {state_dir}: {path} does not exist (run `llmkit lab up`)")
    try:
        return Lab.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LlmkitError(f"{path}: not a lab state file ({exc})") from None


# --- inventory ------------------------------------------------------------------------------------


def write_inventory(lab: Lab, extra: Mapping[str, Any] | None = None) -> Path:
    """(Re)write ``<state>/inventory.py``; ``extra`` adds to or overrides the site data."""
    site = inv.site_data(
        controller_address=lab.controller_address,
        pki_dir=lab.pki_dir,
        mirror_dir=lab.mirror_dir,
        mirror_url=lab.mirror_url,
        extra=extra,
    )
    text = inv.render(
        [(h.name, h.address) for h in lab.hosts], ssh_key=lab.ssh_key, site=site, state_dir=lab.state_dir
    )
    return inv.write(lab.inventory_path, text)


# --- up -------------------------------------------------------------------------------------------


def _ssh_key(path: Path) -> str:
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        machines.run_checked(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmkit-lab", "-f", str(path)],
            "making the lab's SSH key",
        )
    os.chmod(path, 0o600)
    return path.with_suffix(".pub").read_text()


def _wait_for_hosts(lab: Lab, deadline: float, progress: Progress) -> None:
    pending = {h.name for h in lab.hosts}
    tcp_ok: set[str] = set()
    last_error: dict[str, str] = {}
    while pending:
        for host in lab.hosts:
            if host.name not in pending:
                continue
            if not system.alive(host.pid):
                raise LlmkitError(
                    f"lab host {host.name}: systemd-nspawn (pid {host.pid}) exited while booting; "
                    f"see {host.log}:\n{system.tail(host.log)}"
                )
            if host.name not in tcp_ok:
                if not network.tcp_open(host.address, 22, timeout=1.0):
                    continue
                tcp_ok.add(host.name)
            result = lab.ssh(host.name, "true", check=False, timeout=30)
            if result.returncode == 0:
                pending.discard(host.name)
                progress(f"{host.name} ({host.address}) is up: ssh works")
            else:
                last_error[host.name] = result.stderr.strip()
        if not pending:
            return
        if time.monotonic() >= deadline:
            name = sorted(pending)[0]
            host = lab.host(name)
            state = (
                "sshd accepts TCP but `ssh root@host true` fails" if name in tcp_ok else "no sshd on port 22"
            )
            detail = last_error.get(name, "")
            raise LlmkitError(
                f"lab host {name} ({host.address}) did not come up within the boot timeout ({state}"
                f"{': ' + detail if detail else ''}); see its log {host.log}:\n{system.tail(host.log)}"
            )
        time.sleep(1.0)


def up(
    hosts: Sequence[str] = DEFAULT_HOSTS,
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    cache_dir: Path | str | None = None,
    subnet: str = network.DEFAULT_SUBNET,
    boot_timeout: float = BOOT_TIMEOUT,
    progress: Progress | None = None,
) -> Lab:
    """Make the lab (see the module docstring) and return it; on failure remove what was made."""
    say = progress or _quiet
    started = time.monotonic()
    state = check_dir(state_dir, "--state-dir")
    cache = check_dir(machines.resolve_cache_dir(cache_dir), "--cache-dir")
    lab = new_lab(hosts, state, cache, subnet)  # validates hosts and subnet before anything is made
    preflight()
    state.mkdir(parents=True, exist_ok=True)
    with system.locked(state / LOCK_FILE, f"the lab state directory {state}"):
        if lab.state_file.exists():
            raise LlmkitError(
                f"a lab is already recorded in {lab.state_file}: "
                f"run `llmkit lab down --state-dir {state}` first"
            )
        if network.link_exists(lab.bridge):
            raise LlmkitError(
                f"interface {lab.bridge} already exists: another lab uses subnet {lab.subnet} "
                "(bring it down, or choose another --subnet)"
            )
        conflicts = network.subnet_conflicts(lab.network)
        if conflicts:
            raise LlmkitError(
                f"subnet {lab.subnet} is already in use on this machine ({'; '.join(conflicts)}): "
                "choose another --subnet"
            )
        leftovers = [h.root for h in lab.hosts if os.path.lexists(h.root)]
        if leftovers:
            raise LlmkitError(
                f"host roots from an earlier lab are still there ({', '.join(map(str, leftovers))}): "
                f"remove them, or run `llmkit lab down --state-dir {state}`"
            )
        try:
            _up(lab, boot_timeout, say)
        except BaseException as exc:
            say(f"up failed ({exc.__class__.__name__}): removing what was made")
            with contextlib.suppress(Exception):
                _down(lab, say)
            raise
    lab.timings["up_seconds"] = round(time.monotonic() - started, 1)
    lab.save()
    return lab


def _up(lab: Lab, boot_timeout: float, say: Progress) -> None:
    state = lab.state_dir
    for sub in ("logs", "run", "machines"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    lab.save()

    public_key = _ssh_key(lab.ssh_key)
    issued = inv.make_pki(lab.pki_dir, [(h.name, h.address) for h in lab.hosts])
    say(f"PKI in {lab.pki_dir}: {', '.join(issued)}")

    t0 = time.monotonic()
    image, built = machines.ensure_image(lab.cache_dir, progress=say)
    lab.image = image
    lab.timings["image_seconds"] = round(time.monotonic() - t0, 1)
    lab.timings["image_built"] = float(built)
    lab.save()

    net = lab.network
    controller = ipaddress.IPv4Address(lab.controller_address)
    network.create_bridge(lab.bridge, controller, net)
    say(f"bridge {lab.bridge} with {controller}/{net.prefixlen}")

    paths = lab.service_paths
    lab.services["apt_proxy"] = Service(
        "apt-cacher-ng", str(controller), services.APT_PROXY_PORT, paths.acng_out
    )
    lab.save()
    lab.services["apt_proxy"].pid = services.start_apt_proxy(paths, controller)
    lab.save()
    lab.services["mirror"] = Service(
        "nginx mirror", str(controller), services.MIRROR_PORT, paths.nginx_error_log
    )
    lab.services["mirror"].pid = services.start_mirror(paths, controller, lab.mirror_rate)
    lab.save()
    for svc in lab.services.values():
        assert svc.pid is not None
        services.wait_listening(svc.name, svc.pid, svc.address, svc.port, svc.log)
    say(f"apt proxy {lab.apt_proxy_url}, mirror {lab.mirror_url} ({lab.mirror_dir})")

    entries = tuple(network.HostEntry(h.name, h.address) for h in lab.hosts)
    t0 = time.monotonic()
    for host in lab.hosts:
        machines.copy_image(image, host.root)
        machines.configure_root(
            host.root,
            machines.HostSetup(
                name=host.name,
                address=ipaddress.IPv4Address(host.address),
                network=net,
                controller=controller,
                hosts=entries,
                public_key=public_key,
                apt_proxy_url=lab.apt_proxy_url,
            ),
        )
    lab.timings["copy_seconds"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    for host in lab.hosts:
        host.pid = machines.boot(host.root, host.machine, lab.bridge, host.log)
        lab.save()
        say(f"booting {host.name} ({host.address}), nspawn pid {host.pid}, log {host.log}")
    _wait_for_hosts(lab, time.monotonic() + boot_timeout, say)
    lab.timings["boot_seconds"] = round(time.monotonic() - t0, 1)
    for host in lab.hosts:
        host.veth = machines.host_veth(host.pid)
    lab.save()
    write_inventory(lab)
    say(f"inventory {lab.inventory_path}")


# --- down -----------------------------------------------------------------------------------------


def _stop_service(pid: int | None, markers: Sequence[str]) -> bool:
    """Stop the recorded pid and any other process of this service (same config path)."""
    pids = set(system.find(markers))
    if pid is not None and system.matches(pid, markers):
        pids.add(pid)
    return any([system.stop(each, markers, timeout=15) for each in sorted(pids)])


def _down(lab: Lab, say: Progress) -> list[str]:
    removed: list[str] = []
    errors: list[str] = []

    def attempt(what: str, action: Callable[..., bool], *args: Any, **kwargs: Any) -> None:
        try:
            if action(*args, **kwargs):
                removed.append(what)
                say(f"removed {what}")
        except Exception as exc:
            errors.append(f"{what}: {exc}")

    try:
        stopped = machines.stop_machines([(h.pid, h.root) for h in lab.hosts])
    except Exception as exc:
        errors.append(f"machines: {exc}")
        stopped = [False] * len(lab.hosts)
    for host, done in zip(lab.hosts, stopped, strict=True):
        if done:
            removed.append(f"machine {host.name} (nspawn pid {host.pid})")
            say(f"stopped machine {host.name}")
    paths = lab.service_paths
    markers = {"apt_proxy": services.acng_markers(paths), "mirror": services.nginx_markers(paths)}
    for key, svc in lab.services.items():
        attempt(f"{svc.name} (pid {svc.pid})", _stop_service, svc.pid, markers.get(key, [svc.name]))
    veths = [h.veth for h in lab.hosts if h.veth] + network.links_of_bridge(lab.bridge)
    for veth in dict.fromkeys(veths):
        attempt(f"interface {veth}", network.delete_link, veth)
    attempt(f"bridge {lab.bridge}", network.delete_link, lab.bridge)
    for host in lab.hosts:
        attempt(f"root {host.root}", system.remove_tree, host.root, inside=lab.machines_dir)
        propagate = Path("/run/systemd/nspawn/propagate") / host.machine
        with contextlib.suppress(OSError):
            propagate.rmdir()
    for path in (
        paths.nginx_pid,
        paths.run_dir / "apt-cacher-ng.pid",
        paths.run_dir / "apt-cacher-ng.socket",
    ):
        with contextlib.suppress(OSError):
            path.unlink()
    if errors:
        raise LlmkitError(
            "lab down could not remove everything (state kept in "
            f"{lab.state_file}; run down again):\n  - " + "\n  - ".join(errors)
        )
    for path, what in ((lab.inventory_path, "inventory"), (lab.state_file, "state file")):
        if path.exists():
            path.unlink()
            removed.append(f"{what} {path}")
            say(f"removed {what} {path}")
    return removed


#: What ``down`` leaves in the state directory, and why (everything else there is the lab's own).
KEPT_IN_STATE = {
    "pki": "the lab's CA, host and client certificates (a new `up` reuses them)",
    "ssh": "the lab's SSH key (a new `up` reuses it)",
    "mirror": "the artefact mirror's content (Ollama, node_exporter, models)",
    "logs": "the machines' and services' logs",
    "apt-cacher-ng": "the caching proxy's configuration",
    "run": "the services' runtime directory",
    "mirror-nginx.conf": "the mirror's nginx configuration",
}


def kept(state_dir: Path | str = DEFAULT_STATE_DIR) -> list[tuple[Path, str]]:
    """What is left in ``state_dir`` after ``down``: each path with what it is."""
    state = Path(state_dir).expanduser().absolute()
    try:
        entries = sorted(p for p in state.iterdir() if p.name != LOCK_FILE)
    except OSError:
        return []
    return [(p, KEPT_IN_STATE.get(p.name, "not made by the lab")) for p in entries]


def down(state_dir: Path | str = DEFAULT_STATE_DIR, *, progress: Progress | None = None) -> list[str]:
    """Remove everything ``up`` made (see the module docstring); what it removed. Idempotent."""
    state = Path(state_dir).expanduser().absolute()
    if not (state / STATE_FILE).is_file():
        return []
    with system.locked(state / LOCK_FILE, f"the lab state directory {state}"):
        if not (state / STATE_FILE).is_file():
            return []
        return _down(load(state), progress or _quiet)


# --- mirror rate ----------------------------------------------------------------------------------


def mirror_access_log(lab: Lab) -> Path:
    """The mirror's access log (nginx's combined format: ``"GET /path HTTP/1.1" status bytes``)."""
    return lab.service_paths.nginx_access_log


def set_mirror_rate(lab: Lab, bytes_per_second: int | None) -> None:
    """Limit the mirror's downloads to ``bytes_per_second`` per connection (None: no limit), reload."""
    rate = services.check_rate(bytes_per_second)
    svc = lab.services.get("mirror")
    if svc is None or svc.pid is None:
        raise LlmkitError(f"the lab in {lab.state_dir} has no mirror service recorded")
    services.reload_mirror(lab.service_paths, svc.pid, ipaddress.IPv4Address(lab.controller_address), rate)
    lab.mirror_rate = rate
    lab.save()


# --- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    machine: str
    pid: int | None
    running: bool
    ssh: bool
    log: Path


@dataclass(frozen=True)
class InterfaceStatus:
    name: str
    kind: str
    present: bool
    detail: str


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    listening: bool
    url: str
    log: Path


@dataclass(frozen=True)
class LabStatus:
    lab: Lab
    hosts: list[HostStatus]
    interfaces: list[InterfaceStatus]
    services: list[ServiceStatus]

    @property
    def healthy(self) -> bool:
        return (
            all(h.running and h.ssh for h in self.hosts)
            and all(i.present for i in self.interfaces)
            and all(s.running and s.listening for s in self.services)
        )


def status(state_dir: Path | str = DEFAULT_STATE_DIR, *, check_ssh: bool = True) -> LabStatus:
    """Machines (running, address, ssh), interfaces and services of the recorded lab."""
    lab = load(state_dir)
    hosts = []
    for host in lab.hosts:
        running = system.matches(host.pid, machines.nspawn_markers(host.root))
        ssh_ok = False
        if running and network.tcp_open(host.address, 22, timeout=2.0):
            ssh_ok = not check_ssh or lab.ssh(host.name, "true", check=False, timeout=20).returncode == 0
        hosts.append(HostStatus(host.name, host.address, host.machine, host.pid, running, ssh_ok, host.log))
    interfaces = [
        InterfaceStatus(
            lab.bridge,
            "bridge",
            network.link_exists(lab.bridge),
            ", ".join(network.bridge_addresses(lab.bridge)) or "-",
        )
    ]
    attached = set(network.links_of_bridge(lab.bridge))
    for host in lab.hosts:
        if host.veth:
            interfaces.append(
                InterfaceStatus(
                    host.veth,
                    f"veth of {host.name}",
                    network.link_exists(host.veth),
                    f"on {lab.bridge}" if host.veth in attached else "not on the bridge",
                )
            )
    paths = lab.service_paths
    markers = {"apt_proxy": services.acng_markers(paths), "mirror": services.nginx_markers(paths)}
    svcs = []
    for key, svc in lab.services.items():
        running = system.matches(svc.pid, markers.get(key, [svc.name]))
        listening = running and network.tcp_open(svc.address, svc.port, timeout=2.0)
        svcs.append(
            ServiceStatus(svc.name, svc.pid, running, listening, f"http://{svc.address}:{svc.port}", svc.log)
        )
    return LabStatus(lab=lab, hosts=hosts, interfaces=interfaces, services=svcs)
