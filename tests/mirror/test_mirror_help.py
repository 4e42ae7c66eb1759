"""`llmkit mirror --help`: every option of every mirror command says what it does."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from llmkit.commands.mirror import mirror
from llmkit.mirror import download


@pytest.mark.parametrize("name", sorted(mirror.commands))
def test_every_option_has_a_description(name: str) -> None:
    command = mirror.commands[name]
    undescribed = [
        p.opts[0] for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()
    ]
    assert undescribed == [], f"llmkit mirror {name}: options without help"


def test_pull_help_gives_the_defaults_and_bounds_of_workers_and_retries() -> None:
    result = CliRunner().invoke(mirror, ["pull", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--workers INTEGER RANGE Ranged requests in flight at once" in text
    assert f"[default: {download.DEFAULT_WORKERS}; 1<=x<=64]" in text
    assert "--retries INTEGER RANGE Attempts after the first for a request that fails transiently" in text
    assert f"[default: {download.DEFAULT_RETRIES}; x>=0]" in text
    assert f"capped at {download.MAX_BACKOFF_S:g} s" in text
