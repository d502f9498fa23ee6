"""scripts/compute_floor.py: the arithmetic a forward needs, and the peak rates it is divided by."""
from __future__ import annotations

import math
import os
import platform
import shutil
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from compute_floor import (Peaks, attention_macs, decode_floor, gemm_macs_per_token,  # noqa: E402
                           measure_peaks, prefill_floor)


@pytest.mark.bundled
def test_gemm_macs_count_every_matrix_of_the_file(bundled_model, bundled_model_path):
    """The formula from hyperparameters equals the sum of rows x cols of the file's matrices
    (the tied output matrix is the embedding, multiplied once more)."""
    import gguf

    r = gguf.GGUFReader(bundled_model_path)
    total = sum(int(t.shape[0]) * int(t.shape[1]) for t in r.tensors if len(t.shape) == 2)
    hp = bundled_model.hparams
    assert hp.tied_output
    assert gemm_macs_per_token(hp) == total  # the embedding lookup costs none; its product as output does
    assert gemm_macs_per_token(hp, logits=False) == total - hp.n_vocab * hp.n_embd


def test_floors_follow_the_arithmetic(tiny_model):
    from radixserve.engine import Model

    hp = Model(tiny_model()).hparams
    pk = Peaks("test", 2, int16_macs=1e11, f32_macs=5e10)
    per_token = gemm_macs_per_token(hp) / 1e11 + attention_macs(hp, 100 + 16.5) / 5e10
    assert math.isclose(decode_floor(hp, pk, 8, 100, 32), 1 / per_token)
    assert math.isclose(decode_floor(hp, pk, 8, 100, 32, weight_s=1.0), 8.0)  # memory-bound: 8 tokens a second
    assert attention_macs(hp, 10) == 2 * hp.n_layer * hp.n_head * hp.head_dim * 10
    n = 64
    want = n / ((n * gemm_macs_per_token(hp, logits=False) + hp.n_vocab * hp.n_embd) / 1e11
                + attention_macs(hp, n * (n + 1) / 2) / 5e10)
    assert math.isclose(prefill_floor(hp, pk, n), want)


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return " avx2 " in f.read().replace("\n", " ")
    except OSError:
        return False


@pytest.mark.skipif(platform.machine() != "x86_64" or not _has_avx2() or shutil.which("cc") is None,
                    reason="peak loops exist for x86-64 with AVX2, built by the machine's cc")
def test_measure_peaks_runs_here():
    pk = measure_peaks("avx2", 1)
    assert pk is not None and pk.int16_macs > 1e9 and pk.f32_macs > 1e9
    assert measure_peaks("no-such-isa", 1) is None
