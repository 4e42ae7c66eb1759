"""The ``llmkit`` command line: one verb per job.

Exit codes CI can trust: 0 ok, 1 findings, 2 usage or configuration error. A user mistake
never prints a Python traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import click

from llmkit.commands import UserErrorGroup
from llmkit.errors import EXIT_USAGE


@click.group(cls=UserErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("llmkit"), "--version", prog_name="llmkit")
def main() -> None:
    """llmkit: private, compliant open-weight LLM deployments as code.

    Size a model from its real memory needs, plan a stack offline, and review it.
    Exit codes: 0 ok, 1 findings, 2 usage or configuration error.
    """


def _register() -> None:
    from llmkit.commands.inventory import inventory
    from llmkit.commands.keys import keys
    from llmkit.commands.lab import lab
    from llmkit.commands.mirror import mirror
    from llmkit.commands.pki import pki
    from llmkit.commands.plan import plan
    from llmkit.commands.policy import policy
    from llmkit.commands.size import size

    main.add_command(size)
    main.add_command(plan)
    main.add_command(policy)
    main.add_command(pki)
    main.add_command(inventory)
    main.add_command(lab)
    main.add_command(mirror)
    main.add_command(keys)


_register()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["EXIT_USAGE", "main"]
