"""Issue 17, "the file system is hostile too": links planted in a staging directory, a mirror or a
bundle must never make `llmkit mirror pull|push|bundle|verify` write or read outside it.

Real parts throughout: real symbolic (and hard) links in temporary directories, the real HTTP
file server on 127.0.0.1 (a URL source, an Ollama registry, a PUT mirror), moto for S3, and the
real `llmkit mirror` commands through click's CliRunner. Each case plants the link where the kit
would write or read, and checks that the command is refused (exit 2, one line naming the link)
and that the file outside (its bytes and mtime) and the directory outside (its listing) are as
they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llmkit.commands.mirror import mirror
from llmkit.errors import EXIT_FINDINGS, EXIT_USAGE
from llmkit.mirror.manifest import MANIFEST_NAME, FileEntry, Manifest
from tests.mirror.conftest import S3, FileServer
from tests.mirror.test_bundle import WHEELS, Index, Releases, wheel_bytes

OLD_NS = 1_000_000_000 * 10**9  # 2001: any write or touch moves it
PREFIX = "models/tiny-r1-latest/"


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Outside:
    """A directory outside every tree the kit writes, with one precious file."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "outside"
        self.dir.mkdir()
        self.file = self.dir / "precious"
        self.file.write_bytes(b"precious bytes, not the kit's\n")
        os.utime(self.file, ns=(OLD_NS, OLD_NS))
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[bytes | None, int]]:
        """Every path below the directory: its bytes (None for a directory) and its mtime."""
        return {
            p.relative_to(self.dir).as_posix(): (None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(self.dir.rglob("*"))
        }

    def assert_untouched(self) -> None:
        assert self.snapshot() == self.before


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(mirror, list(args), env=env)


def refused(res: Result, *names: str | Path) -> None:
    """Exit 2, one line, no traceback, naming each of ``names``."""
    assert res.exit_code == EXIT_USAGE, res.output
    assert res.output.startswith("error: ") and "Traceback" not in res.output
    for name in names:
        assert str(name) in res.output, (name, res.output)


# --- mirror pull ---------------------------------------------------------------------------------


def url_pull(server: FileServer, out: Path, files: dict[str, bytes]) -> Result:
    args = ["pull", "tiny-r1:latest", "--to", str(out), "--no-progress", "--chunk-size", str(1 << 20)]
    for name, body in files.items():
        server.files[name] = body
        args += ["--url", f"{server.url}/{name}#sha256={sha(body)}"]
    return run(*args)


@pytest.fixture
def pulled(file_server: FileServer, tmp_path: Path) -> Path:
    """A directory `llmkit mirror pull` made (from URLs): where a re-pull may plant nothing."""
    out = tmp_path / "staged"
    res = url_pull(file_server, out, {"a.gguf": data(300_000, 1)})
    assert res.exit_code == 0, res.output
    return out


def test_pull_refuses_a_part_file_linked_outside(
    file_server: FileServer, pulled: Path, outside: Outside
) -> None:
    (pulled / "b.gguf.part").symlink_to(outside.file)
    res = url_pull(file_server, pulled, {"a.gguf": data(300_000, 1), "b.gguf": data(200_000, 2)})
    outside.assert_untouched()
    refused(res, pulled / "b.gguf.part", "a symbolic link")
    assert (pulled / "b.gguf.part").is_symlink() and not (pulled / "b.gguf").exists()


def test_pull_never_writes_through_a_hard_linked_part_file(
    file_server: FileServer, pulled: Path, outside: Outside
) -> None:
    os.link(outside.file, pulled / "b.gguf.part")  # the same file under two names
    b = data(200_000, 2)
    res = url_pull(file_server, pulled, {"a.gguf": data(300_000, 1), "b.gguf": b})
    assert res.exit_code == 0, res.output  # a part of the wrong size is made afresh, not truncated
    outside.assert_untouched()
    assert (pulled / "b.gguf").read_bytes() == b


def test_pull_refuses_resume_state_linked_outside(
    file_server: FileServer, pulled: Path, outside: Outside
) -> None:
    (pulled / "b.gguf.part.json").symlink_to(outside.file)
    res = url_pull(file_server, pulled, {"b.gguf": data(200_000, 2)})
    outside.assert_untouched()
    refused(res, pulled / "b.gguf.part.json", "a symbolic link")


@pytest.mark.parametrize("state", [b"[1, 2]", b'{"key": null, "done": 5}', b'{"done": "x"}', b"\xff"])
def test_a_malformed_resume_state_starts_the_file_afresh(
    file_server: FileServer, tmp_path: Path, state: bytes
) -> None:
    b = data(3 << 20, 2)
    file_server.files["b.gguf"] = b
    file_server.cut_at["b.gguf"] = (1 << 20) + 10
    out = tmp_path / "staged"
    url = f"{file_server.url}/b.gguf#sha256={sha(b)}"
    args = ["pull", "tiny-r1:latest", "--to", str(out), "--url", url, "--no-progress"]
    assert run(*args, "--retries", "0", "--workers", "1", "--chunk-size", str(1 << 20)).exit_code == 2
    (out / "b.gguf.part.json").write_bytes(state)  # what a planted or damaged state holds
    res = run(*args, "--chunk-size", str(1 << 20))
    assert res.exit_code == 0, res.output
    assert (out / "b.gguf").read_bytes() == b


def test_pull_refuses_a_temporary_file_linked_outside(
    file_server: FileServer, pulled: Path, outside: Outside
) -> None:
    (pulled / "b.gguf.part.json.tmp").symlink_to(outside.file)  # the resume state's old temp name
    res = url_pull(file_server, pulled, {"b.gguf": data(200_000, 2)})
    outside.assert_untouched()
    refused(res, pulled / "b.gguf.part.json.tmp", "a symbolic link")


def test_pull_refuses_a_linked_manifest(file_server: FileServer, pulled: Path, outside: Outside) -> None:
    (pulled / MANIFEST_NAME).unlink()
    (pulled / MANIFEST_NAME).symlink_to(outside.file)
    res = url_pull(file_server, pulled, {"a.gguf": data(300_000, 1)})
    outside.assert_untouched()
    refused(res, pulled / MANIFEST_NAME, "a symbolic link")


def test_pull_writes_only_into_a_directory_it_made(file_server: FileServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "license").write_text("the user's own file\n", encoding="utf-8")
    res = url_pull(file_server, home, {"a.gguf": data(1000, 3)})
    assert sorted(p.name for p in home.iterdir()) == ["license"]
    refused(res, home, "not empty and not a pulled model")
    bundle = tmp_path / "bundle"
    Manifest("bundle", "llmkit-bootstrap", "1", {"type": "bundle"}, []).write(bundle)
    refused(url_pull(file_server, bundle, {"a.gguf": data(1000, 3)}), "holds a bundle, not a model")


def test_a_local_pull_refuses_a_part_file_linked_outside(tmp_path: Path, outside: Outside) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny.gguf").write_bytes(data(5000, 4))
    out = tmp_path / "staged"
    assert run("pull", "tiny:latest", "--to", str(out), "--gguf", str(src / "tiny.gguf")).exit_code == 0
    (src / "tiny.gguf").write_bytes(data(5000, 5))  # a new build of the model
    (out / "tiny.gguf.part").symlink_to(outside.file)  # where the copy used to be staged
    res = run("pull", "tiny:latest", "--to", str(out), "--gguf", str(src / "tiny.gguf"))
    outside.assert_untouched()
    refused(res, out / "tiny.gguf.part", "a symbolic link")


# An Ollama registry on the file server; two license layers (the second was saved under blobs/).
GGUF = data(150_000, 6)
LICENSES = (b"MIT License\n", b"Apache License 2.0\n")
CONFIG = b'{"model_format": "gguf", "model_family": "qwen2"}'


def serve_registry(server: FileServer) -> None:
    def layer(media: str, body: bytes) -> dict[str, object]:
        server.files[f"v2/library/tiny-r1/blobs/sha256:{sha(body)}"] = body
        return {"mediaType": media, "digest": f"sha256:{sha(body)}", "size": len(body)}

    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": layer("application/vnd.docker.container.image.v1+json", CONFIG),
        "layers": [
            layer("application/vnd.ollama.image.model", GGUF),
            *(layer("application/vnd.ollama.image.license", text) for text in LICENSES),
        ],
    }
    server.files["v2/library/tiny-r1/manifests/latest"] = json.dumps(doc).encode()
    server.content_types["v2/library/tiny-r1/manifests/latest"] = str(doc["mediaType"])


def registry_pull(server: FileServer, out: Path) -> Result:
    return run("pull", "tiny-r1:latest", "--to", str(out), "--registry", server.url, "--no-progress")


def test_pull_refuses_a_blobs_directory_linked_outside(
    file_server: FileServer, tmp_path: Path, outside: Outside
) -> None:
    serve_registry(file_server)
    out = tmp_path / "staged"
    first = registry_pull(file_server, out)
    assert first.exit_code == 0, first.output
    shutil.rmtree(out / "blobs", ignore_errors=True)
    (out / "blobs").symlink_to(outside.dir)
    res = registry_pull(file_server, out)
    outside.assert_untouched()
    refused(res, out / "blobs", "a symbolic link")


# --- mirror push ---------------------------------------------------------------------------------


def staged_model(tmp_path: Path, seed: int = 7, name: str = "staged") -> Path:
    src = tmp_path / f"src-{seed}"
    src.mkdir()
    (src / "tiny-r1.gguf").write_bytes(data(100_000, seed))
    (src / "Modelfile").write_text("FROM ./tiny-r1.gguf\n", encoding="utf-8")
    out = tmp_path / name
    res = run(
        "pull", "tiny-r1:latest", "--to", str(out), "--gguf", str(src / "tiny-r1.gguf"),
        "--modelfile", str(src / "Modelfile"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def test_push_to_dir_refuses_a_temporary_name_linked_outside(tmp_path: Path, outside: Outside) -> None:
    mirror_root = tmp_path / "onprem"
    assert run("push", str(staged_model(tmp_path)), "--to-dir", str(mirror_root)).exit_code == 0
    newer = staged_model(tmp_path, seed=8, name="staged-newer")  # the same model, rebuilt
    (mirror_root / PREFIX / ".tiny-r1.gguf.part").symlink_to(outside.file)  # the copy's old temp name
    res = run("push", str(newer), "--to-dir", str(mirror_root))
    outside.assert_untouched()
    refused(res, mirror_root / PREFIX / ".tiny-r1.gguf.part", "a symbolic link")


def test_push_to_dir_refuses_a_linked_directory_on_the_prefix(tmp_path: Path, outside: Outside) -> None:
    mirror_root = tmp_path / "onprem"
    mirror_root.mkdir()
    (mirror_root / "models").symlink_to(outside.dir)
    res = run("push", str(staged_model(tmp_path)), "--to-dir", str(mirror_root))
    outside.assert_untouched()
    refused(res, mirror_root / "models", "a symbolic link")


def test_push_to_dir_writes_and_deletes_only_where_llmkit_published(tmp_path: Path) -> None:
    staged = staged_model(tmp_path)
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("mine\n", encoding="utf-8")
    res = run("push", str(staged), "--to-dir", str(tmp_path), "--prefix", "home")
    assert [p.relative_to(home).as_posix() for p in sorted(home.rglob("*"))] == ["notes", "notes/todo.txt"]
    refused(res, home, "not empty and not a mirror directory llmkit published")
    # a prefix llmkit published holds the same kind of thing: a model never replaces a bundle
    Manifest("bundle", "llmkit-bootstrap", "1", {"type": "bundle"}, []).write(tmp_path / "bootstrap")
    res = run("push", str(staged), "--to-dir", str(tmp_path), "--prefix", "bootstrap")
    refused(res, "holds a bundle, not a model")
    # what it made, it updates: the manifest last, nothing left behind
    mirror_root = tmp_path / "onprem"
    assert run("push", str(staged), "--to-dir", str(mirror_root)).exit_code == 0
    published = sorted(p.name for p in (mirror_root / PREFIX).iterdir())
    assert published == ["Modelfile", MANIFEST_NAME, "tiny-r1.gguf"]


@pytest.fixture
def etc_staged(tmp_path: Path, outside: Outside) -> Path:
    """A staged directory whose manifest lists etc/precious, with etc -> a directory outside."""
    staged = tmp_path / "hostile-staged"
    staged.mkdir()
    (staged / "etc").symlink_to(outside.dir)
    body = outside.file.read_bytes()
    entries = [FileEntry("etc/precious", sha(body), len(body), "gguf")]
    Manifest("model", "tiny-r1", "latest", {"type": "local"}, entries).write(staged)
    return staged


def test_push_to_dir_refuses_a_staged_parent_link(etc_staged: Path, tmp_path: Path, outside: Outside) -> None:
    mirror_root = tmp_path / "onprem"
    res = run("push", str(etc_staged), "--to-dir", str(mirror_root))
    assert not mirror_root.exists()  # today: the mirror got outside's precious file
    outside.assert_untouched()
    refused(res, "refusing to publish, etc/precious", etc_staged / "etc", "a symbolic link")


def test_push_to_http_refuses_a_staged_parent_link(etc_staged: Path, file_server: FileServer) -> None:
    res = run("push", str(etc_staged), "--to-http", f"{file_server.url}/mirror")
    assert not [r for r in file_server.requests if r[0] == "PUT"]
    refused(res, "refusing to publish, etc/precious", etc_staged / "etc")


def test_push_to_s3_refuses_a_staged_parent_link(etc_staged: Path, s3: S3) -> None:
    res = run(
        "push", str(etc_staged), "--bucket", s3.bucket, "--kms-key-id", s3.key_arn,
        env={"AWS_ENDPOINT_URL_S3": s3.endpoint},
    )  # fmt: skip
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket)
    refused(res, "refusing to publish, etc/precious", etc_staged / "etc")


# --- mirror verify -------------------------------------------------------------------------------


def test_verify_reads_no_file_behind_a_linked_parent(etc_staged: Path, outside: Outside) -> None:
    res = run("verify", str(etc_staged))
    assert res.exit_code == EXIT_FINDINGS, res.output
    assert "etc/precious" in res.output and "symbolic link" in res.output
    outside.assert_untouched()


def test_verify_refuses_a_linked_manifest(tmp_path: Path, outside: Outside) -> None:
    staged = staged_model(tmp_path)
    (outside.dir / MANIFEST_NAME).write_bytes((staged / MANIFEST_NAME).read_bytes())
    (staged / MANIFEST_NAME).unlink()
    (staged / MANIFEST_NAME).symlink_to(outside.dir / MANIFEST_NAME)
    refused(run("verify", str(staged)), staged / MANIFEST_NAME, "a symbolic link")


# --- mirror bundle -------------------------------------------------------------------------------


def bundle(releases: Releases, tmp_path: Path, out: Path) -> Result:
    """`llmkit mirror bundle` from a wheel directory and the releases on the file server."""
    links = tmp_path / "links"
    lock = Index.__new__(Index)
    lock.lock = tmp_path / "lock.txt"
    if not links.exists():  # once: a wheel's zip records the time it was made
        links.mkdir()
        for name in WHEELS:
            (links / name).write_bytes(wheel_bytes(name))
        lock.files = {name: (links / name).read_bytes() for name in WHEELS}
        Index.write_lock(lock)
    args = ["bundle", "--to", str(out), "--python", "3.11", "--find-links", str(links)]
    args += ["--requirements", str(lock.lock), "--artifacts-from", releases.url, "--no-progress"]
    args += [f"--artifact-sha256={k}={v}" for k, v in releases.sha256.items()]
    return run(*args)


@pytest.fixture
def releases(file_server: FileServer) -> Releases:
    return Releases(file_server)


@pytest.fixture
def built(releases: Releases, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    res = bundle(releases, tmp_path, out)
    assert res.exit_code == 0, res.output
    return out


def test_bundle_refuses_a_staging_mark_linked_outside(
    releases: Releases, tmp_path: Path, outside: Outside
) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / ".llmkit-bundle").symlink_to(outside.file)
    res = bundle(releases, tmp_path, out)
    outside.assert_untouched()  # not even touched (its mtime)
    refused(res, out / ".llmkit-bundle", "a symbolic link")


def test_bundle_refuses_a_temporary_name_linked_outside(
    releases: Releases, tmp_path: Path, built: Path, outside: Outside
) -> None:
    with (built / "requirements.txt").open("a", encoding="utf-8") as f:
        f.write("# edited by hand\n")  # so the next run copies it again
    (built / ".requirements.txt.tmp").symlink_to(outside.file)  # the copy's old temp name
    res = bundle(releases, tmp_path, built)
    outside.assert_untouched()
    refused(res, built / ".requirements.txt.tmp", "a symbolic link")


def test_bundle_refuses_a_wheels_directory_linked_outside(
    releases: Releases, tmp_path: Path, built: Path, outside: Outside
) -> None:
    shutil.rmtree(built / "wheels")
    (built / "wheels").symlink_to(outside.dir)
    res = bundle(releases, tmp_path, built)
    outside.assert_untouched()
    refused(res, built / "wheels", "a symbolic link")


def test_bundle_removal_never_follows_a_link_out_of_the_bundle(
    releases: Releases, tmp_path: Path, built: Path, outside: Outside
) -> None:
    (built / "old").symlink_to(outside.dir)
    (built / "wheels" / "stale-1.0-py3-none-any.whl").symlink_to(outside.file)
    res = bundle(releases, tmp_path, built)
    outside.assert_untouched()
    refused(res, built / "old", "a symbolic link")
    # once the links are gone, the bundle is brought up to date and holds only what it lists
    (built / "old").unlink()
    (built / "wheels" / "stale-1.0-py3-none-any.whl").unlink()
    (built / "wheels" / "stale-1.0-py3-none-any.whl").write_bytes(b"left over")
    res = bundle(releases, tmp_path, built)
    assert res.exit_code == 0, res.output
    assert "1 stale removed" in res.output
    assert run("verify", str(built)).exit_code == 0


def test_push_to_dir_refuses_a_linked_directory_in_the_mirror(
    tmp_path: Path, built: Path, outside: Outside
) -> None:
    mirror_root = tmp_path / "onprem"
    assert run("push", str(built), "--to-dir", str(mirror_root)).exit_code == 0
    published = mirror_root / "bootstrap"
    shutil.rmtree(published / "wheels")
    (published / "wheels").symlink_to(outside.dir)
    res = run("push", str(built), "--to-dir", str(mirror_root))
    outside.assert_untouched()
    refused(res, published / "wheels", "a symbolic link")
