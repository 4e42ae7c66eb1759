"""User-facing errors: each names the key (or file), the bad value and what is accepted.

The CLI prints these without a traceback and exits 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2

#: The most characters of a bad value that an error quotes: a value can be megabytes (a stack file's
#: long scalar, an alias bomb's expansion), and an error message must stay readable and bounded.
MAX_QUOTED = 200


class _Full(Exception):
    """The quote has reached its length: stop walking the value."""


def quoted(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` for an error message, cut after ``limit`` characters with a mark.

    The walk stops as soon as the quote is long enough, so quoting a value costs at most about
    ``limit`` steps whatever its size (a gigabyte string, a list nested a million deep, a cycle).
    Values a person writes are quoted exactly as ``repr`` writes them.
    """
    parts: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > limit:
            raise _Full

    def items(opening: str, values: Any, closing: str, walk_one: Any) -> None:
        emit(opening)
        for i, item in enumerate(values):
            if i:
                emit(", ")
            walk_one(item)
        emit(closing)

    def walk(item: Any) -> None:
        if isinstance(item, str):
            emit(repr(item[: limit + 1]))
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            emit(repr(item))
        elif isinstance(item, int):
            # repr() refuses integers of over 4300 digits; a YAML scalar can be one.
            emit(
                repr(item) if item.bit_length() <= 4 * limit else f"<an integer of {item.bit_length()} bits>"
            )
        elif isinstance(item, dict):

            def pair(kv: tuple[Any, Any]) -> None:
                walk(kv[0])
                emit(": ")
                walk(kv[1])

            items("{", item.items(), "}", pair)
        elif isinstance(item, list):
            items("[", item, "]", walk)
        elif isinstance(item, tuple):
            items("(", item, ",)" if len(item) == 1 else ")", walk)
        elif isinstance(item, set | frozenset) and item:
            items(
                "{" if isinstance(item, set) else "frozenset({",
                item,
                "}" if isinstance(item, set) else "})",
                walk,
            )
        else:
            emit(repr(item)[: limit + 1])

    try:
        walk(value)
    except (_Full, RecursionError):
        text = "".join(parts)[:limit]
        return f"{text}... [cut at {limit} characters]"
    return "".join(parts)


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
        return f"{where}{self.key}: {self.problem} (got {quoted(self.value)}; accepted: {self.accepted})"


class ConfigErrors(LlmkitError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: Sequence[ConfigError], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{head}{len(self.errors)} configuration error(s):"]
        lines += [
            f"  - {e.key}: {e.problem} (got {quoted(e.value)}; accepted: {e.accepted})" for e in self.errors
        ]
        super().__init__("\n".join(lines))
