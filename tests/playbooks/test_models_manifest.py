"""The models deploy's manifest form: ``source: mirror`` verified against the mirror manifest.

The manifest is the one ``llmkit mirror pull --gguf`` writes and ``llmkit mirror push --to-dir``
publishes (``models/<slug>/manifest.json``). The host-side fact's command runs for real in a
shell, against that published directory and over a real HTTP server on 127.0.0.1; the deploy
runs on pyinfra's ``@fake`` connector with the fact's output canned (as in ``test_ollama.py``).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmkit.errors import ConfigError
from llmkit.mirror.manifest import Manifest
from llmkit.mirror.pull import pull_local
from llmkit.mirror.push import push_dir
from playbooks.deploys import models as md
from playbooks.facts import mirror as mf
from playbooks.operations import download as dl
from tests.playbooks import test_ollama as ollama_tests
from tests.playbooks.test_ollama import host_sends

HOST = "@fake/gpu-1"
BASE = "https://mirror.internal"
MANIFEST_URL = f"{BASE}/models/tiny-r1-latest/manifest.json"
GGUF = b"GGUF" + bytes(range(256)) * 40
MODELFILE = 'FROM ./tiny-r1.gguf\nTEMPLATE """{{ .Prompt }}"""\nPARAMETER stop "<|end|>"\n'
STAGE = "/var/lib/ollama/llmkit-staging/tiny-r1_latest"
FREE_PLENTY = {"--output=avail": ["Avail", str(500 * 2**30)]}
OLLAMA_LIST = "NAME                ID              SIZE      MODIFIED\n"
TINY_SERVED = "tiny-r1:latest    1a2b3c4d5e6f    10 kB    1 day ago\n"

needs_tools = pytest.mark.needs("sh", "curl", "wc", "cat")


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A mirror base with ``models/tiny-r1-latest/`` as ``llmkit mirror push --to-dir`` leaves it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny-r1.gguf").write_bytes(GGUF)
    (src / "Modelfile").write_text(MODELFILE)
    staging = tmp_path / "staging"
    pull_local("tiny-r1:latest", staging, [src / "tiny-r1.gguf"], src / "Modelfile")
    base = tmp_path / "mirror base"  # a space: the fact's command must quote the path
    result = push_dir(staging, base)
    assert result.prefix == "models/tiny-r1-latest/"
    return base


def published(mirror: Path) -> Manifest:
    return Manifest.read(mirror / "models" / "tiny-r1-latest")


# --- the fact, run for real -----------------------------------------------------------------------


def fetch(url: str) -> tuple[str, str | None]:
    """The fact's command through a real shell: (its stdout, what the fact makes of it)."""
    fact = mf.MirrorManifest()
    result = subprocess.run(["sh", "-c", fact.command(url=url)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr  # never a failed fact, whatever the mirror
    return result.stdout, fact.process(result.stdout.splitlines())


@pytest.fixture
def http_mirror(mirror: Path) -> Iterator[str]:
    """``mirror`` served read-only over HTTP on 127.0.0.1 (an ephemeral port)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_tools
def test_fact_reads_a_mounted_mirror_by_file_url_and_by_path(mirror: Path) -> None:
    manifest_path = mirror / "models" / "tiny-r1-latest" / "manifest.json"
    for url in (f"file://{manifest_path}".replace(" ", "%20"), str(manifest_path)):
        stdout, text = fetch(url)
        assert stdout.splitlines()[0] == mf.OK_MARKER
        assert text is not None
        assert Manifest.loads(text, url).to_json() == published(mirror).to_json()


@needs_tools
def test_fact_fetches_over_http_from_the_hosts_network(http_mirror: str, mirror: Path) -> None:
    stdout, text = fetch(f"{http_mirror}/models/tiny-r1-latest/manifest.json")
    assert stdout.splitlines()[0] == mf.OK_MARKER
    assert text is not None and json.loads(text) == published(mirror).to_json()
    # A 404 is "cannot be fetched", not the server's error page.
    stdout, text = fetch(f"{http_mirror}/models/nope-latest/manifest.json")
    assert (stdout.strip(), text) == (mf.UNAVAILABLE_MARKER, None)


@needs_tools
def test_fact_reports_none_when_the_manifest_cannot_be_fetched(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (mf.MAX_BYTES + 1))
    unreadable = [
        f"http://127.0.0.1:{closed_port()}/models/x/manifest.json",  # connection refused
        str(tmp_path / "missing" / "manifest.json"),
        f"file://{tmp_path}/missing.json",
        str(tmp_path),  # a directory
        str(big),  # over the size cap
    ]
    for url in unreadable:
        stdout, text = fetch(url)
        assert (stdout.strip(), text) == (mf.UNAVAILABLE_MARKER, None), url


@needs_tools
def test_fact_quotes_the_url(tmp_path: Path) -> None:
    odd = tmp_path / "it's $(touch pwned) `touch pwned2`; x"
    odd.mkdir()
    (odd / "manifest.json").write_text('{"files": []}\n')
    _, text = fetch(str(odd / "manifest.json"))
    assert text == '{"files": []}'
    _, text = fetch(f"http://127.0.0.1:{closed_port()}/a'b;touch pwned3")
    assert text is None
    assert not list(Path.cwd().glob("pwned*")) and not list(tmp_path.rglob("pwned*"))


def test_fact_command_and_output_forms() -> None:
    http = mf.fetch_command("https://mirror.internal/models/x/manifest.json")
    assert "curl -fsSL --connect-timeout 10 --max-time 30 --max-filesize 1048576 " in http
    assert "https://mirror.internal/models/x/manifest.json" in http
    assert "cat /srv/mirror/models/x/manifest.json" in mf.fetch_command(
        "file:///srv/mirror/models/x/manifest.json"
    )
    assert "cat '/srv/my mirror/m.json'" in mf.fetch_command("file://localhost/srv/my%20mirror/m.json")
    assert "cat /srv/m.json" in mf.fetch_command("/srv/m.json")
    assert mf.parse_fetched([]) is None
    assert mf.parse_fetched([mf.UNAVAILABLE_MARKER]) is None
    assert mf.parse_fetched(["", mf.OK_MARKER, "{", '  "a": 1', "}"]) == '{\n  "a": 1\n}'
    assert mf.parse_fetched(['{"a": 1}']) is None  # no marker: not trusted as fetched


# --- host data ------------------------------------------------------------------------------------


def test_manifest_form_host_data() -> None:
    specs = md.model_specs(
        {
            "models_mirror_url": BASE,
            "models": [
                {"name": "tiny-r1", "source": "mirror", "context_length": 4096},
                {
                    "name": "phi",
                    "tag": "phi35-local",
                    "source": "mirror",
                    "manifest": "models/p/manifest.json",
                },
            ],
        }
    )
    assert [(s.served, s.manifest, s.manifest_default, s.key, s.gguf) for s in specs] == [
        ("tiny-r1:latest", "models/tiny-r1-latest/manifest.json", True, "models[0]", None),
        ("phi35-local:latest", "models/p/manifest.json", False, "models[1]", None),
    ]
    assert specs[0].directives == (md.Directive("parameter", "4096", "num_ctx"),)
    assert md.manifest_url(BASE, specs[0]) == MANIFEST_URL


@pytest.mark.parametrize(
    ("entry", "extra", "key"),
    [
        ({"manifest": "../models/x/manifest.json"}, {}, r"models\[0\]\.manifest"),
        ({"manifest": "/etc/manifest.json"}, {}, r"models\[0\]\.manifest"),
        (
            {"manifest": "m.json", "file": "a.gguf", "sha256": "a" * 64, "size": 1},
            {},
            r"models\[0\]\.manifest",
        ),
        ({"size": 123}, {}, r"models\[0\]\.size"),
        ({"modelfile": {"file": "Modelfile", "sha256": "b" * 64}}, {}, r"models\[0\]\.modelfile"),
        ({}, {"models_mirror_url": None}, "models_mirror_url"),
    ],
)
def test_bad_manifest_form_entries_name_the_key(
    entry: dict[str, Any], extra: dict[str, Any], key: str
) -> None:
    data = {"models_mirror_url": BASE, "models": [{"name": "x", "source": "mirror", **entry}], **extra}
    with pytest.raises(ConfigError, match=key):
        md.model_specs(data)


# --- the deploy on the @fake connector ------------------------------------------------------------


def run_deploy(data: dict[str, Any], responses: dict[Any, Any]) -> list[str]:
    """The models deploy on ``@fake/gpu-1`` (test_ollama's runner): the commands it was sent."""
    return ollama_tests.run_deploy(md.models, data, responses)


def served(text: str = "") -> dict[Any, Any]:
    return {"ollama list": (OLLAMA_LIST + text).splitlines()}


def host_reads(url: str, text: str | None) -> dict[Any, Any]:
    """The MirrorManifest fact's output on the host for ``url``, and the published Modelfile beside it."""
    lines = [mf.UNAVAILABLE_MARKER] if text is None else [mf.OK_MARKER, *text.splitlines()]
    modelfile = url.rsplit("/", 1)[0] + "/Modelfile"
    return {
        re.compile(rf"(curl|cat) .*{re.escape(shlex.quote(url))}"): lines,
        **host_sends(modelfile, MODELFILE.encode()),
    }


def blob_present(digest: str) -> dict[Any, Any]:
    path = f"/var/lib/ollama/models/blobs/sha256-{digest}"
    return {
        re.compile(rf"stat -c .* {re.escape(path)} 2>"): (
            f"user=root group=root mode=-rw-r--r-- atime=0 mtime=0 ctime=0 size=1 '{path}'"
        )
    }


def downloads(commands: list[str]) -> list[str]:
    return [c for c in commands if "curl --fail --location --continue-at -" in c]


TINY = {"name": "tiny-r1", "source": "mirror", "context_length": 4096}


def test_manifest_model_is_verified_against_the_manifest(mirror: Path, uploads: dict[str, str]) -> None:
    manifest = published(mirror)
    gguf, modelfile = manifest.by_role("gguf"), manifest.by_role("modelfile")
    assert gguf is not None and modelfile is not None
    data = {"models": [TINY], "models_mirror_url": f"{BASE}/"}
    commands = run_deploy(
        data,
        {
            **served(),
            **FREE_PLENTY,
            **host_reads(MANIFEST_URL, manifest.dumps().decode()),
        },
    )
    (read,) = [c for c in commands if MANIFEST_URL in c]
    assert "curl -fsSL" in read
    (fetch_gguf,) = downloads(commands)
    assert f"url={BASE}/models/tiny-r1-latest/tiny-r1.gguf;" in fetch_gguf
    assert f"dest={STAGE}/tiny-r1.gguf;" in fetch_gguf
    assert f"expected={gguf.sha256};" in fetch_gguf
    (read_mf,) = [c for c in commands if f"{BASE}/models/tiny-r1-latest/Modelfile" in c]
    assert "base64" in read_mf  # read on the host, its sha256 checked on the controller
    assert uploads[f"{STAGE}/Modelfile"] == (
        f'FROM {STAGE}/tiny-r1.gguf\nTEMPLATE """{{{{ .Prompt }}}}"""\n'
        "PARAMETER stop <|end|>\nPARAMETER num_ctx 4096\n"
    )
    create = f"OLLAMA_HOST=127.0.0.1:11434 ollama create tiny-r1:latest -f {STAGE}/Modelfile"
    order = [commands.index(c) for c in (read, read_mf, fetch_gguf, create, f"rm -rf {STAGE}")]
    assert order == sorted(order)


def test_manifest_size_drives_the_disk_preflight(mirror: Path) -> None:
    manifest = published(mirror)
    gguf = manifest.by_role("gguf")
    assert gguf is not None and gguf.size == len(GGUF)
    short = {"--output=avail": ["Avail", "100"]}
    data = {"models": [TINY], "models_mirror_url": BASE}
    with pytest.raises(
        dl.InsufficientDiskError,
        match=rf"tiny-r1\.gguf: need {dl.disk_need(gguf.size)} bytes \(1\.2 x {gguf.size}\), 100 bytes free",
    ):
        run_deploy(data, {**served(), **short, **host_reads(MANIFEST_URL, manifest.dumps().decode())})


def test_manifest_path_and_a_models_level_mirror_url(mirror: Path) -> None:
    """The lab's models_mirror_url (``<url>/models/``) with ``manifest`` relative to it; a mounted mirror."""
    text = published(mirror).dumps().decode()
    model = {**TINY, "manifest": "tiny-r1-latest/manifest.json"}
    lab = "http://10.199.77.1:8080/models/"
    commands = run_deploy(
        {"models": [model], "models_mirror_url": lab},
        {**served(), **FREE_PLENTY, **host_reads(lab + "tiny-r1-latest/manifest.json", text)},
    )
    assert "url=http://10.199.77.1:8080/models/tiny-r1-latest/tiny-r1.gguf;" in downloads(commands)[0]
    mounted = run_deploy(
        {"models": [{**TINY, "manifest": "r1/manifest.json"}], "models_mirror_url": "/srv/mirror"},
        {**served(), **FREE_PLENTY, **host_reads("/srv/mirror/r1/manifest.json", text)},
    )
    assert any("cat /srv/mirror/r1/manifest.json" in c for c in mounted)
    assert "url=file:///srv/mirror/r1/tiny-r1.gguf;" in downloads(mounted)[0]


def test_manifest_model_already_served_is_left_alone(mirror: Path) -> None:
    manifest = published(mirror)
    gguf = manifest.by_role("gguf")
    assert gguf is not None
    data = {"models": [TINY], "models_mirror_url": BASE}
    reads = host_reads(MANIFEST_URL, manifest.dumps().decode())
    commands = run_deploy(data, {**served(TINY_SERVED), **blob_present(gguf.sha256), **reads})
    assert downloads(commands) == []
    assert not any("ollama create" in c for c in commands)
    # Served under that name but from another file (not the manifest's digest): rebuilt.
    commands = run_deploy(data, {**served(TINY_SERVED), **blob_present("c" * 64), **FREE_PLENTY, **reads})
    assert f"expected={gguf.sha256};" in downloads(commands)[0]
    assert any("ollama create tiny-r1:latest" in c for c in commands)


def manifest_doc(files: list[dict[str, Any]], kind: str = "model") -> str:
    return json.dumps(
        {"schema": 1, "kind": kind, "model": "tiny-r1", "tag": "latest", "source": {}, "files": files}
    )


def entry(path: str, role: str | None, digest: str = "a" * 64, size: int = 1000) -> dict[str, Any]:
    return {"path": path, "sha256": digest, "size": size, **({"role": role} if role else {})}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            None,
            r"the host could not fetch the mirror manifest .*defaults to models/tiny-r1-latest/manifest",
        ),
        (
            "<html>502 Bad Gateway</html>",
            r"invalid mirror manifest: .*not a mirror manifest \(JSONDecodeError",
        ),
        (manifest_doc([entry("ollama.tgz", None)], kind="bundle"), r"of kind 'bundle', not 'model'"),
        (manifest_doc([entry("Modelfile", "modelfile")]), r"lists 0 files of role gguf, not exactly one"),
        (
            manifest_doc(
                [entry("m-00001-of-00002.gguf", "gguf"), entry("m-00002-of-00002.gguf", "gguf-part")]
            ),
            r"multi-part GGUF \(m-00002-of-00002\.gguf\)",
        ),
        (manifest_doc([entry("../../etc/x.gguf", "gguf")]), r"refused path '\.\./\.\./etc/x\.gguf'"),
        (
            manifest_doc([entry("my model.gguf", "gguf")]),
            r"a path the deploys do not fetch: 'my model\.gguf'",
        ),
    ],
    ids=["unreachable", "not-json", "kind-bundle", "no-gguf", "gguf-part", "dotdot", "odd-path"],
)
def test_bad_manifest_fails_naming_host_key_and_url(text: str | None, problem: str) -> None:
    data = {"models": [{"name": "llama3.1:8b"}, TINY], "models_mirror_url": BASE}
    with pytest.raises(ConfigError) as caught:
        run_deploy(data, {**served(), **FREE_PLENTY, **host_reads(MANIFEST_URL, text)})
    message = str(caught.value)
    assert message.startswith(f"{HOST}: models[1]: "), message
    assert MANIFEST_URL in message
    assert re.search(problem, message), message


def test_an_explicit_entry_reads_no_manifest() -> None:
    """The explicit form works as before: nothing is read from the mirror before the download."""
    model = {
        "name": "tiny-r1",
        "source": "mirror",
        "file": "tiny-r1/tiny-r1.gguf",
        "sha256": "a" * 64,
        "size": 10,
    }
    commands = run_deploy(
        {"models": [model], "models_mirror_url": "http://10.0.0.1/models/"}, {**served(), **FREE_PLENTY}
    )
    assert not any("manifest.json" in c for c in commands)
    assert "url=http://10.0.0.1/models/tiny-r1/tiny-r1.gguf;" in downloads(commands)[0]


def test_the_documented_host_data_is_the_manifest_form() -> None:
    """docs/mirror.md's example host data validates as the manifest form."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "mirror.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", docs, flags=re.S)
    data: dict[str, Any] = {}
    exec(compile(textwrap.dedent(block), "docs/mirror.md", "exec"), {}, data)
    (spec,) = md.model_specs(data)
    assert spec.manifest == "models/deepseek-r1-7b/manifest.json" and spec.gguf is None
    assert md.manifest_url(str(data["models_mirror_url"]).rstrip("/"), spec) == (
        "https://mirror.llm.example.internal/models/deepseek-r1-7b/manifest.json"
    )
