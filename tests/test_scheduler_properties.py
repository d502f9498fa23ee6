"""Random arrivals, cancellations and tiny KV budgets against the scheduler on
the real engine: the cache invariants hold at every await point, and every
request either finishes or gets a clear error."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from radixserve.engine import Model
from sched_util import make_scheduler
from scheduler.request import FinishReason, GenerateRequest, RequestError
from scheduler.sampling import SamplingParams

PREFIXES = [[3 + i % 50 for i in range(40)], [60 + i % 70 for i in range(33)]]


@pytest.fixture(scope="module")
def model(tiny_model):
    return Model(tiny_model(weight_type="Q4_0", n_ctx=256, seed=31), threads=1)


arrival = st.tuples(
    st.integers(0, 2),                      # shared prefix: none, or one of two
    st.lists(st.integers(3, 250), max_size=30),  # unique suffix
    st.integers(0, 40),                     # max_tokens (0: prefill only)
    st.integers(1, 3),                      # n samples
    st.integers(0, 6),                      # steps to wait before arriving
    st.one_of(st.none(), st.integers(0, 12)),  # cancel after this many steps
    st.booleans(),                          # cache_prompt
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(arrivals=st.lists(arrival, min_size=1, max_size=10), n_pages=st.integers(3, 24),
       page_size=st.sampled_from([4, 8, 16]), budget=st.integers(4, 64), max_running=st.integers(1, 6))
def test_random_traffic_keeps_invariants_and_every_request_ends(model, arrivals, n_pages, page_size, budget,
                                                               max_running):
    async def go():
        s = make_scheduler(model, n_pages, page_size=page_size, max_batch_tokens=budget,
                           max_running=max_running, starvation_s=0.0)
        outcomes: list[tuple[int, dict[int, FinishReason]]] = []
        async with s:
            async def client(prefix, suffix, max_tokens, n, delay, cancel_after, cache_prompt):
                for _ in range(delay):
                    await asyncio.sleep(0)
                prompt = (PREFIXES[prefix - 1] if prefix else []) + suffix or [5]
                try:
                    h = s.submit(GenerateRequest(prompt, SamplingParams(temperature=0.7, seed=1),
                                                 max_tokens=max_tokens, n=min(n, max_running),
                                                 cache_prompt=cache_prompt))
                except RequestError as e:
                    assert str(e)
                    return
                finish: dict[int, FinishReason] = {}
                steps = 0
                async for ev in h:
                    if ev.finish_reason is not None:
                        finish[ev.index] = ev.finish_reason
                        if ev.finish_reason is FinishReason.ERROR:
                            assert ev.error
                    steps += 1
                    if cancel_after is not None and steps >= cancel_after:
                        h.cancel()
                outcomes.append((h.spec.n, finish))

            async def watcher(done):
                while not done.is_set():
                    s.check_invariants()
                    await asyncio.sleep(0)

            done = asyncio.Event()
            w = asyncio.create_task(watcher(done))
            await asyncio.wait_for(asyncio.gather(*(client(*a) for a in arrivals)), timeout=120)
            done.set()
            await w
            s.check_invariants()
            st_ = s.alloc.stats()
            assert st_.held_pages == 0 and st_.tree.locked_pages == 0
            assert not s.running and not s.waiting and not s.forks
        return outcomes
    outcomes = asyncio.run(go())
    for n, finish in outcomes:
        assert sorted(finish) == list(range(n))  # every sample of every request ended
