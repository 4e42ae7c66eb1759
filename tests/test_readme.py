"""The README's first two commands are the ones that CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks[:2]]


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
