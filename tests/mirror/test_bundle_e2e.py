"""The bootstrap bundle with the real wheels of the hosts' lock, installed as the hosts install it.

Setup (once, cached under ``~/.cache/llmkit-tests/host-wheels/``): pip downloads the wheels that
``playbooks/files/host-requirements.txt`` pins for CPython 3.10, 3.11 and 3.12 on x86_64, with
``--require-hashes``, from the package index, like the lab's builds fetch their Go modules.
From then on everything runs on 127.0.0.1: those wheels are served as a PEP 503 simple index,
``llmkit mirror bundle`` takes them from it, ``llmkit mirror push --to-dir`` publishes the bundle
to ``<root>/opt/llmkit/bootstrap`` (where the AWS hosts keep it), and the user data's own
``verify_bundle`` and ``install_venv`` (bash, the bundled pip, ``--no-index``) make the hosts'
virtualenv with each CPython the machine has. pyinfra from that virtualenv then loads every
deploy from the bundle's playbooks and runs a fact against ``@local``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.fleet import USER_DATA_TEMPLATE
from llmkit.cli import main
from llmkit.lab import prereqs
from llmkit.mirror import wheels
from llmkit.mirror.bundle import HOST_REQUIREMENTS
from llmkit.mirror.manifest import Manifest
from tests.conftest import HOST_PYTHONS
from tests.mirror.conftest import FileServer
from tests.mirror.test_bundle import Releases

pytestmark = pytest.mark.e2e

PYTHONS = HOST_PYTHONS


def serve_index(server: FileServer, directory: Path) -> str:
    """``directory``'s wheels as a PEP 503 simple index on the test server."""
    projects: dict[str, list[str]] = {}
    for path in sorted(directory.glob("*.whl")):
        data = path.read_bytes()
        server.files[f"files/{path.name}"] = data
        link = f'<a href="../../files/{path.name}#sha256={hashlib.sha256(data).hexdigest()}">{path.name}</a>'
        projects.setdefault(str(wheels.parse_wheel_filename(path.name)[0]), []).append(link)
    for project, links in projects.items():
        server.files[f"simple/{project}/"] = f"<html><body>{'<br/>'.join(links)}</body></html>".encode()
    return f"{server.url}/simple/"


@pytest.fixture(scope="module")
def bundle(
    host_wheels: Path, _file_server: FileServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    _file_server.reset()
    index = serve_index(_file_server, host_wheels)
    releases = Releases(_file_server)
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    args = ["mirror", "bundle", "--to", str(out), "--index-url", index, "--artifacts-from", releases.url]
    args += [f"--artifact-sha256={k}={v}" for k, v in releases.sha256.items()] + ["--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    yield out
    _file_server.reset()


def test_the_bundle_holds_one_wheel_per_pin_and_python(bundle: Path, host_wheels: Path) -> None:
    m = Manifest.read(bundle)
    chosen = {f.path.removeprefix("wheels/") for f in m.files if f.path.startswith("wheels/")}
    assert chosen <= {p.name for p in host_wheels.glob("*.whl")}
    assert len([n for n in chosen if n.startswith("pip-")]) == 1
    pins = wheels.read_requirements(HOST_REQUIREMENTS)
    for version in PYTHONS:
        target = wheels.Target(tuple(int(p) for p in version.split(".")), "amd64", (2, 35))  # type: ignore[arg-type]
        accepted = set(target.tags())
        for pin in (p for p in pins if wheels.applies(p, target)):
            mine = [n for n in chosen if wheels.parse_wheel_filename(n)[0] == pin.name]
            assert any(set(wheels.parse_wheel_filename(n)[3]) & accepted for n in mine), (pin, version)


@pytest.mark.parametrize("version", [pytest.param(v, marks=pytest.mark.needs(f"python{v}")) for v in PYTHONS])
def test_the_hosts_install_pyinfra_from_the_bundle_and_run_the_playbooks(
    bundle: Path, tmp_path: Path, version: str
) -> None:
    python = prereqs.find_python(version)
    assert python is not None  # the needs marker has failed the test otherwise
    root = tmp_path / "root"
    published = CliRunner().invoke(
        main, ["mirror", "push", str(bundle), "--to-dir", str(root / "opt/llmkit")]
    )
    assert published.exit_code == 0, published.output
    bins = tmp_path / "bin"
    bins.mkdir()
    (bins / "python3").symlink_to(python)
    script = tmp_path / "user-data.sh"
    script.write_text(
        USER_DATA_TEMPLATE.read_text(encoding="utf-8").replace("@@{manifest_sha256}", "''"), encoding="utf-8"
    )
    env = {
        "PATH": f"{bins}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LLMKIT_ROOT": str(root),
        "PIP_CONFIG_FILE": os.devnull,  # nothing from this machine's pip configuration
    }
    run = subprocess.run(
        ["bash", "-c", 'source "$1"; verify_bundle "$BUNDLE_DIR"; install_venv', "user-data", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    venv = root / "opt/llmkit/venv/bin"
    pyinfra_version = subprocess.run([venv / "pyinfra", "--version"], capture_output=True, text=True, env=env)
    pinned = next(p.version for p in wheels.read_requirements(HOST_REQUIREMENTS) if p.name == "pyinfra")
    assert pinned in pyinfra_version.stdout + pyinfra_version.stderr
    # every deploy imports from the bundle (its playbooks and llmkit), under the hosts' Python
    playbooks = root / "opt/llmkit/bootstrap/playbooks"
    load = (
        "import importlib, pkgutil, sys\n"
        "import site as _\n"
        "sys.path.insert(0, '.')\n"
        "spec = importlib.util.spec_from_file_location('llmkit_site', 'site.py')\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "import playbooks, llmkit\n"
        "for m in pkgutil.iter_modules(['deploys']): importlib.import_module('playbooks.deploys.' + m.name)\n"
        "print(sys.version_info[:2], playbooks.__file__, llmkit.__file__)\n"
    )
    loaded = subprocess.run(
        [venv / "python", "-c", load], cwd=playbooks, capture_output=True, text=True, env=env
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"({version.replace('.', ', ')})" in loaded.stdout
    assert str(root / "opt/llmkit/bootstrap/playbooks/__init__.py") in loaded.stdout
    assert str(root / "opt/llmkit/bootstrap/llmkit/__init__.py") in loaded.stdout
    fact = subprocess.run(
        [venv / "pyinfra", "--chdir", str(playbooks), "@local", "fact", "server.Os"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert fact.returncode == 0, fact.stdout + fact.stderr
    # pyinfra writes its report to stderr
    assert '"@local": "Linux"' in fact.stdout + fact.stderr
