"""`llmkit size` through click's CliRunner: output, JSON, exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from llmkit.catalog import load_catalog
from llmkit.cli import main
from llmkit.commands.size import size as size_command
from llmkit.errors import ConfigError
from llmkit.sizing import size


def run(*args: str) -> Result:
    """`llmkit size ARGS` through the real `llmkit` group."""
    return CliRunner().invoke(main, ["size", *args])


def test_human_output_shows_the_arithmetic_and_the_best_choice() -> None:
    result = run("deepseek-r1:32b", "--quant", "q4_K_M", "--context", "8192", "--concurrency", "4")
    assert result.exit_code == 0, result.output
    out = result.stdout
    # weights
    assert "32,763,876,352 params x 4.89 bits / 8 = 20,026,919,421 B (18.65 GiB)" in out
    # KV cache
    assert "64 layers x 8 kv_heads x 128 head_dim x 2 (K,V) x 2 B = 262,144 B per token" in out
    assert "x 8,192 context x 4 sequence(s) = 8,589,934,592 B (8.00 GiB)" in out
    # activations and overhead
    assert "min(8,192 x 4, batch 512) = 512 tokens" in out
    assert "= 80,027,648 B" in out
    assert "600 MiB x 1,048,576 B = 629,145,600 B per GPU" in out
    assert "29,326,027,261 B (27.31 GiB)" in out
    # the table and the best choice
    assert "g6e.xlarge" in out
    assert "L40S x 1" in out
    assert "27.31 GiB / 40.49 GiB" in out
    pricing = load_catalog().pricing
    assert pricing.region == "us-east-1"
    # Every price figure names the region it is for.
    assert "best: g6e.xlarge (L40S x 1, tp=1), $1.86/h, $1,359/month at 730 h (us-east-1 on-demand)" in out
    assert "$/h us-east-1" in out and "$/month us-east-1" in out
    assert f"{pricing.region}, recorded {pricing.recorded}" in out
    assert "a stack in another region pays that region's prices" in " ".join(out.split())
    assert "note: AWS lowered" in out
    assert "Traceback" not in result.output


def test_top_limits_the_table() -> None:
    result = run("deepseek-r1:32b", "--concurrency", "4", "--top", "2")
    assert result.exit_code == 0
    assert "g6e.2xlarge" in result.stdout
    assert "g6e.4xlarge" not in result.stdout
    assert "2 of 21" in result.stdout


def test_moe_mla_output_names_the_terms() -> None:
    result = run(
        "deepseek-r1:671b", "--quant", "fp8", "--runtime", "vllm", "--context", "32768", "--concurrency", "8"
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "61 layers x (512 kv_lora_rank + 64 qk_rope_head_dim) x 2 B = 70,272 B per token" in out
    assert "(7168 hidden x 4 + 2048 x 8 experts x 2)" in out
    assert "all experts resident" in out
    assert "p5e.48xlarge" in out
    assert "price unverified" in out


def test_json_is_json_only_and_matches_the_api() -> None:
    result = run("deepseek-r1:32b", "--quant", "q4_K_M", "--context", "8192", "--concurrency", "4", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == size("deepseek-r1:32b", "q4_K_M", 8192, 4).to_dict()


def test_options_reach_the_engine() -> None:
    args = ["deepseek-r1:70b", "--quant", "bf16", "--runtime", "vllm", "--context", "4096"]
    args += ["--concurrency", "2", "--headroom", "0.2", "--instance-type", "p4de.24xlarge", "--json"]
    result = run(*args)
    assert result.exit_code == 0
    expected = size("deepseek-r1:70b", "bf16", 4096, 2, "vllm", 0.2, "p4de.24xlarge").to_dict()
    assert json.loads(result.stdout) == expected
    assert expected["best"]["instance_type"] == "p4de.24xlarge"


def test_nothing_fits_exits_1_with_the_arithmetic() -> None:
    args = ("deepseek-r1:671b", "--quant", "bf16", "--context", "131072", "--concurrency", "64")
    result = run(*args)
    assert result.exit_code == 1
    out = result.stdout
    assert "671,000,000,000 params x 16 bits / 8 = 1,342,000,000,000 B" in out
    assert "nothing fits" in out
    assert "the largest GPU (H200-141GB, 143771 MiB) holds 126.36 GiB" in out
    assert "a lower quantization" in out
    assert "Traceback" not in result.output

    as_json = run(*args, "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["fits"] is False
    assert data["choices"] == []
    assert "does not fit" in data["nothing_fits"]


def test_nothing_fits_on_an_override_lists_its_reason() -> None:
    result = run("deepseek-r1:70b", "--quant", "bf16", "--runtime", "vllm", "--instance-type", "g5.xlarge")
    assert result.exit_code == 1
    assert "g5.xlarge: needs" in result.stdout
    assert "exceed host RAM 16 GiB" in result.stdout


def test_bad_input_raises_config_error_from_the_command() -> None:
    """The command raises; the `llmkit` group turns LlmkitError into a message and exit 2."""
    result = CliRunner().invoke(size_command, ["deepseek-r1:32b", "--quant", "q3_K_S"])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.key == "quantization"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["llama:7b"], "model: unknown model (got 'llama:7b'; accepted: one of: deepseek-r1:1.5b"),
        (["deepseek-r1"], "model: ambiguous: 7 catalog models are named deepseek-r1"),
        (
            ["deepseek-r1:3b"],
            "model: unknown model (got 'deepseek-r1:3b'; accepted: one of: deepseek-r1:1.5b",
        ),
        (["deepseek-r1:32b", "--quant", "q3_K_S"], "quantization: unknown quantization"),
        (["deepseek-r1:32b", "--runtime", "vllm"], "runtime vllm does not serve q4_K_M"),
        (["deepseek-r1:32b", "--context", "0"], "context_length: out of range (got 0; accepted: 1..131072"),
        (["deepseek-r1:32b", "--concurrency", "0"], "concurrency: out of range (got 0"),
        (["deepseek-r1:32b", "--headroom", "0.95"], "headroom: out of range (got 0.95"),
        (["deepseek-r1:32b", "--instance-type", "p9.huge"], "instance_type: unknown instance type"),
        (["deepseek-r1:32b", "--json", "--quant", "fp16"], "quantization: unknown quantization"),
    ],
)
def test_bad_input_exits_2_without_traceback(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_click_usage_errors_exit_2() -> None:
    result = run("deepseek-r1:32b", "--context", "lots")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_help_describes_the_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "--concurrency" in result.stdout
    assert "Exits 0 when something fits, 1 when nothing does" in " ".join(result.stdout.split())
