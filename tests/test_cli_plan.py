"""`llmkit plan` counts the resources registered while it runs, on a terminal and nowhere else."""

from __future__ import annotations

import gc
import os
import pty
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pulumi
import yaml
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.commands.plan import progress
from llmkit.plan import record

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = """
import pulumi

class Part(pulumi.ComponentResource):
    def __init__(self, name):
        super().__init__("llmkit:test:Part", name)
        self.register_outputs({})

for i in range(3):
    Part(f"part-{i}")
"""


def _project(tmp_path: Path) -> Path:
    """The real dev stack file and a program that registers three components."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "stacks").mkdir()
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "__main__.py").write_text(textwrap.dedent(PROGRAM))
    return tmp_path


def test_the_recorder_tells_the_count_after_each_registration() -> None:
    counts: list[int] = []

    def program() -> None:
        for i in range(3):
            pulumi.ComponentResource("llmkit:test:Part", f"part-{i}")

    resources, _ = record(program, on_register=counts.append)
    assert counts == list(range(1, len(resources) + 1))
    assert len(resources) == 3


def test_no_progress_when_not_shown() -> None:
    with progress("dev", shown=False) as on_register:
        assert on_register is None


def test_no_progress_in_piped_output(tmp_path: Path) -> None:
    project = _project(tmp_path)
    result = CliRunner().invoke(main, ["plan", "dev", "--project-dir", str(project)])
    assert result.exit_code in (0, 1), result.output
    assert "registered" not in result.output
    piped = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", "plan", "dev", "--project-dir", str(project)],
        capture_output=True,
        text=True,
    )
    assert "planned in" in piped.stdout
    assert "registered" not in piped.stdout + piped.stderr


def _on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a pseudo-terminal; its exit code and output."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=terminal, stdout=terminal, stderr=terminal, env={**os.environ, "TERM": "xterm"}, cwd=ROOT
    )
    os.close(terminal)
    seen = bytearray()
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        seen.extend(data)
    os.close(controller)
    return process.wait(timeout=120), seen.decode(errors="replace")


def test_progress_on_a_terminal(tmp_path: Path) -> None:
    project = _project(tmp_path)
    code, text = _on_a_terminal(
        [sys.executable, "-m", "llmkit.cli", "plan", "dev", "--project-dir", str(project)]
    )
    assert code in (0, 1), text
    assert "planning dev: " in text
    assert "resources registered" in text
    assert "planned in" in text


def test_a_process_that_goes_on_after_a_plan_keeps_collecting(tmp_path: Path) -> None:
    """The plan leaves the collector to the end of a `llmkit plan` process (gc.freeze at exit),
    not to a process that calls the command and goes on."""
    frozen = gc.get_freeze_count()
    project = _project(tmp_path)
    for _ in range(2):
        result = CliRunner().invoke(main, ["plan", "dev", "--project-dir", str(project)])
        assert result.exit_code in (0, 1), result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
