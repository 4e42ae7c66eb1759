"""The Modelfile written from a registry's layers, read by Ollama's own Modelfile parser.

``tests/fixtures/ollama_modelfile_parser`` is a small Go program around
``github.com/ollama/ollama/parser`` of the Ollama version the kit pins; it prints what Ollama
makes of a Modelfile (its commands and its create request). It is built once from the Go module
cache (``GOPROXY=off``: a test sends nothing anywhere; ``go mod download
github.com/ollama/ollama@v<version>`` fetches the module, as the lab's Ollama build does) and
kept in the lab's build cache.

What this proves: text that a hostile registry could use to end a quoted block early is refused
(test_hostile_registry.py), and everything else comes back from Ollama's parser exactly as the
layers hold it: no directive added, no byte changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmkit.artifacts import load_artifacts
from llmkit.lab import builds
from llmkit.mirror import sources
from llmkit.mirror.manifest import MirrorError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ollama_modelfile_parser"
Parse = Callable[[str, Path], dict[str, Any]]


@pytest.fixture(scope="session")
def ollama_parse() -> Parse:
    tc = builds.go_toolchain()
    inputs = hashlib.sha256(tc.version.encode())
    for name in ("go.mod", "go.sum", "main.go"):
        inputs.update((FIXTURE / name).read_bytes())
    binary = builds.default_cache_dir() / "builds" / f"modelfile-parser-{inputs.hexdigest()[:16]}" / "parse"
    if not binary.is_file():
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "GOFLAGS"}
        env |= {"GOTOOLCHAIN": "local", "GOWORK": "off", "GOPROXY": "off", "CGO_ENABLED": "0"}
        env["GOFLAGS"] = "-mod=readonly -buildvcs=false"
        partial = binary.with_name("parse.part")
        built = subprocess.run(
            [tc.go, "build", "-trimpath", "-o", str(partial), "."],
            cwd=FIXTURE,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert built.returncode == 0, (
            "building Ollama's Modelfile parser failed (is the module in the Go module cache? "
            f"go mod download github.com/ollama/ollama@v{load_artifacts()['ollama'].version}):\n"
            + built.stderr[-4000:]
        )
        shutil.move(partial, binary)

    def parse(text: str, directory: Path) -> dict[str, Any]:
        out = subprocess.run(
            [str(binary), str(directory)], input=text.encode(), capture_output=True, timeout=60, check=True
        )
        # the last line: Ollama itself prints warnings (a deprecated parameter) to stdout first
        result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
        return result

    return parse


def test_the_parser_is_the_pinned_ollamas() -> None:
    version = load_artifacts()["ollama"].version
    assert f"github.com/ollama/ollama v{version}\n" in (FIXTURE / "go.mod").read_text(encoding="utf-8")


def staged(directory: Path, layers: dict[str, str | bytes]) -> Path:
    directory.mkdir()
    (directory / "model.gguf").write_bytes(b"GGUF")
    for name, data in layers.items():
        (directory / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return directory


# Text a hostile or careless registry may send, all of it representable: quotes, triple quotes
# that do not end a line, CR LF, tabs, non-ASCII, Go template syntax, leading and trailing blanks.
TEMPLATE = (
    "{{- if .System }}<\uff5cSystem\uff5c>{{ .System }}{{ end }}\r\n"
    '"""not the end""" of anything\n'
    '\t{{ range .Messages }}"{{ .Content }}"{{ end }}\n'
    'SYSTEM """ looks like a directive, is text\n'
    'ends with quotes ""'
)
SYSTEM = ' You answer in "quotes".\nFROM ./elsewhere.gguf is just text here\n'
LICENSES = ['MIT License\n\nCopyright (c) "DeepSeek"', 'Acceptable use: no """ tricks\n']
PARAMS = {
    "stop": ["<\uff5cend\u2581of\u2581sentence\uff5c>", "\n\nUser:", 'say """ no', " lead and trail "],
    "temperature": 0.6,
    "top_p": 0.95,
    "num_ctx": 131072,
    "seed": -1,
    "use_mmap": False,
    "mirostat": 2,  # deprecated: Ollama ignores it, so does the Modelfile
}


def test_ollama_reads_back_exactly_what_the_layers_say(ollama_parse: Parse, tmp_path: Path) -> None:
    directory = staged(
        tmp_path / "m",
        {
            "adapter.gguf": b"GGUF adapter",
            "template": TEMPLATE,
            "system": SYSTEM,
            "params.json": json.dumps(PARAMS),
            "license": LICENSES[0],
            "license-2": LICENSES[1],
        },
    )
    parsed = ollama_parse(sources.modelfile_from_layers(directory), directory)
    assert "error" not in parsed and "create_error" not in parsed, parsed
    names = [c["Name"] for c in parsed["commands"]]
    assert names == ["model", "adapter", "template", "system"] + ["stop"] * 4 + [
        "temperature",
        "top_p",
        "num_ctx",
        "seed",
        "use_mmap",
        "license",
        "license",
    ]
    request = parsed["request"]
    # the files Ollama would create the model from: the mirror's own, and nothing else
    assert list(request["files"]) == [str(directory / "model.gguf")]
    assert list(request["adapters"]) == [str(directory / "adapter.gguf")]
    assert request["template"] == TEMPLATE
    assert request["system"] == SYSTEM
    assert request["license"] == LICENSES
    expected = {k: v for k, v in PARAMS.items() if k != "mirostat"}
    assert request["parameters"] == expected


SAMPLES: dict[type, Any] = {int: 7, float: 0.25, bool: True, list: ["</s>"]}


@pytest.mark.parametrize("key", sorted(sources.PARAMETERS))
def test_every_parameter_written_is_one_ollama_takes(ollama_parse: Parse, tmp_path: Path, key: str) -> None:
    value = SAMPLES[sources.PARAMETERS[key]]
    directory = staged(tmp_path / "m", {"params.json": json.dumps({key: value})})
    parsed = ollama_parse(sources.modelfile_from_layers(directory), directory)
    assert "create_error" not in parsed, parsed
    assert parsed["request"]["parameters"] == {key: value}


@pytest.mark.parametrize(
    "text",
    [
        'x"""\nADAPTER /etc/passwd',
        'x"""   \nFROM ./evil.gguf',
        'x"""\t\r\nSYSTEM evil',
        "x\x1b[2J",
        "x\u00a0y",  # Ollama's parser drops it: the Modelfile would differ from the layer
        "x\u202eevil",
    ],
)
def test_text_ollama_would_read_otherwise_is_refused_not_written(tmp_path: Path, text: str) -> None:
    directory = staged(tmp_path / "m", {"template": text})
    with pytest.raises(MirrorError, match="the template layer"):
        sources.modelfile_from_layers(directory)
