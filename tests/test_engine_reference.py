"""The engine against the float64 numpy reference (tests/reference.py).

Tiny random models of every weight type the tests write themselves, and the
bundled SmolLM2. F32 weights with f32 KV must agree to 1e-4 (only float32
rounding separates them); the bundled Q4_1 model to 2e-2 (activations are
quantized to int16 for the integer dot products, K/V are stored as f16).
"""
from __future__ import annotations

import numpy as np
import pytest

from engine_util import engine_logits, rel_err
from radixserve.engine import Model
from radixserve.errors import EngineError
from reference import ReferenceModel

PROMPT = [1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 2, 5, 9, 17, 33, 65, 129,
          200, 250, 7, 3, 4, 60, 61, 62, 63, 100, 101, 102, 150, 151, 152, 153, 10, 11, 12]


@pytest.mark.parametrize("variant", [
    {},
    {"tied": False},
    {"rope_dim": 8},
    {"n_head_kv": 4},
    {"n_head_kv": 1, "rope_base": 500000.0},
])
def test_tiny_f32_matches_reference_to_1e4(tiny_model, variant):
    path = tiny_model(weight_type="F32", **variant)
    got = engine_logits(Model(path, threads=2), PROMPT, page_size=4, kv_dtype="f32")
    want = ReferenceModel(path).logits(PROMPT)
    assert got.shape == want.shape
    assert rel_err(got, want) <= 1e-4


# Bounds per weight type, f16 KV: the weights are identical on both sides
# (the reference dequantizes the same blocks), so what differs is activation
# quantization (int16), f16 K/V and float32 accumulation.
@pytest.mark.parametrize("weight_type, bound", [
    ("F16", 2e-3), ("BF16", 2e-3), ("Q8_0", 2e-3), ("Q4_0", 2e-3), ("Q4_1", 2e-3),
])
def test_tiny_quantized_matches_reference(tiny_model, weight_type, bound):
    path = tiny_model(weight_type=weight_type, seed=3)
    got = engine_logits(Model(path), PROMPT, page_size=16)
    want = ReferenceModel(path).logits(PROMPT)
    assert rel_err(got, want) <= bound


@pytest.mark.bundled
def test_bundled_model_matches_reference(bundled_model, reference_model, oracle):
    """Both oracle prompts with llama.cpp's continuations: 38 and 37 positions, 3 pages each."""
    for entry in oracle["greedy"]:
        tokens = entry["prompt_ids"] + entry["output_ids"]
        got = engine_logits(bundled_model, tokens)
        want = reference_model.logits(tokens)
        assert rel_err(got, want) <= 2e-2, entry["prompt"]


@pytest.mark.bundled
def test_scalar_and_simd_kernels_agree_on_the_model(bundled_model_path, monkeypatch, oracle):
    """The forced scalar reference kernels and the CPU's SIMD kernels give the same model up to rounding."""
    tokens = oracle["greedy"][1]["prompt_ids"] + oracle["greedy"][1]["output_ids"]
    simd = engine_logits(Model(bundled_model_path), tokens)
    monkeypatch.setenv("RADIXSERVE_KERNELS", "scalar")
    scalar_model = Model(bundled_model_path)
    assert scalar_model.kernels == "scalar"
    scalar = engine_logits(scalar_model, tokens)
    assert rel_err(simd, scalar) <= 1e-2
    assert np.array_equal(simd.argmax(1), scalar.argmax(1))


@pytest.mark.parametrize("page_size", [4, 48])
def test_tiny_f32_long_prompt_over_several_attention_chunks(tiny_model, page_size):
    """Attention runs per chunk of 512 positions (480 with pages of 48) and
    merges the chunks' softmax partials: 1,000 positions span two or three
    chunks, and the merge must still give the plain softmax of a float64
    forward."""
    path = tiny_model(weight_type="F32", n_ctx=1024)
    prompt = [int(t) for t in np.random.default_rng(5).integers(0, 256, 1000)]
    got = engine_logits(Model(path, threads=2), prompt, page_size=page_size, kv_dtype="f32")
    want = ReferenceModel(path).logits(prompt)
    assert rel_err(got, want) <= 1e-4


def test_avx512_and_avx2_tables_give_the_same_bits(bundled_model_path, monkeypatch, oracle):
    """The AVX-512 table differs from AVX2's only in the quantized GEMMs, which
    both compute bit for bit as the scalar reference: a prompt prefilled whole
    and then decoded token by token (both GEMM paths) gives identical logits."""
    def logits(kernels: str) -> np.ndarray:
        monkeypatch.setenv("RADIXSERVE_KERNELS", kernels)
        try:
            model = Model(bundled_model_path)
        except EngineError as e:
            pytest.skip(f"no {kernels} table here: {e}")
        tokens = oracle["greedy"][0]["prompt_ids"] + oracle["greedy"][0]["output_ids"]
        return np.concatenate([engine_logits(model, tokens), engine_logits(model, tokens, chunk=1)])

    assert np.array_equal(logits("avx2"), logits("avx512"))
