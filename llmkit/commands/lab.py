"""`llmkit lab up|status|down`: the on-prem lab of systemd-nspawn hosts the playbooks run against.

What each step makes and removes, and why it is safe, is explained in :mod:`llmkit.lab.lab`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from llmkit.commands import UserErrorGroup, make_console
from llmkit.errors import EXIT_FINDINGS, EXIT_OK
from llmkit.lab import builds as lab_builds
from llmkit.lab import lab as lib
from llmkit.lab import machines, network
from llmkit.lab import prereqs as lab_prereqs

_DIR = click.Path(file_okay=False, path_type=Path)
_STATE_DIR = click.option(
    "--state-dir",
    type=_DIR,
    default=lib.DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the lab keeps its state (lab.json, inventory.py, pki/, mirror/, logs/, host roots).",
)


def _progress(message: str) -> None:
    click.echo(f"lab: {message}", err=True)


@click.group(cls=UserErrorGroup)
def lab() -> None:
    """The on-prem lab: Debian 12 hosts in systemd-nspawn on a private /24 of this machine.

    Needs root, systemd-nspawn, debootstrap, apt-cacher-ng and nginx. Hosts reach nothing but
    each other and the controller (caching apt proxy, artefact mirror). Exit codes: 0 ok,
    1 something of the lab is not running (status), 2 usage error or missing prerequisite.
    """


@lab.command()
@click.option(
    "--hosts",
    default=",".join(lib.DEFAULT_HOSTS),
    show_default=True,
    help="Comma-separated host names; groups from prefixes: proxy*, gpu*, monitoring*/mon*, gateway*.",
)
@click.option(
    "--subnet",
    default=network.DEFAULT_SUBNET,
    show_default=True,
    help="The lab's private /24; the controller is .1, hosts .10, .11, ... in --hosts order.",
)
@_STATE_DIR
@click.option(
    "--builds/--no-builds",
    default=True,
    show_default=True,
    help="Build (or reuse) Ollama and node_exporter and write the tiny model into the mirror, "
    "so that the site deploy runs on the lab as it is.",
)
@click.option(
    "--cache-dir",
    type=_DIR,
    default=None,
    help=f"Image and package cache (default ${machines.CACHE_ENV} or {machines.DEFAULT_CACHE_DIR}).",
)
@click.option(
    "--boot-timeout",
    type=click.FloatRange(min=10),
    default=lib.BOOT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for every host's sshd.",
)
def up(
    hosts: str, subnet: str, state_dir: Path, builds: bool, cache_dir: Path | None, boot_timeout: float
) -> None:
    """Build (or reuse) the image, boot the hosts, start the proxy and mirror, write the inventory."""
    names = network.validate_hosts(hosts)
    network.parse_subnet(subnet)
    lib.preflight()
    if builds:
        lab_builds.preflight()  # refuse before anything is made when Go or a C compiler is missing
    made = lib.up(
        names, state_dir, cache_dir=cache_dir, subnet=subnet, boot_timeout=boot_timeout, progress=_progress
    )
    if builds:
        lab_builds.publish(made.mirror_dir, cache_dir, progress=_progress)
        lib.write_inventory(made)  # now with the mirror's Ollama, node_exporter and model
    console = make_console()
    console.print(
        f"lab up in {made.timings.get('up_seconds', 0):.0f} s: {len(made.hosts)} host(s) on {made.subnet}"
    )
    for host in made.hosts:
        console.print(f"  {host.name:<16} {host.address:<15} ssh -i {made.ssh_key} root@{host.address}")
    console.print(f"  inventory  {made.inventory_path}")
    console.print(f"  apt proxy  {made.apt_proxy_url}")
    console.print(f"  mirror     {made.mirror_url}  ({made.mirror_dir})")
    console.print(f"  pki        {made.pki_dir}")
    console.print("next: run the site deploy against the lab, then try the model through the proxy:")
    console.print(f"  uv run pyinfra -y {made.inventory_path} playbooks/site.py", markup=False)
    console.print(f"  uv run llmkit lab status --state-dir {made.state_dir}", markup=False)
    console.print("  (playbooks/README.md, 'Rehearse on the lab', has the curl that asks the model)")


@lab.command()
@_STATE_DIR
@click.option("--no-ssh", is_flag=True, help="Only check that sshd answers on port 22, do not log in.")
def status(state_dir: Path, no_ssh: bool) -> None:
    """Machines, interfaces and services of the lab.

    Exit codes: 0 everything runs, 1 part of the lab is not running, 2 no lab is recorded in
    --state-dir (or a usage error).
    """
    report = lib.status(state_dir, check_ssh=not no_ssh)

    def yes(flag: bool) -> str:
        return "[green]yes[/]" if flag else "[red]no[/]"

    console = make_console()
    machines_table = Table(
        title=f"lab machines ({report.lab.subnet}, controller {report.lab.controller_address})"
    )
    for column in ("host", "address", "machine", "nspawn pid", "running", "ssh", "log"):
        machines_table.add_column(column, overflow="fold")
    for host in report.hosts:
        machines_table.add_row(
            host.name,
            host.address,
            host.machine,
            str(host.pid or "-"),
            yes(host.running),
            yes(host.ssh),
            str(host.log),
        )
    console.print(machines_table)
    interfaces = Table(title="interfaces")
    for column in ("name", "kind", "present", "detail"):
        interfaces.add_column(column)
    for link in report.interfaces:
        interfaces.add_row(link.name, link.kind, yes(link.present), link.detail)
    console.print(interfaces)
    services = Table(title="services")
    for column in ("service", "pid", "running", "listening", "url", "log"):
        services.add_column(column, overflow="fold")
    for svc in report.services:
        services.add_row(
            svc.name, str(svc.pid or "-"), yes(svc.running), yes(svc.listening), svc.url, str(svc.log)
        )
    console.print(services)
    if report.healthy:
        console.print("lab is up")
        sys.exit(EXIT_OK)
    console.print("[red]part of the lab is not running[/]: `llmkit lab down` then `llmkit lab up`")
    sys.exit(EXIT_FINDINGS)


@lab.command()
@_STATE_DIR
def down(state_dir: Path) -> None:
    """Stop and remove the machines, interfaces, services and host roots.

    Keeps, in --state-dir: pki/ and ssh/ (reused by the next `up`), mirror/, logs/,
    apt-cacher-ng/, run/ and the mirror's nginx config; and the image, build and apt caches in the
    cache directory. It lists what it kept. Exit codes: 0 ok, 2 something could not be removed.
    """
    lib.preflight(lib.DOWN_PROGRAMS)
    removed = lib.down(state_dir, progress=_progress)  # says each removal as it happens
    if not removed:
        click.echo(f"nothing to remove: no lab recorded in {state_dir}")
        return
    click.echo(f"removed {len(removed)} item(s); kept:")
    for path, what in lib.kept(state_dir):
        click.echo(f"  {path}  ({what})")
    click.echo(f"  the image, build and apt caches in {machines.resolve_cache_dir()}")


@lab.command()
@click.option(
    "--check", is_flag=True, help="Only report what is missing or off its pin; exit 1 if anything is."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be installed or upgraded (apt's simulation), install nothing.",
)
def prereqs(check: bool, dry_run: bool) -> None:
    """Install what the tests and the lab need: pinned Debian 12 packages (root).

    Pins fix the upstream version and leave the Debian revision free, so they survive security
    point releases (llmkit/data/prereqs.yaml). Says what it installs and upgrades, and why, before
    it does; records the installed versions. Go, gcc/g++ and the host Pythons are checked, not
    installed. Exit codes: 0 ok, 1 something is still missing, 2 apt or the archive refused.
    """
    console = make_console()
    if not check:
        lab_prereqs.install(lambda line: console.print(line, markup=False, soft_wrap=True), dry_run=dry_run)
        if dry_run:
            return
    findings = lab_prereqs.check()
    table = Table(title="test and lab prerequisites")
    for column in ("name", "kind", "for", "ok", "detail"):
        table.add_column(column, overflow="fold")
    for item in findings:
        ok = "[green]yes[/]" if item.ok else "[red]no[/]"
        table.add_row(item.name, item.kind, item.purpose, ok, item.detail)
    console.print(table)
    missing = [item.name for item in findings if not item.ok]
    if missing:
        hint = f" install them with `{lab_prereqs.FIX_COMMAND}` as root" if check else ""
        console.print(f"[red]missing or off their pins[/]: {', '.join(missing)};{hint}")
        sys.exit(EXIT_FINDINGS)
    console.print("every prerequisite is here")
