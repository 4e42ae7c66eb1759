"""The ``llmkit`` command line: one verb per job.

Exit codes CI can trust: 0 ok, 1 findings, 2 usage or configuration error. A user mistake
never prints a Python traceback.

Start-up stays close to click's own: each verb lives in its module under
:mod:`llmkit.commands` and is imported only when it runs (or when its own ``--help`` is
asked for). ``llmkit --help`` lists the verbs from :data:`COMMANDS` without importing them;
a test checks that each short help there is the real command's.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

import click

from llmkit.commands import UserErrorGroup
from llmkit.errors import EXIT_OK, EXIT_USAGE


class LazyCommand(NamedTuple):
    """Where a verb lives (``module:attribute``) and the first sentence of its help."""

    target: str
    short_help: str


# In the order of the help listing (click sorts it by name).
COMMANDS: dict[str, LazyCommand] = {
    "inventory": LazyCommand(
        "llmkit.commands.inventory:inventory",
        "Write a pyinfra inventory of STACK's model hosts (groups model_<slug>, their host data).",
    ),
    "keys": LazyCommand(
        "llmkit.commands.keys:keys",
        "The gateway's virtual keys: issue, list, revoke and rotate them (LiteLLM's /key API).",
    ),
    "lab": LazyCommand(
        "llmkit.commands.lab:lab",
        "The on-prem lab: Debian 12 hosts in systemd-nspawn on a private /24 of this machine.",
    ),
    "mirror": LazyCommand(
        "llmkit.commands.mirror:mirror",
        "The model mirror: pull a model once, verify it, publish it to S3 or an on-prem mirror.",
    ),
    "pki": LazyCommand(
        "llmkit.commands.pki:pki",
        "A private CA and the hosts' certificates (DIR/ca.crt, DIR/<NAME>.crt|.key).",
    ),
    "plan": LazyCommand("llmkit.commands.plan:plan", "Plan STACK offline: no cloud account, no Pulumi CLI."),
    "policy": LazyCommand(
        "llmkit.commands.policy:policy",
        "The policy pack (policies/): evaluate a plan graph, or write the rule catalogue.",
    ),
    "size": LazyCommand(
        "llmkit.commands.size:size",
        "Size MODEL: weights, KV cache, activations and overhead, and the cheapest instances that hold it.",
    ),
}


def load_command(name: str) -> click.Command:
    """Import verb ``name``'s module and return its command."""
    module_name, _, attribute = COMMANDS[name].target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):  # pragma: no cover - a wrong COMMANDS entry
        raise TypeError(f"{COMMANDS[name].target} is not a click command")
    return command


class LazyGroup(UserErrorGroup):
    """A group whose verbs are imported on first use; its help listing needs none of them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # bare `llmkit`: the help, and nothing went wrong
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(EXIT_OK)
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, with a stand-in carrying the static help for each verb not yet
        # imported: click shortens both the same way, so the listing is the same.
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name].short_help)
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmkit", prog_name="llmkit")
def main() -> None:
    """llmkit: private, compliant open-weight LLM deployments as code.

    Size a model from its real memory needs, plan a stack offline, and review it.
    Exit codes: 0 ok, 1 findings, 2 usage or configuration error.
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["COMMANDS", "EXIT_USAGE", "LazyCommand", "load_command", "main"]
