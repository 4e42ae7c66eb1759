"""Text from servers and manifests is printed as text: `mirror ls` and `mirror verify` neither
interpret rich markup in a path or a name (which raised), nor pass terminal escape sequences
(ESC, CSI, OSC, C1 controls) through to the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from llmkit.cli import main
from llmkit.files import sha256_file
from llmkit.mirror.manifest import MANIFEST_NAME

OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
CSI_C1 = "\x9b31m"


def plant(
    directory: Path, model: str, tag: str, source_type: str, created: str, data: bytes = b"GGUF"
) -> Path:
    directory.mkdir(parents=True)
    (directory / "tiny.gguf").write_bytes(data)
    doc = {
        "schema": 1,
        "kind": "model",
        "model": model,
        "tag": tag,
        "source": {"type": source_type},
        "created": created,
        "files": [
            {
                "path": "tiny.gguf",
                "sha256": sha256_file(directory / "tiny.gguf"),
                "size": len(data),
                "role": "gguf",
            }
        ],
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(doc), encoding="utf-8")
    return directory


def no_escapes(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text, repr(text)


def test_ls_prints_names_paths_and_sources_as_text(tmp_path: Path) -> None:
    root = tmp_path / "mirror [/x]"
    plant(root / "models" / "a[/red]b", f"tiny{OSC_TITLE}", f"v1{CLEAR}", "[bold red]urls[/]", f"now{CSI_C1}")
    result = CliRunner().invoke(main, ["mirror", "ls", str(root)])
    assert result.exit_code == 0, (result.output, result.exception)
    no_escapes(result.output)
    for shown in (
        "tiny\\x1b]0;pwned\\x07:v1\\x1b[2J",
        "[bold red]urls[/]",
        "now\\x9b31m",
        "a[/red]b",
        "mirror [/x]",
    ):
        assert shown in result.output, (shown, result.output)
    assert "1 manifest(s)" in result.output


def test_verify_prints_findings_and_names_as_text(tmp_path: Path) -> None:
    directory = plant(tmp_path / "v[/red]" / "m", f"tiny{OSC_TITLE}", "v1", "local", "now")
    ok = CliRunner().invoke(main, ["mirror", "verify", str(directory)])
    assert ok.exit_code == 0, (ok.output, ok.exception)
    no_escapes(ok.output)
    assert f"{directory}: tiny\\x1b]0;pwned\\x07:v1, 1 file(s) verified" in ok.output.replace("\n", "")
    (directory / "tiny.gguf").write_bytes(b"GGUF changed")
    bad = CliRunner().invoke(main, ["mirror", "verify", str(directory)])
    assert bad.exit_code == 1, (bad.output, bad.exception)
    no_escapes(bad.output)
    assert "MISMATCH tiny.gguf: size 12 differs from the manifest's 4" in bad.output
    assert f"{directory}: 1 of 1 file(s) do not match the manifest" in bad.output.replace("\n", "")


def test_pull_push_and_bundle_messages_take_paths_as_text(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF tiny")
    staged = tmp_path / "staged [/]"
    pulled = CliRunner().invoke(main, ["mirror", "pull", "tiny:v1", "--to", str(staged), "--gguf", str(gguf)])
    assert pulled.exit_code == 0, (pulled.output, pulled.exception)
    assert f"into {staged}" in pulled.output.replace("\n", "")
    pushed = CliRunner().invoke(main, ["mirror", "push", str(staged), "--to-dir", str(tmp_path / "m [/]")])
    assert pushed.exit_code == 0, (pushed.output, pushed.exception)
    assert f"published {staged}" in pushed.output.replace("\n", "")
