"""The scheduler on the real engine (tiny models the tests write): the seed's
scenario, system-prompt rotation, shared prefill, forks, determinism,
cancellation, and page conservation after every test."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine_util import greedy_generate
from radixserve.engine import Model
from sched_util import collect, make_scheduler, rand_tokens
from scheduler.request import FinishReason, GenerateRequest, RequestError
from scheduler.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
PS = 16


@pytest.fixture(scope="module")
def model(tiny_model):
    return Model(tiny_model(weight_type="Q8_0", n_ctx=8192, seed=21))


def run(coro):
    return asyncio.run(coro)


def test_one_request_equals_plain_greedy(model):
    prompt = [5, 6, 7, 8, 9, 10, 11]
    want = greedy_generate(model, prompt, 30)

    async def go():
        async with make_scheduler(model, 64) as s:
            out = await collect(s.submit(GenerateRequest(prompt, GREEDY, max_tokens=30)))
            s.check_invariants()
            return out
    out = run(go())
    assert out.tokens[0] == want and out.finish[0] is FinishReason.LENGTH


def test_seed_scenario_shared_system_prompt_occupies_one_copy(model):
    """6,000-token system prompt + 8 concurrent requests of 1,000 unique tokens:
    they decode in the same batches, and the store holds the shared pages once
    plus each request's own (a per-slot cache would hold 8 x 7,040 tokens)."""
    rng = np.random.default_rng(1)
    system = rand_tokens(rng, 6000, model.n_vocab)
    uniques = [rand_tokens(rng, 1000, model.n_vocab) for _ in range(8)]

    async def go():
        s = make_scheduler(model, 2048, max_running=16, max_batch_tokens=2048)
        async with s:
            await s.set_system_prompt(system)
            handles = [s.submit(GenerateRequest(system + u, GREEDY, max_tokens=40)) for u in uniques]
            snapshot = None
            while not all(h.finished for h in handles):
                await asyncio.sleep(0)
                seqs = [h.sequences[0] for h in handles]
                if snapshot is None and all(q.state.value == "decode" for q in seqs):
                    snapshot = (s.alloc.stats(), sum(len(q.private_pages) for q in seqs))
            outs = [await collect(h) for h in handles]
            s.check_invariants()
            return s, outs, snapshot
    s, outs, snapshot = run(go())
    assert snapshot is not None, "the eight requests never decoded together"
    stats, private = snapshot
    system_pages, unique_full = 6000 // PS, 7000 // PS - 6000 // PS
    assert all(o.cached == 6000 for o in outs)  # every request found the whole system prompt
    assert stats.tree.pinned_pages == system_pages
    assert stats.tree.in_tree_pages == system_pages + 8 * unique_full  # the system prompt once
    assert stats.held_pages == private and private <= 8 * 3  # partial + decode pages of each
    assert max(st.decode_tokens for st in s.step_log) == 8


def _branch_pages(cache, prefix: list[int]) -> set[int]:
    """Pages of every tree node whose path starts with `prefix`."""
    nodes = cache.dump_tree(detail=True)
    by_uid = {n.uid: n for n in nodes}

    def path_tokens(n):
        toks = []
        while n is not None:
            toks[:0] = n.tokens
            n = by_uid.get(n.parent_uid)
        return toks
    return {p for n in nodes if path_tokens(n)[:len(prefix)] == prefix for p in n.pages}


def test_rotation_keeps_streams_batched_and_ages_out_the_old_root(model):
    rng = np.random.default_rng(2)
    old_sys, new_sys = rand_tokens(rng, 640, model.n_vocab), rand_tokens(rng, 640, model.n_vocab)

    async def go():
        s = make_scheduler(model, 400, max_running=16, max_batch_tokens=256)
        async with s:
            await s.set_system_prompt(old_sys)
            streams = [s.submit(GenerateRequest(old_sys + rand_tokens(rng, 20, model.n_vocab), GREEDY,
                                                max_tokens=120)) for _ in range(8)]
            while not all(q.state.value == "decode" for h in streams for q in h.sequences):
                await asyncio.sleep(0)
            mark = s.step_no
            await s.set_system_prompt(new_sys)
            during = [st for st in s.step_log if st.step > mark]
            outs = [await collect(h) for h in streams]
            recent = await collect(s.submit(GenerateRequest(new_sys + [7, 8, 9], GREEDY, max_tokens=4)))
            s.check_invariants()
            old_branch = _branch_pages(s.cache, old_sys[:16])
            new_branch = _branch_pages(s.cache, new_sys[:16])
            evicted = set(int(p) for p in s.cache.evict(len(old_branch)))
            s.alloc.free(np.array(sorted(evicted), dtype=np.int32))
            s.check_invariants()
            return s, during, recent, outs, old_branch, new_branch, evicted
    s, during, recent, outs, old_branch, new_branch, evicted = run(go())
    assert during and all(st.decode_tokens == 8 for st in during), "streams stopped decoding together"
    assert any(st.prefill_tokens for st in during), "the new prompt was prefilled alongside the streams"
    assert all(len(o.tokens[0]) == 120 for o in outs)
    assert recent.cached == 640 and s.system_prompt == new_sys
    assert evicted == old_branch and not evicted & new_branch  # the old root goes first, all of it


def test_identical_concurrent_prompts_are_prefilled_once(model):
    rng = np.random.default_rng(3)
    prompt = rand_tokens(rng, 700, model.n_vocab)

    async def go():
        # a budget that could prefill all six at once: only deferral makes them share
        async with make_scheduler(model, 400, max_batch_tokens=4096) as s:
            hs = [s.submit(GenerateRequest(prompt, GREEDY, max_tokens=3)) for _ in range(6)]
            outs = [await collect(h) for h in hs]
            s.check_invariants()
            return s, outs
    s, outs = run(go())
    # one full prefill, then each other request computes only its partial last page
    assert s.counters.prefill_tokens <= 700 + 5 * (700 - 688 + 16)
    assert sorted(o.cached for o in outs)[1:] == [688] * 5
    assert all(o.tokens[0] == outs[0].tokens[0] for o in outs)


def test_n_samples_share_the_prompt_pages(model):
    rng = np.random.default_rng(4)
    prompt = rand_tokens(rng, 100, model.n_vocab)

    async def go():
        async with make_scheduler(model, 64) as s:
            h = s.submit(GenerateRequest(prompt, SamplingParams(temperature=1.0, seed=5), max_tokens=20, n=4))
            out = await collect(h)
            s.check_invariants()
            return s, out
    s, out = run(go())
    assert sorted(out.tokens) == [0, 1, 2, 3] and all(len(t) == 20 for t in out.tokens.values())
    assert s.counters.prefill_tokens == 100 and s.counters.forked_samples == 3
    assert len({tuple(t) for t in out.tokens.values()}) > 1  # seeds differ per sample


def test_seeded_request_is_the_same_alone_crowded_cold_and_warm(model):
    rng = np.random.default_rng(6)
    prompt = rand_tokens(rng, 90, model.n_vocab)
    spec = GenerateRequest(prompt, SamplingParams(temperature=0.9, top_p=0.95, seed=77), max_tokens=40)

    async def go():
        async with make_scheduler(model, 256, max_batch_tokens=48) as s:
            alone = await collect(s.submit(spec))  # cold
            warm = await collect(s.submit(spec))   # its prompt is cached now
            crowd = [s.submit(GenerateRequest(rand_tokens(rng, int(rng.integers(5, 120)), model.n_vocab),
                                              SamplingParams(temperature=1.2), max_tokens=30)) for _ in range(6)]
            crowded = s.submit(spec)
            for h in crowd:
                await collect(h)
            result = await collect(crowded)
            s.check_invariants()
            return alone, warm, result
    alone, warm, crowded = run(go())
    assert warm.cached > 0
    assert alone.tokens == warm.tokens == crowded.tokens


@pytest.mark.parametrize("when", ["prefill", "decode", "waiting"])
def test_cancellation_leaks_nothing(model, when):
    rng = np.random.default_rng(7)

    async def go():
        async with make_scheduler(model, 128, max_batch_tokens=64, max_running=2) as s:
            blockers = [s.submit(GenerateRequest(rand_tokens(rng, 50, model.n_vocab), GREEDY, max_tokens=50))
                        for _ in range(2)] if when == "waiting" else []
            h = s.submit(GenerateRequest(rand_tokens(rng, 600, model.n_vocab), GREEDY, max_tokens=200))
            seq = h.sequences[0]
            target = {"prefill": "prefill", "decode": "decode", "waiting": "waiting"}[when]
            while seq.state.value != target:
                await asyncio.sleep(0)
            h.cancel()
            out = await collect(h)
            for b in blockers:
                await collect(b)
            s.check_invariants()
            st = s.alloc.stats()
            return out, st
    out, st = run(go())
    assert out.finish[0] is FinishReason.CANCELLED
    assert st.held_pages == 0 and st.tree.locked_pages == 0


def test_requests_that_can_never_run_are_refused_at_once(model):
    s = make_scheduler(model, 8)
    with pytest.raises(RequestError, match="context length"):
        s.submit(GenerateRequest([1] * 8000, max_tokens=500))
    with pytest.raises(RequestError, match="KV pages"):
        s.submit(GenerateRequest([1] * 100, max_tokens=100))
    with pytest.raises(RequestError, match="vocabulary"):
        s.submit(GenerateRequest([1, 2, model.n_vocab], max_tokens=1))
    with pytest.raises(RequestError, match="non-empty"):
        s.submit(GenerateRequest([], max_tokens=1))
    with pytest.raises(RequestError, match="logit_bias"):
        s.submit(GenerateRequest([1], SamplingParams(logit_bias={10**6: 1.0}), max_tokens=1))
    assert not s.waiting


def test_memory_pressure_preempts_and_outputs_do_not_change(model):
    """A pool too small for all requests at once: preemption and requeueing,
    and every greedy output equals its run alone."""
    rng = np.random.default_rng(8)
    prompts = [rand_tokens(rng, int(rng.integers(20, 70)), model.n_vocab) for _ in range(6)]
    want = [greedy_generate(model, p, 60) for p in prompts]

    async def go():
        async with make_scheduler(model, 14, max_batch_tokens=64) as s:
            hs = [s.submit(GenerateRequest(p, GREEDY, max_tokens=60)) for p in prompts]
            outs = [await collect(h) for h in hs]
            s.check_invariants()
            return s, outs
    s, outs = run(go())
    assert [o.tokens[0] for o in outs] == want
    assert s.counters.preempted > 0


def test_hit_rate_counts_admissions_only(model):
    """Re-pointing a sequence at the tree's pages after inserting them is not a
    cache query: a cold request scores no hits, the same prompt again scores its
    full pages."""
    prompt = list(range(3, 60))

    async def go():
        async with make_scheduler(model, 64) as s:
            await collect(s.submit(GenerateRequest(prompt, GREEDY, max_tokens=5)))
            cold = s.cache.stats()
            await collect(s.submit(GenerateRequest(prompt, GREEDY, max_tokens=5)))
            return cold, s.cache.stats()
    cold, warm = run(go())
    assert (cold.query_tokens, cold.hit_tokens) == (len(prompt) - 1, 0)
    assert warm.query_tokens == 2 * (len(prompt) - 1) and warm.hit_tokens == 48


def test_one_sample_can_be_cancelled_while_the_others_run_on(model):
    rng = np.random.default_rng(9)
    prompt = rand_tokens(rng, 40, model.n_vocab)

    async def go():
        async with make_scheduler(model, 64) as s:
            h = s.submit(GenerateRequest(prompt, SamplingParams(temperature=1.0, seed=2), max_tokens=30, n=3))
            finish: dict[int, FinishReason] = {}
            counts = {0: 0, 1: 0, 2: 0}
            async for ev in h:
                if ev.token is not None:
                    counts[ev.index] += 1
                    if ev.index == 1 and counts[1] == 3:
                        h.cancel_sample(1)
                if ev.finish_reason is not None:
                    finish[ev.index] = ev.finish_reason
            s.check_invariants()
            return finish, counts, s.alloc.stats()
    finish, counts, st = run(go())
    assert finish == {0: FinishReason.LENGTH, 1: FinishReason.CANCELLED, 2: FinishReason.LENGTH}
    assert counts[0] == counts[2] == 30 and counts[1] < 30
    assert st.held_pages == 0
