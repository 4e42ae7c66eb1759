"""Fast tests of the lab's tiny GGUF writer and of the build cache / packing logic (no Go needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llmkit.artifacts import artifact
from llmkit.errors import LlmkitError
from llmkit.files import sha256_file
from llmkit.lab import builds, tiny_model
from playbooks.deploys import monitoring
from playbooks.deploys import ollama as ollama_deploy
from playbooks.deploys.models import model_specs


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    assert field is not None, f"missing GGUF key {key}"
    return field.contents()


# --- the GGUF --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.write_gguf(tmp_path_factory.mktemp("model") / tiny_model.GGUF_FILE)


def test_gguf_is_qwen2_with_every_hyperparameter_the_loader_reads(gguf_file: Path) -> None:
    r = gguf.GGUFReader(gguf_file)
    hp = tiny_model.Hyper()
    assert _field(r, "general.architecture") == "qwen2"
    assert _field(r, "qwen2.context_length") == hp.n_ctx_train
    assert _field(r, "qwen2.embedding_length") == hp.n_embd
    assert _field(r, "qwen2.block_count") == hp.n_layer
    assert _field(r, "qwen2.feed_forward_length") == hp.n_ff
    assert _field(r, "qwen2.attention.head_count") == hp.n_head
    assert _field(r, "qwen2.attention.head_count_kv") == hp.n_head_kv
    assert _field(r, "qwen2.rope.freq_base") == pytest.approx(hp.rope_freq_base)
    assert _field(r, "qwen2.attention.layer_norm_rms_epsilon") == pytest.approx(hp.rms_eps)


def test_gguf_tokenizer_is_byte_level_bpe_with_the_r1_specials(gguf_file: Path) -> None:
    r = gguf.GGUFReader(gguf_file)
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    # Ollama 0.13.3's llama.cpp maps both "qwen2" and "deepseek-r1-qwen" to its QWEN2 pre-tokenizer.
    assert _field(r, "tokenizer.ggml.pre") == "deepseek-r1-qwen"
    tokens = _field(r, "tokenizer.ggml.tokens")
    types = _field(r, "tokenizer.ggml.token_type")
    merges = _field(r, "tokenizer.ggml.merges")
    assert len(tokens) == len(types) == len(set(tokens))
    byte_map = tiny_model.bytes_to_unicode()
    assert tokens[:256] == [byte_map[b] for b in range(256)]  # every byte is a token: no <unk>
    for rule in merges:  # every merge's halves and result are tokens, or llama.cpp skips it
        left, right = rule.split(" ")
        assert left in tokens and right in tokens and left + right in tokens
    bos, eos = _field(r, "tokenizer.ggml.bos_token_id"), _field(r, "tokenizer.ggml.eos_token_id")
    assert tokens[bos] == tiny_model.BOS and tokens[eos] == tiny_model.EOS
    assert types[bos] == types[eos] == int(gguf.TokenType.CONTROL)
    for special, _ in tiny_model.SPECIAL_TOKENS:
        assert special in tokens
    assert _field(r, "tokenizer.ggml.add_bos_token") is True


def test_gguf_has_every_qwen2_tensor_with_its_shape(gguf_file: Path) -> None:
    r = gguf.GGUFReader(gguf_file)
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in r.tensors}
    assert shapes == tiny_model.expected_tensor_shapes()
    n_vocab = len(_field(r, "tokenizer.ggml.tokens"))
    assert shapes["token_embd.weight"] == (64, n_vocab)
    assert shapes["blk.0.attn_k.weight"] == (64, 32)  # n_embd x n_embd_gqa (2 of 4 heads)
    assert shapes["blk.1.attn_v.bias"] == (32,)
    assert shapes["blk.1.ffn_down.weight"] == (128, 64)
    assert {t.tensor_type for t in r.tensors} == {gguf.GGMLQuantizationType.F32}


def test_output_bias_suppresses_specials_and_non_printable_bytes(gguf_file: Path) -> None:
    r = gguf.GGUFReader(gguf_file)
    bias = next(np.asarray(t.data) for t in r.tensors if t.name == "output.bias")
    vocab = tiny_model.build_vocab()
    assert all(bias[vocab.id(s)] < -50 for s, _ in tiny_model.SPECIAL_TOKENS)
    assert bias[ord("\n")] < -50 and bias[0xC3] < -50  # control char, non-ASCII byte
    assert bias[ord("a")] == 0


def test_gguf_is_reproducible_small_and_written_atomically(tmp_path: Path, gguf_file: Path) -> None:
    again = tiny_model.write_gguf(tmp_path / "again.gguf")
    assert sha256_file(again) == sha256_file(gguf_file)
    assert gguf_file.stat().st_size < 5 * 1024 * 1024
    assert [p.name for p in tmp_path.iterdir()] == ["again.gguf"]  # no temporary file left


def test_modelfile_builds_from_the_gguf_next_to_it_in_the_r1_style() -> None:
    text = tiny_model.modelfile_text()
    lines = text.splitlines()
    assert lines[0] == "FROM ./tiny-r1.gguf"
    assert sum(line.startswith("FROM ") for line in lines) == 1  # the deploy drops exactly this line
    assert "PARAMETER num_ctx 512" in lines
    for stop in (tiny_model.EOS, tiny_model.USER, tiny_model.ASSISTANT):
        assert f'PARAMETER stop "{stop}"' in lines
    assert tiny_model.USER + "{{ .Content }}" in text
    assert tiny_model.THINK_OPEN in text and tiny_model.THINK_CLOSE in text  # thinking capability


def test_hyper_rejects_heads_that_do_not_divide() -> None:
    with pytest.raises(ValueError, match="multiple of n_head"):
        tiny_model.Hyper(n_embd=60, n_head=8)


# --- cache keys and packing ------------------------------------------------------------------------


def test_cache_key_changes_with_every_input_and_ignores_order() -> None:
    base = {"module": "m", "version": "1", "go": "go1.26.8", "goarch": "amd64"}
    key = builds.cache_key(base)
    assert builds.cache_key(dict(reversed(list(base.items())))) == key
    for k, v in [("module", "n"), ("version", "2"), ("go", "go1.25.0"), ("goarch", "arm64")]:
        assert builds.cache_key(base | {k: v}) != key, k


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()


def test_pack_tgz_is_deterministic_whatever_the_source_times(tmp_path: Path) -> None:
    binary = tmp_path / "ollama"
    binary.write_bytes(b"\x7fELF pretend")
    first = builds.pack_tgz(tmp_path / "a" / "ollama-linux-amd64.tgz", builds.ollama_entries(binary))
    os.utime(binary, (1_000_000, 1_000_000))
    second = builds.pack_tgz(tmp_path / "b" / "ollama-linux-amd64.tgz", builds.ollama_entries(binary))
    assert first.read_bytes() == second.read_bytes()
    raw = first.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME
    assert raw[3] & 0x08 == 0  # gzip FLG.FNAME unset: no stored file name
    assert gzip.decompress(raw)


def _script(path: Path, text: str) -> Path:
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def test_ollama_tarball_has_the_release_layout_the_deploy_installs(tmp_path: Path) -> None:
    binary = _script(tmp_path / "built", "echo 'ollama version is 0.13.3'")
    tgz = builds.pack_tgz(tmp_path / "ollama-linux-amd64.tgz", builds.ollama_entries(binary))
    members = _members(tgz)
    assert [m.name for m in members] == ["bin", "bin/ollama", "lib", "lib/ollama"]
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
    exe = next(m for m in members if m.name == "bin/ollama")
    assert exe.isfile() and exe.mode == 0o755
    assert next(m for m in members if m.name == "lib/ollama").isdir()
    # the Ollama deploy's own unpack command installs it
    digest = builds.write_sha256_file(tgz)
    install = tmp_path / "opt" / "ollama-0.13.3"
    cmd = ollama_deploy.extract_command(str(tgz), digest, str(install))
    subprocess.run(["bash", "-c", cmd], check=True, capture_output=True)
    assert os.access(install / "bin" / "ollama", os.X_OK) and (install / "lib" / "ollama").is_dir()


def test_node_exporter_tarball_is_what_the_monitoring_deploy_installs(tmp_path: Path) -> None:
    version = artifact("node_exporter").version
    file = artifact("node_exporter").file("amd64")
    assert file == f"node_exporter-{version}.linux-amd64.tar.gz"
    binary = _script(tmp_path / "node_exporter", f"echo 'node_exporter, version {version}'")
    license_file = tmp_path / "LICENSE"
    license_file.write_text("Apache-2.0\n")
    tgz = builds.pack_tgz(
        tmp_path / "dl" / file, builds.node_exporter_entries(version, "amd64", binary, [license_file])
    )
    top = f"node_exporter-{version}.linux-amd64"
    assert [m.name for m in _members(tgz)] == [top, f"{top}/LICENSE", f"{top}/node_exporter"]
    digest = builds.write_sha256_file(tgz)
    install = tmp_path / "opt" / f"node_exporter-{version}"
    cmd = monitoring.extract_command(str(tgz), digest, str(install), "node_exporter")
    subprocess.run(["bash", "-c", cmd], check=True, capture_output=True)
    assert os.access(install / "node_exporter", os.X_OK)


def test_pack_tgz_rejects_escaping_or_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="relative"):
        builds.pack_tgz(tmp_path / "x.tgz", [builds.Entry("../etc")])
    with pytest.raises(ValueError, match="duplicate"):
        builds.pack_tgz(tmp_path / "x.tgz", [builds.Entry("a"), builds.Entry("a")])


def test_sha256_file_is_in_sha256sum_format(tmp_path: Path) -> None:
    f = tmp_path / "thing.tgz"
    f.write_bytes(b"abc")
    digest = builds.write_sha256_file(f)
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert (tmp_path / "thing.tgz.sha256").read_text() == f"{digest}  thing.tgz\n"


# --- the cache ---------------------------------------------------------------------------------------


def _producer(calls: list[int], payload: bytes = b"payload") -> builds.Producer:
    def produce(work: Path, out: Path, run: Any) -> Path:
        calls.append(1)
        src = work / "thing"
        src.write_bytes(payload)
        run.note("building thing")
        return builds.pack_tgz(out / "thing.tgz", [builds.Entry("thing", src, 0o644)])

    return produce


def test_cached_build_reuses_a_complete_entry(tmp_path: Path) -> None:
    calls: list[int] = []
    first = builds.cached_build(tmp_path, "thing", "1.0", {"go": "go1"}, _producer(calls), os.environ)
    second = builds.cached_build(tmp_path, "thing", "1.0", {"go": "go1"}, _producer(calls), os.environ)
    assert calls == [1]
    assert (first.cached, second.cached) == (False, True)
    assert first.sha256 == second.sha256 == sha256_file(second.path)
    assert "building thing" in first.log.read_text()
    assert [p.name for p in (tmp_path / "builds").iterdir()] == [second.path.parent.name]  # no temp dirs
    # a different Go version is a different key: built again, beside the first
    third = builds.cached_build(tmp_path, "thing", "1.0", {"go": "go2"}, _producer(calls), os.environ)
    assert calls == [1, 1] and third.path.parent != first.path.parent


def test_cached_build_rebuilds_a_corrupted_entry(tmp_path: Path) -> None:
    calls: list[int] = []
    first = builds.cached_build(tmp_path, "thing", "1.0", {}, _producer(calls), os.environ)
    first.path.write_bytes(b"tampered")
    again = builds.cached_build(tmp_path, "thing", "1.0", {}, _producer(calls), os.environ)
    assert calls == [1, 1] and not again.cached
    assert sha256_file(again.path) == first.sha256
    again.path.with_name("thing.tgz.sha256").unlink()  # a lost checksum file is no hit either
    third = builds.cached_build(tmp_path, "thing", "1.0", {}, _producer(calls), os.environ)
    assert calls == [1, 1, 1] and not third.cached


def test_a_failed_build_leaves_no_entry_and_says_why(tmp_path: Path) -> None:
    def produce(work: Path, out: Path, run: Any) -> Path:
        run(["sh", "-c", "echo compiling; echo 'fatal error: nlohmann/json_fwd.hpp' >&2; exit 3"], cwd=work)
        raise AssertionError("not reached")

    with pytest.raises(builds.BuildFailed) as info:
        builds.cached_build(tmp_path, "thing", "1.0", {}, produce, os.environ)
    err = info.value
    assert isinstance(err, LlmkitError)
    assert "exited with status 3" in str(err) and "fatal error: nlohmann/json_fwd.hpp" in str(err)
    assert str(err.log_path) in str(err)
    assert list((tmp_path / "builds").iterdir()) == []


def test_no_go_on_path_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(builds.ToolMissing, match="`go` is not on PATH"):
        builds.build_ollama(tmp_path)
    with pytest.raises(LlmkitError):
        builds.build_node_exporter(tmp_path)


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(builds.CACHE_ENV, str(tmp_path))
    assert builds.default_cache_dir() == tmp_path
    monkeypatch.delenv(builds.CACHE_ENV)
    assert builds.default_cache_dir() == Path("/var/cache/llmkit/lab")


def test_prometheus_build_date_format() -> None:
    assert builds._prometheus_date("2025-04-01T15:14:14Z") == "20250401-15:14:14"
    assert builds._prometheus_date(None) == "19700101-00:00:00"


# --- publishing --------------------------------------------------------------------------------------


def _fake_build(cache: Path, name: str, version: str, file: str, entries: list[builds.Entry]) -> builds.Build:
    def produce(work: Path, out: Path, run: Any) -> Path:
        return builds.pack_tgz(out / file, entries)

    return builds.cached_build(cache, name, version, {}, produce, os.environ)


def test_publish_builds_lays_out_the_mirror_of_the_lab_contract(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"binary")
    ollama = _fake_build(
        tmp_path / "cache", "ollama", "0.13.3", "ollama-linux-amd64.tgz", builds.ollama_entries(binary)
    )
    node = _fake_build(
        tmp_path / "cache",
        "node_exporter",
        "1.9.1",
        "node_exporter-1.9.1.linux-amd64.tar.gz",
        builds.node_exporter_entries("1.9.1", "amd64", binary),
    )
    mirror = tmp_path / "mirror"
    result = builds.publish_builds(mirror, ollama, node)

    assert json.loads((mirror / "artifacts.json").read_text()) == result
    assert result["ollama"] == {
        "version": "0.13.3",
        "file": "ollama/v0.13.3/ollama-linux-amd64.tgz",
        "sha256": ollama.sha256,
        "size": ollama.size,
    }
    assert result["node_exporter"]["file"] == "node_exporter/v1.9.1/node_exporter-1.9.1.linux-amd64.tar.gz"
    for entry in (result["ollama"], result["node_exporter"]):
        path = mirror / entry["file"]
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["size"]
        assert (mirror / (entry["file"] + ".sha256")).read_text() == f"{entry['sha256']}  {path.name}\n"
    [model] = result["models"]
    assert model["name"] == "tiny-r1:latest" and model["source"] == "mirror"
    assert model["file"] == "tiny-r1/tiny-r1.gguf"
    gguf_path = mirror / "models" / model["file"]
    assert sha256_file(gguf_path) == model["sha256"] and gguf_path.stat().st_size == model["size"]
    modelfile = mirror / "models" / model["modelfile"]["file"]
    assert sha256_file(modelfile) == model["modelfile"]["sha256"]
    # exactly the host-data shape the models deploy validates
    [spec] = model_specs({"models": result["models"], "models_mirror_url": "http://10.0.0.1/models/"})
    assert spec.served == "tiny-r1:latest" and spec.gguf is not None and spec.modelfile is not None
    assert spec.gguf.sha256 == model["sha256"] and spec.gguf.size == model["size"]
    # nothing but the contract's files (no temporary files)
    files = sorted(str(p.relative_to(mirror)) for p in mirror.rglob("*") if p.is_file())
    assert files == sorted(
        [
            "artifacts.json",
            "models/tiny-r1/Modelfile",
            "models/tiny-r1/tiny-r1.gguf",
            "node_exporter/v1.9.1/node_exporter-1.9.1.linux-amd64.tar.gz",
            "node_exporter/v1.9.1/node_exporter-1.9.1.linux-amd64.tar.gz.sha256",
            "ollama/v0.13.3/ollama-linux-amd64.tgz",
            "ollama/v0.13.3/ollama-linux-amd64.tgz.sha256",
        ]
    )
    # publishing again gives the same bytes
    assert builds.publish_builds(mirror, ollama, node) == result


def test_tar_reader_sees_root_owned_members(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    data = builds.pack_tgz(tmp_path / "t.tgz", [builds.Entry("f", src, 0o644)]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        [m] = tar.getmembers()
    assert (m.uname, m.gname, m.mode, m.size) == ("root", "root", 0o644, 1)
