"""`llmkit`'s verbs are imported only when used; its help lists them all the same."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import llmkit.commands
from llmkit.cli import COMMANDS, load_command, main
from llmkit.commands import UserErrorCommand
from llmkit.errors import LlmkitError

ROOT = Path(__file__).resolve().parent.parent
# What the help and a policy check must not import: each takes a tenth of a second or (pulumi-aws)
# seconds to import.
HEAVY = ("pulumi", "pulumi_aws", "boto3", "paramiko", "pydantic", "rich")


def loaded_by(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter has imported after running ``llmkit ARGV``."""
    script = (
        "import json, sys\nfrom llmkit.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


def test_every_command_module_is_listed() -> None:
    modules = {m.name for m in pkgutil.iter_modules(llmkit.commands.__path__) if not m.name.startswith("_")}
    assert modules == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_static_short_help_is_the_commands_own(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    assert COMMANDS[name].target.startswith(f"llmkit.commands.{name}:")
    stand_in = click.Command(name, help=COMMANDS[name].short_help)
    for limit in (20, 45, 60, 74, 200):  # click shortens to the terminal's width
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit), (name, limit)


def _commands_section(width: int) -> str:
    formatter = click.HelpFormatter(width=width)
    main.format_commands(click.Context(main, info_name="llmkit"), formatter)
    return formatter.getvalue()


def _clicks_own_section(width: int) -> str:
    formatter = click.HelpFormatter(width=width)
    click.Group.format_commands(main, click.Context(main, info_name="llmkit"), formatter)
    return formatter.getvalue()


@pytest.mark.parametrize("width", [50, 80, 200])
def test_help_lists_what_click_would_list_with_every_command_loaded(width: int) -> None:
    saved = dict(main.commands)
    main.commands.clear()
    try:
        lazy = _commands_section(width)
        help_before = CliRunner().invoke(main, ["--help"], terminal_width=width).output
        assert not main.commands, "the help imported a command"
        ctx = click.Context(main)
        for name in COMMANDS:
            main.get_command(ctx, name)
        assert _clicks_own_section(width) == lazy
        assert CliRunner().invoke(main, ["--help"], terminal_width=width).output == help_before
    finally:
        main.commands.clear()
        main.commands.update(saved)
    for name in COMMANDS:
        assert f"  {name} " in lazy


@pytest.mark.parametrize("argv", [["--help"], []])
def test_help_imports_no_command(argv: list[str]) -> None:
    loaded = loaded_by(argv)
    assert not heavy(loaded)
    assert not {m for m in loaded if m.startswith("llmkit.commands.")}


def test_a_command_is_imported_when_it_runs() -> None:
    result = CliRunner().invoke(main, ["size", "--help"])
    assert result.exit_code == 0
    assert "size [OPTIONS] MODEL" in result.output


def test_bare_llmkit_prints_the_help_and_exits_0() -> None:
    bare = CliRunner().invoke(main, [])
    helped = CliRunner().invoke(main, ["--help"])
    assert bare.exit_code == 0
    assert bare.output == helped.output
    assert "Commands:" in bare.output


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("llmkit, version ")


def test_an_error_line_cannot_drive_the_terminal() -> None:
    @click.command(cls=UserErrorCommand)
    def hostile() -> None:
        raise LlmkitError("bad name 'x\x1b]52;c;cHduZWQ=\x07y'\n  - second line \x9b2J")

    result = CliRunner().invoke(hostile, [])
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\x07" not in result.output and "\x9b" not in result.output
    assert result.output.splitlines()[0].startswith("error: bad name 'x\\x1b]52;c;")
    assert result.output.splitlines()[1] == "  - second line \\x9b2J"
