"""The bundled model against llama.cpp's own outputs (tests/data, from
../shared/oracle): greedy continuations and top-5 logprobs.

Greedy decoding is chaotic at near-ties: two correct implementations whose
logits differ by rounding pick different tokens where the top two are within
a few hundredths of a nat, and diverge from there. llama.cpp quantizes its
activations to int8, we to int16, so exact agreement cannot be promised at a
near-tie. The tests therefore pin: (1) at every one of llama.cpp's 32 positions
(teacher-forced on its tokens) its token is our top-1, or within TIE nats of
it; (2) our own free-running greedy output equals llama.cpp's up to the first
such near-tie; (3) top-5 logprobs agree.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine_util import engine_logits, greedy_generate

TIE = 0.25  # nats; llama.cpp's own int8 activations move logprobs by up to ~0.4


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


pytestmark = pytest.mark.bundled


def _teacher_forced(model, entry):
    prompt, out = entry["prompt_ids"], entry["output_ids"]
    lp = log_softmax(engine_logits(model, prompt + out))
    return lp[len(prompt) - 1: len(prompt) - 1 + len(out)]


def test_llamacpp_tokens_are_ours_up_to_near_ties(bundled_model, oracle):
    for entry in oracle["greedy"]:
        lp = _teacher_forced(bundled_model, entry)
        for i, tok in enumerate(entry["output_ids"]):
            gap = lp[i].max() - lp[i, tok]
            assert gap <= TIE, f"{entry['prompt']!r} position {i}: llama.cpp's {tok} is {gap:.3f} below our top"
        exact = int((lp.argmax(1) == np.array(entry["output_ids"])).sum())
        assert exact >= len(entry["output_ids"]) - 3, f"only {exact} of 32 positions agree exactly"


def test_logprobs_of_emitted_tokens_match_llamacpp(bundled_model, oracle):
    for entry in oracle["greedy"]:
        lp = _teacher_forced(bundled_model, entry)
        ours = lp[np.arange(len(entry["output_ids"])), entry["output_ids"]]
        assert np.abs(ours - np.array(entry["output_logprobs"])).max() <= 0.35


def test_free_greedy_equals_llamacpp_until_a_near_tie(bundled_model, oracle):
    for entry in oracle["greedy"]:
        want = entry["output_ids"]
        got = greedy_generate(bundled_model, entry["prompt_ids"], len(want))
        n = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
        if n < len(want):
            lp = _teacher_forced(bundled_model, entry)[n]
            assert lp.max() - lp[want[n]] <= TIE, f"diverged at {n} without a near-tie"
        assert n >= 5, f"{entry['prompt']!r}: only {n} greedy tokens agree"


def test_top5_logprobs_match_llamacpp(bundled_model, oracle):
    ids = {e["prompt"]: e["prompt_ids"] for e in oracle["greedy"]}
    checked = 0
    for entry in oracle["top_logprobs"]:
        if entry["prompt"] not in ids:
            continue  # needs the tokenizer (the text issue's tests cover it)
        prompt = ids[entry["prompt"]]
        lp = log_softmax(engine_logits(bundled_model, prompt))[-1]
        want = [t["id"] for t in entry["top5"]]
        ours = list(np.argsort(-lp)[:5])
        assert ours[0] == want[0]
        assert len(set(ours) & set(want)) >= 4
        for t in entry["top5"]:
            assert abs(lp[t["id"]] - t["logprob"]) <= 0.2
        checked += 1
    assert checked == 2
