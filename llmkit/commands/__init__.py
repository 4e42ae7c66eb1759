"""One module per CLI verb."""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from rich.console import Console

# Tables stay readable when output goes to a pipe, a CI log or a file (rich assumes 80).
PIPE_WIDTH = 140


def make_console() -> Console:
    """The console a verb prints through: no highlighting, no emoji codes, 140 columns on a pipe.

    What the kit prints is names and data (model tags, paths, URLs, addresses, a catalog's note):
    rich must not turn a ``:name:`` in them into an emoji, and not looking for one also spares
    loading rich's emoji table.
    """
    from rich.console import Console  # imported here: rich takes a tenth of a second to import

    console = Console(highlight=False, emoji=False)
    return console if console.is_terminal else Console(highlight=False, emoji=False, width=PIPE_WIDTH)


def exit_without_collecting() -> None:
    """When this process exits, leave the objects that exist to its end, not to the collector.

    Python runs full garbage collections as it shuts down, walking every object: about 1 s
    after a plan (pulumi-aws's classes and the program's objects, ~200 MB), 5-10% of
    ``llmkit size``. ``gc.freeze()`` at exit moves what exists out of the collector's sight;
    output is still flushed and the other atexit handlers still run, only the shutdown
    collections skip those objects. For verbs that leave no file open for the collector to
    close (``plan`` writes its graph and closes it). Only at exit: a process that calls the
    verb and goes on (tests) keeps collecting.
    """
    atexit.unregister(gc.freeze)  # registered once, however often the verb runs in a process
    atexit.register(gc.freeze)


def _one_line(invoke: Callable[[], Any]) -> Any:
    try:
        return invoke()
    except LlmkitError as exc:
        from llmkit.untrusted import printable

        # A message may quote what a server, a file or a user sent: it cannot drive the terminal.
        text = "\n".join(printable(line) for line in str(exc).split("\n"))
        click.echo(f"error: {text}", err=True)
        sys.exit(exc.exit_code)


class UserErrorGroup(click.Group):
    """llmkit's user errors as one message and their exit code (2), no traceback; also when the
    group runs on its own (tests, scripts) rather than under ``llmkit``."""

    def invoke(self, ctx: click.Context) -> Any:
        return _one_line(lambda: super(UserErrorGroup, self).invoke(ctx))


class UserErrorCommand(click.Command):
    """:class:`UserErrorGroup` for a single command."""

    def invoke(self, ctx: click.Context) -> Any:
        return _one_line(lambda: super(UserErrorCommand, self).invoke(ctx))
