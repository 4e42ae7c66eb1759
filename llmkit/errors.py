"""User-facing errors: each names the key (or file), the bad value and what is accepted.

The CLI prints these without a traceback and exits 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


class LlmkitError(Exception):
    """An error caused by the user's input; its message is the whole story."""

    exit_code = EXIT_USAGE


class ConfigError(LlmkitError):
    """One bad value in configuration or on the command line."""

    def __init__(
        self,
        key: str,
        value: Any,
        accepted: str,
        message: str,
        source: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        self.problem = message
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.problem} (got {self.value!r}; accepted: {self.accepted})"


class ConfigErrors(LlmkitError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: Sequence[ConfigError], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{head}{len(self.errors)} configuration error(s):"]
        lines += [f"  - {e.key}: {e.problem} (got {e.value!r}; accepted: {e.accepted})" for e in self.errors]
        super().__init__("\n".join(lines))
