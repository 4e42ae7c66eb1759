"""`llmkit mirror bundle`: the host bootstrap bundle, from a real simple index on 127.0.0.1.

The wheels here are small but well-formed wheel files with real tags; the index pages are PEP 503
HTML and PEP 691 JSON as PyPI serves them. The bundle is then checked by the AWS hosts' own
verification (the user data's ``verify_bundle``, run by bash and python3). The real wheels of the
hosts' lock, installed by the user data's ``install_venv``, are in test_bundle_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.fleet import USER_DATA_TEMPLATE
from llmkit.artifacts import load_artifacts
from llmkit.cli import main
from llmkit.errors import EXIT_USAGE
from llmkit.mirror import wheels
from llmkit.mirror.auth import redact_url
from llmkit.mirror.bundle import HOST_REQUIREMENTS, STAGING_MARK, BundleOptions, build_bundle
from llmkit.mirror.download import Options
from llmkit.mirror.manifest import DigestMismatch, Manifest, MirrorError
from tests.mirror.conftest import S3, FileServer

ROOT = Path(__file__).resolve().parents[2]


def wheel_bytes(filename: str) -> bytes:
    buf = io.BytesIO()
    name, version = filename.split("-")[:2]
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
    return buf.getvalue()


WHEELS = [
    "pip-26.3-py3-none-any.whl",
    "pure-1.0-py3-none-any.whl",
    "native-2.0-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "native-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "native-2.0-cp311-cp311-manylinux_2_39_x86_64.whl",  # newer glibc than the hosts': never
    "native-2.0-cp311-cp311-musllinux_1_2_x86_64.whl",  # not glibc: never
    "native-2.0-cp311-cp311-win_amd64.whl",
    "native-2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
    "native-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "stable-1.0-cp39-abi3-manylinux_2_28_x86_64.whl",
    "stable-1.0-cp39-abi3-manylinux_2_28_aarch64.whl",
    "old-1.0-py3-none-any.whl",
]
LOCK_LINES = {
    "pip": "pip==26.3",
    "pure": "pure==1.0",
    "native": "native==2.0",
    "stable": "stable==1.0",
    "old": "old==1.0 ; python_full_version < '3.11'",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Index:
    """A simple repository of :data:`WHEELS` on the test file server, and its lock."""

    def __init__(self, server: FileServer, tmp: Path, style: str = "html") -> None:
        self.server = server
        self.url = f"{server.url}/simple/"
        self.files = {name: wheel_bytes(name) for name in WHEELS}
        self.listed = {name: sha(data) for name, data in self.files.items()}
        self.style = style
        self.lock = tmp / "host-requirements.txt"
        self.publish()
        self.write_lock()

    def write_lock(self, skip: Sequence[str] = ()) -> None:
        lines = ["# a lock as uv pip compile --generate-hashes writes it"]
        for project, spec in LOCK_LINES.items():
            if project in skip:
                continue
            digests = sorted(sha(d) for n, d in self.files.items() if n.startswith(f"{project}-"))
            lines.append(spec + " \\")
            lines.extend(f"    --hash=sha256:{d} \\" for d in digests[:-1])
            lines.append(f"    --hash=sha256:{digests[-1]}")
            lines.append("    # via -r host-requirements.in")
        self.lock.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def publish(self) -> None:
        for name, data in self.files.items():
            self.server.files[f"packages/{name}"] = data
        for project in LOCK_LINES:
            names = [n for n in self.files if n.startswith(f"{project}-")]
            page = f"simple/{project}/"
            if self.style == "json":
                doc = {
                    "meta": {"api-version": "1.1"},
                    "name": project,
                    "files": [
                        {
                            "filename": n,
                            "url": f"../../packages/{n}",
                            "hashes": {"sha256": self.listed[n]},
                            "size": len(self.files[n]),
                        }
                        for n in names
                    ],
                }
                self.server.files[page] = json.dumps(doc).encode()
                self.server.content_types[page] = wheels.JSON_ACCEPT
            else:
                links = "".join(
                    f'<a href="../../packages/{n}#sha256={self.listed[n]}">{n}</a><br/>\n' for n in names
                )
                self.server.files[page] = f"<!DOCTYPE html><html><body>{links}</body></html>".encode()


class Releases:
    """Stand-in release archives for every pinned artefact on a mirror (<name>/v<version>/<file>)."""

    def __init__(self, server: FileServer, arches: Sequence[str] = ("amd64",)) -> None:
        self.url = f"{server.url}/artifacts"
        self.sha256: dict[str, str] = {}
        self.paths: list[str] = []
        for art in load_artifacts().values():
            for arch in arches:
                data = f"{art.name} {art.version} {arch} build of this test\n".encode() * 100
                path = f"{art.name}/v{art.version}/{art.file(arch)}"
                server.files[f"artifacts/{path}"] = data
                self.sha256[f"{art.name}:{arch}"] = sha(data)
                self.paths.append(path)


@pytest.fixture
def index(file_server: FileServer, tmp_path: Path) -> Index:
    return Index(file_server, tmp_path)


@pytest.fixture
def releases(file_server: FileServer) -> Releases:
    return Releases(file_server)


def options(index: Index, releases: Releases, **kw: object) -> BundleOptions:
    values: dict[str, object] = {
        "index_url": index.url,
        "requirements": index.lock,
        "artifacts_from": releases.url,
        "artifact_sha256": releases.sha256,
        **kw,
    }
    return BundleOptions(**values)  # type: ignore[arg-type]


FAST = Options(workers=4, retries=1, backoff_s=0.0, sleep=lambda _s: None)


def user_data_verify(directory: Path) -> subprocess.CompletedProcess[str]:
    """The AWS model hosts' own check of a bundle (the user data's verify_bundle), for real.

    The template's functions as they ship; only the manifest pin is rendered (empty: not pinned).
    """
    script = directory.parent / "user-data.sh"
    script.write_text(
        USER_DATA_TEMPLATE.read_text(encoding="utf-8").replace("@@{manifest_sha256}", "''"), encoding="utf-8"
    )
    return subprocess.run(
        ["bash", "-c", 'source "$1"; verify_bundle "$2"', "user-data", str(script), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_bundle_holds_what_the_hosts_need_and_passes_their_check(
    index: Index, releases: Releases, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    result = build_bundle(out, options(index, releases), FAST)
    m = Manifest.read(out)
    assert (m.kind, m.model) == ("bundle", "llmkit-bootstrap")
    paths = {f.path for f in m.files}
    # One wheel per pin and interpreter (3.10, 3.11, 3.12 on x86_64, glibc 2.35), the most
    # specific one each accepts; deduplicated; markers applied (old only for 3.10).
    assert {p for p in paths if p.startswith("wheels/")} == {
        "wheels/pip-26.3-py3-none-any.whl",
        "wheels/pure-1.0-py3-none-any.whl",
        "wheels/native-2.0-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "wheels/native-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "wheels/native-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "wheels/stable-1.0-cp39-abi3-manylinux_2_28_x86_64.whl",
        "wheels/old-1.0-py3-none-any.whl",
    }
    assert result.wheels == 7
    assert [f.path for f in m.files if f.role == "pip-wheel"] == ["wheels/pip-26.3-py3-none-any.whl"]
    # the lock itself, the playbooks and the llmkit modules they import, no bytecode
    assert (out / "requirements.txt").read_bytes() == index.lock.read_bytes()
    for needed in (
        "playbooks/site.py",
        "playbooks/group_data/all.py",
        "llmkit/errors.py",
        "llmkit/data/artifacts.yaml",
    ):
        assert needed in paths
        assert (out / needed).read_bytes() == (ROOT / needed).read_bytes()
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    # every pinned release where ollama_mirror_url / exporters_mirror_url look for it
    assert set(releases.paths) <= paths
    assert {f"{a['name']}:{a['arch']}": a["sha256"] for a in m.source["artifacts"]} == releases.sha256
    assert {a["checksum"] for a in m.source["artifacts"]} == {"given"}
    assert m.source["targets"] == [
        "cp310-manylinux_2_35_x86_64",
        "cp311-manylinux_2_35_x86_64",
        "cp312-manylinux_2_35_x86_64",
    ]
    # the marker of a bundle being made is gone once the manifest is there
    assert not (out / STAGING_MARK).exists()
    check = user_data_verify(out)
    assert check.returncode == 0, check.stderr
    assert f"bootstrap bundle verified: {len(m.files)} files" in check.stderr

    (out / "playbooks/site.py").write_text("print('changed')\n", encoding="utf-8")
    refused = user_data_verify(out)
    assert refused.returncode != 0
    assert "playbooks/site.py does not match its size and sha256" in refused.stderr


def test_a_pep_691_index_and_arm64_hosts(file_server: FileServer, tmp_path: Path) -> None:
    index = Index(file_server, tmp_path, style="json")
    releases = Releases(file_server, arches=("arm64",))
    out = tmp_path / "bundle"
    build_bundle(out, options(index, releases, pythons=("3.11",), arches=("arm64",)), FAST)
    m = Manifest.read(out)
    assert sorted(p.path for p in m.files if p.path.startswith("wheels/")) == [
        "wheels/native-2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "wheels/pip-26.3-py3-none-any.whl",
        "wheels/pure-1.0-py3-none-any.whl",
        "wheels/stable-1.0-cp39-abi3-manylinux_2_28_aarch64.whl",
    ]
    arts = {a["path"] for a in m.source["artifacts"]}
    ollama = load_artifacts()["ollama"]
    assert f"ollama/v{ollama.version}/{ollama.file('arm64')}" in arts
    assert all(
        f.size == len(index.files[f.path.removeprefix("wheels/")]) for f in m.files if f.role == "wheel"
    )


def test_a_wheel_whose_digest_the_lock_does_not_list_is_never_chosen(
    index: Index, releases: Releases, tmp_path: Path
) -> None:
    cp312 = "native-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    index.files[cp312] = wheel_bytes(cp312) + b"rebuilt"
    index.listed[cp312] = sha(index.files[cp312])
    index.publish()  # the index now lists (and serves) a build the lock never saw
    out = tmp_path / "bundle"
    with pytest.raises(MirrorError) as err:
        build_bundle(out, options(index, releases), FAST)
    assert "native==2.0 for cp312-manylinux_2_35_x86_64 (none for this interpreter whose sha256" in str(
        err.value
    )
    assert not out.exists()  # found before anything was written


def test_an_index_that_serves_other_bytes_than_it_lists_is_refused_naming_the_wheel(
    index: Index, releases: Releases, tmp_path: Path
) -> None:
    name = "pure-1.0-py3-none-any.whl"
    index.server.corrupt[f"packages/{name}"] = 10
    out = tmp_path / "bundle"
    with pytest.raises(DigestMismatch) as err:
        build_bundle(out, options(index, releases), FAST)
    assert err.value.path == f"wheels/{name}"
    assert not (out / "manifest.json").exists()
    assert not (out / "wheels" / name).exists()


def test_a_release_must_match_its_pinned_checksum(index: Index, releases: Releases, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(DigestMismatch) as err:
        build_bundle(out, options(index, releases, artifact_sha256={}), FAST)
    pinned = load_artifacts()[err.value.path.split("/")[0]].sha256("amd64")
    assert err.value.expected == pinned
    assert err.value.path in releases.paths
    assert not (out / "manifest.json").exists()


def test_a_rerun_fetches_nothing_and_drops_what_the_new_bundle_no_longer_lists(
    index: Index, releases: Releases, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    build_bundle(out, options(index, releases), FAST)
    (out / "wheels" / "stray-0.1-py3-none-any.whl").write_bytes(b"left behind")
    again = build_bundle(out, options(index, releases), FAST)
    assert again.stats.fetched_bytes == 0
    assert again.stats.skipped_files == again.wheels + again.artifacts
    assert again.removed == ["wheels/stray-0.1-py3-none-any.whl"]
    # hosts on 3.11 and 3.12 only: the 3.10 wheels go
    narrower = build_bundle(out, options(index, releases, pythons=("3.11", "3.12")), FAST)
    assert narrower.removed == [
        "wheels/native-2.0-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "wheels/old-1.0-py3-none-any.whl",
    ]
    assert user_data_verify(out).returncode == 0


def test_an_interrupted_bundle_resumes(index: Index, releases: Releases, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    ollama = next(p for p in releases.paths if p.startswith("ollama/"))
    index.server.cut_at[f"artifacts/{ollama}"] = 1000
    index.server.cut_times = 10
    with pytest.raises(MirrorError):
        build_bundle(out, options(index, releases), Options(workers=1, retries=0))
    assert not (out / "manifest.json").exists()
    index.server.cut_at.clear()
    result = build_bundle(out, options(index, releases), FAST)
    assert result.stats.resumed_bytes == 1000
    assert user_data_verify(out).returncode == 0


def test_it_writes_only_into_a_new_empty_or_bundle_directory(
    index: Index, releases: Releases, tmp_path: Path
) -> None:
    busy = tmp_path / "home"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(MirrorError, match="not empty and not a bundle"):
        build_bundle(busy, options(index, releases), FAST)
    assert (busy / "notes.txt").read_text(encoding="utf-8") == "mine"
    model = tmp_path / "model"
    Manifest("model", "tiny", "latest", {"type": "local"}, []).write(model)
    with pytest.raises(MirrorError, match="holds a model, not a bundle"):
        build_bundle(model, options(index, releases), FAST)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pure>=1.0 --hash=sha256:" + "a" * 64, "must pin one exact version"),
        ("pure==1.0", "has no --hash=sha256"),
        ("pure==1.0 --hash=md5:" + "a" * 32, "only sha256:<64 hex> is accepted"),
        ("-r other.txt", "-r is not supported"),
        ("pure @ https://example.invalid/p.whl --hash=sha256:" + "a" * 64, "must pin one exact version"),
    ],
)
def test_the_lock_must_be_exact_pins_with_sha256_hashes(tmp_path: Path, line: str, message: str) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(f"# header\n{line}\n", encoding="utf-8")
    with pytest.raises(MirrorError) as err:
        wheels.read_requirements(lock)
    assert f"{lock}:2: " in str(err.value)
    assert message in str(err.value)


def test_the_lock_must_pin_pip(index: Index, releases: Releases, tmp_path: Path) -> None:
    index.write_lock(skip=("pip",))
    with pytest.raises(MirrorError, match="pin pip"):
        build_bundle(tmp_path / "bundle", options(index, releases), FAST)


def test_the_hosts_lock_is_the_controllers_versions() -> None:
    """host-requirements.txt pins what uv.lock pins for the controller (Python >= 3.11)."""
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    locked = {p["name"]: p["version"] for p in lock["package"]}
    pins = wheels.read_requirements(HOST_REQUIREMENTS)
    py311 = wheels.Target((3, 11), "amd64", (2, 35))
    shared = [p for p in pins if wheels.applies(p, py311) and p.name in locked]
    assert {p.name for p in shared} >= {"pyinfra", "pydantic", "pyyaml", "gevent", "cryptography", "paramiko"}
    assert {p.name: p.version for p in shared} == {p.name: locked[p.name] for p in shared}


def test_manylinux_platforms_of_a_target() -> None:
    target = wheels.Target((3, 10), "amd64", (2, 35))
    platforms = target.platforms()
    assert platforms[0] == "manylinux_2_35_x86_64"
    assert {
        "manylinux2014_x86_64",
        "manylinux2010_x86_64",
        "manylinux1_x86_64",
        "manylinux_2_5_x86_64",
    } <= set(platforms)
    assert "manylinux_2_36_x86_64" not in platforms
    arm = wheels.Target((3, 12), "arm64", (2, 39)).platforms()
    assert arm[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--python", "3.9"], "--python '3.9': expected one of 3.10, 3.11, 3.12, 3.13"),
        (["--glibc", "2.5"], "--glibc '2.5': expected 2.N with N >= 17"),
        (
            ["--artifact-sha256", "ollama=abc"],
            "--artifact-sha256 'ollama=abc': expected NAME[:ARCH]=<64 hex>",
        ),
        (["--artifact-sha256", f"nginx={'a' * 64}"], "with NAME one of ollama, node_exporter"),
        (["--index-url", "ftp://mirror"], "--index-url 'ftp://mirror': expected an http(s)://"),
    ],
)
def test_bad_options_are_one_line_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["mirror", "bundle", "--to", str(tmp_path / "b"), *args])
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_the_cli_makes_a_bundle_from_a_wheel_directory(releases: Releases, tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    for name in WHEELS:
        (links / name).write_bytes(wheel_bytes(name))
    lock_index = Index.__new__(Index)
    lock_index.files = {n: wheel_bytes(n) for n in WHEELS}
    lock_index.lock = tmp_path / "lock.txt"
    Index.write_lock(lock_index)
    overrides = [f"--artifact-sha256={k}={v}" for k, v in releases.sha256.items()]
    out = tmp_path / "bundle"
    args = ["mirror", "bundle", "--to", str(out), "--python", "3.11", "--find-links", str(links)]
    args += [
        "--requirements",
        str(lock_index.lock),
        "--artifacts-from",
        releases.url,
        "--no-progress",
        *overrides,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "cp311-manylinux_2_35_x86_64" in result.output
    m = Manifest.read(out)
    assert m.source["wheels_from"] == str(links)
    assert "wheels/native-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" in {
        f.path for f in m.files
    }
    listed = CliRunner().invoke(main, ["mirror", "ls", str(out)])
    assert "llmkit-bootstrap" in listed.output and "bundle" in listed.output
    assert CliRunner().invoke(main, ["mirror", "verify", str(out)]).exit_code == 0


def test_push_publishes_the_bundle_to_bootstrap_like_a_model(
    index: Index, releases: Releases, tmp_path: Path, s3: S3
) -> None:
    out = tmp_path / "bundle"
    build_bundle(out, options(index, releases), FAST)
    env = {"AWS_ENDPOINT_URL_S3": s3.endpoint}
    pushed = CliRunner().invoke(
        main, ["mirror", "push", str(out), "--bucket", s3.bucket, "--kms-key-id", s3.key_arn], env=env
    )
    assert pushed.exit_code == 0, pushed.output
    assert f"s3://{s3.bucket}/bootstrap/" in pushed.output
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert keys == {f"bootstrap/{f.path}" for f in Manifest.read(out).files} | {"bootstrap/manifest.json"}
    head = s3.client.head_object(Bucket=s3.bucket, Key="bootstrap/wheels/pip-26.3-py3-none-any.whl")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == s3.key_arn
    listed = CliRunner().invoke(main, ["mirror", "ls", f"s3://{s3.bucket}/"], env=env)
    assert "llmkit-bootstrap" in listed.output and "bundle" in listed.output
    verified = CliRunner().invoke(main, ["mirror", "verify", f"s3://{s3.bucket}/bootstrap/"], env=env)
    assert verified.exit_code == 0, verified.output


def test_an_index_with_credentials_in_its_url(index: Index, releases: Releases, tmp_path: Path) -> None:
    """PIP_INDEX_URL style: the user info becomes a Basic header, and is never written down."""
    token = "s3cret-index-token"
    expected = "Basic " + base64.b64encode(f"bundle-bot:{token}".encode()).decode()
    index.server.require_auth = (("simple/", "packages/"), expected)  # the pages and the wheels
    index.server.requests.clear()
    with pytest.raises(MirrorError) as refused:
        build_bundle(tmp_path / "no", options(index, releases), FAST)
    assert "HTTP 401" in str(refused.value)
    url = index.url.replace("http://", f"http://bundle-bot:{token}@")
    out = tmp_path / "bundle"
    build_bundle(out, options(index, releases, index_url=url), FAST)
    m = Manifest.read(out)
    assert m.source["wheels_from"] == index.url.replace("http://", "http://***@")
    assert token not in (out / "manifest.json").read_text()
    with pytest.raises(MirrorError) as err:
        build_bundle(
            tmp_path / "b2", options(index, releases, index_url=url.replace("simple/", "nothing/")), FAST
        )
    assert token not in str(err.value)


def test_a_release_mirror_with_credentials_in_its_url(
    index: Index, releases: Releases, tmp_path: Path
) -> None:
    """--artifacts-from https://user:token@mirror/: a Basic header for that origin, never in the URL
    (urllib would have put it in the host name, and a DNS query)."""
    token = "s3cret-release-token"
    expected = "Basic " + base64.b64encode(f"bundle-bot:{token}".encode()).decode()
    index.server.require_auth = (("artifacts/",), expected)
    url = releases.url.replace("http://", f"http://bundle-bot:{token}@")
    out = tmp_path / "bundle"
    result = build_bundle(out, options(index, releases, artifacts_from=url), FAST)
    assert result.artifacts == len(releases.paths)
    assert {a["from"].split("/artifacts/")[0] for a in Manifest.read(out).source["artifacts"]} == {
        index.server.url.replace("http://", "http://***@")
    }
    assert token not in (out / "manifest.json").read_text()


def test_urls_lose_their_credentials_for_display_and_requests() -> None:
    assert (
        redact_url("https://u:p@devpi.internal/root/+simple/") == "https://***@devpi.internal/root/+simple/"
    )
    assert redact_url("https://pypi.org/simple/") == "https://pypi.org/simple/"
    clean, headers = wheels.split_credentials("https://u%40corp:p%3Ass@idx.internal/simple/")
    assert clean == "https://idx.internal/simple/"
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"u@corp:p:ss"


def test_presigned_and_token_urls_are_redacted() -> None:
    url = (
        "https://bucket.s3.amazonaws.com/m.gguf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261129&X-Amz-Signature=deadbeef&X-Amz-Expires=600"
    )
    shown = redact_url(url)
    assert "deadbeef" not in shown and "AKIA" not in shown
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in shown and "X-Amz-Expires=600" in shown
    assert "X-Amz-Signature=***" in shown
    assert redact_url("https://mirror/m.gguf?download=true") == "https://mirror/m.gguf?download=true"
    assert redact_url("https://mirror/m.gguf?token=abc") == "https://mirror/m.gguf?token=***"
