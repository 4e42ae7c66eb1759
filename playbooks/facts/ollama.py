"""Facts for the Ollama deploys: installed models (``ollama list``) and free disk space.

Both commands exit 0 whatever the host's state, so that a host without Ollama (or with the
server down) reports "nothing" or "unknown" instead of failing fact gathering; the parsing
lives in module functions the tests call on captured output.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from pyinfra.api import FactBase

UNREACHABLE_MARKER = "@@llmkit-ollama-unreachable"
NOT_INSTALLED_MARKER = "@@llmkit-ollama-not-installed"
# Columns are separated by runs of two or more spaces (sizes such as "4.9 GB" hold one).
_COLUMNS = re.compile(r"\s{2,}|\t+")


@dataclass(frozen=True)
class InstalledModel:
    name: str  # as Ollama names it, always with a tag ("llama3.1:8b", "mymodel:latest")
    digest: str  # the short ID column
    size: str
    modified: str


def normalize_model_name(name: str) -> str:
    """``llama3`` -> ``llama3:latest``: Ollama's implicit tag, so names compare equal."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def parse_ollama_list(lines: Iterable[str]) -> list[InstalledModel]:
    """Rows of ``ollama list`` (``NAME  ID  SIZE  MODIFIED``); the header and blanks are skipped."""
    found = []
    for raw in lines:
        line = raw.rstrip()
        if not line.strip():
            continue
        cells = [c for c in _COLUMNS.split(line.strip()) if c]
        if cells[0] == "NAME" and len(cells) > 1 and cells[1] == "ID":
            continue
        if len(cells) < 2:
            continue
        name = cells[0]
        digest = cells[1] if re.fullmatch(r"[0-9a-f]{6,64}", cells[1]) else ""
        rest = cells[2:] if digest else cells[1:]
        found.append(
            InstalledModel(
                name=normalize_model_name(name),
                digest=digest,
                size=rest[0] if rest else "",
                modified=rest[1] if len(rest) > 1 else "",
            )
        )
    return found


def ollama_list_command(ollama_host: str) -> str:
    host = shlex.quote(ollama_host)
    return (
        f"if ! command -v ollama >/dev/null 2>&1; then echo {NOT_INSTALLED_MARKER}; "
        f"else OLLAMA_HOST={host} ollama list 2>/dev/null || echo {UNREACHABLE_MARKER}; fi"
    )


class OllamaModels(FactBase):
    """Models the Ollama server at ``ollama_host`` (``127.0.0.1:11434``) serves.

    ``[]`` when Ollama is not installed (nothing can be there yet); ``None`` when it is installed
    but the server did not answer (the state is unknown: callers must not prune on it).
    """

    def command(self, ollama_host: str) -> str:
        return ollama_list_command(ollama_host)

    def process(self, output: list[str]) -> list[InstalledModel] | None:
        text = [line for line in output if line.strip()]
        if any(line.strip() == NOT_INSTALLED_MARKER for line in text):
            return []
        if any(line.strip() == UNREACHABLE_MARKER for line in text):
            return None
        return parse_ollama_list(text)


def parse_free_bytes(lines: Iterable[str]) -> int | None:
    """The last all-digit line of ``df -B1 --output=avail`` (the header is ``Avail``).

    (GNU df refuses ``-P`` together with ``--output``, so the command must not add it.)
    """
    value = None
    for line in lines:
        text = line.strip()
        if text.isdigit():
            value = int(text)
    return value


class FreeDiskSpace(FactBase):
    """Free bytes (for unprivileged writers, as df reports) on the filesystem that holds ``path``.

    ``path`` need not exist yet: the nearest existing parent directory is measured, which is the
    filesystem the file will land on. ``None`` when df gives nothing usable.
    """

    def command(self, path: str) -> str:
        p = shlex.quote(path)
        return (
            f'd={p}; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done; '
            'df -B1 --output=avail "$d" 2>/dev/null || true'
        )

    def process(self, output: list[str]) -> int | None:
        return parse_free_bytes(output)
