"""A small SentencePiece-style (tokenizer.ggml.model = "llama") vocabulary for
tokenizer tests, and a direct transcription of llama.cpp's SPM algorithm
(llm_tokenizer_spm_session) to check the fast tokenizer against.

Layout as in Llama 2 GGUFs: <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>,
then pieces with descending scores.
"""
from __future__ import annotations

import heapq
from typing import Any

SPACE = "\u2581"
_PIECES = (
    [SPACE] + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-é")
    + [SPACE + "t", "he", SPACE + "a", "in", SPACE + "the", "er", "an", SPACE + "s", "on", "re",
       SPACE + "w", "at", "en", "is", SPACE + "o", "it", "ou", "es", SPACE + "c", "ing", SPACE + "in",
       "or", "ed", SPACE + "is", "ar", SPACE + "and", "al", "and", "ll", "ell", "hell", "hello",
       SPACE + "hello", SPACE + "wor", "ld", SPACE + "world", "ab", "abc", "bc", SPACE + SPACE,
       SPACE + SPACE + SPACE + SPACE, "th", "the", "ther", "there"]
)


def spm_metadata(*, add_space_prefix: bool = True, add_bos: bool = True, extra: dict | None = None) -> dict[str, Any]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    for rank, piece in enumerate(_PIECES):
        tokens.append(piece)
        types.append(1)
        # single characters score lowest, as in SentencePiece BPE vocabularies
        scores.append(-1000.0 - rank if len(piece) == 1 else -float(rank))
    md: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": add_bos,
        "tokenizer.ggml.add_space_prefix": add_space_prefix,
    }
    md.update(extra or {})
    return md


def llamacpp_spm_tokenize(md: dict[str, Any], text: str) -> list[int]:
    """llama.cpp's SPM tokenize of one raw-text fragment (spaces already "▁")."""
    tokens, scores = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.scores"]
    vocab = {t: i for i, t in enumerate(tokens)}
    syms = [[c, i - 1, i + 1] for i, c in enumerate(text)]  # text, prev, next
    if syms:
        syms[-1][2] = -1
    heap: list[tuple[float, int, int, int]] = []

    def add(left: int, right: int) -> None:
        if left == -1 or right == -1:
            return
        tid = vocab.get(syms[left][0] + syms[right][0])
        if tid is not None:
            heapq.heappush(heap, (-scores[tid], left, right, len(syms[left][0]) + len(syms[right][0])))

    for i in range(1, len(syms)):
        add(i - 1, i)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        ls, rs = syms[left], syms[right]
        if not ls[0] or not rs[0] or len(ls[0]) + len(rs[0]) != size:
            continue
        ls[0] += rs[0]
        rs[0] = ""
        ls[2] = rs[2]
        if rs[2] >= 0:
            syms[rs[2]][1] = left
        add(ls[1], left)
        add(left, ls[2])
    out: list[int] = []
    i = 0 if syms else -1
    while i != -1:
        piece = syms[i][0]
        if piece in vocab:
            out.append(vocab[piece])
        else:
            out.extend(vocab[f"<0x{b:02X}>"] for b in piece.encode())
        i = syms[i][2]
    return out
