"""The batch interface: which logits rows come back, and the array form."""
from __future__ import annotations

import numpy as np

from engine_util import engine_logits
from radixserve.engine import Model, SeqInput


def test_prefill_chunks_without_logits_then_the_last_with(tiny_model):
    m = Model(tiny_model(weight_type="Q4_1", seed=4))
    tokens = list(range(3, 40))
    want = engine_logits(m, tokens, page_size=8)[-1]
    kv = m.kv_store(n_pages=5, page_size=8)
    first = m.forward(kv, [SeqInput(tokens[:20], 0, range(5), want_logits=False)])
    assert first.shape == (0, m.n_vocab)
    last = m.forward(kv, [SeqInput(tokens[20:], 20, range(5))])
    assert np.array_equal(last[0], want)


def test_rows_come_back_for_the_sequences_that_want_them_in_batch_order(tiny_model):
    m = Model(tiny_model(weight_type="F16", seed=5))
    a, b, c = [5, 6, 7], [8, 9], [10, 11, 12, 13]
    solo = {i: engine_logits(m, t, page_size=4)[-1] for i, t in enumerate((a, b, c))}
    kv = m.kv_store(n_pages=3, page_size=4)
    out = m.forward(kv, [SeqInput(a, 0, [0]), SeqInput(b, 0, [1], want_logits=False), SeqInput(c, 0, [2])])
    assert out.shape[0] == 2
    assert np.array_equal(out[0], solo[0]) and np.array_equal(out[1], solo[2])


def test_array_form_writes_into_a_caller_buffer(tiny_model):
    m = Model(tiny_model(weight_type="Q8_0", seed=6))
    kv = m.kv_store(n_pages=2, page_size=4)
    tokens = np.array([1, 2, 3, 4, 5], dtype=np.int32)
    seqs = np.array([[0, 2, 0, 0, 1, 1], [2, 3, 0, 1, 1, 1]], dtype=np.int32)
    pages = np.array([0, 1], dtype=np.int32)
    out = np.zeros((4, m.n_vocab), dtype=np.float32)
    view = m.forward_arrays(kv, tokens, seqs, pages, out=out)
    assert view.base is out or view is out  # no copy: the rows live in the caller's buffer
    assert np.shares_memory(view, out) and view.shape == (2, m.n_vocab)
    assert np.all(out[2:] == 0)
