"""`llmkit inventory STACK`: a pyinfra inventory of the stack's model hosts, to run the playbooks on.

How the inputs are made, and the connection decisions, are explained in :mod:`llmkit.inventory`.
"""

from __future__ import annotations

from pathlib import Path

import click

from llmkit import inventory as lib
from llmkit.commands import UserErrorCommand

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command(cls=UserErrorCommand)
@click.argument("stack")
@click.option(
    "--outputs",
    "outputs_path",
    type=_FILE,
    required=True,
    metavar="FILE",
    help="The stack's outputs: `pulumi stack output --json --stack STACK > FILE`.",
)
@click.option(
    "--instances",
    "instances_path",
    type=_FILE,
    required=True,
    metavar="FILE",
    help=(
        "The running hosts: `aws ec2 describe-instances --output json --filters "
        "Name=tag:aws:autoscaling:groupName,Values=llmkit-STACK-* "
        "Name=instance-state-name,Values=running > FILE` (or `aws autoscaling "
        "describe-auto-scaling-groups --output json`, enough for --via ssm)."
    ),
)
@click.option(
    "--via",
    type=click.Choice(lib.VIAS),
    default=lib.DEFAULT_VIA,
    show_default=True,
    help="ssm: SSH inside SSM Session Manager sessions (no inbound SSH); bastion: through --bastion.",
)
@click.option("--bastion", metavar="[USER@]HOST[:PORT]", help="The bastion host, for --via bastion.")
@click.option(
    "--ssh-user", default=lib.DEFAULT_SSH_USER, show_default=True, help="The user pyinfra logs in as (sudo)."
)
@click.option(
    "--write",
    "write_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the inventory to FILE (default: print it).",
)
def inventory(
    stack: str,
    outputs_path: Path,
    instances_path: Path,
    via: lib.Via,
    bastion: str | None,
    ssh_user: str,
    write_path: Path | None,
) -> None:
    """Write a pyinfra inventory of STACK's model hosts (groups model_<slug>, their host data).

    Then run the same deploys the hosts ran at boot, from this machine:
    `pyinfra FILE playbooks/site.py`. Exit codes: 0 ok, 2 usage or input error.
    """
    stack_inventory = lib.load_stack_inventory(outputs_path, stack)
    instances = lib.load_instances(instances_path)
    hosts = lib.hosts_by_group(stack_inventory, instances, str(instances_path))
    text = lib.render_inventory(
        stack_inventory,
        hosts,
        via=via,
        bastion=lib.Bastion.parse(bastion) if bastion is not None else None,
        ssh_user=ssh_user,
        outputs_name=outputs_path.name,
    )
    if write_path is None:
        click.echo(text, nl=False)
        return
    lib.write_text(write_path, text)
    count = sum(len(found) for found in hosts.values())
    empty = [group for group, found in hosts.items() if not found]
    click.echo(f"{write_path}: {count} host(s) in {len(hosts)} group(s), via {via}", err=True)
    if empty:
        click.echo(f"warning: no running instance in {', '.join(empty)}", err=True)
