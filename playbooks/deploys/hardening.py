"""Baseline hardening of every host: key-only SSH and automatic security updates.

Decisions, for reviewers:

- **sshd**: a drop-in (:data:`SSHD_DROPIN`, read before ``50-cloud-init.conf``, and sshd keeps the
  first value it reads) turns off passwords and keyboard-interactive logins and sets
  ``PermitRootLogin`` from ``ssh_permit_root_login`` (``prohibit-password`` or ``no``; ``yes`` is
  refused). ``sshd -t`` checks the whole configuration before the reload, both only when the
  drop-in changed; ``try-reload-or-restart`` leaves a socket-activated sshd (Ubuntu 24.04) alone.
- **unattended-upgrades** (``unattended_upgrades``, Ubuntu and Debian): daily, security origins
  only (the package's own lists, which include regular updates, are cleared), no automatic reboot.
  Turning it off removes our file, which leaves the package's defaults; other distributions are
  refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server

from playbooks.render import render

SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-llmkit.conf"
UNATTENDED_CONF = "/etc/apt/apt.conf.d/52llmkit-unattended-upgrades"
ROOT_LOGIN_CHOICES = ("prohibit-password", "no")

#: unattended-upgrades origin patterns per distribution: security archives only.
SECURITY_ORIGINS: dict[str, tuple[str, ...]] = {
    "Ubuntu": (
        "origin=Ubuntu,archive=${distro_codename}-security,label=Ubuntu",
        "origin=UbuntuESMApps,archive=${distro_codename}-apps-security",
        "origin=UbuntuESM,archive=${distro_codename}-infra-security",
    ),
    "Debian": ("origin=Debian,codename=${distro_codename}-security,label=Debian-Security",),
}

#: Check, then reload: a failed check stops here and the running sshd keeps its configuration.
SSHD_RELOAD = (
    "install -d -m 0755 /run/sshd",
    "/usr/sbin/sshd -t",
    "systemctl try-reload-or-restart ssh.service",
)


def permit_root_login(data: Mapping[str, Any]) -> str:
    value = data.get("ssh_permit_root_login")
    if value == "yes":
        raise ValueError(
            "ssh_permit_root_login: 'yes' would allow root logins with a password; "
            "use 'prohibit-password' (keys only) or 'no'"
        )
    if value not in ROOT_LOGIN_CHOICES:
        raise ValueError(
            f"ssh_permit_root_login must be one of {', '.join(ROOT_LOGIN_CHOICES)}, got {value!r}"
        )
    return str(value)


def render_sshd(data: Mapping[str, Any]) -> str:
    return render("sshd-llmkit.conf.j2", permit_root_login=permit_root_login(data))


def security_origins(distribution: str | None) -> tuple[str, ...]:
    try:
        return SECURITY_ORIGINS[distribution or ""]
    except KeyError:
        raise ValueError(
            "unattended_upgrades: supported on Ubuntu and Debian, "
            f"not {distribution or 'an unknown distribution'}; "
            "set unattended_upgrades: false for this host"
        ) from None


def render_unattended(distribution: str | None) -> str:
    return render("unattended-upgrades.conf.j2", origins=security_origins(distribution))


@deploy("Hardening")
def hardening() -> None:
    """Key-only SSH; daily security updates on Ubuntu and Debian."""
    data = host.data.dict()
    dropin = files.put(
        name="sshd: keys only",
        src=StringIO(render_sshd(data)),
        dest=SSHD_DROPIN,
        user="root",
        group="root",
        mode="644",
    )
    server.shell(name="Check, then reload sshd", commands=list(SSHD_RELOAD), _if=dropin.did_change)

    if data.get("unattended_upgrades"):
        distribution = host.get_fact(LinuxDistribution)["name"]
        content = render_unattended(distribution)
        apt.packages(
            name="unattended-upgrades", packages=["unattended-upgrades"], update=True, cache_time=3600
        )
        files.put(
            name="Security updates only",
            src=StringIO(content),
            dest=UNATTENDED_CONF,
            user="root",
            group="root",
            mode="644",
        )
    else:
        files.file(name="No llmkit unattended-upgrades settings", path=UNATTENDED_CONF, present=False)
