"""The pre-tokenizer of each `tokenizer.ggml.pre` name, as llama.cpp defines it.

A byte-level BPE vocabulary is only half a tokenizer: before merging, the text
is cut into words by one or more regexes, applied in turn (each one splits the
pieces the previous one left; matches and the gaps between them both become
pieces). The regexes and flags below are copied from llama.cpp's
src/llama-vocab.cpp (llm_tokenizer_bpe and llama_vocab::impl::load), so the
same GGUF splits the same way here.
"""
from __future__ import annotations

import dataclasses

from tokenizers import Regex, pre_tokenizers

# GPT-2's pattern; most older vocabularies use it alone or after a digit split.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# Llama 3's pattern with the case-insensitive group spelled out, as llama.cpp does.
LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen 2: Llama 3's pattern with single digits.
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")


@dataclasses.dataclass(frozen=True, slots=True)
class PreTokenizer:
    """How one `tokenizer.ggml.pre` family splits text before BPE.

    ignore_merges: a word that is itself a vocabulary token is taken whole
    (llama.cpp's ignore_merges, Llama 3). add_bos: the default when the GGUF
    has no tokenizer.ggml.add_bos_token. cuts_before_space: no match of any
    regex runs from a non-space character into a following space, so text cut
    at such a point tokenizes as the whole would (used to encode long texts in
    parallel chunks).
    """

    name: str
    regexes: tuple[str, ...]
    ignore_merges: bool = False
    add_bos: bool = False
    cuts_before_space: bool = True

    def build(self) -> pre_tokenizers.PreTokenizer:
        """The `tokenizers` pre-tokenizer: the regex splits, then GPT-2's byte-to-character map."""
        splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in self.regexes]
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([*splits, byte_level])


_FAMILIES = (
    (PreTokenizer("default", DEFAULT), ("default", "")),
    (PreTokenizer("gpt2", (GPT2,)),
     ("gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es",
      "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais", "trillion")),
    (PreTokenizer("smollm", (r"\p{N}", GPT2)),
     ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")),
    (PreTokenizer("llama3", (LLAMA3,), ignore_merges=True, add_bos=True),
     ("llama3", "llama-v3", "llama-bpe", "falcon3")),
    (PreTokenizer("dbrx", (LLAMA3,)), ("dbrx", "smaug-bpe")),
    (PreTokenizer("qwen2", (QWEN2,)), ("qwen2", "stablelm2", "megrez")),
    (PreTokenizer("falcon", (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")), ("falcon",)),
    (PreTokenizer("deepseek-coder", (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"),
                  cuts_before_space=False),
     ("deepseek-coder",)),
)
_BY_NAME = {alias: fam for fam, aliases in _FAMILIES for alias in aliases}


class UnknownPreTokenizerError(ValueError):
    """The GGUF names a pre-tokenizer this module does not implement."""


def pretokenizer_for(name: str | None) -> PreTokenizer:
    """The pre-tokenizer for a `tokenizer.ggml.pre` value (missing: llama.cpp's 'default')."""
    fam = _BY_NAME.get(name or "")
    if fam is None:
        known = ", ".join(sorted(a for a in _BY_NAME if a))
        raise UnknownPreTokenizerError(f"unsupported tokenizer.ggml.pre {name!r} (supported: {known})")
    return fam


def known_names() -> list[str]:
    return sorted(a for a in _BY_NAME if a)
