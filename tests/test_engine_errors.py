"""Every bad input to the engine gets a clear error naming what was wrong,
and leaves the model and the KV store usable."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from radixserve.engine import Model, SeqInput
from radixserve.errors import (EngineArgumentError, EngineIOError, ModelFormatError,
                               UnsupportedModelError)
from radixserve.model_path import ModelNotFoundError
from tiny_gguf import truncated_copy


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        Model(tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(ModelFormatError, match="not a GGUF"):
        Model(p)


def test_directory_is_refused(tmp_path):
    with pytest.raises((ModelNotFoundError, EngineIOError)):
        Model(tmp_path)


@settings(max_examples=40)
@given(frac=st.floats(0.0, 0.9999))
def test_truncated_gguf_is_refused_at_any_length(tiny_model, tmp_path_factory, frac):
    src = tiny_model(weight_type="Q4_1")
    size = src.stat().st_size
    dst = tmp_path_factory.mktemp("trunc") / "t.gguf"
    truncated_copy(src, dst, int(size * frac))
    with pytest.raises(ModelFormatError, match="GGUF"):
        Model(dst)


@settings(max_examples=40)
@given(flips=st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupt_header_is_refused_or_harmless(tiny_model, tmp_path_factory, flips):
    """Bytes changed anywhere in the header, metadata and tensor directory
    (the first 8 KB): the load refuses the file with a ModelFormatError or
    UnsupportedModelError that says what it found wrong, or it loads (a
    changed token string, a weight byte) and a forward runs. Never another
    exception; a crash would end the test run."""
    src = tiny_model(weight_type="Q4_1")
    data = bytearray(src.read_bytes())
    for at, value in flips:
        data[at % len(data)] = value
    dst = tmp_path_factory.mktemp("flip") / "f.gguf"
    dst.write_bytes(bytes(data))
    try:
        model = Model(dst, threads=1)
    except (ModelFormatError, UnsupportedModelError) as e:
        assert len(str(e)) > 15, str(e)
        return
    kv = model.kv_store(n_pages=2, page_size=16)
    out = model.forward(kv, [SeqInput([1, 2, 3], 0, [0])])
    assert out.shape == (1, model.n_vocab)


def test_unsupported_architecture_is_named(tiny_model):
    path = tiny_model(extra_metadata={"general.architecture": "mamba"})
    with pytest.raises(UnsupportedModelError, match="mamba"):
        Model(path)


def test_missing_hyperparameter_is_named(tiny_model):
    path = tiny_model(extra_metadata={"llama.block_count": None})
    with pytest.raises(ModelFormatError, match="llama.block_count"):
        Model(path)


def test_unsupported_rope_scaling_is_named(tiny_model):
    path = tiny_model(extra_metadata={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(UnsupportedModelError, match="yarn"):
        Model(path)


@pytest.fixture(scope="module")
def model_and_kv(tiny_model):
    m = Model(tiny_model(weight_type="Q8_0"))
    return m, m.kv_store(n_pages=8, page_size=4)


def _still_works(m, kv):
    out = m.forward(kv, [SeqInput([1, 2, 3], 0, [0])])
    assert np.isfinite(out).all()


@pytest.mark.parametrize("seq, match", [
    (SeqInput([256], 0, [0]), "vocabulary"),
    (SeqInput([-1], 0, [0]), "vocabulary"),
    (SeqInput([1, 2], 0, [8]), "page id 8"),
    (SeqInput([1, 2], 0, [-3]), "page id -3"),
    (SeqInput([1, 2, 3, 4, 5], 0, [0]), "cover"),
    (SeqInput([1], 512, [0] * 129), "context length"),
    (SeqInput([1], -1, [0]), "positions"),
    (SeqInput([], 0, [0]), "tokens"),
    (SeqInput([2**40], 0, [0]), "out of range"),
    (SeqInput([7], 1, [1]), "same KV slot"),  # the first sequence's slot 1 of page 1
    (SeqInput([1, 2, 3, 4, 5], 0, [2, 2]), "same KV slot"),  # positions 0 and 4, one slot
])
def test_bad_batches_are_refused_and_harmless(model_and_kv, seq, match):
    m, kv = model_and_kv
    before = kv.read_page(0)
    with pytest.raises(EngineArgumentError, match=match):
        m.forward(kv, [SeqInput([5, 6], 0, [1]), seq])
    assert np.array_equal(kv.read_page(0), before), "a refused batch wrote into the KV store"
    _still_works(m, kv)


def test_bad_kv_arguments(model_and_kv):
    m, kv = model_and_kv
    with pytest.raises(EngineArgumentError, match="dtype"):
        m.kv_store(n_pages=2, dtype="int4")
    with pytest.raises(EngineArgumentError, match="at least one page"):
        m.kv_store(n_pages=0)
    with pytest.raises(EngineArgumentError, match="budget"):
        m.kv_store(budget_bytes=10)
    with pytest.raises(EngineArgumentError, match="outside the pool"):
        kv.copy_page(0, 8)
    with pytest.raises(EngineArgumentError, match="threads"):
        m.threads = 0
    with pytest.raises(EngineArgumentError, match="empty batch"):
        m.forward(kv, [])
    _still_works(m, kv)


def test_kv_store_of_another_model_is_refused(tiny_model, model_and_kv):
    m, _ = model_and_kv
    other = Model(tiny_model(n_layer=3))
    with pytest.raises(EngineArgumentError, match="geometry"):
        m.forward(other.kv_store(n_pages=1), [SeqInput([1], 0, [0])])


def test_copy_page_copies_kv(model_and_kv):
    m, kv = model_and_kv
    m.forward(kv, [SeqInput([7, 8, 9, 10], 0, [2])])
    kv.copy_page(2, 3)
    assert np.array_equal(kv.read_page(2), kv.read_page(3))
    # the copy serves a continuation exactly as the original does
    a = m.forward(kv, [SeqInput([11], 4, [2, 4])]).copy()
    b = m.forward(kv, [SeqInput([11], 4, [3, 5])])
    assert np.array_equal(a, b)
