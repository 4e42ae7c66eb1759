"""What a registry or a server sends is data, never syntax: `llmkit mirror pull` against real
servers on 127.0.0.1 that send malformed, huge, cut-short or crafted answers.

Every malformed answer is one line naming its source with exit 2, never a traceback; sizes are
bounded before anything is read into memory; a layer's role comes from its exact media type; a
URL's checksum never comes from the server's ETag; a Modelfile is written so that Ollama reads
back exactly what the layers say (checked with Ollama's own parser in
test_modelfile_ollama_parser.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmkit import net
from llmkit.cli import main
from llmkit.errors import EXIT_USAGE, LlmkitError
from llmkit.mirror.manifest import MANIFEST_NAME, Manifest
from llmkit.mirror.sources import MAX_MANIFEST_BYTES, MAX_TEXT_LAYER
from llmkit.net import UnsafeRequest
from tests.mirror.hostile_http import Answer, Server, digest, serve, sha256

GGUF = b"GGUF" + bytes(range(256)) * 100
CONFIG = b'{"model_format":"gguf"}'
REPO = "/v2/library/tiny"
MANIFEST_PATH = f"{REPO}/manifests/latest"
MT = "application/vnd.ollama.image."


def layer(media: str, data: bytes, **override: Any) -> dict[str, Any]:
    return {"mediaType": media, "digest": digest(data), "size": len(data), **override}


def manifest_doc(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": layer("application/vnd.docker.container.image.v1+json", CONFIG),
        "layers": [layer(MT + "model", GGUF), *layers],
    }


def publish(server: Server, doc: Any, *blobs: bytes) -> None:
    server.routes[MANIFEST_PATH] = Answer(
        200, json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    )
    for blob in (GGUF, CONFIG, *blobs):
        server.routes[f"{REPO}/blobs/{digest(blob)}"] = Answer(200, blob, ranges=True)


@pytest.fixture
def reg() -> Iterator[Server]:
    with serve() as server:
        yield server


def pull(reg: Server, to: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main, ["mirror", "pull", "tiny", "--to", str(to), "--registry", reg.url, "--no-progress", *extra]
    )


def one_line(result: Result, *needles: str) -> str:
    """Exit 2, one line ``error: ...`` holding every needle, no traceback, no terminal escape."""
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "\x1b" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nothing_published(to: Path) -> None:
    assert not (to / MANIFEST_NAME).exists() and not (to / "Modelfile").exists()


# --- the registry's manifest --------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([], "the manifest is not a JSON object"),
        ({"layers": ["model.gguf"]}, "layers[0]: not an object"),
        ({"layers": "model.gguf"}, "the manifest lists no layers"),
        (
            json.dumps({"layers": [layer(MT + "model", GGUF, size=999)]}).replace("999", "1e999").encode(),
            "the number 1e999 is out of range",
        ),
        ({"layers": [layer(MT + "model", GGUF, size=-5)]}, "layers[0]: the size -5 is negative"),
        (
            {"layers": [layer(MT + "model", GGUF, size=True)]},
            "layers[0]: the size True is not a whole number",
        ),
        (
            {"layers": [layer(MT + "model", GGUF, size="12")]},
            "layers[0]: the size '12' is not a whole number",
        ),
        ({"layers": [layer(MT + "model", GGUF, size=1 << 60)]}, "is more than the"),
        ({"layers": [layer(MT + "model", GGUF, digest="sha256:../../x")]}, "is not sha256:<64 hex>"),
        ({"layers": [layer(MT + "model", GGUF, mediaType=7)]}, "layers[0]: no mediaType"),
        ({"config": "x", "layers": [layer(MT + "model", GGUF)]}, "config: not an object"),
        (DEEP.encode(), "JSON nested too deeply"),
        (b'{"layers": NaN}', "NaN is not a number the kit accepts"),
        (b"<html>502 Bad Gateway</html>", "not JSON (JSONDecodeError"),
        (b'{"layers": "\xff"}', "not JSON (UnicodeDecodeError"),
    ],
    ids=[
        "a-list",
        "layers-strings",
        "layers-a-string",
        "size-1e999",
        "size-negative",
        "size-bool",
        "size-string",
        "size-absurd",
        "digest-traversal",
        "media-not-string",
        "config-string",
        "deep-nesting",
        "nan",
        "html",
        "not-utf8",
    ],
)
def test_a_malformed_manifest_is_one_line_naming_it(
    reg: Server, tmp_path: Path, doc: Any, problem: str
) -> None:
    publish(reg, doc)
    one_line(pull(reg, tmp_path / "m"), f"{reg.url}{MANIFEST_PATH}", problem)
    nothing_published(tmp_path / "m")


def test_a_manifest_of_a_gigabyte_is_refused_before_it_is_read(reg: Server, tmp_path: Path) -> None:
    sent: list[int] = []

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 30))
        handler.end_headers()
        try:
            for _ in range(1 << 14):  # 1 GiB in 64 KiB blocks, while the client reads
                handler.wfile.write(b"[" * (1 << 16))
                sent.append(1 << 16)
        except OSError:
            pass

    reg.routes[MANIFEST_PATH] = Answer(stream=huge)
    one_line(pull(reg, tmp_path / "m"), f"is {1 << 30} bytes, more than the {MAX_MANIFEST_BYTES} accepted")
    assert sum(sent) < 64 << 20  # the client hung up long before


def test_an_endless_manifest_is_cut_at_its_bound(reg: Server, tmp_path: Path) -> None:
    sent: list[int] = []

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")  # no length: the body ends when the server says
        handler.end_headers()
        handler.close_connection = True
        try:
            for _ in range(4096):  # 256 MiB, if anyone read it all
                handler.wfile.write(b" " * (1 << 16))
                sent.append(1 << 16)
        except OSError:
            pass

    reg.routes[MANIFEST_PATH] = Answer(stream=endless)
    one_line(pull(reg, tmp_path / "m"), f"larger than the {MAX_MANIFEST_BYTES} bytes accepted")
    assert sum(sent) < 64 << 20


def test_a_short_body_is_one_line(reg: Server, tmp_path: Path) -> None:
    def short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "5000")
        handler.end_headers()
        handler.wfile.write(b'{"layers": [')
        handler.close_connection = True

    reg.routes[MANIFEST_PATH] = Answer(stream=short)
    one_line(pull(reg, tmp_path / "m"), "the answer ended after 12 of its 5000 bytes")


# --- a layer's role comes from its exact media type ----------------------------------------------


@pytest.mark.parametrize(
    "media",
    [
        "application/vnd.evil.gguf",  # a suffix match would have made it the model
        "application/vnd.ollama.image.model.gguf",
        "application/vnd.ollama.image.params+json",
        "text/x.template",
        "application/vnd.ollama.image.tensor",
    ],
)
def test_a_layer_of_an_unknown_media_type_is_refused(reg: Server, tmp_path: Path, media: str) -> None:
    other = b"GGUF not what the registry says"
    publish(reg, manifest_doc(layer(media, other)), other)
    one_line(pull(reg, tmp_path / "m"), "layers[1]: unknown media type", repr(media))
    assert not reg.requests_to(f"{REPO}/blobs/")  # refused before any blob moves
    nothing_published(tmp_path / "m")


def test_roles_come_from_ollamas_media_types_exactly(reg: Server, tmp_path: Path) -> None:
    template, embed, adapter = b"{{ .Prompt }}", b"old embeddings", b"GGUF adapter"
    licenses = [b"MIT", b"Acceptable use policy"]
    publish(
        reg,
        manifest_doc(
            layer(MT + "prompt", template),  # the template's older media type
            layer(MT + "embed", embed),  # deprecated; Ollama ignores it too
            layer(MT + "adapter", adapter),
            *(layer(MT + "license", text) for text in licenses),
        ),
        template,
        embed,
        adapter,
        *licenses,
    )
    result = pull(reg, tmp_path / "m")
    assert result.exit_code == 0, result.output
    m = Manifest.read(tmp_path / "m")
    assert [(f.path, f.role) for f in m.files] == [
        ("config.json", "config"),
        ("model.gguf", "gguf"),
        ("template", "template"),
        ("adapter.gguf", "adapter"),
        ("license", "license"),
        ("license-2", "license"),
        ("ollama-manifest.json", "ollama-manifest"),
        ("Modelfile", "modelfile"),
    ]
    assert not reg.requests_to(f"{REPO}/blobs/{digest(embed)}")
    modelfile = (tmp_path / "m" / "Modelfile").read_text()
    assert modelfile == (
        'FROM ./model.gguf\nADAPTER ./adapter.gguf\nTEMPLATE """{{ .Prompt }}"""\n'
        'LICENSE """MIT"""\nLICENSE """Acceptable use policy"""\n'
    )


def test_a_second_model_layer_is_refused(reg: Server, tmp_path: Path) -> None:
    other = b"GGUF another model"
    publish(reg, manifest_doc(layer(MT + "model", other)), other)
    one_line(pull(reg, tmp_path / "m"), "layers[1]: a second gguf layer")


def test_a_text_layer_larger_than_its_bound_is_refused_before_any_download(
    reg: Server, tmp_path: Path
) -> None:
    template = b"x" * (MAX_TEXT_LAYER + 1)
    publish(reg, manifest_doc(layer(MT + "template", template)), template)
    one_line(pull(reg, tmp_path / "m"), f"a template layer of {MAX_TEXT_LAYER + 1} bytes, more than")
    assert not reg.requests_to(f"{REPO}/blobs/")


# --- the Modelfile: data, never directives -------------------------------------------------------


def with_layers(reg: Server, **texts: bytes) -> None:
    kinds = {"params": "params", "template": "template", "system": "system", "license": "license"}
    blobs = list(texts.values())
    publish(reg, manifest_doc(*(layer(MT + kinds[k], v) for k, v in texts.items())), *blobs)


@pytest.mark.parametrize(
    ("texts", "problem"),
    [
        (
            {"params": json.dumps({"temperature 0.1\nADAPTER /etc/passwd\nPARAMETER top_k": 1}).encode()},
            "the params layer (params.json): 'temperature 0.1\\nADAPTER /etc/passwd\\nPARAMETER top_k' "
            "is not one of Ollama's parameters",
        ),
        (
            {"params": json.dumps({'stop """': ["x"]}).encode()},
            "the params layer (params.json): 'stop \"\"\"' is not one of Ollama's parameters",
        ),
        (
            {"params": json.dumps({"stop": ['"""\nADAPTER ./evil.gguf\n']}).encode()},
            'the params layer (params.json): stop: holds """ at the end of a line',
        ),
        (
            {"template": b'{{ .Prompt }}"""\nADAPTER /etc/passwd\nSYSTEM """you obey'},
            'the template layer (template): holds """ at the end of a line',
        ),
        (
            {"system": b'be nice"""  \r\nFROM evil'},
            'the system layer (system): holds """ at the end of a line',
        ),
        (
            {"template": b"{{ .Prompt }}\x1b]0;x\x07"},
            "the template layer (template): holds the character U+001B",
        ),
        ({"template": b"caf\xe9 {{ .Prompt }}"}, "the template layer (template): not UTF-8 text (byte 3)"),
        ({"params": b"temperature: 0.6"}, "the params layer (params.json): not JSON (JSONDecodeError"),
        (
            {"params": b'["temperature", 0.6]'},
            "the params layer (params.json): not a JSON object of parameters",
        ),
        (
            {"params": b'{"temperature": 1e999}'},
            "the params layer (params.json): the number 1e999 is out of range",
        ),
        (
            {"params": b'{"temperature": "hot"}'},
            "the params layer (params.json): temperature: expected a number",
        ),
        ({"params": b'{"num_ctx": 4096.5}'}, "num_ctx: expected a whole number"),
        ({"params": b'{"use_mmap": "yes"}'}, "use_mmap: expected true or false"),
        ({"params": b'{"stop": [1]}'}, "stop: expected a string or a list of strings"),
        ({"params": b'{"temperature": 1e300}'}, "temperature: 1e+300 is out of range"),
    ],
    ids=[
        "params-key-newline",
        "params-key-open-block",
        "stop-closes-block",
        "template-closes-block",
        "system-closes-block-crlf",
        "template-escape",
        "template-not-utf8",
        "params-not-json",
        "params-a-list",
        "params-1e999",
        "params-wrong-type",
        "params-int-float",
        "params-bool",
        "params-stop-number",
        "params-float32-overflow",
    ],
)
def test_layers_that_would_inject_or_misstate_modelfile_directives_are_refused(
    reg: Server, tmp_path: Path, texts: dict[str, bytes], problem: str
) -> None:
    with_layers(reg, **texts)
    one_line(pull(reg, tmp_path / "m"), problem)
    nothing_published(tmp_path / "m")


def test_deprecated_parameters_are_left_out_as_ollama_ignores_them(reg: Server, tmp_path: Path) -> None:
    with_layers(reg, params=json.dumps({"mirostat": 2, "temperature": 0.6, "stop": "<|end|>"}).encode())
    result = pull(reg, tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "Modelfile").read_text() == (
        'FROM ./model.gguf\nPARAMETER temperature 0.6\nPARAMETER stop """<|end|>"""\n'
    )


# --- a URL's checksum never comes from the server --------------------------------------------------


def test_an_etag_is_never_taken_as_the_sha256(reg: Server, tmp_path: Path) -> None:
    data = b"GGUF from a URL without a listed sha256"
    reg.routes["/m.gguf"] = Answer(
        200, data, {"X-Linked-Etag": f'"{sha256(data)}"', "ETag": f'"{sha256(data)}"'}, ranges=True
    )
    url = f"{reg.url}/m.gguf"
    args = ["mirror", "pull", "tiny", "--url", url, "--no-progress"]
    refused = CliRunner().invoke(main, [*args, "--to", str(tmp_path / "a")])
    one_line(refused, f"--url: no sha256 is known for {url}", "--allow-unverified")
    assert reg.seen == []  # refused before any request
    taken = CliRunner().invoke(main, [*args, "--to", str(tmp_path / "b"), "--allow-unverified"])
    assert taken.exit_code == 0, taken.output
    assert "1 file(s) taken without a known sha256 (--allow-unverified" in taken.output
    m = Manifest.read(tmp_path / "b")
    assert m.source["unverified"] == ["m.gguf"] and m.files[0].sha256 == sha256(data)


def test_with_allow_unverified_a_lying_etag_changes_nothing(reg: Server, tmp_path: Path) -> None:
    data = b"GGUF the bytes"
    reg.routes["/m.gguf"] = Answer(200, data, {"X-Linked-Etag": '"' + "0" * 64 + '"'}, ranges=True)
    result = CliRunner().invoke(
        main,
        [
            *("mirror", "pull", "tiny", "--to", str(tmp_path / "m")),
            *("--url", f"{reg.url}/m.gguf", "--allow-unverified", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert Manifest.read(tmp_path / "m").files[0].sha256 == sha256(data)


def test_allow_unverified_goes_with_urls_only(reg: Server, tmp_path: Path) -> None:
    one_line(pull(reg, tmp_path / "m", "--allow-unverified"), "--allow-unverified goes with --url/--urls")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{url} {sha} ²", "SIZE '²' is not a byte count"),
        ("{url} {sha} 99999999999999999999999", "is not a byte count"),
        ("{url} nothex", "sha256 'nothex' is not 64 hex digits"),
        ("http://[::1/m.gguf {sha}", "not a URL"),
        ("{url}%0a.gguf {sha}", "refused path"),
    ],
)
def test_a_bad_url_list_line_is_one_line_naming_it(
    reg: Server, tmp_path: Path, line: str, problem: str
) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(line.format(url=f"{reg.url}/m", sha="a" * 64) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["mirror", "pull", "tiny", "--to", str(tmp_path / "m"), "--urls", str(listing), "--no-progress"]
    )
    one_line(result, problem)
    if "urls.txt" not in problem and "refused path" not in problem:
        assert re.search(r"urls\.txt:1", result.output)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://[::1/simple/", "not a URL"),
        ("http://127.0.0.1:99999/", "not a URL"),
        ("http://127.0.0.1/a b", "spaces or control characters"),
        ("http://127.0.0.1/\x1b[2J", "spaces or control characters"),
        ("ftp://mirror/", "expected an http(s):// URL"),
        ("https:///nohost", "expected an http(s):// URL"),
    ],
)
def test_bad_urls_are_one_line_usage_errors(url: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeRequest, match=problem.replace("(", r"\(").replace(")", r"\)")):
        net.check_url(url, "--url")
    for args in (
        ["pull", "tiny", "--to", str(tmp_path / "m"), "--url", url + "#sha256=" + "a" * 64],
        ["pull", "tiny", "--to", str(tmp_path / "m"), "--registry", url],
        ["bundle", "--to", str(tmp_path / "b"), "--index-url", url],
    ):
        result = CliRunner().invoke(main, ["mirror", *args, "--no-progress"])
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
        assert "\x1b" not in result.output


# --- the registry's token service -----------------------------------------------------------------


def with_token_service(reg: Server, answer: Answer) -> None:
    challenge = f'Bearer realm="{reg.url}/token",service="t",scope="repository:library/tiny:pull"'
    reg.routes[MANIFEST_PATH] = Answer(401, b"{}", {"WWW-Authenticate": challenge})
    reg.routes["/token"] = answer


def huge_token(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(2 << 30))
    handler.end_headers()
    handler.close_connection = True


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Answer(stream=huge_token), "is 2147483648 bytes, more than the 1048576 accepted"),
        (
            Answer(200, json.dumps({"token": "abc\r\nX-Injected: 1"}).encode()),
            "a token that is not visible ASCII",
        ),
        (Answer(200, json.dumps({"token": "a" * 70_000}).encode()), "a token that is not visible ASCII"),
        (Answer(200, b'{"token": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"), "JSON nested too deeply"),
        (Answer(200, b'["token", "abc"]'), "answered without a token"),
        (Answer(200, b"<html>login</html>"), "not JSON (JSONDecodeError"),
        (Answer(401, b"{}", {"Content-Type": "text/plain"}), "refused a token anonymously"),
    ],
    ids=["gigabytes", "crlf", "too-long", "deep", "a-list", "html", "refused"],
)
def test_a_token_answer_is_data(reg: Server, tmp_path: Path, answer: Answer, problem: str) -> None:
    with_token_service(reg, answer)
    one_line(pull(reg, tmp_path / "m"), f"{reg.url}: the token service {reg.url}/token", problem)


# --- a package index's project page --------------------------------------------------------------


def test_an_index_page_is_data(reg: Server, tmp_path: Path) -> None:
    from llmkit.mirror import wheels

    name = "pip-26.3-py3-none-any.whl"
    cases = {
        "deep": (b'{"files": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "JSON nested too deeply"),
        "sizes": (
            json.dumps({"files": [{"filename": name, "url": name, "size": -1}]}).encode(),
            "files[0]: the size -1 is negative",
        ),
        "strings": (json.dumps({"files": [name]}).encode(), "files[0]: not a PEP 691 file"),
        "no-files": (b'{"files": "pip"}', "not a PEP 691 project page (no list of files)"),
    }
    for project, (body, problem) in cases.items():
        reg.routes[f"/simple/{project}/"] = Answer(200, body, {"Content-Type": wheels.JSON_ACCEPT})
        with pytest.raises(LlmkitError, match=re.escape(problem)):
            wheels.index_files(f"{reg.url}/simple/", project)

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 40))
        handler.end_headers()
        handler.close_connection = True

    reg.routes["/simple/huge/"] = Answer(stream=huge)
    with pytest.raises(LlmkitError, match="more than the 67108864 accepted; refused before reading it"):
        wheels.index_files(f"{reg.url}/simple/", "huge")
    # links that are not http(s) are never taken: a remote index cannot point at local files
    page = f'<a href="file:///etc/passwd#sha256={"a" * 64}">{name}</a><a href="{name}">{name}</a>'
    reg.routes["/simple/pip/"] = Answer(200, page.encode(), {"Content-Type": "text/html"})
    assert [f.url for f in wheels.index_files(f"{reg.url}/simple/", "pip")] == [
        f"{reg.url}/simple/pip/{name}"
    ]
