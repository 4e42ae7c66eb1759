"""The README's first two commands are the ones that CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from llmkit.lab import prereqs

ROOT = Path(__file__).resolve().parent.parent


def _readme_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)]


def _readme_commands() -> list[str]:
    return _readme_blocks()[:2]


def test_readme_starts_with_setup_then_test_command() -> None:
    setup, test = _readme_commands()
    assert setup.endswith("llmkit plan dev")
    assert "uv sync --frozen" in setup
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_and_the_same_uv() -> None:
    setup, test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
    uv_pin = re.search(r"uv==[\d.]+", setup)
    assert uv_pin is not None and uv_pin.group(0) in ci
    sync = re.search(r"uv sync[^&]*", setup)
    assert sync is not None and sync.group(0).strip() in ci.splitlines()  # CI installs as users do


def test_ci_installs_prerequisites_with_the_command_the_readme_names() -> None:
    prereqs_command = _readme_blocks()[2]
    assert prereqs_command == prereqs.FIX_COMMAND  # the command every missing-prerequisite message names
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert prereqs_command in ci
    assert ci.index(prereqs_command) < ci.index(_readme_commands()[1])
    # no exact Debian pins anywhere CI or a user installs from: they break at every point release
    assert "apt-get install" not in "\n".join(line for line in ci if not line.lstrip().startswith("#"))
