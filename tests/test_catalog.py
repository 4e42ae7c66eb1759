"""The catalog's data files are checked as they load: a bad edit of reviewed data fails loudly.

Each case edits a copy of the real data files (models.yaml, gpus.yaml, runtimes.yaml) and loads
the catalog from it: the error names the file, the key, the value and what is accepted.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from llmkit import catalog as catalog_module
from llmkit.catalog import CatalogError, Mla, OllamaLatest, Runtime, load_catalog

Docs = dict[str, dict[str, Any]]
_REAL: Docs = {name: catalog_module._read(name) for name in ("models.yaml", "gpus.yaml", "runtimes.yaml")}


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[Docs], None]], Any]]:
    """Load the catalog (uncached) from the real data files as ``edit`` changes them."""

    def loader(edit: Callable[[Docs], None]) -> Any:
        docs = copy.deepcopy(_REAL)
        edit(docs)
        monkeypatch.setattr(catalog_module, "_read", lambda name: docs[name])
        return load_catalog.__wrapped__()

    yield loader


def refused(load: Callable[[Callable[[Docs], None]], Any], edit: Callable[[Docs], None]) -> str:
    with pytest.raises(CatalogError) as caught:
        load(edit)
    return str(caught.value)


def model(docs: Docs, name: str = "deepseek-r1:7b") -> dict[str, Any]:
    return docs["models.yaml"]["models"][name]


def test_the_real_data_files_load(load: Callable[[Callable[[Docs], None]], Any]) -> None:
    assert load(lambda docs: None) == load_catalog()


# --- one entry's keys and values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: model(d).update(parms=7),
            "llmkit/data/models.yaml: models.deepseek-r1:7b.parms: unknown key (got 7; accepted: the keys ",
        ),
        (
            lambda d: model(d).pop("layers"),
            "llmkit/data/models.yaml: models.deepseek-r1:7b.layers: missing "
            "(got nothing; accepted: Model's keys",
        ),
        (
            lambda d: model(d).update(params=0),
            "models.deepseek-r1:7b.params: not an integer > 0 (got 0; accepted: an integer > 0)",
        ),
        (
            lambda d: model(d).update(layers="28"),
            "models.deepseek-r1:7b.layers: not an integer > 0 (got '28'; accepted: an integer > 0)",
        ),
        (
            lambda d: model(d).update(layers=True),
            "models.deepseek-r1:7b.layers: not an integer > 0 (got True;",
        ),
        (
            lambda d: model(d).update(layers=28.0),
            "models.deepseek-r1:7b.layers: not an integer > 0 (got 28.0;",
        ),
        (
            lambda d: model(d).update(attention="mha"),
            "models.deepseek-r1:7b.attention: not one of: gqa, mla (got 'mha'; accepted: one of: gqa, mla)",
        ),
        (
            lambda d: model(d).update(quantizations="q4_K_M"),
            "models.deepseek-r1:7b.quantizations: not a list (got 'q4_K_M'; accepted: a list)",
        ),
        (
            lambda d: model(d).update(quantizations=["q4_K_M", 8]),
            "models.deepseek-r1:7b.quantizations[1]: not a string (got 8; accepted: a string)",
        ),
        (
            lambda d: model(d).update(display_name=None),
            "models.deepseek-r1:7b.display_name: not a string (got None;",
        ),
        (
            lambda d: model(d, "deepseek-v3:671b")["mla"].update(kv_lora_rank=-512),
            "models.deepseek-v3:671b.mla.kv_lora_rank: not an integer > 0 (got -512;",
        ),
        (
            lambda d: model(d, "deepseek-v3:671b")["moe"].update(shared_experts=-1),
            "models.deepseek-v3:671b.moe.shared_experts: not an integer >= 0 (got -1;",
        ),
        (
            lambda d: model(d, "deepseek-v3:671b")["moe"].update(experts=8),
            "models.deepseek-v3:671b.moe.experts: unknown key (got 8;",
        ),
        (
            lambda d: model(d, "deepseek-v3:671b").update(moe=[1, 2]),
            "models.deepseek-v3:671b.moe: not a mapping (got [1, 2];",
        ),
        (
            lambda d: model(d).update(name="other"),
            "models.deepseek-r1:7b.name: unknown key (got 'other';",
        ),
    ],
)
def test_a_model_entry_is_checked_key_by_key(
    load: Callable[[Callable[[Docs], None]], Any], edit: Callable[[Docs], None], message: str
) -> None:
    text = refused(load, edit)
    assert message in text
    assert text.startswith("llmkit/data/models.yaml: models.")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["models.yaml"]["quantizations"]["q8_0"].update(bits_per_weight=0),
            "llmkit/data/models.yaml: quantizations.q8_0.bits_per_weight: not a number > 0 (got 0;",
        ),
        (
            lambda d: d["models.yaml"]["quantizations"]["q8_0"].update(bits_per_weight="8.5"),
            "quantizations.q8_0.bits_per_weight: not a number > 0 (got '8.5';",
        ),
        (
            lambda d: d["models.yaml"]["quantizations"]["q8_0"].update(bits_per_weight=float("inf")),
            "quantizations.q8_0.bits_per_weight: not a number > 0 (got inf;",
        ),
        (
            lambda d: d["models.yaml"]["quantizations"]["fp8"].update(min_compute_capability=8.0),
            "quantizations.fp8.min_compute_capability: not a compute capability such as 8.0 (got 8.0;",
        ),
        (
            lambda d: d["gpus.yaml"]["gpus"]["T4"].update(compute_capability="7"),
            "llmkit/data/gpus.yaml: gpus.T4.compute_capability: "
            "not a compute capability such as 8.0 (got '7';",
        ),
        (
            lambda d: d["gpus.yaml"]["gpus"]["T4"].pop("bf16_tflops"),
            "llmkit/data/gpus.yaml: gpus.T4.bf16_tflops: missing (got nothing;",
        ),
        (
            lambda d: d["gpus.yaml"]["gpus"]["T4"].update(memory_mib=0),
            "gpus.T4.memory_mib: not an integer > 0 (got 0;",
        ),
        (
            lambda d: d["gpus.yaml"]["instances"]["g5.xlarge"].update(price_usd_hour=0),
            "llmkit/data/gpus.yaml: instances.g5.xlarge.price_usd_hour: not a number > 0 (got 0;",
        ),
        (
            lambda d: d["gpus.yaml"]["instances"]["g5.xlarge"].update(price_unverified="yes"),
            "instances.g5.xlarge.price_unverified: not true or false (got 'yes';",
        ),
        (
            lambda d: d["gpus.yaml"]["instances"]["g5.xlarge"].update(gpu="A10"),
            "llmkit/data/gpus.yaml: instances.g5.xlarge.gpu: unknown gpu "
            "(got 'A10'; accepted: a gpu of the catalog: T4,",
        ),
        (
            lambda d: d["gpus.yaml"]["pricing"].update(currency="EUR"),
            "llmkit/data/gpus.yaml: pricing.currency: unknown key (got 'EUR';",
        ),
        (
            lambda d: d["gpus.yaml"].pop("pricing"),
            "llmkit/data/gpus.yaml: pricing: not a mapping (got nothing;",
        ),
        (
            lambda d: d["runtimes.yaml"]["runtimes"]["vllm"].update(port=0),
            "llmkit/data/runtimes.yaml: runtimes.vllm.port: not an integer > 0 (got 0;",
        ),
        (
            lambda d: d["runtimes.yaml"].update(runtimes=[]),
            "llmkit/data/runtimes.yaml: runtimes: not a mapping (got [];",
        ),
    ],
)
def test_quantizations_gpus_instances_pricing_and_runtimes_are_checked(
    load: Callable[[Callable[[Docs], None]], Any], edit: Callable[[Docs], None], message: str
) -> None:
    assert message in refused(load, edit)


# --- the checks between fields and between entries -----------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: model(d).update(attention="mla"),
            "models.deepseek-r1:7b.mla: "
            "deepseek-r1:7b: 'mla' block is required exactly when attention is mla",
        ),
        (
            lambda d: model(d, "deepseek-v3:671b").pop("mla"),
            "deepseek-v3:671b: 'mla' block is required exactly when attention is mla",
        ),
        (
            lambda d: model(d).update(active_params=model(d)["params"] + 1),
            "models.deepseek-r1:7b.active_params: deepseek-r1:7b: active_params exceeds params",
        ),
        (
            lambda d: model(d).update(active_params=model(d)["params"] - 1),
            "models.deepseek-r1:7b.active_params: deepseek-r1:7b: a dense model has active_params == params",
        ),
        (
            lambda d: model(d).update(quantizations=["q4_K_M", "q3_K_S"]),
            "llmkit/data/models.yaml: models.deepseek-r1:7b.quantizations: deepseek-r1:7b lists unknown "
            "quantizations q3_K_S (got ['q3_K_S']; accepted: quantizations of the catalog: bf16, fp8,",
        ),
        (
            lambda d: d["runtimes.yaml"]["runtimes"]["ollama"].update(quantizations=["q4_K_M", "awq"]),
            "llmkit/data/runtimes.yaml: runtimes.ollama.quantizations: "
            "ollama lists unknown quantizations awq",
        ),
        (
            lambda d: d["models.yaml"]["ollama_latest"]["deepseek-v3"].update(model="deepseek-v3:1t"),
            "llmkit/data/models.yaml: ollama_latest.deepseek-v3.model: "
            "ollama_latest.deepseek-v3 names unknown model 'deepseek-v3:1t'",
        ),
        (
            lambda d: d["models.yaml"]["ollama_latest"]["deepseek-v3"].update(model="deepseek-r1:7b"),
            "ollama_latest.deepseek-v3: ollama_latest.deepseek-v3: not a name without a tag",
        ),
        (
            lambda d: d["models.yaml"]["ollama_latest"].pop("deepseek-v3"),
            "llmkit/data/models.yaml: ollama_latest: ollama_latest does not record deepseek-v3",
        ),
    ],
)
def test_cross_checks_name_the_entry(
    load: Callable[[Callable[[Docs], None]], Any], edit: Callable[[Docs], None], message: str
) -> None:
    assert message in refused(load, edit)


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({}, "runtimes.ollama.routes: ollama: routes is empty"),
        ({"/api/../pull": ["POST"]}, "ollama: route '/api/../pull' is not a plain absolute path"),
        ({"/api/*": ["POST"]}, "ollama: route '/api/*' is not a plain absolute path"),
        ({"api/chat": ["POST"]}, "ollama: route 'api/chat' is not a plain absolute path"),
        ({"/api/chat": []}, "runtimes.ollama.routes./api/chat: ollama: route /api/chat lists no methods"),
        ({"/api/chat": ["POST", "POST"]}, "ollama: route /api/chat lists no methods, or one twice"),
        (
            {"/api/chat": ["DELETE"]},
            "runtimes.ollama.routes./api/chat[0]: not one of: GET, HEAD, POST (got 'DELETE';",
        ),
        ({"/api/chat": "POST"}, "runtimes.ollama.routes./api/chat: not a list (got 'POST';"),
    ],
)
def test_a_runtimes_routes_are_exact_paths_with_read_or_inference_methods(
    load: Callable[[Callable[[Docs], None]], Any], routes: dict[str, Any], message: str
) -> None:
    text = refused(load, lambda d: d["runtimes.yaml"]["runtimes"]["ollama"].update(routes=routes))
    assert text.startswith("llmkit/data/runtimes.yaml: runtimes.ollama.routes")
    assert message in text


def test_a_data_file_that_is_not_a_mapping_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    (tmp_path / "models.yaml").write_text("- a list\n", encoding="utf-8")
    (tmp_path / "gpus.yaml").write_text("gpus: {unclosed\n", encoding="utf-8")
    monkeypatch.setattr(catalog_module, "DATA_DIR", str(tmp_path))
    with pytest.raises(CatalogError, match=r"^llmkit/data/models.yaml: not a mapping \(got \['a list'\]"):
        catalog_module._read("models.yaml")
    with pytest.raises(CatalogError, match=r"^llmkit/data/gpus.yaml: not YAML"):
        catalog_module._read("gpus.yaml")


# --- records ------------------------------------------------------------------------------------


def test_records_are_frozen_and_compare_by_value() -> None:
    catalog = load_catalog()
    m = catalog.models["deepseek-v3:671b"]
    with pytest.raises(FrozenInstanceError):
        m.params = 1  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del m.mla
    assert m.mla == Mla(kv_lora_rank=512, qk_rope_head_dim=64)
    assert hash(m.mla) == hash(Mla(kv_lora_rank=512, qk_rope_head_dim=64))
    assert m.mla != Mla(kv_lora_rank=512, qk_rope_head_dim=32)
    assert repr(m.mla) == "Mla(kv_lora_rank=512, qk_rope_head_dim=64)"
    assert catalog.instances["g4dn.xlarge"].gpu is catalog.gpus["T4"]


def test_a_record_built_in_code_is_checked_as_one_from_a_file() -> None:
    with pytest.raises(CatalogError, match=r"^model: not a string \(got 7;"):
        OllamaLatest(name="deepseek-r1", model=7, source="test")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs the keyword argument 'source'"):
        OllamaLatest(name="deepseek-r1", model=None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes no keyword argument 'modle'"):
        OllamaLatest(name="deepseek-r1", model=None, source="test", modle="x")  # type: ignore[call-arg]
    ollama = load_catalog().runtime("ollama")
    with pytest.raises(CatalogError, match="ollama: routes is empty"):
        ollama.model_copy(update={"routes": {}})
    assert isinstance(ollama.model_copy(update={"port": 11435}), Runtime)
    catalog = load_catalog()
    with pytest.raises(
        CatalogError, match=r"ollama_latest\.deepseek-v3 names unknown model 'deepseek-v3:1t'"
    ):
        catalog.model_copy(
            update={
                "ollama_latest": {
                    **catalog.ollama_latest,
                    "deepseek-v3": OllamaLatest(name="deepseek-v3", model="deepseek-v3:1t", source="test"),
                }
            }
        )


def test_values_are_the_types_the_schema_says() -> None:
    catalog = load_catalog()
    assert isinstance(catalog.gpus["T4"].fp16_tflops, float)  # 65 in the file
    assert catalog.gpus["T4"].bf16_tflops is None
    assert isinstance(catalog.models["deepseek-r1:7b"].quantizations, tuple)
    assert all(isinstance(m, tuple) for m in catalog.runtime("ollama").routes.values())


def test_size_loads_neither_pydantic_nor_pathlib() -> None:
    """The catalog is on `llmkit size`'s path, which stays within 3x of Python's start-up."""
    code = (
        "import sys; from llmkit.commands.size import size; from llmkit.catalog import load_catalog; "
        "load_catalog(); "
        "print(sorted(m for m in ('pydantic', 'pathlib', 'rich', 'json') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
