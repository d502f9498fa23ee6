"""Sampling against known distributions and a naive full-sort reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from scheduler.sampling import (SamplerState, SamplingError, SamplingParams, log_softmax,
                                sample_batch)


def draw(logits, params, n=1, seed=0):
    state = SamplerState(params, default_seed=seed)
    row = np.asarray(logits, dtype=np.float32)[None, :]
    return [sample_batch(row, [state])[0].token for _ in range(n)]


def probs_logits(probs):
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def naive_kept(x: np.ndarray, p: SamplingParams) -> set[int]:
    """top-k -> top-p -> min-p by a full sort of the untempered distribution."""
    order = np.argsort(-x.astype(np.float64), kind="stable")
    if 0 < p.top_k < len(x):
        order = order[:p.top_k]
    w = np.exp(x[order].astype(np.float64) - x[order[0]])
    if p.top_p < 1.0:
        c = np.cumsum(w)
        keep = int(np.searchsorted(c, p.top_p * c[-1], side="left")) + 1
        order, w = order[:keep], w[:keep]
    if p.min_p > 0:
        order = order[w >= p.min_p * w[0] * (1 - 1e-6)]
    return set(int(i) for i in order)


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": -1}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": -2}, "top_k"),
    ({"min_p": float("nan")}, "min_p"), ({"seed": "x"}, "seed"), ({"logprobs": 21}, "logprobs"),
    ({"logit_bias": {"a": 1.0}}, "logit_bias"), ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"top_k": True}, "top_k"),
])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(SamplingError, match=field):
        SamplingParams(**kwargs)


def test_logit_bias_ids_are_checked_against_the_vocabulary():
    with pytest.raises(SamplingError, match="outside the vocabulary"):
        SamplingParams(logit_bias={70000: 1.0}).check_vocab(49152)


def test_greedy_and_top_k_1_are_argmax():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.normal(size=1000).astype(np.float32) * 4
        assert draw(x, SamplingParams(temperature=0.0))[0] == int(x.argmax())
        assert draw(x, SamplingParams(temperature=1.7, top_k=1), seed=3)[0] == int(x.argmax())


def test_top_p_keeps_the_smallest_set_reaching_p():
    x = probs_logits([0.5, 0.3, 0.15, 0.05])
    assert set(draw(x, SamplingParams(top_p=0.8), n=400)) == {0, 1}
    assert set(draw(x, SamplingParams(top_p=0.5), n=100)) == {0}
    assert set(draw(x, SamplingParams(top_p=0.81), n=600)) == {0, 1, 2}


def test_min_p_keeps_tokens_above_a_fraction_of_the_top():
    x = probs_logits([0.5, 0.3, 0.15, 0.05])
    assert set(draw(x, SamplingParams(min_p=0.2), n=600)) == {0, 1, 2}
    assert set(draw(x, SamplingParams(min_p=0.7), n=200)) == {0}


def test_temperature_one_reproduces_the_distribution():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    n = 20000
    got = np.bincount(draw(probs_logits(probs), SamplingParams(), n=n, seed=7), minlength=4) / n
    # 5 standard deviations of a binomial proportion
    assert np.all(np.abs(got - probs) <= 5 * np.sqrt(probs * (1 - probs) / n))


def test_temperature_sharpens_and_flattens():
    probs = np.array([0.6, 0.4])
    n = 20000
    for t in (0.5, 2.0):
        want = probs ** (1 / t) / (probs ** (1 / t)).sum()
        got = np.bincount(draw(probs_logits(probs), SamplingParams(temperature=t), n=n, seed=5), minlength=2) / n
        assert abs(got[0] - want[0]) <= 5 * math.sqrt(want[0] * want[1] / n)


def test_whole_vocabulary_draw_follows_the_distribution():
    """The two-level draw over a 49,152-token row lands in each half with its mass."""
    x = np.zeros(49152, dtype=np.float32)
    x[:1000] = math.log(30.0)  # first 1000 tokens weigh 30x: 30000 vs 48152
    n = 4000
    got = np.mean([t < 1000 for t in draw(x, SamplingParams(), n=n, seed=11)])
    want = 30000 / (30000 + 48152)
    assert abs(got - want) <= 5 * math.sqrt(want * (1 - want) / n)


def test_penalties_change_exactly_the_tokens_they_should():
    x = np.linspace(-2, 2, 50).astype(np.float32)
    s = SamplerState(SamplingParams(repetition_penalty=2.0, presence_penalty=0.5,
                                    frequency_penalty=0.25), prompt=[3, 40])
    s.accept(40)
    s.accept(40)
    s.accept(7)
    y = s.adjust(x)
    changed = set(np.flatnonzero(y != x))
    assert changed == {3, 40, 7}
    assert y[3] == pytest.approx(x[3] * 2.0)  # negative logit: multiplied
    assert y[40] == pytest.approx(x[40] / 2.0 - (0.5 + 0.25 * 2))  # positive: divided, then OpenAI's
    assert y[7] == pytest.approx(x[7] * 2.0 - (0.5 + 0.25))


def test_logit_bias_forbids_and_forces():
    x = np.array([5.0, 1.0, 0.0], dtype=np.float32)
    assert set(draw(x, SamplingParams(temperature=0, logit_bias={0: -math.inf}), n=5)) == {1}
    assert set(draw(x, SamplingParams(temperature=1, logit_bias={2: 100.0}), n=50)) == {2}


def test_same_seed_same_tokens_whatever_the_batch():
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(30, 3, 5000)).astype(np.float32) * 3
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=1234)
    alone = SamplerState(params)
    together = SamplerState(params)
    others = [SamplerState(SamplingParams(temperature=1.3, top_k=5, seed=9)), SamplerState(SamplingParams())]
    a, b = [], []
    for step in range(30):
        a.append(sample_batch(rows[step, :1], [alone])[0].token)
        b.append(sample_batch(rows[step, [2, 0, 1]], [others[0], together, others[1]])[1].token)
    assert a == b


def test_logprobs_are_a_full_log_softmax_of_the_raw_logits():
    x = np.random.default_rng(3).normal(size=3000).astype(np.float32) * 5
    s = SamplerState(SamplingParams(temperature=0, logprobs=5, repetition_penalty=1.3), prompt=[int(x.argmax())])
    choice = sample_batch(x[None, :], [s])[0]
    lp = log_softmax(x)
    assert choice.logprob == pytest.approx(lp[choice.token], abs=1e-5)
    want = np.argsort(-lp)[:5]
    assert [t for t, _ in choice.top] == list(want)
    assert [v for _, v in choice.top] == pytest.approx(list(lp[want]), abs=1e-5)


@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([0.5, 3.0, 12.0]),
    n=st.sampled_from([7, 500, 9000]),
    top_k=st.sampled_from([0, 1, 3, 40]),
    top_p=st.sampled_from([1.0, 0.95, 0.5, 0.1]),
    min_p=st.sampled_from([0.0, 0.05, 0.5]),
    temperature=st.sampled_from([0.3, 1.0, 2.5]),
)
def test_sampled_token_is_always_one_the_filters_keep(seed, scale, n, top_k, top_p, min_p, temperature):
    x = np.random.default_rng(seed).normal(size=n).astype(np.float32) * scale
    p = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
    kept = naive_kept(x, p)
    for tok in draw(x, p, n=5, seed=seed):
        assert tok in kept
