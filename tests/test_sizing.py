"""The sizing engine: exact arithmetic against hand-computed numbers, and the fit rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from llmkit.catalog import load_catalog
from llmkit.errors import EXIT_FINDINGS, ConfigError, LlmkitError
from llmkit.sizing import (
    Choice,
    MemoryBreakdown,
    NothingFits,
    SizingResult,
    allowed_tensor_parallel,
    gpu_capacity_bytes,
    size,
)

MIB = 1024 * 1024
GIB = 1024 * MIB


# --------------------------------------------------------------------------- exact arithmetic


def test_dense_gqa_breakdown_is_exact() -> None:
    """deepseek-r1:32b q4_K_M, 8192 context, 4 sequences, ollama: every term by hand."""
    r = size("deepseek-r1:32b", "q4_K_M", 8192, 4, runtime="ollama")
    b = r.breakdown
    # weights: 32,763,876,352 x 4.89 / 8 = 20,026,919,420.16 -> rounded up to whole bytes
    assert 32763876352 * 489 == 16021535536128
    assert b.weights_bytes == 20026919421
    # KV per token: 2 (K, V) x 64 layers x 8 kv heads x 128 head dim x 2 bytes (f16)
    assert b.kv_bytes_per_token == 2 * 64 * 8 * 128 * 2 == 262144
    # KV: 262,144 x 8,192 context x 4 sequences = 8 GiB exactly
    assert b.kv_cache_bytes == 8589934592 == 8 * GIB
    # activations: min(8192 x 4, 512 batch) = 512 tokens x (5120 x 4 + 27648 x 2) x 2 bytes
    #   = 512 x 75,776 x 2 = 77,594,624; logits 4 x 152,064 x 4 = 2,433,024
    assert b.activation_bytes == 77594624 + 2433024 == 80027648
    # overhead: 600 MiB per GPU
    assert b.per_gpu_overhead_bytes == 629145600
    assert b.total_bytes(1) == 20026919421 + 8589934592 + 80027648 + 629145600 == 29326027261
    assert b.total_bytes(4) == 20026919421 + 8589934592 + 80027648 + 4 * 629145600


def test_per_gpu_need_divides_everything_but_the_overhead() -> None:
    b = MemoryBreakdown(
        weights_bytes=100,
        kv_cache_bytes=20,
        kv_bytes_per_token=1,
        activation_bytes=3,
        per_gpu_overhead_bytes=7,
    )
    assert b.per_gpu_bytes(1) == 123 + 7
    assert b.per_gpu_bytes(2) == 62 + 7  # 123 / 2 = 61.5, rounded up
    assert b.per_gpu_bytes(4) == 31 + 7  # 30.75 rounded up
    assert b.total_bytes(2) == 123 + 14


def test_mla_kv_cache_is_the_compressed_latent() -> None:
    """deepseek-r1:671b: 61 layers x (512 kv_lora_rank + 64 qk_rope_head_dim) x 2 bytes per token."""
    r = size("deepseek-r1:671b", "fp8", 32768, 8, runtime="vllm")
    b = r.breakdown
    assert b.kv_bytes_per_token == 61 * (512 + 64) * 2 == 70272
    assert b.kv_cache_bytes == 70272 * 32768 * 8 == 18421383168
    # A GQA-style cache of all 128 heads would be 2 x 61 x 128 x 192 x 2 = 5,996,544 bytes per token.
    assert b.kv_bytes_per_token * 85 < 2 * 61 * 128 * 192 * 2


def test_moe_weights_count_every_expert_and_activations_use_routed_experts() -> None:
    r = size("deepseek-r1:671b", "fp8", 32768, 8, runtime="vllm")
    b = r.breakdown
    # fp8: 1 byte per weight, all 671e9 parameters resident (not the 37e9 active ones)
    assert b.weights_bytes == 671000000000
    # tokens = min(32768 x 8, vllm batch 8192) = 8192;
    # MLP width = moe_intermediate_size 2048 x 8 experts per token = 16384
    # 8192 x (7168 x 4 + 16384 x 2) x 2 = 8192 x 61,440 x 2 = 1,006,632,960
    # logits: 8 x 129,280 x 4 = 4,136,960
    assert b.activation_bytes == 1006632960 + 4136960 == 1010769920
    assert b.per_gpu_overhead_bytes == 2048 * MIB


def test_activation_tokens_are_capped_by_the_runtime_batch() -> None:
    # 1 sequence of 100 tokens on ollama: 100 tokens (< 512 batch)
    small = size("deepseek-r1:1.5b", "bf16", 100, 1).breakdown
    # 100 x (1536 x 4 + 8960 x 2) x 2 + 1 x 151,936 x 4
    assert (
        small.activation_bytes == 100 * (1536 * 4 + 8960 * 2) * 2 + 151936 * 4 == 5420544
    )  # 4,812,800 + 607,744
    # any longer context is capped at 512 tokens
    big = size("deepseek-r1:1.5b", "bf16", 100000, 1).breakdown
    assert big.activation_bytes == 512 * (1536 * 4 + 8960 * 2) * 2 + 151936 * 4


def test_bf16_weights_are_two_bytes_each() -> None:
    r = size("deepseek-r1:70b", "bf16", 8192, 1, runtime="vllm")
    assert r.breakdown.weights_bytes == 70553706496 * 2
    q8 = size("deepseek-r1:70b", "q8_0", 8192, 1)
    assert q8.breakdown.weights_bytes == 70553706496 * 17 // 16  # 8.5 bits = 17/16 bytes, exact


def test_capacity_is_memory_less_headroom_rounded_down() -> None:
    cat = load_catalog()
    l40s = cat.instance("g6e.xlarge")
    assert gpu_capacity_bytes(l40s, 0.10) == (46068 * MIB * 9) // 10 == 43475219251
    assert gpu_capacity_bytes(l40s, 0) == 46068 * MIB


# --------------------------------------------------------------------------- choosing


def test_cheapest_fitting_instance_is_chosen() -> None:
    r = size("deepseek-r1:32b", "q4_K_M", 8192, 4)
    best = r.best
    # 29,326,027,261 bytes do not fit a 24 GB-class GPU (A10G/L4 ~20.2 GiB after headroom),
    # fit one L40S (40.49 GiB); g6e.xlarge is the cheapest L40S instance.
    assert best == Choice(
        instance_type="g6e.xlarge",
        gpu="L40S",
        gpu_count=1,
        tensor_parallel=1,
        per_gpu_need_bytes=29326027261,
        per_gpu_capacity_bytes=43475219251,
        utilisation=29326027261 / (46068 * MIB),
        price_usd_hour=1.861,
    )
    prices = [(c.price_usd_hour, c.gpu_count, c.instance_type) for c in r.choices]
    assert prices == sorted(prices)
    fitting = {c.instance_type for c in r.choices}
    rejected = {name for name, _ in r.rejected}
    assert fitting.isdisjoint(rejected)
    assert fitting | rejected == set(load_catalog().instances)
    assert size("deepseek-r1:32b", "q4_K_M", 8192, 4).best == best


def test_ties_on_price_go_to_fewer_gpus_then_name() -> None:
    r = size("deepseek-r1:671b", "fp8", 32768, 8, runtime="vllm")
    # p5e and p5en: same price, same 8 GPUs -> by name
    assert [c.instance_type for c in r.choices] == ["p5e.48xlarge", "p5en.48xlarge"]
    assert all(c.price_unverified for c in r.choices)


def test_tensor_parallel_when_one_gpu_is_not_enough() -> None:
    """70B bf16 (131.4 GiB of weights) fits no single GPU; 4 x L40S with tp=4 is cheapest."""
    r = size("deepseek-r1:70b", "bf16", 8192, 1, runtime="vllm")
    best = r.best
    assert (best.instance_type, best.gpu_count, best.tensor_parallel) == ("g6e.12xlarge", 4, 4)
    # weights 70,553,706,496 x 2 = 141,107,412,992; KV 2 x 80 x 8 x 128 x 2 x 8192 = 2,684,354,560;
    # activations 8192 x (8192 x 4 + 28672 x 2) x 2 + 128,256 x 4 = 1,476,908,032
    # per GPU: (141,107,412,992 + 2,684,354,560 + 1,476,908,032) / 4 + 2 GiB
    assert best.per_gpu_need_bytes == 145268675584 // 4 + 2 * GIB == 38464652544
    # every fitting choice uses the smallest degree that fits on its instance
    b = r.breakdown
    for c in r.choices:
        degrees = allowed_tensor_parallel(load_catalog().models["deepseek-r1:70b"], c.gpu_count)
        smaller = [tp for tp in degrees if tp < c.tensor_parallel]
        assert all(b.per_gpu_bytes(tp) > c.per_gpu_capacity_bytes for tp in smaller)


def test_smallest_tp_that_fits_is_used_on_a_big_instance() -> None:
    r = size("deepseek-r1:32b", "q4_K_M", 8192, 4, instance_type="p4d.24xlarge")
    assert [(c.instance_type, c.tensor_parallel, c.gpu_count) for c in r.choices] == [("p4d.24xlarge", 1, 8)]


def test_tensor_parallel_must_divide_the_heads() -> None:
    models = load_catalog().models
    assert allowed_tensor_parallel(models["deepseek-r1:1.5b"], 8) == [1, 2]  # 12 heads, 2 KV heads
    assert allowed_tensor_parallel(models["deepseek-r1:7b"], 8) == [1, 2, 4]  # 28 heads, 4 KV heads
    assert allowed_tensor_parallel(models["deepseek-r1:32b"], 8) == [1, 2, 4, 8]  # 40 / 8
    assert allowed_tensor_parallel(models["deepseek-r1:32b"], 4) == [1, 2, 4]
    assert allowed_tensor_parallel(models["deepseek-r1:671b"], 8) == [1, 2, 4, 8]  # MLA: 128 heads
    # 7b bf16 with 786k tokens of KV needs tp=8 on 8 x T4, which 4 KV heads cannot be split into
    r = size("deepseek-r1:7b", "bf16", 131072, 6, runtime="vllm", instance_type="g4dn.metal")
    assert r.choices == []
    assert r.breakdown.per_gpu_bytes(8) <= gpu_capacity_bytes(load_catalog().instance("g4dn.metal"), 0.1)
    [(name, reason)] = r.rejected
    assert name == "g4dn.metal"
    assert "at tp=4" in reason
    assert "tp=8 cannot split 28 attention / 4 KV heads" in reason


def test_headroom_changes_the_answer() -> None:
    # 32b q4_K_M with 3 x 32768 tokens needs 43.3 GiB: over an L40S at 10% headroom, under it at 0%.
    tight = size("deepseek-r1:32b", "q4_K_M", 32768, 3)
    loose = size("deepseek-r1:32b", "q4_K_M", 32768, 3, headroom=0.0)
    assert loose.best.instance_type == "g6e.xlarge"
    assert loose.best.per_gpu_capacity_bytes == 46068 * MIB
    assert tight.best.instance_type == "g4dn.12xlarge"
    assert tight.best.tensor_parallel == 4
    assert loose.breakdown == tight.breakdown


def test_weights_must_fit_host_ram() -> None:
    # 32b q8_0 = 32.42 GiB of weights: the GPU of g6e.xlarge holds them, its 32 GiB of RAM does not.
    r = size("deepseek-r1:32b", "q8_0", 4096, 1)
    reasons = dict(r.rejected)
    assert "exceed host RAM 32 GiB" in reasons["g6e.xlarge"]
    assert r.breakdown.per_gpu_bytes(1) < gpu_capacity_bytes(load_catalog().instance("g6e.xlarge"), 0.1)
    assert r.best.instance_type == "g6e.2xlarge"


def test_instance_override() -> None:
    r = size("deepseek-r1:7b", "q4_K_M", 8192, 1, instance_type="g5.xlarge")
    assert [c.instance_type for c in r.choices] == ["g5.xlarge"]
    assert r.rejected == []
    none = size("deepseek-r1:70b", "bf16", 8192, 1, runtime="vllm", instance_type="g5.xlarge")
    assert none.choices == []
    assert [name for name, _ in none.rejected] == ["g5.xlarge"]
    with pytest.raises(NothingFits, match=r"does not fit instance type g5\.xlarge"):
        _ = none.best


# --------------------------------------------------------------------------- nothing fits


def test_nothing_fits_is_a_finding_with_the_numbers() -> None:
    r = size("deepseek-r1:671b", "bf16", 131072, 64)
    assert r.choices == []
    assert not r.fits
    assert len(r.rejected) == len(load_catalog().instances)
    with pytest.raises(NothingFits) as info:
        _ = r.best
    err = info.value
    assert isinstance(err, LlmkitError)
    assert err.exit_code == EXIT_FINDINGS == 1
    assert err.result is r
    text = str(err)
    assert "does not fit any catalog instance type" in text
    assert "1,799.51 GiB on one GPU" in text
    assert "per GPU split over tp=8" in text
    assert "H200-141GB, 143771 MiB" in text
    assert "126.36 GiB after 10% headroom" in text
    assert "a lower quantization" in text
    assert "q4_K_M (4.89 bits, served by ollama: fits p5e.48xlarge on ollama)" in text
    assert "a shorter context" in text
    assert "fewer concurrent sequences" in text
    with pytest.raises(NothingFits):
        _ = size("deepseek-r1:671b", "bf16", 131072, 64).best


def test_nothing_fits_advice_is_exact() -> None:
    r = size("deepseek-r1:32b", "q4_K_M", 131072, 64)
    text = r.explain_nothing_fits()
    assert "none is published for deepseek-r1:32b below q4_K_M" in text
    ctx = int(re.search(r"at most (\d+) tokens fit with 64", text).group(1))  # type: ignore[union-attr]
    conc = int(re.search(r"at most (\d+) fit at context 131072", text).group(1))  # type: ignore[union-attr]
    assert size("deepseek-r1:32b", "q4_K_M", ctx, 64).fits
    assert not size("deepseek-r1:32b", "q4_K_M", ctx + 1, 64).fits
    assert size("deepseek-r1:32b", "q4_K_M", 131072, conc).fits
    assert not size("deepseek-r1:32b", "q4_K_M", 131072, conc + 1).fits


CATALOG = load_catalog()
CASES = [
    pytest.param(m.name, q, id=f"{m.name}-{q}") for m in CATALOG.models.values() for q in m.quantizations
]
# bf16 671B is 1,250 GiB of weights: more than 8 x H200 (8 x 126.4 GiB after headroom).
TOO_BIG = {("deepseek-r1:671b", "bf16"), ("deepseek-v3:671b", "bf16")}


@pytest.mark.parametrize(("model", "quant"), CASES)
def test_every_catalog_model_and_quantization_gets_an_answer(model: str, quant: str) -> None:
    runtime = next(r.name for r in CATALOG.runtimes.values() if quant in r.quantizations)
    r = size(model, quant, 8192, 1, runtime=runtime)
    json.dumps(r.to_dict())
    if (model, quant) in TOO_BIG:
        with pytest.raises(NothingFits, match="does not fit"):
            _ = r.best
        assert r.to_dict()["nothing_fits"]
    else:
        best = r.best
        assert best.per_gpu_need_bytes <= best.per_gpu_capacity_bytes
        assert r.breakdown.weights_bytes <= CATALOG.instance(best.instance_type).memory_gib * GIB
        assert r.to_dict()["best"]["instance_type"] == best.instance_type


def test_to_dict_is_json_and_complete() -> None:
    r = size("deepseek-r1:32b", "q4_K_M", 8192, 4)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["breakdown"] == {
        "weights_bytes": 20026919421,
        "kv_cache_bytes": 8589934592,
        "kv_bytes_per_token": 262144,
        "activation_bytes": 80027648,
        "per_gpu_overhead_bytes": 629145600,
        "total_bytes_one_gpu": 29326027261,
    }
    assert d["best"]["instance_type"] == "g6e.xlarge"
    assert d["best"]["price_usd_month"] == round(1.861 * 730, 2)
    assert d["fits"] is True
    assert d["nothing_fits"] is None
    assert d["pricing"]["region"] == "us-east-1"
    assert d["pricing"]["recorded"] == CATALOG.pricing.recorded
    assert len(d["choices"]) + len(d["rejected"]) == len(CATALOG.instances)
    assert isinstance(r, SizingResult)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "key", "fragments"),
    [
        ({"model": "llama:7b"}, "model", ["unknown model", "'llama:7b'", "deepseek-r1:32b"]),
        ({"quantization": "q3_K_S"}, "quantization", ["unknown quantization", "q4_K_M"]),
        (
            {"model": "deepseek-r1:1.5b", "quantization": "fp8"},
            "quantization",
            ["not published", "bf16, q8_0"],
        ),
        ({"runtime": "tgi"}, "runtime", ["unknown runtime", "ollama, vllm"]),
        (
            {"runtime": "vllm", "quantization": "q4_K_M"},
            "quantization",
            ["runtime vllm does not serve q4_K_M", "bf16, fp8 on vllm", "served by ollama"],
        ),
        ({"context_length": 0}, "context_length", ["out of range", "1..131072"]),
        ({"context_length": 131073}, "context_length", ["131073", "1..131072"]),
        ({"concurrency": 0}, "concurrency", ["got 0", ">= 1"]),
        ({"headroom": -0.1}, "headroom", ["-0.1", "0 <= headroom < 0.9"]),
        ({"headroom": 0.9}, "headroom", ["0.9"]),
        ({"instance_type": "p9.huge"}, "instance_type", ["unknown instance type", "g6e.xlarge"]),
    ],
)
def test_bad_input_names_the_option_value_and_what_is_accepted(
    kwargs: dict[str, Any], key: str, fragments: list[str]
) -> None:
    args: dict[str, Any] = {
        "model": "deepseek-r1:32b",
        "quantization": "q4_K_M",
        "context_length": 8192,
        "concurrency": 1,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        size(**args)
    assert info.value.key == key
    text = str(info.value)
    assert text.startswith(f"{key}: ")
    for fragment in fragments:
        assert fragment in text


def test_max_context_is_per_model() -> None:
    assert size("deepseek-r1:671b", "q4_K_M", 163840, 1).context_length == 163840
    with pytest.raises(ConfigError, match=r"1\.\.163840"):
        size("deepseek-r1:671b", "q4_K_M", 163841, 1)


def test_fp8_is_never_placed_on_a_gpu_without_fp8_kernels() -> None:
    result = size("deepseek-r1:7b", "fp8", 4096, 1, runtime="vllm")
    assert result.best.gpu != "T4"
    reasons = dict(result.rejected)
    assert "g4dn.xlarge" in reasons
    assert "T4 (compute capability 7.5) has no fp8 kernels (needs 8.0+)" in reasons["g4dn.xlarge"]
    # The same model in bf16 may use the T4: the restriction belongs to fp8 alone.
    assert "g4dn.xlarge" not in dict(size("deepseek-r1:1.5b", "bf16", 4096, 1, runtime="vllm").rejected)
