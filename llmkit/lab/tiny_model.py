"""A tiny, reproducible GGUF in the architecture of DeepSeek-R1-Distill-Qwen, for the lab mirror.

The lab cannot download real weights, and does not need them: it needs a file that the real
Ollama loads through the same code path as DeepSeek-R1-Distill-Qwen (llama.cpp's ``qwen2``
loader, the ``deepseek-r1-qwen`` pre-tokenizer, a byte-level GPT-2 BPE vocabulary with the R1
special tokens) and that generates tokens on a CPU in milliseconds.

- Random weights from a fixed seed, F32, two layers, hidden size 64: the file (about 0.5 MB)
  and its sha256 are the same on every run, so the mirror's checksum is stable.
- The vocabulary is the 256 byte tokens, a few merges of common English words, and the
  DeepSeek-R1 special tokens. ``output.bias`` pushes the special tokens, control characters and
  non-ASCII bytes far down, so sampling always produces printable text and never an
  end-of-sequence or a stop token: a generation of ``num_predict`` tokens is never empty.
- The Modelfile's ``FROM`` names the GGUF next to it (``FROM ./tiny-r1.gguf``); the models
  deploy replaces that line with the verified file's staging path anyway.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    import numpy as np

ARCH = "qwen2"
MODEL_NAME = "tiny-r1:latest"
SLUG = "tiny-r1"
GGUF_FILE = f"{SLUG}.gguf"
MODELFILE = "Modelfile"
SEED = 20260128

# DeepSeek's special tokens use FULLWIDTH VERTICAL LINE (U+FF5C) and LOWER ONE EIGHTH BLOCK (U+2581).
_BAR, _SP = "\uff5c", "\u2581"
BOS = f"<{_BAR}begin{_SP}of{_SP}sentence{_BAR}>"
EOS = f"<{_BAR}end{_SP}of{_SP}sentence{_BAR}>"
USER = f"<{_BAR}User{_BAR}>"
ASSISTANT = f"<{_BAR}Assistant{_BAR}>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# GGUF token types (gguf.TokenType): llama.cpp treats CONTROL and USER_DEFINED tokens as special.
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
# (text, token type): the R1 role markers are control tokens, the think tags user-defined.
SPECIAL_TOKENS: tuple[tuple[str, int], ...] = (
    (BOS, CONTROL),
    (EOS, CONTROL),
    (USER, CONTROL),
    (ASSISTANT, CONTROL),
    (THINK_OPEN, USER_DEFINED),
    (THINK_CLOSE, USER_DEFINED),
)
# Words whose byte-level BPE merges make the vocabulary (a leading space is "Ġ").
WORDS: tuple[str, ...] = (
    " the",
    " and",
    " of",
    " to",
    " in",
    " is",
    " it",
    " that",
    " for",
    " on",
    " with",
    " as",
    " model",
    " lab",
    " host",
    " hello",
    " world",
    "ing",
    "er",
    "ed",
    "th",
    "he",
    "in",
    "an",
)


@dataclass(frozen=True)
class Hyper:
    """The model's shape; the defaults give a ~0.5 MB file."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}) and n_head of "
                f"n_head_kv ({self.n_head_kv})"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_embd_kv(self) -> int:
        return self.head_dim * self.n_head_kv


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    # Token ids that sampling must never pick (specials, control and non-ASCII bytes).
    suppressed: list[int]

    def id(self, token: str) -> int:
        return self.tokens.index(token)


def build_vocab() -> Vocab:
    """Byte tokens (in byte order), merged word pieces, then the special tokens."""
    byte_map = bytes_to_unicode()
    tokens = [byte_map[b] for b in range(256)]
    types = [NORMAL] * 256
    suppressed = [b for b in range(256) if b < 0x20 or b >= 0x7F]
    merges: list[str] = []
    known = set(tokens)
    for word in WORDS:
        pieces = ["".join(byte_map[b] for b in ch.encode("utf-8")) for ch in word]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            rule = f"{left} {right}"
            if rule not in merges:
                merges.append(rule)
            if merged not in known:
                known.add(merged)
                tokens.append(merged)
                types.append(NORMAL)
            left = merged
    for text, kind in SPECIAL_TOKENS:
        suppressed.append(len(tokens))
        tokens.append(text)
        types.append(int(kind))
    return Vocab(tokens=tokens, types=types, merges=merges, suppressed=suppressed)


def _weights(hp: Hyper, n_vocab: int, suppressed: list[int]) -> dict[str, np.ndarray]:
    """Tensors in llama.cpp's qwen2 names; numpy shapes are (rows, cols) = GGUF dims reversed."""
    import numpy as np

    rng = np.random.default_rng(SEED)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * (1.0 / np.sqrt(cols))).astype(np.float32)

    def vec(n: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(n) * scale).astype(np.float32)

    tensors: dict[str, np.ndarray] = {"token_embd.weight": mat(n_vocab, hp.n_embd)}
    for i in range(hp.n_layer):
        p = f"blk.{i}"
        tensors[f"{p}.attn_norm.weight"] = np.ones(hp.n_embd, dtype=np.float32)
        tensors[f"{p}.attn_q.weight"] = mat(hp.n_embd, hp.n_embd)
        tensors[f"{p}.attn_q.bias"] = vec(hp.n_embd)
        tensors[f"{p}.attn_k.weight"] = mat(hp.n_embd_kv, hp.n_embd)
        tensors[f"{p}.attn_k.bias"] = vec(hp.n_embd_kv)
        tensors[f"{p}.attn_v.weight"] = mat(hp.n_embd_kv, hp.n_embd)
        tensors[f"{p}.attn_v.bias"] = vec(hp.n_embd_kv)
        tensors[f"{p}.attn_output.weight"] = mat(hp.n_embd, hp.n_embd)
        tensors[f"{p}.ffn_norm.weight"] = np.ones(hp.n_embd, dtype=np.float32)
        tensors[f"{p}.ffn_gate.weight"] = mat(hp.n_ff, hp.n_embd)
        tensors[f"{p}.ffn_up.weight"] = mat(hp.n_ff, hp.n_embd)
        tensors[f"{p}.ffn_down.weight"] = mat(hp.n_embd, hp.n_ff)
    tensors["output_norm.weight"] = np.ones(hp.n_embd, dtype=np.float32)
    tensors["output.weight"] = mat(n_vocab, hp.n_embd)
    bias = np.zeros(n_vocab, dtype=np.float32)
    bias[suppressed] = -100.0
    tensors["output.bias"] = bias
    return tensors


def expected_tensor_shapes(hp: Hyper | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor's GGUF shape (ggml order: fastest dimension first), as llama.cpp's qwen2 loader wants."""
    hp = hp or Hyper()
    n_vocab = len(build_vocab().tokens)
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (hp.n_embd, n_vocab),
        "output_norm.weight": (hp.n_embd,),
        "output.weight": (hp.n_embd, n_vocab),
        "output.bias": (n_vocab,),
    }
    for i in range(hp.n_layer):
        p = f"blk.{i}"
        shapes |= {
            f"{p}.attn_norm.weight": (hp.n_embd,),
            f"{p}.attn_q.weight": (hp.n_embd, hp.n_embd),
            f"{p}.attn_q.bias": (hp.n_embd,),
            f"{p}.attn_k.weight": (hp.n_embd, hp.n_embd_kv),
            f"{p}.attn_k.bias": (hp.n_embd_kv,),
            f"{p}.attn_v.weight": (hp.n_embd, hp.n_embd_kv),
            f"{p}.attn_v.bias": (hp.n_embd_kv,),
            f"{p}.attn_output.weight": (hp.n_embd, hp.n_embd),
            f"{p}.ffn_norm.weight": (hp.n_embd,),
            f"{p}.ffn_gate.weight": (hp.n_embd, hp.n_ff),
            f"{p}.ffn_up.weight": (hp.n_embd, hp.n_ff),
            f"{p}.ffn_down.weight": (hp.n_ff, hp.n_embd),
        }
    return shapes


# The chat template in the DeepSeek-R1 style (role markers, the reasoning between <think> tags;
# with `think: false` the assistant turn starts with an empty reasoning block). Ollama infers the
# thinking capability from the <think> ... </think> tags in it.
TEMPLATE = (
    "{{- if .System }}{{ .System }}{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    '{{- if eq .Role "user" }}' + USER + "{{ .Content }}\n"
    '{{- else if eq .Role "assistant" }}' + ASSISTANT + "\n"
    "{{- if and $.IsThinkSet $last .Thinking }}" + THINK_OPEN + "\n{{ .Thinking }}\n" + THINK_CLOSE + "\n\n"
    "{{- end }}{{ .Content }}{{ if not $last }}" + EOS + "{{ end }}\n"
    "{{- end }}\n"
    '{{- if and $last (ne .Role "assistant") }}' + ASSISTANT + "\n"
    "{{- if and $.IsThinkSet (not $.Think) }}" + THINK_OPEN + "\n\n" + THINK_CLOSE + "\n\n{{ end }}\n"
    "{{- end }}\n"
    "{{- end }}"
)


def modelfile_text(gguf_name: str = GGUF_FILE, num_ctx: int = 512) -> str:
    """The mirror Modelfile: FROM the GGUF next to it, the R1 template, a small context, the stops."""
    lines = [
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{TEMPLATE}"""',
        f"PARAMETER num_ctx {num_ctx}",
        *(f'PARAMETER stop "{s}"' for s in (BOS, EOS, USER, ASSISTANT)),
    ]
    return "\n".join(lines) + "\n"


def _atomic_write(dest: Path, write: Callable[[Path], object]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gguf() -> Any:
    """The ``gguf`` package (llmkit's dev dependency group), imported only when a file is written."""
    try:
        import gguf
    except ImportError:
        raise LlmkitError(
            "writing the lab's tiny model needs the `gguf` package (llmkit's dev dependencies: `uv sync`)"
        ) from None
    return gguf


def write_gguf(dest: Path, hp: Hyper | None = None) -> Path:
    """Write the tiny qwen2 GGUF to ``dest`` (atomically); the same bytes every time."""
    hp = hp or Hyper()
    vocab = build_vocab()

    def write(path: Path) -> None:
        w = _gguf().GGUFWriter(str(path), ARCH)
        w.add_name("tiny-r1 (llmkit lab)")
        w.add_file_type(0)  # gguf.LlamaFileType.ALL_F32
        w.add_context_length(hp.n_ctx_train)
        w.add_embedding_length(hp.n_embd)
        w.add_block_count(hp.n_layer)
        w.add_feed_forward_length(hp.n_ff)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_rope_freq_base(hp.rope_freq_base)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("deepseek-r1-qwen")
        w.add_token_list(vocab.tokens)
        w.add_token_types(vocab.types)
        w.add_token_merges(vocab.merges)
        w.add_bos_token_id(vocab.id(BOS))
        w.add_eos_token_id(vocab.id(EOS))
        w.add_pad_token_id(vocab.id(EOS))
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        for name, array in _weights(hp, len(vocab.tokens), vocab.suppressed).items():
            w.add_tensor(name, array)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    _atomic_write(dest, write)
    return dest


def write_modelfile(dest: Path, gguf_name: str = GGUF_FILE) -> Path:
    _atomic_write(dest, lambda p: p.write_text(modelfile_text(gguf_name), encoding="utf-8"))
    return dest


def write_model(directory: Path) -> tuple[Path, Path]:
    """``<directory>/tiny-r1.gguf`` and ``<directory>/Modelfile``; returns both paths."""
    return write_gguf(directory / GGUF_FILE), write_modelfile(directory / MODELFILE)
