"""One module per CLI verb."""

from rich.console import Console

# Tables stay readable when output goes to a pipe, a CI log or a file (rich assumes 80).
PIPE_WIDTH = 140


def make_console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=PIPE_WIDTH)
