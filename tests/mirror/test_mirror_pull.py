"""`llmkit mirror pull|verify|ls` against a real HTTP file server on 127.0.0.1 that can misbehave."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmkit.commands.mirror import mirror
from llmkit.mirror import download
from llmkit.mirror.download import Blob, Options, fetch_all
from llmkit.mirror.manifest import MANIFEST_NAME, DigestMismatch, Manifest, MirrorError
from llmkit.mirror.pull import pull_local, pull_urls

MIB = 1 << 20


def data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def opts(**kw: object) -> Options:
    base: dict = {"workers": 4, "chunk_size": MIB, "retries": 3, "sleep": lambda s: None}
    base.update(kw)
    return Options(**base)


def test_parallel_ranged_pull_writes_files_then_manifest(file_server, tmp_path: Path) -> None:
    gguf, modelfile = data(5 * MIB + 123), b"FROM ./tiny.gguf\nPARAMETER num_ctx 512\n"
    file_server.files |= {"tiny.gguf": gguf, "Modelfile": modelfile}
    listing = tmp_path / "urls.txt"
    listing.write_text(
        f"# the model\n{file_server.url}/tiny.gguf {sha(gguf)} {len(gguf)}\n"
        f"{file_server.url}/Modelfile {sha(modelfile)}\n"
    )
    result = pull_urls("tiny-r1:1b", tmp_path / "m", [], listing, opts())
    out = tmp_path / "m"
    assert (out / "tiny.gguf").read_bytes() == gguf
    assert not list(out.glob("*.part*"))
    m = Manifest.read(out)
    assert (m.model, m.tag, m.kind, m.source["type"]) == ("tiny-r1", "1b", "model", "urls")
    assert [(f.path, f.sha256, f.size, f.role) for f in m.files] == [
        ("tiny.gguf", sha(gguf), len(gguf), "gguf"),
        ("Modelfile", sha(modelfile), len(modelfile), "modelfile"),
    ]
    assert m.created.endswith("Z")
    ranged = [r for r in file_server.requests if r[1] == "tiny.gguf" and r[2] and r[2] != "bytes=0-0"]
    assert len(ranged) == 6  # 1 MiB chunks
    assert result.stats.fetched_bytes == len(gguf) + len(modelfile)  # bodies only (not the probes)
    # a second pull finds everything in place and fetches nothing
    again = pull_urls("tiny-r1:1b", out, [], listing, opts())
    assert again.stats.skipped_files == 2 and again.stats.fetched_bytes == 0


def test_cut_connection_is_retried_from_where_it_stopped(file_server, tmp_path: Path) -> None:
    blob = data(4 * MIB, seed=2)
    file_server.files["m.gguf"] = blob
    file_server.cut_at["m.gguf"] = 2 * MIB + MIB // 2  # half a chunk into the third chunk
    url = f"{file_server.url}/m.gguf#sha256={sha(blob)}"
    result = pull_urls("m", tmp_path, [url], None, opts())
    assert (tmp_path / "m.gguf").read_bytes() == blob
    assert result.stats.retries == 1
    # the retry asked only for the rest of the chunk that was cut
    assert ("GET", "m.gguf", f"bytes={2 * MIB + MIB // 2}-{3 * MIB - 1}") in file_server.requests
    assert file_server.body_bytes == len(blob) + 1


def test_interrupted_pull_resumes_from_the_part_file(file_server, tmp_path: Path) -> None:
    blob = data(8 * MIB, seed=3)
    file_server.files["big.gguf"] = blob
    file_server.cut_at["big.gguf"] = 4 * MIB + 1000
    url = f"{file_server.url}/big.gguf#sha256={sha(blob)}"
    with pytest.raises(MirrorError, match="giving up"):
        pull_urls("big", tmp_path, [url], None, opts(retries=0, workers=1))
    assert (tmp_path / "big.gguf.part").exists() and (tmp_path / "big.gguf.part.json").exists()
    assert not (tmp_path / MANIFEST_NAME).exists()
    first = file_server.body_bytes
    file_server.body_bytes = 0
    result = pull_urls("big", tmp_path, [url], None, opts(workers=1))
    assert (tmp_path / "big.gguf").read_bytes() == blob
    assert result.stats.resumed_bytes >= 4 * MIB
    # nothing fetched twice: what the second run fetched is exactly what the first did not keep
    assert first - 1 + file_server.body_bytes - 1 == len(blob)
    assert Manifest.read(tmp_path).files[0].sha256 == sha(blob)


def test_a_wrong_byte_deletes_the_part_and_names_the_file(file_server, tmp_path: Path) -> None:
    blob = data(3 * MIB, seed=4)
    file_server.files["bad.gguf"] = blob
    file_server.corrupt["bad.gguf"] = 2 * MIB + 7
    url = f"{file_server.url}/bad.gguf#sha256={sha(blob)}"
    with pytest.raises(DigestMismatch, match=r"bad\.gguf: sha256 .* does not match the expected") as info:
        pull_urls("bad", tmp_path, [url], None, opts())
    assert info.value.expected == sha(blob)
    assert not (tmp_path / "bad.gguf.part").exists() and not (tmp_path / "bad.gguf.part.json").exists()
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / MANIFEST_NAME).exists()
    # the CLI: one line, exit 2, no traceback
    res = CliRunner().invoke(mirror, ["pull", "bad", "--to", str(tmp_path), "--url", url, "--no-progress"])
    assert res.exit_code == 2 and "bad.gguf: sha256" in res.output and "Traceback" not in res.output


def test_server_without_ranges_gets_one_plain_request(file_server, tmp_path: Path) -> None:
    blob = data(3 * MIB, seed=5)
    file_server.files["plain.gguf"] = blob
    file_server.ranges = False
    pull_urls("p", tmp_path, [f"{file_server.url}/plain.gguf#sha256={sha(blob)}"], None, opts())
    assert (tmp_path / "plain.gguf").read_bytes() == blob
    assert ("GET", "plain.gguf", None) in file_server.requests
    assert not any(r[2] and r[2] != "bytes=0-0" for r in file_server.requests)


def test_disk_preflight_refuses_before_any_byte_moves(
    file_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = data(2 * MIB, seed=6)
    file_server.files["x.gguf"] = blob
    monkeypatch.setattr(download, "_free_bytes", lambda d: int(len(blob) * 1.1))
    with pytest.raises(MirrorError, match=r"not enough free disk space: 2516582 bytes needed"):
        pull_urls("x", tmp_path, [f"{file_server.url}/x.gguf#sha256={sha(blob)}"], None, opts())
    # one request, the size probe, for one byte (which the server may still be sending: the
    # probe reads only the headers); no ranged request for the body
    assert file_server.requests == [("GET", "x.gguf", "bytes=0-0")]
    assert file_server.body_by_name.get("x.gguf", 0) <= 1
    assert not list(tmp_path.iterdir())


def test_a_url_without_a_known_sha256_is_refused(file_server, tmp_path: Path) -> None:
    file_server.files["y.gguf"] = b"abc"
    with pytest.raises(MirrorError, match="no sha256 is known"):
        pull_urls("y", tmp_path, [f"{file_server.url}/y.gguf"], None, opts())


def test_backoff_grows_exponentially() -> None:
    delays = [download.backoff_delay(n, 0.5) for n in range(5)]
    for n, d in enumerate(delays):
        assert 0.25 * 2**n <= d <= 0.5 * 2**n


def test_verify_and_ls(file_server, tmp_path: Path) -> None:
    gguf = tmp_path / "src.gguf"
    gguf.write_bytes(data(100_000, seed=7))
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./src.gguf\n")
    out = tmp_path / "mirror" / "models" / "local"
    res = CliRunner().invoke(
        mirror, ["pull", "local:v1", "--to", str(out), "--gguf", str(gguf), "--modelfile", str(mf)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / MANIFEST_NAME).read_text())
    assert doc["source"]["type"] == "local" and [f["path"] for f in doc["files"]] == ["src.gguf", "Modelfile"]
    ok = CliRunner().invoke(mirror, ["verify", str(out)])
    assert ok.exit_code == 0, ok.output
    listed = CliRunner().invoke(mirror, ["ls", str(tmp_path / "mirror")])
    assert listed.exit_code == 0 and "local:v1" in listed.output and "1 manifest(s)" in listed.output
    raw = bytearray((out / "src.gguf").read_bytes())
    raw[500] ^= 1
    (out / "src.gguf").write_bytes(bytes(raw))
    bad = CliRunner().invoke(mirror, ["verify", str(out)])
    assert bad.exit_code == 1 and "src.gguf" in bad.output and "MISMATCH" in bad.output


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (
        ["pull", "Bad Name", "--to", str(tmp_path), "--gguf", str(tmp_path / "x")],
        ["pull", "m", "--to", str(tmp_path), "--gguf", str(tmp_path / "missing.gguf")],
        ["pull", "m", "--to", str(tmp_path), "--url", "http://127.0.0.1:9/a", "--gguf", "x"],
        ["verify", str(tmp_path)],
        ["push", str(tmp_path)],
    ):
        res = runner.invoke(mirror, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: ") and "Traceback" not in res.output


def test_local_pull_checks_disk_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"x" * 1000)
    monkeypatch.setattr(download, "_free_bytes", lambda d: 1000)
    with pytest.raises(MirrorError, match="not enough free disk space"):
        pull_local("a", tmp_path / "out", [gguf], None)


def test_fetch_all_keeps_blob_order(file_server, tmp_path: Path) -> None:
    blobs = []
    for i in range(5):
        b = data(200_000 + i, seed=10 + i)
        file_server.files[f"f{i}"] = b
        blobs.append(Blob(f"{file_server.url}/f{i}", f"d/f{i}", sha(b), len(b)))
    entries, _ = fetch_all(blobs, tmp_path, opts(chunk_size=64 * 1024))
    assert [e.path for e in entries] == [f"d/f{i}" for i in range(5)]


def test_a_token_in_a_url_never_reaches_the_manifest_or_the_resume_state(file_server, tmp_path: Path) -> None:
    blob = data(MIB, seed=9)
    file_server.files["t.gguf"] = blob
    url = f"{file_server.url}/t.gguf?token=hf_s3cret&download=true#sha256={sha(blob)}"
    result = pull_urls("t", tmp_path, [url], None, opts())
    assert (tmp_path / "t.gguf").read_bytes() == blob
    assert result.manifest.source["urls"] == [f"{file_server.url}/t.gguf?token=***&download=true"]
    assert "hf_s3cret" not in (tmp_path / "manifest.json").read_text()
