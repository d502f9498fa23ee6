"""Write small random llama-architecture GGUF files for tests.

The files carry the same metadata keys as the bundled SmolLM2 model (llama.*
hyperparameters, general.*, a minimal byte-level tokenizer.ggml.* section), so
the engine and the tokenizer can open them exactly as they open a real model,
while being small enough to build per test in milliseconds.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter, LlamaFileType, TokenType
from gguf.quants import quantize

WEIGHT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

# general.file_type written for each weight type ("mostly X"), as llama.cpp does.
_FILE_TYPE = {
    "F32": LlamaFileType.ALL_F32,
    "F16": LlamaFileType.MOSTLY_F16,
    "BF16": LlamaFileType.MOSTLY_BF16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": LlamaFileType.MOSTLY_Q4_0,
    "Q4_1": LlamaFileType.MOSTLY_Q4_1,
}

# Special tokens at the same ids as in SmolLM2, so chat-template code works too.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_ID, EOS_ID = 1, 2

# Merges offered when the vocab has room beyond the specials and the bytes
# (GPT-2 byte-level spelling: "Ġ" is a space).
_MERGES = ("Ġ t", "h e", "i n", "e r", "a n", "Ġ a", "o n", "r e", "Ġt he", "e n", "o r", "Ġ s")


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode(): printable stand-ins for the 256 byte values,
    listed printable bytes first (this order decides which bytes get dropped
    when the vocab is smaller than 3 + 256)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = [chr(b) for b in printable]
    n = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + n))
            n += 1
    return chars


def _vocab(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of a minimal byte-level BPE vocab.

    Layout: the 3 specials, then the byte tokens, then merged tokens, then
    ``<unused_N>`` filler. GGUF cannot store an empty array and BPE loaders
    (llama.cpp's included) insist on tokenizer.ggml.merges, so there is always
    at least one merge; when n_vocab < 3 + 256 + 1 the last bytes in GPT-2's
    order (non-printable ones, e.g. 0xA0, 0xAD) are dropped to make room.
    """
    n_merges = min(len(_MERGES), max(1, n_vocab - len(SPECIAL_TOKENS) - 256))
    n_bytes = min(256, n_vocab - len(SPECIAL_TOKENS) - n_merges)
    if n_bytes < 221:  # keep every printable byte and the space ("Ġ", 221st)
        raise ValueError(f"n_vocab={n_vocab} is too small for a byte-level vocab (need >= 225)")
    merges = list(_MERGES[:n_merges])
    tokens = list(SPECIAL_TOKENS) + _gpt2_byte_chars()[:n_bytes] + [m.replace(" ", "") for m in merges]
    types = [TokenType.CONTROL] * len(SPECIAL_TOKENS) + [TokenType.NORMAL] * (n_bytes + n_merges)
    while len(tokens) < n_vocab:
        tokens.append(f"<unused_{len(tokens)}>")
        types.append(TokenType.UNUSED)
    return tokens, [int(t) for t in types], merges


def _metadata(
    *, n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, rope_base, rope_dim, weight_type
) -> dict[str, Any]:
    """Every key the bundled model has that matters to inference, as
    ``key: (value, GGUFValueType[, array item type])``."""
    tokens, types, merges = _vocab(n_vocab)
    u32, f32, s = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING
    i32, arr = GGUFValueType.INT32, GGUFValueType.ARRAY
    md: dict[str, Any] = {
        "general.architecture": ("llama", s),
        "general.type": ("model", s),
        "general.name": (f"tiny-random-llama-{weight_type}", s),
        "general.file_type": (int(_FILE_TYPE[weight_type]), u32),
        "general.quantization_version": (2, u32),
        "llama.block_count": (n_layer, u32),
        "llama.context_length": (n_ctx, u32),
        "llama.embedding_length": (n_embd, u32),
        "llama.feed_forward_length": (n_ff, u32),
        "llama.attention.head_count": (n_head, u32),
        "llama.attention.head_count_kv": (n_head_kv, u32),
        "llama.rope.freq_base": (rope_base, f32),
        "llama.attention.layer_norm_rms_epsilon": (1e-5, f32),
        "llama.vocab_size": (n_vocab, u32),
        "llama.rope.dimension_count": (rope_dim, u32),
        "tokenizer.ggml.model": ("gpt2", s),
        "tokenizer.ggml.pre": ("smollm", s),
        "tokenizer.ggml.tokens": (tokens, arr, s),
        "tokenizer.ggml.token_type": (types, arr, i32),
        "tokenizer.ggml.merges": (merges, arr, s),
        "tokenizer.ggml.bos_token_id": (BOS_ID, u32),
        "tokenizer.ggml.eos_token_id": (EOS_ID, u32),
        "tokenizer.ggml.unknown_token_id": (0, u32),
        "tokenizer.ggml.padding_token_id": (EOS_ID, u32),
        "tokenizer.ggml.add_bos_token": (False, GGUFValueType.BOOL),
        "tokenizer.ggml.add_space_prefix": (False, GGUFValueType.BOOL),
    }
    return md


def _typed(value: Any) -> tuple:
    """Guess a GGUF type for an ``extra_metadata`` value given without one."""
    if isinstance(value, bool):
        return value, GGUFValueType.BOOL
    if isinstance(value, int):
        return value, GGUFValueType.UINT32 if value >= 0 else GGUFValueType.INT32
    if isinstance(value, float):
        return value, GGUFValueType.FLOAT32
    if isinstance(value, str):
        return value, GGUFValueType.STRING
    if isinstance(value, (list, tuple)) and value:
        return (list(value), GGUFValueType.ARRAY, _typed(value[0])[1])
    raise TypeError(f"cannot infer a GGUF type for {value!r}; pass (value, GGUFValueType)")


def _weights(
    rng: np.random.Generator, *, n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, tied
) -> dict[str, np.ndarray]:
    """Random float32 weights shaped (out, in), scaled to keep activations O(1).

    Matrices are normal / sqrt(fan_in), so each projection roughly preserves the
    scale of its (RMS-normalised) input; the embedding is 2 / sqrt(n_embd) so
    that tied logits come out with a standard deviation of about 2 -- peaked
    enough to have a clear argmax, flat enough that softmax is not one-hot.
    Norm weights are 1 +- 0.1 so that they are not trivially all ones.
    """
    head_dim = n_embd // n_head

    def mat(n_out: int, n_in: int) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": (2.0 * rng.standard_normal((n_vocab, n_embd)) / np.sqrt(n_embd)).astype(np.float32)}
    for i in range(n_layer):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(n_embd)
        w[p + "attn_q.weight"] = mat(n_head * head_dim, n_embd)
        w[p + "attn_k.weight"] = mat(n_head_kv * head_dim, n_embd)
        w[p + "attn_v.weight"] = mat(n_head_kv * head_dim, n_embd)
        w[p + "attn_output.weight"] = mat(n_embd, n_head * head_dim)
        w[p + "ffn_norm.weight"] = norm(n_embd)
        w[p + "ffn_gate.weight"] = mat(n_ff, n_embd)
        w[p + "ffn_up.weight"] = mat(n_ff, n_embd)
        w[p + "ffn_down.weight"] = mat(n_embd, n_ff)
    w["output_norm.weight"] = norm(n_embd)
    if not tied:
        w["output.weight"] = (2.0 * rng.standard_normal((n_vocab, n_embd)) / np.sqrt(n_embd)).astype(np.float32)
    return w


def _add_tensor(writer: GGUFWriter, name: str, data: np.ndarray, weight_type: str) -> None:
    """Store matrices as ``weight_type``; 1-D norm weights always stay F32."""
    if data.ndim == 1 or weight_type == "F32":
        writer.add_tensor(name, data)
    elif weight_type == "F16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        qtype = GGMLQuantizationType[weight_type]
        writer.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)


def write_tiny_model(
    path: str | PathLike[str],
    *,
    n_vocab: int = 256,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_ctx: int = 512,
    rope_base: float = 10000.0,
    rope_dim: int | None = None,
    weight_type: str = "F32",
    tied: bool = True,
    seed: int = 0,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a random llama GGUF to ``path`` and return it as a Path.

    ``rope_dim`` defaults to the head dim (n_embd / n_head). ``extra_metadata``
    adds or overrides keys: a value is either ``(value, GGUFValueType)`` or a
    ``(list, GGUFValueType.ARRAY, item_type)``, or a plain bool/int/float/str/
    non-empty list whose type is guessed (non-negative ints become UINT32);
    a value of ``None`` removes the key, for missing-key error tests.
    """
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    head_dim = n_embd // n_head
    rope_dim = head_dim if rope_dim is None else rope_dim
    if rope_dim % 2 or rope_dim > head_dim:
        raise ValueError(f"rope_dim must be even and <= head_dim ({head_dim}), got {rope_dim}")
    if weight_type not in ("F32", "F16", "BF16") and (n_embd % 32 or n_ff % 32):
        raise ValueError(f"{weight_type} needs n_embd and n_ff to be multiples of 32")

    md = _metadata(
        n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
        n_ff=n_ff, n_ctx=n_ctx, rope_base=rope_base, rope_dim=rope_dim, weight_type=weight_type,
    )
    for key, value in (extra_metadata or {}).items():
        if value is None:
            md.pop(key, None)
        elif isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], GGUFValueType):
            md[key] = value
        else:
            md[key] = _typed(value)

    weights = _weights(
        np.random.default_rng(seed), n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff, tied=tied,
    )

    path = Path(path)
    arch = md["general.architecture"][0] if "general.architecture" in md else "llama"
    writer = GGUFWriter(path, arch)
    # GGUFWriter.__init__ already queued general.architecture; replace or drop it
    # so that extra_metadata keeps full control over that key as well.
    writer.kv_data[0].pop("general.architecture", None)
    for key, (value, vtype, *sub_type) in md.items():
        writer.add_key_value(key, value, vtype, *sub_type)
    for name, data in weights.items():
        _add_tensor(writer, name, data, weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def truncated_copy(src: str | PathLike[str], dst: str | PathLike[str], n_bytes: int) -> Path:
    """Copy the first ``n_bytes`` of ``src`` to ``dst`` (negative: all but the
    last ``-n_bytes``), for truncated-file error tests. Returns ``dst``."""
    data = Path(src).read_bytes()
    if n_bytes < 0:
        n_bytes = max(0, len(data) + n_bytes)
    dst = Path(dst)
    dst.write_bytes(data[:n_bytes])
    return dst


__all__ = ["write_tiny_model", "truncated_copy", "WEIGHT_TYPES", "BOS_ID", "EOS_ID", "SPECIAL_TOKENS"]
