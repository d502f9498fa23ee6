"""A float64 numpy reference forward pass for llama-family GGUF models.

This is the ground truth the C engine is tested against, so it favours being
obviously right over being fast:

* every weight is dequantized with gguf-py (not with our own code) and held in
  float64, so the only quantization error left is the one baked into the file;
* activations stay in float64 end to end (no quantized activations, no f16 KV
  cache), which is why it agrees with llama.cpp only approximately;
* the forward always starts at position 0 and recomputes the whole prefix, so
  there is no KV cache whose bookkeeping could itself be wrong.

Architecture (llama.cpp's LLM_ARCH_LLAMA): token embedding -> N blocks of
[RMSNorm -> GQA attention with RoPE -> residual, RMSNorm -> SwiGLU FFN ->
residual] -> final RMSNorm -> output matrix (tied to the embedding when the
file has no ``output.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Sequence

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

# Weight types the reference promises to read. gguf-py knows more, but these are
# the ones the engine supports, and the ones tested here.
SUPPORTED_TYPES = frozenset(
    GGMLQuantizationType[name] for name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
)


@dataclass(frozen=True)
class HParams:
    """The llama.* hyperparameters the forward pass depends on."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    rope_dim: int
    rope_base: float
    rms_eps: float


class ReferenceModel:
    """Float64 forward of a llama-architecture GGUF file.

    Weights are dequantized lazily, one block at a time, the first time a block
    is used, and cached in float64 afterwards: constructing the model is cheap,
    and a full forward of the bundled 135M model then holds ~1.1 GB.
    """

    def __init__(self, path: str | PathLike[str]):
        self.path = path
        self.reader = GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.hp = self._read_hparams()
        self._cache: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- loading

    def _field(self, key: str, default=None):
        """A scalar metadata value, or ``default`` when the key is absent."""
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise KeyError(f"GGUF metadata key {key!r} missing in {self.path}")
            return default
        return field.contents()

    def _read_hparams(self) -> HParams:
        arch = self._field("general.architecture")
        if arch != "llama":
            raise ValueError(f"reference only implements arch 'llama', file has {arch!r}")
        n_embd = int(self._field("llama.embedding_length"))
        n_head = int(self._field("llama.attention.head_count"))
        # key_length is optional; llama.cpp defaults it to n_embd / n_head.
        head_dim = int(self._field("llama.attention.key_length", n_embd // n_head))
        # The output matrix (or the tied embedding) decides the vocab size that
        # logits have; llama.vocab_size is optional in real files.
        out_name = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        n_vocab = int(self.tensors[out_name].shape[1])
        return HParams(
            n_vocab=n_vocab,
            n_embd=n_embd,
            n_layer=int(self._field("llama.block_count")),
            n_head=n_head,
            n_head_kv=int(self._field("llama.attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_ff=int(self._field("llama.feed_forward_length")),
            n_ctx=int(self._field("llama.context_length")),
            rope_dim=int(self._field("llama.rope.dimension_count", head_dim)),
            rope_base=float(self._field("llama.rope.freq_base", 10000.0)),
            rms_eps=float(self._field("llama.attention.layer_norm_rms_epsilon")),
        )

    def weight(self, name: str) -> np.ndarray:
        """Tensor ``name`` dequantized to float64, shaped (out, in) for matrices.

        GGUF lists shapes as [ne0, ne1] = [in, out]; numpy wants them reversed.
        """
        w = self._cache.get(name)
        if w is None:
            t = self.tensors[name]
            if t.tensor_type not in SUPPORTED_TYPES:
                raise NotImplementedError(f"{name}: weight type {t.tensor_type.name}")
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))
            w = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)
            self._cache[name] = w
        return w

    def output_weight(self) -> np.ndarray:
        """The (n_vocab, n_embd) output matrix; tied to the embedding if absent."""
        if "output.weight" in self.tensors:
            return self.weight("output.weight")
        return self.weight("token_embd.weight")

    # ----------------------------------------------------------------- pieces

    def rms_norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """llama.cpp's RMSNorm: x / sqrt(mean(x^2) + eps), times the weight."""
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.hp.rms_eps) * w

    def rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotate (T, n_heads, head_dim) by position, llama.cpp "NORM" style.

        Adjacent pairs (x[2i], x[2i+1]) rotate by pos * base^(-2i/rope_dim) for
        i < rope_dim/2; dims from rope_dim on are left alone. (The GGUF converter
        permutes Q/K rows so that this matches HF's rotate-half convention.)
        """
        d = self.hp.rope_dim
        inv_freq = self.hp.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        theta = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, d/2)
        cos = np.cos(theta)[:, None, :]
        sin = np.sin(theta)[:, None, :]
        out = x.copy()
        x0, x1 = x[..., 0:d:2], x[..., 1:d:2]
        out[..., 0:d:2] = x0 * cos - x1 * sin
        out[..., 1:d:2] = x0 * sin + x1 * cos
        return out

    def attention(self, layer: int, x: np.ndarray) -> np.ndarray:
        """Causal grouped-query self-attention of block ``layer`` over (T, n_embd)."""
        hp, p = self.hp, f"blk.{layer}."
        T = x.shape[0]
        positions = np.arange(T)
        q = (x @ self.weight(p + "attn_q.weight").T).reshape(T, hp.n_head, hp.head_dim)
        k = (x @ self.weight(p + "attn_k.weight").T).reshape(T, hp.n_head_kv, hp.head_dim)
        v = (x @ self.weight(p + "attn_v.weight").T).reshape(T, hp.n_head_kv, hp.head_dim)
        q, k = self.rope(q, positions), self.rope(k, positions)

        # GQA: query head h reads kv head h // group, so repeat each kv head.
        group = hp.n_head // hp.n_head_kv
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)

        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hp.head_dim)
        future = np.triu(np.ones((T, T), dtype=bool), k=1)
        scores[:, future] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.einsum("hqk,khd->qhd", probs, v).reshape(T, hp.n_head * hp.head_dim)
        return out @ self.weight(p + "attn_output.weight").T

    def feed_forward(self, layer: int, x: np.ndarray) -> np.ndarray:
        """SwiGLU: down(silu(gate(x)) * up(x))."""
        p = f"blk.{layer}."
        gate = x @ self.weight(p + "ffn_gate.weight").T
        up = x @ self.weight(p + "ffn_up.weight").T
        silu = gate / (1.0 + np.exp(-gate))
        return (silu * up) @ self.weight(p + "ffn_down.weight").T

    # ----------------------------------------------------------------- forward

    def hidden_states(self, tokens: Sequence[int]) -> np.ndarray:
        """Final-normed hidden states, (T, n_embd), causal from position 0."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("tokens must be a non-empty 1-D sequence")
        if tokens.min() < 0 or tokens.max() >= self.hp.n_vocab:
            raise ValueError(f"token id out of range [0, {self.hp.n_vocab})")
        x = self.weight("token_embd.weight")[tokens]
        for layer in range(self.hp.n_layer):
            p = f"blk.{layer}."
            x = x + self.attention(layer, self.rms_norm(x, self.weight(p + "attn_norm.weight")))
            x = x + self.feed_forward(layer, self.rms_norm(x, self.weight(p + "ffn_norm.weight")))
        return self.rms_norm(x, self.weight("output_norm.weight"))

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits for every position, shape (len(tokens), n_vocab), float64."""
        return self.hidden_states(tokens) @ self.output_weight().T

    def last_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits of the last position only, (n_vocab,): skips T-1 output rows."""
        return self.output_weight() @ self.hidden_states(tokens)[-1]

    def greedy(self, tokens: Sequence[int], n: int) -> list[int]:
        """``n`` argmax tokens after ``tokens``, re-running the full prefix each step."""
        seq = list(tokens)
        out: list[int] = []
        for _ in range(n):
            nxt = int(np.argmax(self.last_logits(seq)))
            out.append(nxt)
            seq.append(nxt)
        return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
