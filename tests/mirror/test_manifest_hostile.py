"""Our own manifest.json, read back from a mirror anyone may have written to, is data: a
malformed one is one line naming it with exit 2 (``mirror verify``, ``mirror ls``, the hosts'
``Manifest.loads``), never a traceback; a huge one is not read into memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmkit.cli import main
from llmkit.errors import EXIT_USAGE
from llmkit.mirror.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, MirrorError

SHA = "a" * 64


def doc(**override: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "kind": "model",
        "model": "tiny",
        "tag": "v1",
        "source": {"type": "local"},
        "created": "2026-01-01T00:00:00Z",
        "files": [{"path": "tiny.gguf", "sha256": SHA, "size": 3, "role": "gguf"}],
    }
    return {**base, **override}


def nested(depth: int) -> list[Any]:
    inner: list[Any] = []
    for _ in range(depth):
        inner = [inner]
    return inner


def entry(**override: Any) -> dict[str, Any]:
    return {"path": "tiny.gguf", "sha256": SHA, "size": 3, "role": "gguf", **override}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (json.dumps([doc()]), "not a mirror manifest (a JSON list, not an object)"),
        (json.dumps(doc(files="tiny.gguf")), "not a mirror manifest (no list of files)"),
        (json.dumps(doc(files=["tiny.gguf"])), "not a mirror manifest (files[0] is not an object)"),
        (
            json.dumps(doc(files=[entry(size=7)])).replace(": 7", ": 1e999"),
            "the number 1e999 is out of range",
        ),
        (json.dumps(doc(files=[entry(size=-1)])), "tiny.gguf: the size -1 is negative"),
        (json.dumps(doc(files=[entry(size=3.5)])), "tiny.gguf: the size 3.5 is not a whole number"),
        (json.dumps(doc(files=[entry(size="3")])), "tiny.gguf: the size '3' is not a whole number"),
        (json.dumps(doc(files=[entry(path=7)])), "files[0].path is not a string"),
        (json.dumps(doc(files=[entry(path="a\x1b[2Jb")])), "refused path 'a\\x1b[2Jb'"),
        (json.dumps(doc(files=[entry(role={"x": 1})])), "files[0].role {'x': 1} is not [a-z0-9-]"),
        (json.dumps(doc(files=[entry(sha256=None)])), "tiny.gguf: sha256 is not 64 hex digits"),
        (json.dumps(doc(kind="evil")), "kind 'evil', not one of model, bundle"),
        (json.dumps(doc(schema=2)), "schema 2; this llmkit reads schema 1"),
        (json.dumps(doc(model=["x"])), "model is not a string"),
        (json.dumps(doc(source=[["type", "x"]])), "source is not an object"),
        ('{"files": ' + "[" * 50_000 + "]" * 50_000 + "}", "JSON nested too deeply"),
        (json.dumps(doc(source={"a": nested(70)})), "JSON nested more than 64 levels deep"),
        ("<html>502</html>", "not a mirror manifest (JSONDecodeError"),
    ],
    ids=[
        "a-list",
        "files-a-string",
        "files-strings",
        "size-1e999",
        "size-negative",
        "size-float",
        "size-string",
        "path-not-string",
        "path-escape",
        "role-dict",
        "sha-missing",
        "kind",
        "schema",
        "model-list",
        "source-list",
        "deep",
        "nested",
        "html",
    ],
)
def test_a_malformed_manifest_is_one_line_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(MirrorError) as refused:
        Manifest.read(directory)
    assert str(refused.value).startswith(f"{directory / MANIFEST_NAME}: "), refused.value
    assert problem in str(refused.value)
    for verb in ("verify", "ls"):
        result = CliRunner().invoke(main, ["mirror", verb, str(directory)])
        assert result.exit_code == EXIT_USAGE, (verb, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], result.output
        assert "\x1b" not in result.output and "Traceback" not in result.output


def test_a_manifest_larger_than_any_manifest_is_not_read(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    with (directory / MANIFEST_NAME).open("wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: no disk used
    result = CliRunner().invoke(main, ["mirror", "verify", str(directory)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "cannot read the manifest (larger than" in result.output
    with pytest.raises(MirrorError, match="more than the 16777216 bytes a manifest may have"):
        Manifest.loads(b" " * (MAX_MANIFEST_BYTES + 1), "s3://bucket/models/x/manifest.json")


def test_a_good_manifest_still_reads() -> None:
    m = Manifest.loads(json.dumps(doc()).encode(), "here")
    assert (m.name, m.kind, m.files[0].size, m.files[0].role) == ("tiny:v1", "model", 3, "gguf")
    # written by this llmkit, read by this llmkit
    assert Manifest.loads(m.dumps(), "again") == m
