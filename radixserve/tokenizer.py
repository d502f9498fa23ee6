"""Text to token ids and back, built from a GGUF's own `tokenizer.ggml.*` metadata.

Two vocabulary kinds, as llama.cpp names them in `tokenizer.ggml.model`:

* ``gpt2``: byte-level BPE. Text is cut into words by the regexes of
  `tokenizer.ggml.pre` (see pretokenizers.py), each word's UTF-8 bytes are
  spelled with GPT-2's printable byte characters, and the ranked merges of
  `tokenizer.ggml.merges` are applied.
* ``llama``: SentencePiece BPE (Llama 2, TinyLlama). Spaces become "▁", a
  space is prefixed to each text fragment (add_space_prefix), pieces merge by
  token score, and characters outside the vocabulary fall back to byte tokens
  ``<0x0A>``. The score order is turned into a merge list once, at load.

Both run in the `tokenizers` library (Rust), built in memory. Special tokens
are cut out in Python first, exactly as llama.cpp's tokenizer_st_partition
does: user-defined tokens always, control and unknown tokens only when the
caller asks (parse_special) — so "<|im_start|>" typed by a user is text, while
a chat template's markers become their ids (see encode_segments).

    text ──partition on special texts──▶ [text | id | text ...]
          each text fragment ──(SPM: " " prefix, " "→"▁")──▶ BPE ──▶ ids
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import models

from .pretokenizers import PreTokenizer, pretokenizer_for
from .special_tokens import SpecialTokens, TokenType, derive_special_tokens, token_types

SPM_SPACE = "\u2581"  # "▁", SentencePiece's visible space
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# Long texts are encoded in parallel chunks cut before a space that follows a
# printable ASCII character: no pre-tokenizer match spans such a point.
_CHUNK_CHARS = 8192
_CUT = re.compile(r"(?<=[!-~]) ")
# Types cut out of the text before BPE (llama.cpp's cache_special_tokens).
_SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
_HIDDEN_TYPES = (TokenType.CONTROL, TokenType.UNKNOWN)  # rendered only with special=True


class TokenizerError(ValueError):
    """A vocabulary this module cannot build, or a bad token id."""


def gpt2_byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode(): the printable character standing for each byte 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


class Tokenizer:
    """A GGUF vocabulary's tokenizer. Build with from_model / from_metadata."""

    def __init__(self, metadata: Mapping[str, Any]) -> None:
        self.model_kind: str = str(metadata.get("tokenizer.ggml.model", ""))
        tokens = metadata.get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("GGUF has no tokenizer.ggml.tokens")
        self.tokens: list[str] = list(tokens)
        self.types: np.ndarray = token_types(metadata, len(self.tokens))
        if self.model_kind == "gpt2":
            self.pre: PreTokenizer | None = pretokenizer_for(metadata.get("tokenizer.ggml.pre"))
            default_add_bos = self.pre.add_bos
            self.add_space_prefix = False
        elif self.model_kind == "llama":
            self.pre = None
            default_add_bos = True
            self.add_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
        else:
            raise TokenizerError(f"unsupported tokenizer.ggml.model {self.model_kind!r} (supported: gpt2, llama)")
        self.special: SpecialTokens = derive_special_tokens(
            metadata, self.tokens, self.types, model=self.model_kind, default_add_bos=default_add_bos)
        self._vocab = {t: i for i, t in enumerate(self.tokens)}
        if len(self._vocab) != len(self.tokens):
            raise TokenizerError("tokenizer.ggml.tokens has duplicate entries")
        self._hf = self._build_bpe(metadata)
        self._boundary = np.isin(self.types, [int(t) for t in _SPECIAL_TYPES])
        self._specials = self._special_table()
        self._bytes_shown, self._bytes_hidden = self._byte_tables()

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """From a mapping of GGUF keys to values (radixserve.metadata.Metadata or a dict)."""
        return cls(metadata)

    @classmethod
    def from_model(cls, model: Any) -> Tokenizer:
        """From an open radixserve.engine.Model."""
        return cls(model.metadata)

    # ---- properties -------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @property
    def bos_id(self) -> int | None:
        return self.special.bos

    @property
    def eos_id(self) -> int | None:
        return self.special.eos

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation (llama.cpp's EOG set: EOS, EOT, end markers)."""
        return self.special.eog

    @property
    def add_bos(self) -> bool:
        return self.special.add_bos

    @functools.cached_property
    def missing_bytes(self) -> frozenset[int]:
        """Byte values with no token of their own. Text holding them cannot
        round-trip: llama.cpp, and so this tokenizer, drops what it cannot spell
        (SmolLM2 lacks six C0 controls such as U+0016, and the bytes that never
        occur in UTF-8)."""
        if self.model_kind == "gpt2":
            return frozenset(b for b, c in enumerate(gpt2_byte_chars()) if c not in self._vocab)
        return frozenset(b for b in range(256) if f"<0x{b:02X}>" not in self._vocab)

    def token_type(self, token_id: int) -> TokenType:
        return TokenType(int(self.types[token_id]))

    def is_special(self, token_id: int) -> bool:
        """Control, user-defined or unknown: a token that is cut out of text, never merged into."""
        return bool(self._boundary[token_id])

    def token_to_id(self, text: str) -> int | None:
        return self._vocab.get(text)

    # ---- encode -----------------------------------------------------------

    def encode(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """Token ids of `text`. add_special: prepend BOS (append EOS) as the model asks.
        parse_special: control-token texts such as "<|im_start|>" become their ids
        (otherwise they are plain text, so user input cannot forge them)."""
        return self.encode_segments([(text, parse_special)], add_special=add_special)

    def encode_segments(self, segments: Iterable[tuple[str, bool]], *, add_special: bool = False) -> list[int]:
        """Encode the concatenation of (text, parse_special) segments as one text,
        parsing control tokens only inside segments that allow it. Text on both
        sides of a segment boundary merges as if it were one string, so a chat
        prompt tokenizes exactly as llama.cpp tokenizes the rendered template,
        except that markers inside user content stay text."""
        frags: list[str | int] = []
        for text, parse_special in segments:
            for f in self._partition(text, parse_special):
                if isinstance(f, str) and frags and isinstance(frags[-1], str):
                    frags[-1] += f
                else:
                    frags.append(f)
        out: list[int] = []
        if add_special and self.special.add_bos:
            out.append(self.special.bos)  # type: ignore[arg-type]
        texts = self._fragment_texts(frags)
        encoded = iter(self._encode_texts(texts))
        for f in frags:
            out.extend(next(encoded) if isinstance(f, str) else (f,))
        if add_special and self.special.add_eos:
            out.append(self.special.eos)  # type: ignore[arg-type]
        return out

    def has_special_text(self, text: str) -> bool:
        """Whether parse_special would turn any part of `text` into a special id."""
        return any(isinstance(f, int) for f in self._partition(text, True))

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut special-token texts out of `text`, longest first (llama.cpp's order)."""
        frags: list[str | int] = [text] if text else []
        for tok_text, tid, always in self._specials:
            if not (always or parse_special) or tok_text not in text:
                continue
            cut: list[str | int] = []
            for f in frags:
                if isinstance(f, int) or tok_text not in f:
                    cut.append(f)
                    continue
                for k, part in enumerate(f.split(tok_text)):
                    if k:
                        cut.append(tid)
                    if part:
                        cut.append(part)
            frags = cut
        return frags

    def _fragment_texts(self, frags: Sequence[str | int]) -> list[str]:
        """The strings handed to BPE. SentencePiece vocabularies prefix a space to
        text at the start or right after a special token, and spell spaces "▁"."""
        if self.model_kind != "llama":
            return [f for f in frags if isinstance(f, str)]
        texts = []
        prev_special = True  # llama.cpp: the first fragment is prefixed, BOS or not
        for f in frags:
            if isinstance(f, int):
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                f = " " + f
            texts.append(f.replace(" ", SPM_SPACE))
            prev_special = False
        return texts

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """BPE over each text; long ones in parallel chunks where that cannot change the result."""
        if not texts:
            return []
        pieces: list[str] = []
        owner: list[int] = []
        can_cut = self.pre is not None and self.pre.cuts_before_space
        for i, t in enumerate(texts):
            parts = _cut(t) if can_cut and len(t) > 2 * _CHUNK_CHARS else [t]
            pieces.extend(parts)
            owner.extend([i] * len(parts))
        out: list[list[int]] = [[] for _ in texts]
        for i, enc in zip(owner, self._hf.encode_batch_fast(pieces, add_special_tokens=False)):
            out[i].extend(enc.ids)
        return out

    # ---- decode -----------------------------------------------------------

    def token_bytes(self, token_id: int, *, special: bool = False) -> bytes:
        """The bytes one token stands for (control tokens: their text with special=True, else nothing)."""
        return (self._bytes_shown if special else self._bytes_hidden)[token_id]

    def strips_space_after(self, token_id: int | None) -> bool:
        """Whether a space that begins the next token is the one encode added
        (SentencePiece add_space_prefix): at the start (None) or after a special token."""
        return self.add_space_prefix and (token_id is None or bool(self._boundary[token_id]))

    def decode(self, ids: Sequence[int] | np.ndarray, *, special: bool = False) -> str:
        """Text of `ids`; the inverse of encode: decode(encode(s)) == s.
        special: show control tokens' text ("<|im_end|>"); otherwise they vanish."""
        ids = self.check_ids(ids)
        table = self._bytes_shown if special else self._bytes_hidden
        if not self.add_space_prefix:
            return b"".join([table[i] for i in ids]).decode("utf-8", "replace")
        parts = []
        prev: int | None = None
        for i in ids:
            b = table[i]
            if self.strips_space_after(prev) and not self._boundary[i] and b.startswith(b" "):
                b = b[1:]
            parts.append(b)
            prev = i
        return b"".join(parts).decode("utf-8", "replace")

    def check_ids(self, ids: Sequence[int] | np.ndarray) -> list[int]:
        """ids as a list of ints, each in [0, n_vocab), or a TokenizerError naming the bad one."""
        out = [int(i) for i in ids]
        for i in out:
            if not 0 <= i < len(self.tokens):
                raise TokenizerError(f"token id {i} out of range [0, {len(self.tokens)})")
        return out

    # ---- construction -----------------------------------------------------

    def _build_bpe(self, metadata: Mapping[str, Any]) -> _HFTokenizer:
        unk = self.special.unk
        unk_text = self.tokens[unk] if unk is not None else None
        if self.model_kind == "gpt2":
            merges = _gpt2_merges(metadata.get("tokenizer.ggml.merges") or [], self._vocab, self.types)
            assert self.pre is not None
            hf = _HFTokenizer(models.BPE(self._vocab, merges, ignore_merges=self.pre.ignore_merges))
            hf.pre_tokenizer = self.pre.build()
            return hf
        scores = metadata.get("tokenizer.ggml.scores")
        if scores is None:
            raise TokenizerError("SentencePiece vocabulary without tokenizer.ggml.scores")
        merges = _spm_merges(self.tokens, np.asarray(scores, dtype=np.float64), self._vocab, self.types)
        return _HFTokenizer(models.BPE(self._vocab, merges, unk_token=unk_text, byte_fallback=True))

    def _special_table(self) -> list[tuple[str, int, bool]]:
        """(text, id, always) for each special token, longest text first;
        `always`: user-defined tokens, cut out even without parse_special."""
        table = [(self.tokens[i], i, self.types[i] == int(TokenType.USER_DEFINED))
                 for i in np.flatnonzero(self._boundary).tolist() if self.tokens[i]]
        table.sort(key=lambda e: -len(e[0].encode()))
        return [(t, int(i), bool(a)) for t, i, a in table]

    def _byte_tables(self) -> tuple[list[bytes], list[bytes]]:
        """Bytes of every token: with control tokens shown, and with them hidden."""
        special, hidden_types = {int(t) for t in _SPECIAL_TYPES}, {int(t) for t in _HIDDEN_TYPES}
        normal, byte = int(TokenType.NORMAL), int(TokenType.BYTE)
        types = self.types.tolist()
        to_latin1 = str.maketrans({c: chr(b) for b, c in enumerate(gpt2_byte_chars())})
        byte_level = self.model_kind == "gpt2"
        shown: list[bytes] = []
        for text, ttype in zip(self.tokens, types):
            if ttype in special:
                shown.append(text.encode())
            elif ttype == normal:
                shown.append(_byte_level_bytes(text, to_latin1) if byte_level
                             else text.replace(SPM_SPACE, " ").encode())
            elif ttype == byte and (m := _BYTE_TOKEN.fullmatch(text)):
                shown.append(bytes([int(m.group(1), 16)]))
            else:  # unused / undefined: llama.cpp renders nothing
                shown.append(b"")
        hidden = [b"" if t in hidden_types else b for b, t in zip(shown, types)]
        return shown, hidden


def _byte_level_bytes(text: str, to_latin1: dict[int, str]) -> bytes:
    mapped = text.translate(to_latin1)
    try:
        return mapped.encode("latin-1")
    except UnicodeEncodeError:  # a character outside GPT-2's byte map: keep it as UTF-8
        return b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode() for c in mapped)


def _gpt2_merges(raw: Sequence[str], vocab: Mapping[str, int], types: np.ndarray) -> list[tuple[str, str]]:
    """Parse "left right" merges, keeping those whose parts and result are tokens.
    A merge into a control token is dropped, so no text can be merged into a marker."""
    hidden = {int(t) for t in _HIDDEN_TYPES}
    type_of = types.tolist()
    out = []
    for m in raw:
        cut = m.find(" ", 1)
        left, right = m[:cut], m[cut + 1:]
        merged = vocab.get(left + right)
        if cut > 0 and merged is not None and left in vocab and right in vocab and type_of[merged] not in hidden:
            out.append((left, right))
    return out


def _spm_merges(tokens: Sequence[str], scores: np.ndarray, vocab: Mapping[str, int],
                types: np.ndarray) -> list[tuple[str, str]]:
    """SentencePiece merges in llama.cpp's order: every split of a token into two
    tokens, the highest-scoring merged token first (ties: lower id, shorter left)."""
    ranked = []
    mergeable = {int(t) for t in (TokenType.NORMAL, TokenType.USER_DEFINED, TokenType.UNUSED, TokenType.UNDEFINED)}
    type_of = types.tolist()
    for tid, text in enumerate(tokens):
        if len(text) < 2 or type_of[tid] not in mergeable:
            continue
        for k in range(1, len(text)):
            left, right = text[:k], text[k:]
            if left in vocab and right in vocab:
                ranked.append((-float(scores[tid]), tid, k, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _cut(text: str) -> list[str]:
    """Split a long text into chunks of about _CHUNK_CHARS at safe cut points."""
    parts, start = [], 0
    while len(text) - start > 2 * _CHUNK_CHARS:
        m = _CUT.search(text, start + _CHUNK_CHARS)
        if m is None:
            break
        parts.append(text[start:m.start()])
        start = m.start()
    parts.append(text[start:])
    return parts
