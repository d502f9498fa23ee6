"""Streaming detokenization: token ids in one at a time, text out, never half a character.

A byte-level token can end in the middle of a UTF-8 sequence ("中" is three
bytes, often two tokens). The incremental UTF-8 decoder holds such a tail until
the bytes that complete it arrive, so no delta ever carries U+FFFD for a
character that was merely split; bytes that can never become valid UTF-8 turn
into U+FFFD exactly as a one-shot decode would. Hence, for any ids:

    "".join(d.push(i) for i in ids) + d.flush() == tokenizer.decode(ids)
"""
from __future__ import annotations

import codecs

from .tokenizer import Tokenizer


class IncrementalDetokenizer:
    """Text deltas for a growing token sequence.

    special: show control tokens' text, as Tokenizer.decode(special=True).
    at_start: the ids begin a text (SentencePiece vocabularies then drop the
    space that encode prefixed); False when they continue a prompt, as a
    model's output does — the leading space of its first word is kept.
    """

    __slots__ = ("_tokenizer", "_special", "_at_start", "_prev", "_decoder", "n_tokens")

    def __init__(self, tokenizer: Tokenizer, *, special: bool = False, at_start: bool = False) -> None:
        self._tokenizer = tokenizer
        self._special = special
        self._at_start = at_start
        self._prev: int | None = None  # the last token pushed
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.n_tokens = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        tok = self._tokenizer
        (token_id,) = tok.check_ids((token_id,))
        data = tok.token_bytes(token_id, special=self._special)
        prefixed = tok.strips_space_after(self._prev) if self._prev is not None else \
            self._at_start and tok.strips_space_after(None)
        if prefixed and not tok.is_special(token_id) and data.startswith(b" "):
            data = data[1:]
        self._prev = token_id
        self.n_tokens += 1
        return self._decoder.decode(data, final=False)

    def push_many(self, token_ids: list[int]) -> str:
        return "".join(self.push(t) for t in token_ids)

    def flush(self) -> str:
        """End of stream: bytes still held (an incomplete character) become U+FFFD."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending_bytes(self) -> int:
        """Bytes held back because they do not yet form a complete character."""
        return len(self._decoder.getstate()[0])
