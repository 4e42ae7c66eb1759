"""Measure the GPU memory of the catalog's dense models in bf16, next to llmkit's prediction.

Run from the repo root on a machine with one NVIDIA GPU (an H200 for docs/sizing.md), torch
and transformers; nothing is downloaded:

    python bench/gpu_memory.py --out gpu_memory.json [--context 4096] [--batches 1,4]

For every catalog model whose bf16 weights (params x 2 bytes) take less than 85% of the GPU,
the script builds the model from the catalog's architecture numbers (transformers
``Qwen2Config`` / ``LlamaConfig``) with random, uninitialised weights directly on the GPU in
bf16, then for each batch size runs one prefill of ``--context`` random tokens with
``use_cache=True`` and only the last token's logits, under ``torch.inference_mode``. It
records:

* weights: ``torch.cuda.memory_allocated`` after building, less what was allocated before;
* KV cache: the bytes of the tensors held by the returned cache;
* activations: peak allocated during the prefill less weights and KV cache (the transient
  workspace plus the kept logits);
* nvidia-smi: the memory this process holds on the GPU, and that minus the peak allocated,
  which is the fixed per-GPU overhead (CUDA context, cuBLAS workspace, allocator slack)
  that ``per_gpu_overhead_mib`` in llmkit/data/runtimes.yaml stands for;

and llmkit's prediction of the same terms (``llmkit.sizing.memory_breakdown`` with the vllm
runtime's KV element size and overhead, with the activation tokens set to batch x context,
because this prefill is not chunked). A model that runs out of memory is recorded as "OOM".
It prints a markdown table (the one docs/sizing.md "Measured on a real GPU" is filled from)
and writes everything as JSON to ``--out``.

llmkit itself needs pydantic and pyyaml. A torch image without them and without internet can
install them from wheels fetched elsewhere (the versions pinned in uv.lock; Python 3.12 here):

    pip download --only-binary=:all: --no-deps --python-version 3.12 \
        --platform manylinux2014_x86_64 -d build/pydeps-wheels \
        pydantic==2.14.3 pydantic-core==2.50.4 pyyaml==6.0.3 typing-extensions==4.16.0 \
        annotated-types==0.8.0 typing-inspection==0.4.5
    # on the GPU machine, with build/pydeps-wheels copied over:
    python -m pip install --no-index --find-links build/pydeps-wheels --target /tmp/pydeps pydantic pyyaml
    PYTHONPATH=/tmp/pydeps python bench/gpu_memory.py --out gpu_memory.json

Tied embeddings: every catalog entry's parameter count is compared with the count of the
architecture with and without a separate lm_head; the one that matches decides
``tie_word_embeddings``. (All DeepSeek-R1 distills, the 1.5B included, ship a separate
lm_head; plain Qwen2.5-1.5B ties it.)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

try:
    from llmkit.catalog import Model, load_catalog
    from llmkit.sizing import memory_breakdown
except ModuleNotFoundError as exc:  # the torch image may lack llmkit's own dependencies
    sys.exit(
        f"bench/gpu_memory.py: llmkit needs {exc.name!r}, which is not installed; see this script's docstring"
    )

MIB = 1024**2
GIB = 1024**3
FIT_FRACTION = 0.85
FAMILIES = ("qwen2", "llama")


# --------------------------------------------------------------------------- nvidia-smi


def _smi(*args: str) -> str:
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    return done.stdout.strip() if done.returncode == 0 else f"nvidia-smi failed: {done.stderr.strip()}"


def _gpu_selector() -> str:
    """The nvidia-smi -i argument for the GPU torch calls cuda:0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def _gpu_used_mib() -> int | None:
    out = _smi("-i", _gpu_selector(), "--query-gpu=memory.used", "--format=csv,noheader,nounits")
    try:
        return int(out.splitlines()[0].strip())
    except (ValueError, IndexError):
        return None


def _process_used_mib() -> int | None:
    """This process's memory on the GPU, if nvidia-smi can see our pid (not in every container)."""
    out = _smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            with contextlib.suppress(ValueError):
                return int(parts[1])
    return None


# --------------------------------------------------------------------------- models


def _param_count(m: Model, tied: bool) -> int:
    """Parameters of the HF Qwen2 / Llama architecture with the catalog's numbers."""
    q_width = m.attention_heads * m.head_dim
    kv_width = m.kv_heads * m.head_dim
    attention = m.hidden_size * q_width + 2 * m.hidden_size * kv_width + q_width * m.hidden_size
    if m.family == "qwen2":  # q, k and v projections carry a bias
        attention += q_width + 2 * kv_width
    per_layer = attention + 3 * m.hidden_size * m.intermediate_size + 2 * m.hidden_size
    embeddings = m.vocab_size * m.hidden_size
    return m.layers * per_layer + embeddings + m.hidden_size + (0 if tied else embeddings)


def _tied(m: Model) -> bool | None:
    """Whether the catalog's parameter count is that of tied embeddings (None: neither matches)."""
    if m.params == _param_count(m, tied=False):
        return False
    if m.params == _param_count(m, tied=True):
        return True
    return None


def _config(m: Model, tied: bool) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    cls = Qwen2Config if m.family == "qwen2" else LlamaConfig
    config = cls(
        vocab_size=m.vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.layers,
        num_attention_heads=m.attention_heads,
        num_key_value_heads=m.kv_heads,
        max_position_embeddings=m.max_context,
        tie_word_embeddings=tied,
        use_cache=True,
        attn_implementation="sdpa",
    )
    if m.hidden_size // m.attention_heads != m.head_dim:
        config.head_dim = m.head_dim
    return config


def _no_init_weights() -> Any:
    """transformers' context that skips weight initialisers (its module moved between releases)."""
    import importlib

    for module in ("transformers.modeling_utils", "transformers.initialization"):
        try:
            return importlib.import_module(module).no_init_weights
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext


@contextlib.contextmanager
def _bf16_on_gpu() -> Iterator[None]:
    """Build modules in bf16, on the GPU, without running weight initialisers."""
    import torch

    no_init_weights = _no_init_weights()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"), no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


def _build(m: Model, tied: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with _bf16_on_gpu():
        model = AutoModelForCausalLM.from_config(_config(m, tied))
    if next(model.parameters()).dtype != torch.bfloat16:
        model = model.to(torch.bfloat16)
    return model.eval()


def _keep_last_logits(model: Any) -> dict[str, int]:
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def _cache_bytes(cache: Any) -> int:
    """Bytes of the distinct tensors a transformers cache (any version) or legacy tuple holds."""
    import torch

    seen: set[tuple[int, int]] = set()
    total = 0

    def visit(obj: Any, depth: int) -> None:
        nonlocal total
        if obj is None or depth > 8:
            return
        if isinstance(obj, torch.Tensor):
            key = (obj.data_ptr(), obj.numel())
            if obj.numel() and key not in seen:
                seen.add(key)
                total += obj.numel() * obj.element_size()
            return
        if isinstance(obj, list | tuple):
            for item in obj:
                visit(item, depth + 1)
            return
        for attr in ("layers", "key_cache", "value_cache", "keys", "values", "self_attention_cache"):
            value = getattr(obj, attr, None)
            if value is not None and not callable(value):
                visit(value, depth + 1)

    visit(cache, 0)
    return total


# --------------------------------------------------------------------------- measuring


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()


def _prefill(model: Any, m: Model, batch: int, context: int, keep: dict[str, int]) -> dict[str, Any]:
    import torch

    _free()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    ids = torch.randint(0, m.vocab_size, (batch, context), device="cuda")
    started = time.perf_counter()
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, **keep)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated()
    kv = _cache_bytes(out.past_key_values)
    row = {
        "allocated_before_bytes": before,
        "peak_allocated_bytes": peak,
        "held_after_bytes": torch.cuda.memory_allocated(),
        "reserved_bytes": torch.cuda.memory_reserved(),
        "kv_cache_bytes": kv,
        "logits_shape": list(out.logits.shape),
        "prefill_seconds": round(seconds, 3),
        "process_used_mib": _process_used_mib(),
        "gpu_used_mib": _gpu_used_mib(),
    }
    del out, ids
    return row


def _predict(m: Model, batch: int, context: int) -> dict[str, int]:
    catalog = load_catalog()
    b = memory_breakdown(
        m, catalog.quantization("bf16"), catalog.runtime("vllm"), context, batch, batch_tokens=batch * context
    )
    return b.to_dict()


def _measure_model(m: Model, args: argparse.Namespace, baseline: dict[str, Any]) -> dict[str, Any]:
    import torch

    tied = _tied(m)
    entry: dict[str, Any] = {
        "model": m.name,
        "hf_repo": m.hf_repo,
        "params_catalog": m.params,
        "tie_word_embeddings": tied,
        "runs": [],
    }
    model = None
    try:
        _free()
        allocated_before = torch.cuda.memory_allocated()
        model = _build(m, bool(tied))
        torch.cuda.synchronize()
        entry["params_built"] = sum(p.numel() for p in model.parameters())
        entry["weights_bytes"] = torch.cuda.memory_allocated() - allocated_before
        entry["dtype"] = str(next(model.parameters()).dtype)
        entry["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
        keep = _keep_last_logits(model)
        entry["logits_kept"] = keep or "all"
    except torch.cuda.OutOfMemoryError:
        entry["error"] = "OOM"
    except Exception as exc:  # record and go on to the next model
        entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
    if "error" in entry:
        del model
        _free()
        return entry

    for batch in args.batches:
        run: dict[str, Any] = {
            "batch": batch,
            "context": args.context,
            "predicted": _predict(m, batch, args.context),
        }
        try:
            measured = _prefill(model, m, batch, args.context, keep)
        except torch.cuda.OutOfMemoryError:
            run["error"] = "OOM"
        except Exception as exc:  # record and go on to the next case
            run["error"] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            measured["activation_bytes"] = (
                measured["peak_allocated_bytes"]
                - measured["allocated_before_bytes"]
                - measured["kv_cache_bytes"]
            )
            used = measured["process_used_mib"]
            measured["used_source"] = "compute-apps used_memory of this pid"
            if used is None and measured["gpu_used_mib"] is not None and baseline["gpu_used_mib"] is not None:
                used = measured["gpu_used_mib"] - baseline["gpu_used_mib"]
                measured["used_source"] = "gpu memory.used less the reading before CUDA started"
            measured["used_mib"] = used
            if used is not None:
                measured["overhead_mib"] = round(used - measured["peak_allocated_bytes"] / MIB, 1)
                measured["outside_allocator_mib"] = round(used - measured["reserved_bytes"] / MIB, 1)
            run["measured"] = measured
        entry["runs"].append(run)
        _free()
    del model
    _free()
    return entry


# --------------------------------------------------------------------------- report


def _g(n: int | None) -> str:
    return "n/a" if n is None else f"{n / GIB:.2f}"


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | batch x context | weights GiB meas / llmkit | KV cache GiB meas / llmkit "
        "| activations GiB meas / llmkit | peak allocated GiB | nvidia-smi GiB "
        "| overhead MiB (smi - peak) | of which not allocator cache MiB (smi - reserved) "
        "| llmkit total, 1 GPU (vllm) GiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for entry in results:
        if "error" in entry:
            lines.append(f"| {entry['model']} | - | {entry['error']} | | | | | | | |")
            continue
        for run in entry["runs"]:
            p = run["predicted"]
            case = f"{run['batch']} x {run['context']}"
            if "error" in run:
                lines.append(
                    f"| {entry['model']} | {case} | {run['error']} | | | | | | "
                    f"| {_g(p['total_bytes_one_gpu'])} |"
                )
                continue
            ms = run["measured"]
            used = ms.get("used_mib")
            lines.append(
                f"| {entry['model']} | {case} "
                f"| {_g(entry['weights_bytes'])} / {_g(p['weights_bytes'])} "
                f"| {_g(ms['kv_cache_bytes'])} / {_g(p['kv_cache_bytes'])} "
                f"| {_g(ms['activation_bytes'])} / {_g(p['activation_bytes'])} "
                f"| {_g(ms['peak_allocated_bytes'])} "
                f"| {'n/a' if used is None else f'{used / 1024:.2f}'} "
                f"| {ms.get('overhead_mib', 'n/a')} "
                f"| {ms.get('outside_allocator_mib', 'n/a')} "
                f"| {_g(p['total_bytes_one_gpu'])} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_memory.json"), help="JSON results file")
    parser.add_argument("--context", type=int, default=4096, help="prompt tokens per sequence")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--models", default="", help="comma-separated catalog names (default: all that fit)")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]

    smi_info = _smi("--query-gpu=name,memory.total,driver_version", "--format=csv")
    gpu_used_before = _gpu_used_mib()  # before this process creates a CUDA context

    import torch
    import transformers

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 2
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    total = torch.cuda.get_device_properties(0).total_memory
    process_ctx = _process_used_mib()
    gpu_ctx = _gpu_used_mib()
    baseline = {
        "gpu_used_mib": gpu_used_before,
        "cuda_context_mib": process_ctx
        if process_ctx is not None
        else (gpu_ctx - gpu_used_before if gpu_ctx is not None and gpu_used_before is not None else None),
    }

    catalog = load_catalog()
    wanted = [n.strip() for n in args.models.split(",") if n.strip()]
    models = [
        m
        for m in catalog.models.values()
        if m.attention == "gqa"
        and m.moe is None
        and m.family in FAMILIES
        and m.params * 2 < FIT_FRACTION * total
        and (not wanted or m.name in wanted)
    ]
    print(f"GPU: {smi_info}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, CUDA context {baseline}")
    print(
        f"models whose bf16 weights are < {FIT_FRACTION:.0%} of {total / GIB:.1f} GiB: "
        f"{[m.name for m in models]}"
    )

    results = []
    for m in models:
        print(f"... {m.name}", flush=True)
        results.append(_measure_model(m, args, baseline))

    report = {
        "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nvidia_smi": smi_info,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "total_memory_bytes": total,
        "baseline": baseline,
        "context": args.context,
        "batches": args.batches,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print()
    print(_table(results))
    print()
    overheads = [
        run["measured"]["overhead_mib"]
        for entry in results
        for run in entry.get("runs", [])
        if "overhead_mib" in run.get("measured", {})
    ]
    outside = [
        run["measured"]["outside_allocator_mib"]
        for entry in results
        for run in entry.get("runs", [])
        if "outside_allocator_mib" in run.get("measured", {})
    ]
    if overheads and outside:
        print(
            f"per-GPU overhead seen (nvidia-smi used - peak allocated): min {min(overheads)} MiB, "
            f"max {max(overheads)} MiB (outside the torch allocator: {min(outside)}..{max(outside)} MiB); "
            f"CUDA context alone: {baseline['cuda_context_mib']} MiB; "
            f"runtimes.yaml: ollama {catalog.runtime('ollama').per_gpu_overhead_mib} MiB, "
            f"vllm {catalog.runtime('vllm').per_gpu_overhead_mib} MiB"
        )
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
