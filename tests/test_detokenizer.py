"""Streaming detokenization: the concatenated deltas equal the full decode, and
no delta ever carries a character split across tokens as U+FFFD."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radixserve.detokenizer import IncrementalDetokenizer
from radixserve.tokenizer import Tokenizer


def stream(tok: Tokenizer, ids, **kw) -> list[str]:
    d = IncrementalDetokenizer(tok, **kw)
    return [d.push(i) for i in ids] + [d.flush()]


def _byte_ids(tok: Tokenizer) -> list[int]:
    """Tokens that stand for one non-ASCII byte: the pieces of split characters."""
    return [i for i in range(tok.n_vocab) if len(tok.token_bytes(i)) == 1 and tok.token_bytes(i)[0] >= 0x80]


@pytest.mark.bundled
@given(data=st.data())
def test_stream_equals_decode_random_ids(smol, data):
    pool = st.one_of(st.integers(0, smol.n_vocab - 1), st.sampled_from(_byte_ids(smol)))
    ids = data.draw(st.lists(pool, max_size=40))
    special = data.draw(st.booleans())
    assert "".join(stream(smol, ids, special=special)) == smol.decode(ids, special=special)


@pytest.mark.bundled
@given(st.text(min_size=1))
def test_stream_of_real_text_never_splits_a_character(smol, s):
    s = "".join(c for c in s if not set(c.encode()) & smol.missing_bytes)
    deltas = stream(smol, smol.encode(s))
    assert "".join(deltas) == s
    assert all("\ufffd" not in d for d in deltas) or "\ufffd" in s


@pytest.mark.bundled
def test_multibyte_character_is_held_until_complete(smol):
    ids = smol.encode("🙂")
    parts = [smol.token_bytes(i) for i in ids]
    assert len(ids) > 1 or len(parts[0]) == 4
    d = IncrementalDetokenizer(smol)
    deltas = [d.push(i) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1) and deltas[-1] == "🙂"
    # feed the four bytes one token each (byte-level tokens for F0 9F 99 82)
    byte_tok = {smol.token_bytes(i): i for i in _byte_ids(smol)}
    d = IncrementalDetokenizer(smol)
    out = []
    for b in "🙂".encode():
        out.append(d.push(byte_tok[bytes([b])]))
        assert d.pending_bytes == (len(out) % 4)
    assert out == ["", "", "", "🙂"] and d.flush() == ""


@pytest.mark.bundled
def test_truncated_character_at_end_becomes_one_replacement(smol):
    byte_tok = {smol.token_bytes(i): i for i in _byte_ids(smol)}
    ids = smol.encode("ok ") + [byte_tok[b"\xe4"], byte_tok[b"\xb8"]]  # first two bytes of 中
    deltas = stream(smol, ids)
    assert deltas[-1] == "\ufffd" and "".join(deltas) == "ok \ufffd" == smol.decode(ids)


@pytest.mark.bundled
def test_control_tokens_hidden_unless_special(smol):
    ids = smol.encode("<|im_start|>hi<|im_end|>", parse_special=True)
    assert "".join(stream(smol, ids)) == "hi"
    assert "".join(stream(smol, ids, special=True)) == "<|im_start|>hi<|im_end|>"


@given(st.lists(st.integers(0, 400), max_size=30), st.booleans())
def test_spm_stream_equals_decode(spm, ids, special):
    ids = [i % spm.n_vocab for i in ids]
    assert "".join(stream(spm, ids, special=special, at_start=True)) == spm.decode(ids, special=special)


def test_spm_output_keeps_its_leading_space(spm):
    ids = spm.encode("hello world")
    assert "".join(stream(spm, ids, at_start=True)) == "hello world"
    assert "".join(stream(spm, ids)) == " hello world"  # a continuation: the model's own space
