"""Token types and the special ids of a GGUF vocabulary, derived as llama.cpp derives them.

GGUF files name some special tokens by key (bos, eos, eot, ...); llama.cpp
finds the rest by their text ("<|im_end|>", "<|fim_pad|>", ...) and forces
those to control type. Its end-of-generation (EOG) set is: the FIM pad /
repo / file-separator tokens, every token spelled like an end marker, and the
EOS, EOT and EOM ids. For SmolLM2 that is {0 <|endoftext|>, 2 <|im_end|>,
4 <reponame>}, the set llama.cpp's server stops on.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class TokenType(enum.IntEnum):
    """tokenizer.ggml.token_type values (llama.cpp's llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Texts llama.cpp recognises, in its order of preference (it scans a hash map,
# so on a vocabulary with several candidates its pick is arbitrary; ours is the
# first text of this list that exists, lowest id first).
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
             "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
EOM_TEXTS = ("<|eom_id|>",)
FIM_PAD_TEXTS = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>")
FIM_REP_TEXTS = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
FIM_SEP_TEXTS = ("<|file_sep|>",)
FIM_PRE_TEXTS = ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                 "<|code_prefix|>")
FIM_SUF_TEXTS = ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                 "<|code_suffix|>")
FIM_MID_TEXTS = ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                 "<|code_middle|>")
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
             "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>")

_KEY = "tokenizer.ggml."


@dataclasses.dataclass(frozen=True, slots=True)
class SpecialTokens:
    """Special ids of one vocabulary (None where the vocabulary has none)."""

    bos: int | None
    eos: int | None
    eot: int | None
    eom: int | None
    unk: int | None
    pad: int | None
    eog: frozenset[int]
    add_bos: bool
    add_eos: bool


def token_types(metadata: Mapping[str, Any], n_tokens: int) -> np.ndarray:
    """tokenizer.ggml.token_type as an int32 array (all NORMAL when absent)."""
    types = metadata.get(_KEY + "token_type")
    if types is None:
        return np.full(n_tokens, TokenType.NORMAL, dtype=np.int32)
    arr = np.array(types, dtype=np.int32)
    if arr.shape != (n_tokens,):
        raise ValueError(f"tokenizer.ggml.token_type has {arr.size} entries for {n_tokens} tokens")
    return arr


def _find(by_text: Mapping[str, int], texts: Sequence[str]) -> int | None:
    for t in texts:
        if t in by_text:
            return by_text[t]
    return None


def derive_special_tokens(metadata: Mapping[str, Any], tokens: Sequence[str], types: np.ndarray,
                          *, model: str, default_add_bos: bool) -> SpecialTokens:
    """Read the special ids and the EOG set; marks auto-detected ones CONTROL in `types` (in place)."""
    n = len(tokens)
    defaults = {"llama": (1, 2, 0), "gpt2": (11, 11, None)}.get(model, (None, None, None))

    def key_id(name: str, default: int | None) -> int | None:
        v = metadata.get(_KEY + name)
        return int(v) if v is not None and 0 <= int(v) < n else default

    bos = key_id("bos_token_id", defaults[0])
    eos = key_id("eos_token_id", defaults[1])
    unk = key_id("unknown_token_id", defaults[2])
    pad = key_id("padding_token_id", None)
    by_text = {t: i for i, t in enumerate(tokens)}

    def detect(name: str, texts: Sequence[str]) -> int | None:
        tid = key_id(name, None)
        if tid is None:
            tid = _find(by_text, texts)
            if tid is not None:
                types[tid] = TokenType.CONTROL
        return tid

    eot = detect("eot_token_id", EOT_TEXTS)
    eom = detect("eom_token_id", EOM_TEXTS)
    fims = [detect(k, texts) for k, texts in (("fim_pad_token_id", FIM_PAD_TEXTS),
                                              ("fim_rep_token_id", FIM_REP_TEXTS),
                                              ("fim_sep_token_id", FIM_SEP_TEXTS))]
    for k, texts in (("fim_pre_token_id", FIM_PRE_TEXTS), ("fim_suf_token_id", FIM_SUF_TEXTS),
                     ("fim_mid_token_id", FIM_MID_TEXTS)):
        detect(k, texts)
    eog = {i for i in fims if i is not None}
    for t in EOG_TEXTS:
        if t in by_text:
            eog.add(by_text[t])
            types[by_text[t]] = TokenType.CONTROL
    eog.update(i for i in (eos, eot, eom) if i is not None)
    # gpt-oss: <|end|> ends a message, not the generation, when <|return|> and <|call|> exist
    if {"<|return|>", "<|call|>", "<|end|>"} <= by_text.keys():
        eog.discard(by_text["<|end|>"])
        types[by_text["<|end|>"]] = TokenType.USER_DEFINED

    add_bos = metadata.get(_KEY + "add_bos_token")
    add_eos = metadata.get(_KEY + "add_eos_token")
    return SpecialTokens(
        bos=bos, eos=eos, eot=eot, eom=eom, unk=unk, pad=pad, eog=frozenset(eog),
        add_bos=bool(default_add_bos if add_bos is None else add_bos) and bos is not None,
        add_eos=bool(add_eos) and eos is not None,
    )
