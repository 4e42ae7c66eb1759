"""What a Modelfile may set: Ollama's PARAMETER names, one home for the mirror (which writes
Modelfiles from a registry's layers, :mod:`llmkit.mirror.sources`) and the hosts (which rewrite a
mirror's Modelfile from whitelisted directives, ``playbooks/deploys/models.py``).

The hosts import this module: it imports nothing and stays Python 3.10-compatible.
"""

from __future__ import annotations

# Ollama 0.13.3's Modelfile parameters (api.Options and api.Runner) and the JSON type of each.
PARAMETERS: dict[str, type] = {
    **dict.fromkeys(
        (
            "num_keep",
            "seed",
            "num_predict",
            "top_k",
            "repeat_last_n",
            "num_ctx",
            "num_batch",
            "num_gpu",
            "main_gpu",
            "num_thread",
        ),
        int,
    ),
    **dict.fromkeys(
        (
            "top_p",
            "min_p",
            "typical_p",
            "temperature",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ),
        float,
    ),
    "use_mmap": bool,
    "stop": list,
}
# Parameters Ollama 0.13.3 still parses but ignores (it warns): left out of the Modelfile.
DEPRECATED_PARAMETERS = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
    }
)
