"""Host data cannot point the deploys at system paths (``playbooks/deploys/host_paths.py``).

``ollama_models_path: /etc`` used to make the Ollama deploy ``chown``/``chmod`` ``/etc`` and write
``ReadWritePaths=/etc`` into the unit; a mirror URL could name any host directory. Every such key
is now checked, before any operation, against the accepted roots; a path that is a symbolic link
on the host is resolved there (the fact runs for real below) and checked again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llmkit.errors import ConfigError
from playbooks.deploys import host_paths as hp
from playbooks.deploys import model_cache as mc
from playbooks.deploys import models as md
from playbooks.deploys import monitoring as mon
from playbooks.deploys import ollama as ol
from tests.playbooks.test_ollama import FREE_PLENTY, MIRROR_MODEL, arch, listed, run_deploy


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/ollama",
        "/var/lib/ollama/models",
        "/var/lib/llmkit/cache",
        "/opt/llmkit/bootstrap",
        "/srv/llm/models",
        "/mnt/model-cache/ollama",
        "/data/ollama/models/",
    ],
)
def test_accepted_paths(path: str) -> None:
    assert hp.host_path("ollama_models_path", path) == path.rstrip("/")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("/etc", "outside the roots"),
        ("/", "outside the roots"),
        ("/usr/lib/ollama", "outside the roots"),
        ("/var/lib/dpkg", "outside the roots"),
        ("/var/lib/ollamax", "outside the roots"),  # a prefix of a root is not below it
        ("/srv", "outside the roots"),  # a site root itself is never taken over
        ("/root/.ssh", "outside the roots"),
        ("/var/lib/ollama/../../../etc", "'.' or '..' components"),
        ("/srv/./models", "'.' or '..' components"),
        ("/srv//models", "not an absolute path"),
        ("relative/models", "not an absolute path"),
        ("/srv/my models", "not an absolute path"),
        ("/srv/x;chmod 777 /etc", "not an absolute path"),
        ("/srv/x\n/etc", "not an absolute path"),
        (["/srv/x"], "not an absolute path"),
    ],
)
def test_refused_paths_name_the_key_the_value_and_the_roots(value: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        hp.host_path("ollama_models_path", value)
    message = str(caught.value)
    assert message.startswith("ollama_models_path: "), message
    assert problem in message
    assert "/var/lib/ollama, /var/lib/llmkit, /opt/llmkit, or below /srv/, /mnt/, /data/" in message


# --- ollama_models_path, in every deploy that uses it, before any operation -----------------------


def test_a_models_path_of_etc_is_refused_before_any_command() -> None:
    with pytest.raises(ConfigError, match=r"ollama_models_path: outside the roots .*got '/etc'"):
        run_deploy(ol.ollama, {"ollama_models_path": "/etc"}, arch("x86_64"))
    with pytest.raises(ConfigError, match="ollama_models_path"):
        run_deploy(md.models, {"ollama_models_path": "/etc/ollama"}, listed())
    with pytest.raises(ConfigError, match="ollama_models_path"):
        run_deploy(mc.model_cache, {"ollama_models_path": "/usr/models", "model_cache": {"size_gib": 1}}, {})
    with pytest.raises(ConfigError, match="ollama_models_path"):
        ol.render_unit(ol.ollama_settings({"ollama_models_path": "/etc"}))  # no ReadWritePaths=/etc


def test_the_parent_of_the_models_path_is_checked_too() -> None:
    """The parent holds the staging directory and is where the model cache volume is mounted."""
    with pytest.raises(ConfigError, match=r"its parent \(staging, model cache mount\) '/srv' outside"):
        ol.ollama_settings({"ollama_models_path": "/srv/models"})
    settings = ol.ollama_settings({"ollama_models_path": "/srv/llm/models"})
    assert "ReadWritePaths=/var/lib/ollama /srv/llm/models" in ol.render_unit(settings)


def resolves(mapping: dict[str, str]) -> dict[Any, Any]:
    """The ResolvedPaths fact's answer on the host."""
    return {re.compile(r"realpath -m"): [f"{path}\t{target}" for path, target in mapping.items()]}


def test_a_models_path_that_is_a_link_to_a_system_directory_is_refused() -> None:
    data = {"ollama_models_path": "/srv/llm/models"}
    link = resolves({"/srv/llm/models": "/etc/systemd", "/srv/llm": "/srv/llm"})
    with pytest.raises(ConfigError) as caught:
        run_deploy(ol.ollama, data, {**arch("x86_64"), **link})
    message = str(caught.value)
    assert (
        "the models directory (ollama_models_path) /srv/llm/models resolves on the host to /etc/systemd"
        in message
    )
    # a link to another accepted place is fine (an admin moved the models to a data volume)
    moved = resolves({"/srv/llm/models": "/data/ollama/models", "/srv/llm": "/srv/llm"})
    commands = run_deploy(ol.ollama, data, {**arch("x86_64"), **FREE_PLENTY, **moved})
    assert any("/srv/llm/models" in c for c in commands)


def test_the_resolved_paths_fact_follows_real_links(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    paths = (str(tmp_path / "link" / "models"), str(tmp_path / "real"), str(tmp_path / "not yet"))
    fact = hp.ResolvedPaths()
    out = subprocess.run(["sh", "-c", fact.command(paths=paths)], capture_output=True, text=True, check=True)
    assert fact.process(out.stdout.splitlines()) == {
        paths[0]: str(tmp_path / "real" / "models"),
        paths[1]: paths[1],
        paths[2]: paths[2],
    }


# --- mirrors on the host --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ollama_mirror_url", "file:///etc"),
        ("ollama_mirror_url", "file:///usr/share/{version}/{file}"),
        ("models_mirror_url", "/etc/"),
        ("models_mirror_url", "file:///root/mirror"),
        ("exporters_mirror_url", "file:///var/lib/dpkg"),
    ],
)
def test_a_mirror_on_a_system_path_is_refused(key: str, value: str) -> None:
    data: dict[str, Any] = {key: value, "models": [MIRROR_MODEL]}
    with pytest.raises(ConfigError, match=rf"{key}: mirror directory .* outside the roots"):
        if key == "ollama_mirror_url":
            ol.ollama_settings(data)
        elif key == "models_mirror_url":
            md.model_specs(data)
        else:
            mon.release(mon.artifact("node_exporter"), "amd64", data)


@pytest.mark.parametrize(
    "value",
    ["file:///opt/llmkit/bootstrap", "file:///srv/mirror/ollama/{version}/{file}", "https://m.internal/x"],
)
def test_mirrors_in_accepted_places_and_remote_ones_pass(value: str) -> None:
    ol.ollama_settings({"ollama_mirror_url": value})
    mon.release(mon.artifact("node_exporter"), "amd64", {"exporters_mirror_url": value})
    if "{" not in value:
        md.model_specs({"models": [MIRROR_MODEL], "models_mirror_url": value})


def test_the_models_deploy_refuses_a_staging_parent_that_is_a_link() -> None:
    data = {"models": [MIRROR_MODEL], "models_mirror_url": "https://mirror.internal/models/"}
    link = resolves({"/var/lib/ollama": "/usr/lib"})
    with pytest.raises(
        ConfigError, match="parent of ollama_models_path /var/lib/ollama resolves on the host"
    ):
        run_deploy(md.models, data, {**listed(), **FREE_PLENTY, **link})
