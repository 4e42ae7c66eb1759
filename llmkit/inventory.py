"""A pyinfra inventory of a stack's AWS model hosts, from its Pulumi outputs and its instances.

``llmkit inventory STACK`` (llmkit/commands/inventory.py) is the command line. Inputs:

- the stack outputs, ``pulumi stack output --json --stack STACK > outputs.json``: the
  ``inventory`` output (:meth:`components.fleet.GpuFleet.inventory`) gives the groups
  ``model_<slug>`` and their data (:func:`components.fleet.host_data`), ``region`` the region;
- the running instances. The model hosts live in Auto Scaling groups, so no output can list them;
  take them from EC2 at the time of the run, either::

      aws ec2 describe-instances --output json \\
          --filters Name=tag:aws:autoscaling:groupName,Values=llmkit-STACK-* \\
                    Name=instance-state-name,Values=running > instances.json

  (instance ids and private addresses; each instance carries the ``aws:autoscaling:groupName``
  tag) or ``aws autoscaling describe-auto-scaling-groups --output json > instances.json``
  (instance ids only, ``InService`` ones kept: enough for ``--via ssm``).

An instance belongs to the group whose host data names its Auto Scaling group
(``lifecycle.auto_scaling_group``, else ``metrics.auto_scaling_group``); instances of other
groups are left out.

Decisions, for reviewers:

- **No inbound SSH from anywhere by default** (``--via ssm``): pyinfra's SSH runs inside an SSM
  Session Manager session (``aws ssm start-session --target <instance id> --document-name
  AWS-StartSSHSession --parameters portNumber=22``), which the hosts' instance profile
  (``AmazonSSMManagedInstanceCore``) and the VPC endpoints allow; the hosts are named by instance
  id, so known_hosts entries follow the instance, not a reused private address. ``--via bastion``
  tunnels through ``ssh -W <private ip>:22 [USER@]BASTION`` instead.
- pyinfra 3 has no proxy-command host data key: the written file gives each host
  ``ssh_paramiko_connect_kwargs={"sock": LazyProxyCommand("...")}``. :class:`LazyProxyCommand`
  starts the command only when pyinfra connects to that host (paramiko's own ``ProxyCommand``
  would start one process per host while the inventory loads, ``--limit`` or not).
- The written file holds only what the outputs hold (no secrets: the inventory output has none)
  plus connection settings; commands are quoted with :func:`shlex.join`.
- Bad input stops with a :class:`~llmkit.errors.ConfigError` naming the file and the key: not
  JSON, no ``inventory`` output, groups of another stack than STACK, no instance of the stack.
"""

from __future__ import annotations

import json
import os
import pprint
import re
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paramiko

from llmkit.errors import ConfigError
from llmkit.groups import MODEL_GROUP_PREFIX

Via = Literal["ssm", "bastion"]
VIAS: tuple[Via, ...] = ("ssm", "bastion")
DEFAULT_VIA: Via = "ssm"
DEFAULT_SSH_USER = "ubuntu"  # the Deep Learning Base AMI (Ubuntu) the fleet launches by default
SSH_PORT = 22
ASG_TAG = "aws:autoscaling:groupName"
SSM_DOCUMENT = "AWS-StartSSHSession"
IN_SERVICE = "InService"
RUNNING = "running"

_GROUP = re.compile(re.escape(MODEL_GROUP_PREFIX) + r"[a-z0-9_]+")
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}([0-9a-f]{9})?")
_BASTION = re.compile(
    r"(?:(?P<user>[^@\s]+)@)?"
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?))"
    r"(?::(?P<port>\d{1,5}))?"
)
_USER = re.compile(r"[a-z_][a-z0-9_.-]*")

INVENTORY_SHAPE = '{"model_<slug>": {"data": {...}}} (GpuFleet.inventory())'
INSTANCES_SHAPE = (
    "the JSON of `aws ec2 describe-instances` (Reservations) "
    "or `aws autoscaling describe-auto-scaling-groups` (AutoScalingGroups)"
)


# --- inputs ---------------------------------------------------------------------------------------


def read_json(path: Path, accepted: str) -> Any:
    """A JSON file's value; a ConfigError naming the file when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("(file)", str(path), accepted, f"cannot read: {exc.strerror}", str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "(file)", f"line {exc.lineno} column {exc.colno}", accepted, f"not JSON: {exc.msg}", str(path)
        ) from None


@dataclass(frozen=True)
class StackInventory:
    """The stack's model groups and their host data, as the outputs give them."""

    stack: str
    region: str
    groups: dict[str, dict[str, Any]]

    def auto_scaling_groups(self) -> dict[str, str]:
        """Auto Scaling group name -> inventory group."""
        return {auto_scaling_group(group, data): group for group, data in self.groups.items()}


def auto_scaling_group(group: str, data: Mapping[str, Any], source: str | None = None) -> str:
    for section in ("lifecycle", "metrics"):
        value = data.get(section)
        if isinstance(value, Mapping) and isinstance(value.get("auto_scaling_group"), str):
            return str(value["auto_scaling_group"])
    raise ConfigError(
        f"inventory.{group}.data.lifecycle.auto_scaling_group",
        None,
        "the group's Auto Scaling group name, as components.fleet.host_data() writes it",
        "missing: cannot tell which instances belong to this group",
        source,
    )


def stack_inventory(outputs: Any, stack: str, source: str) -> StackInventory:
    """Check ``pulumi stack output --json`` of STACK and take its ``inventory`` and ``region``."""
    if not isinstance(outputs, dict):
        raise ConfigError(
            "(top level)",
            type(outputs).__name__,
            "a JSON object: `pulumi stack output --json`",
            "not the outputs of a stack",
            source,
        )
    declared = outputs.get("stack")
    if declared is not None and declared != stack:
        raise ConfigError("stack", declared, repr(stack), "these are the outputs of another stack", source)
    inventory = outputs.get("inventory")
    if inventory is None:
        raise ConfigError(
            "inventory",
            None,
            INVENTORY_SHAPE,
            "no `inventory` output: run `pulumi stack output --json` for an llmkit stack that is up",
            source,
        )
    if not isinstance(inventory, dict) or not inventory:
        raise ConfigError("inventory", inventory, INVENTORY_SHAPE, "not a non-empty object of groups", source)
    groups: dict[str, dict[str, Any]] = {}
    regions = set()
    for group, entry in inventory.items():
        if not _GROUP.fullmatch(group):
            raise ConfigError(
                f"inventory.{group}", group, "model_<slug> (a Python identifier)", "not a model group", source
            )
        data = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(data, dict):
            raise ConfigError(
                f"inventory.{group}.data",
                data,
                "an object: the group's host data",
                "missing or not an object",
                source,
            )
        if data.get("stack") != stack:
            raise ConfigError(
                f"inventory.{group}.data.stack",
                data.get("stack"),
                repr(stack),
                "the group belongs to another stack than the one asked for",
                source,
            )
        auto_scaling_group(group, data, source)
        if isinstance(data.get("region"), str):
            regions.add(data["region"])
        groups[group] = data
    region = outputs.get("region")
    if not isinstance(region, str) or not region:
        if len(regions) != 1:
            raise ConfigError(
                "region", region, "the stack's AWS region, e.g. eu-central-1", "missing", source
            )
        (region,) = regions
    return StackInventory(stack=stack, region=region, groups=groups)


def load_stack_inventory(path: Path, stack: str) -> StackInventory:
    return stack_inventory(read_json(path, "the JSON of `pulumi stack output --json`"), stack, str(path))


@dataclass(frozen=True)
class Instance:
    instance_id: str
    auto_scaling_group: str
    private_ip: str | None = None


def _tag(tags: Any, key: str) -> str | None:
    if isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, dict) and tag.get("Key") == key and isinstance(tag.get("Value"), str):
                return str(tag["Value"])
    return None


def _instance_id(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not _INSTANCE_ID.fullmatch(value):
        raise ConfigError(where, value, "an EC2 instance id i-<8 or 17 hex>", "not an instance id", source)
    return value


def parse_instances(document: Any, source: str) -> list[Instance]:
    """The running (EC2) or in-service (Auto Scaling) instances of a describe call's JSON."""
    if isinstance(document, dict) and isinstance(document.get("Reservations"), list):
        found = []
        for r, reservation in enumerate(document["Reservations"]):
            instances = reservation.get("Instances") if isinstance(reservation, dict) else None
            if not isinstance(instances, list):
                raise ConfigError(
                    f"Reservations[{r}].Instances", instances, "a list of instances", "missing", source
                )
            for i, item in enumerate(instances):
                where = f"Reservations[{r}].Instances[{i}]"
                if not isinstance(item, dict):
                    raise ConfigError(where, item, "an instance object", "not an object", source)
                state = item.get("State", {}).get("Name") if isinstance(item.get("State"), dict) else None
                group = _tag(item.get("Tags"), ASG_TAG)
                if state != RUNNING or group is None:
                    continue
                ip = item.get("PrivateIpAddress")
                found.append(
                    Instance(
                        instance_id=_instance_id(item.get("InstanceId"), f"{where}.InstanceId", source),
                        auto_scaling_group=group,
                        private_ip=ip if isinstance(ip, str) and ip else None,
                    )
                )
        return found
    if isinstance(document, dict) and isinstance(document.get("AutoScalingGroups"), list):
        found = []
        for g, asg in enumerate(document["AutoScalingGroups"]):
            name = asg.get("AutoScalingGroupName") if isinstance(asg, dict) else None
            if not isinstance(name, str):
                raise ConfigError(
                    f"AutoScalingGroups[{g}].AutoScalingGroupName",
                    name,
                    "the group's name",
                    "missing",
                    source,
                )
            for i, item in enumerate(asg.get("Instances") or []):
                where = f"AutoScalingGroups[{g}].Instances[{i}]"
                if not isinstance(item, dict):
                    raise ConfigError(where, item, "an instance object", "not an object", source)
                if item.get("LifecycleState") != IN_SERVICE:
                    continue
                found.append(
                    Instance(
                        instance_id=_instance_id(item.get("InstanceId"), f"{where}.InstanceId", source),
                        auto_scaling_group=name,
                    )
                )
        return found
    raise ConfigError(
        "(top level)",
        sorted(document) if isinstance(document, dict) else type(document).__name__,
        INSTANCES_SHAPE,
        "not a list of instances",
        source,
    )


def load_instances(path: Path) -> list[Instance]:
    return parse_instances(read_json(path, INSTANCES_SHAPE), str(path))


def hosts_by_group(
    inventory: StackInventory, instances: Sequence[Instance], source: str
) -> dict[str, list[Instance]]:
    """Each model group's instances (sorted by id); instances of other groups are left out."""
    by_asg = inventory.auto_scaling_groups()
    out: dict[str, list[Instance]] = {group: [] for group in inventory.groups}
    for instance in instances:
        group = by_asg.get(instance.auto_scaling_group)
        if group is not None and instance not in out[group]:
            out[group].append(instance)
    if not any(out.values()):
        raise ConfigError(
            "instances",
            sorted({i.auto_scaling_group for i in instances}),
            f"running instances of {', '.join(sorted(by_asg))}",
            f"no running instance of stack {inventory.stack}'s Auto Scaling groups",
            source,
        )
    return {group: sorted(found, key=lambda i: i.instance_id) for group, found in out.items()}


# --- connections ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bastion:
    host: str
    user: str | None = None
    port: int = SSH_PORT

    @classmethod
    def parse(cls, text: str) -> Bastion:
        """``[USER@]HOST[:PORT]``; HOST a name or an address (IPv6 in brackets)."""
        accepted = "[USER@]HOST[:PORT], e.g. ec2-user@bastion.example.com:22"
        match = _BASTION.fullmatch(text.strip())
        if match is None:
            raise ConfigError("--bastion", text, accepted, "not a bastion address")
        user = match.group("user")
        if user is not None and not _USER.fullmatch(user):
            raise ConfigError("--bastion", text, accepted, f"{user!r} is not a user name")
        port = int(match.group("port") or SSH_PORT)
        if not 1 <= port <= 65535:
            raise ConfigError("--bastion", text, accepted, f"port {port} is not 1-65535")
        return cls(host=match.group("v6") or match.group("host"), user=user, port=port)


def proxy_command(
    via: Via, instance: Instance, *, region: str, bastion: Bastion | None = None, port: int = SSH_PORT
) -> list[str]:
    """The command whose stdin/stdout carry the SSH connection to ``instance``."""
    if via == "ssm":
        return [
            "aws",
            "ssm",
            "start-session",
            "--target",
            instance.instance_id,
            "--document-name",
            SSM_DOCUMENT,
            "--parameters",
            f"portNumber={port}",
            "--region",
            region,
        ]
    if bastion is None:
        raise ConfigError("--bastion", None, "[USER@]HOST[:PORT]", "--via bastion needs the bastion host")
    if instance.private_ip is None:
        raise ConfigError(
            f"instances.{instance.instance_id}.PrivateIpAddress",
            None,
            "the output of `aws ec2 describe-instances` (it has each instance's private address)",
            "--via bastion needs the instances' private addresses",
        )
    target = f"[{instance.private_ip}]" if ":" in instance.private_ip else instance.private_ip
    login = f"{bastion.user}@{bastion.host}" if bastion.user else bastion.host
    return ["ssh", "-W", f"{target}:{port}", "-p", str(bastion.port), login]


class LazyProxyCommand:
    """paramiko's ``ProxyCommand``, started when pyinfra connects (not when the inventory loads).

    The socket-like interface paramiko's ``Transport`` uses: ``send``, ``recv``, ``settimeout``,
    ``close``, ``closed``. After ``close`` the next use starts the command again, so pyinfra can
    reconnect (after a reboot, say) with the same host data.
    """

    def __init__(self, command: str) -> None:
        self.command = command
        self._proxy: paramiko.ProxyCommand | None = None

    def _started(self) -> paramiko.ProxyCommand:
        if self._proxy is None:
            self._proxy = paramiko.ProxyCommand(self.command)
        return self._proxy

    @property
    def started(self) -> bool:
        return self._proxy is not None

    def send(self, content: bytes) -> int:
        return int(self._started().send(content))

    def recv(self, size: int) -> bytes:
        return bytes(self._started().recv(size))

    def settimeout(self, timeout: float) -> None:
        self._started().settimeout(timeout)

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None

    @property
    def closed(self) -> bool:
        return self._proxy is None or bool(self._proxy.closed)

    @property
    def _closed(self) -> bool:  # paramiko's Transport reads this name
        return self.closed

    def to_json(self) -> str:
        """What `pyinfra ... debug-inventory` shows for it."""
        return f"ProxyCommand {self.command}"

    def __repr__(self) -> str:
        return f"LazyProxyCommand({self.command!r})"


# --- the file -------------------------------------------------------------------------------------


def host_entry(
    instance: Instance, *, via: Via, region: str, ssh_user: str, bastion: Bastion | None
) -> tuple[str, dict[str, Any], str]:
    """(inventory name, connection data without the proxy, proxy command line)."""
    command = shlex.join(proxy_command(via, instance, region=region, bastion=bastion))
    if via == "ssm":
        name = instance.instance_id
    else:
        assert instance.private_ip is not None  # proxy_command refused it otherwise
        name = instance.private_ip
    data: dict[str, Any] = {"ssh_hostname": name, "ssh_user": ssh_user, "_sudo": True}
    return name, data, command


def _plain(text: str) -> str:
    """A file name safe inside the written docstring."""
    return re.sub(r'["\\\n]', "_", Path(text).name)


def _literal(value: Any, indent: int) -> str:
    text = pprint.pformat(value, width=100 - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def render_inventory(
    inventory: StackInventory,
    hosts: Mapping[str, Sequence[Instance]],
    *,
    via: Via = DEFAULT_VIA,
    bastion: Bastion | None = None,
    ssh_user: str = DEFAULT_SSH_USER,
    outputs_name: str = "outputs.json",
) -> str:
    """The inventory file: one ``model_<slug> = ([hosts], {data})`` per group."""
    if not _USER.fullmatch(ssh_user):
        raise ConfigError("--ssh-user", ssh_user, "a user name like ubuntu", "not a user name")
    if via == "bastion" and bastion is None:
        raise ConfigError("--bastion", None, "[USER@]HOST[:PORT]", "--via bastion needs the bastion host")
    if via == "ssm" and bastion is not None:
        raise ConfigError("--bastion", bastion.host, "no --bastion with --via ssm", "only for --via bastion")
    how = (
        f"SSH inside SSM Session Manager sessions ({SSM_DOCUMENT}), region {inventory.region}"
        if via == "ssm"
        else f"SSH through the bastion {bastion.host}:{bastion.port}"  # type: ignore[union-attr]
    )
    lines = [
        f'"""pyinfra inventory of llmkit stack {inventory.stack} ({inventory.region}): its model hosts.',
        "",
        f"Written by `llmkit inventory {inventory.stack}` from {_plain(outputs_name)} and the running",
        "instances; write it again when the Auto Scaling groups replace hosts. Do not edit: change the",
        "stack.",
        f"Connections: {how}.",
        "",
        "Run from the repository root:",
        "",
        "    pyinfra THIS_FILE playbooks/site.py",
        '"""',
        "",
        "from llmkit.inventory import LazyProxyCommand as _Proxy",
        "",
    ]
    for group, data in inventory.groups.items():
        lines.append(f"{group} = (")
        lines.append("    [")
        for instance in hosts.get(group, []):
            name, host_data, command = host_entry(
                instance, via=via, region=inventory.region, ssh_user=ssh_user, bastion=bastion
            )
            body = ", ".join(f"{key!r}: {value!r}" for key, value in host_data.items())
            lines.append("        (")
            lines.append(f"            {name!r},")
            lines.append(f"            {{{body},")
            lines.append(f'             "ssh_paramiko_connect_kwargs": {{"sock": _Proxy({command!r})}}}},')
            lines.append("        ),")
        lines.append("    ],")
        lines.append(f"    {_literal(data, 4)},")
        lines.append(")")
        lines.append("")
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
