"""Token ids to text for byte-level BPE vocabularies (GPT-2 style), enough
for the CLI to show what the engine generated. The full tokenizer (encode,
SentencePiece vocabularies, streaming UTF-8) is the text layer's job."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's reversible map from bytes to printable characters, inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def ids_to_text(vocab: Sequence[str] | None, ids: Sequence[int]) -> str:
    """Decode ids through the vocabulary's byte-level strings."""
    if not vocab:
        return " ".join(map(str, ids))
    table = _unicode_to_byte()
    out = bytearray()
    for i in ids:
        piece = vocab[i]
        if all(ch in table for ch in piece):
            out.extend(table[ch] for ch in piece)
        else:  # control tokens such as <|im_end|> are stored as plain text
            out.extend(piece.encode())
    return out.decode("utf-8", "replace")
