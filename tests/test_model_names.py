"""A model named as Ollama users name it: with a tag, without one, or with Ollama's default tag.

One function resolves every name a user gives (`Catalog.resolve_model`): `llmkit size`,
`llmkit:models[].name` and the gateway's aliases all go through it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from llmkit.catalog import OLLAMA_DEFAULT_TAG, Catalog, OllamaLatest, load_catalog
from llmkit.commands.size import size as size_command
from llmkit.config import from_mapping
from llmkit.errors import ConfigError, ConfigErrors
from llmkit.sizing import size

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
R1_TAGS = [name for name in CATALOG.models if name.startswith("deepseek-r1:")]


def with_latest(name: str, model: str | None) -> Catalog:
    """The real catalog with another record of what Ollama's NAME:latest is."""
    latest = {**CATALOG.ollama_latest, name: OllamaLatest(name=name, model=model, source="test")}
    return CATALOG.model_copy(update={"ollama_latest": latest})


# --- the catalog's one resolution --------------------------------------------------------------


@pytest.mark.parametrize("name", ["deepseek-r1:32b", "deepseek-v3:671b"])
def test_a_catalog_name_is_itself(name: str) -> None:
    assert CATALOG.resolve_model(name) == (CATALOG.models[name], "")


@pytest.mark.parametrize("name", ["deepseek-v3", f"deepseek-v3:{OLLAMA_DEFAULT_TAG}"])
def test_ollamas_default_tag_in_the_catalog_is_accepted(name: str) -> None:
    assert CATALOG.ollama_latest["deepseek-v3"].model == "deepseek-v3:671b"
    model, how = CATALOG.resolve_model(name)
    assert model.name == "deepseek-v3:671b"
    assert how == f"{name} is deepseek-v3:671b: what `ollama pull deepseek-v3` fetches (deepseek-v3:latest)"


def test_the_default_tag_decides_between_several_entries() -> None:
    catalog = with_latest("deepseek-r1", "deepseek-r1:7b")
    assert catalog.resolve_model("deepseek-r1")[0].name == "deepseek-r1:7b"


def test_the_only_entry_of_a_name_is_accepted() -> None:
    catalog = with_latest("deepseek-v3", None)  # latest recorded as none of the entries
    model, how = catalog.resolve_model("deepseek-v3")
    assert model.name == "deepseek-v3:671b"
    assert how == "deepseek-v3 is deepseek-v3:671b: the only deepseek-v3 model in the catalog"


def test_several_entries_without_the_default_are_refused_with_their_tags() -> None:
    assert CATALOG.ollama_latest["deepseek-r1"].model is None
    with pytest.raises(ConfigError) as caught:
        CATALOG.resolve_model("deepseek-r1", key="llmkit:models[0].name")
    error = caught.value
    assert (error.key, error.value) == ("llmkit:models[0].name", "deepseek-r1")
    assert error.accepted == "one of: " + ", ".join(R1_TAGS)
    assert error.problem == (
        f"ambiguous: {len(R1_TAGS)} catalog models are named deepseek-r1, and Ollama's default "
        "deepseek-r1:latest is none of them; give the tag"
    )


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("deepseek-r1:3b", R1_TAGS),  # a known name with an unknown tag: that name's tags
        ("llama3", list(CATALOG.models)),
        ("llama3:latest", list(CATALOG.models)),
        ("", list(CATALOG.models)),
    ],
)
def test_unknown_names_are_refused(name: str, accepted: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        CATALOG.model(name)
    assert (caught.value.key, caught.value.problem) == ("model", "unknown model")
    assert caught.value.accepted == "one of: " + ", ".join(accepted)


def test_every_name_records_its_default_tag_with_a_source() -> None:
    names = {name.partition(":")[0] for name in CATALOG.models}
    assert set(CATALOG.ollama_latest) == names
    for entry in CATALOG.ollama_latest.values():
        assert entry.source.startswith("https://")
        assert entry.model is None or entry.model.startswith(f"{entry.name}:")


# --- llmkit size --------------------------------------------------------------------------------


def test_size_accepts_a_name_without_a_tag() -> None:
    result = size("deepseek-v3", "fp8", 8192, 1, runtime="vllm")
    assert result.model == "deepseek-v3:671b"
    assert result.to_dict() == size("deepseek-v3:671b", "fp8", 8192, 1, runtime="vllm").to_dict()


def test_size_command_says_what_the_name_means() -> None:
    result = CliRunner().invoke(size_command, ["deepseek-v3", "--quant", "fp8", "--runtime", "vllm"])
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith("deepseek-v3 is deepseek-v3:671b")
    assert second.startswith("deepseek-v3:671b (DeepSeek-V3)")


def test_size_command_refuses_an_ambiguous_name_with_the_tags() -> None:
    from llmkit.cli import main

    result = CliRunner().invoke(main, ["size", "deepseek-r1"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert "model: ambiguous" in result.stderr
    assert "accepted: one of: " + ", ".join(R1_TAGS) in result.stderr


# --- the stack config ---------------------------------------------------------------------------


def staging(**model: Any) -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(
        yaml.safe_load((ROOT / "stacks" / "Pulumi.staging.yaml").read_text())["config"]
    )
    raw["llmkit:models"][0].update(model)
    return raw


def test_a_stack_may_name_a_model_without_its_tag_and_gets_the_catalog_name() -> None:
    raw = staging(name="deepseek-v3")
    raw["llmkit:gateway"]["aliases"] = {"general": {"model": "deepseek-v3"}}
    cfg = from_mapping(raw, source="test")
    assert cfg.models[0].name == "deepseek-v3:671b"
    assert cfg.gateway is not None
    assert cfg.gateway.aliases["general"].model == "deepseek-v3:671b"


def test_a_stack_with_an_ambiguous_name_names_the_key_and_the_tags() -> None:
    with pytest.raises(ConfigErrors) as caught:
        from_mapping(staging(name="deepseek-r1"), source="test")
    (error,) = caught.value.errors
    assert (error.key, error.value) == ("llmkit:models[0].name", "deepseek-r1")
    assert error.problem.startswith("ambiguous: 7 catalog models are named deepseek-r1")
    assert error.accepted == "one of: " + ", ".join(R1_TAGS)
    assert "Traceback" not in str(caught.value)


def test_a_stack_with_an_unknown_name_names_the_key() -> None:
    with pytest.raises(ConfigErrors) as caught:
        from_mapping(staging(name="deepseek-r2"), source="test")
    (error,) = caught.value.errors
    assert (error.key, error.problem, error.value) == (
        "llmkit:models[0].name",
        "unknown model",
        "deepseek-r2",
    )
    assert error.accepted == "one of: " + ", ".join(CATALOG.models)
