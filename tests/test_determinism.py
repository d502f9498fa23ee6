"""Invariant 5 at the engine level: a sequence's logits are bit-for-bit the
same whichever other sequences share its batch, however its prompt is split
into chunks, and whatever the thread count."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from engine_util import engine_logits
from radixserve.engine import Model, SeqInput

PS = 4  # small pages so that chunks straddle page boundaries


def _model(tiny_model, weight_type: str) -> Model:
    return Model(tiny_model(weight_type=weight_type, n_vocab=256, seed=11))


@st.composite
def workloads(draw):
    """A target sequence, its chunking, a thread count, and unrelated neighbours."""
    n = draw(st.integers(2, 40))
    tokens = draw(st.lists(st.integers(0, 255), min_size=n, max_size=n))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=5)))
    neighbours = draw(st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=12), max_size=3))
    threads = draw(st.integers(1, 3))
    return tokens, cuts, neighbours, threads


@pytest.mark.parametrize("weight_type", ["Q4_1", "F16"])
@given(work=workloads())
def test_logits_independent_of_chunking_batch_and_threads(tiny_model, weight_type, work):
    tokens, cuts, neighbours, threads = work
    model = _model(tiny_model, weight_type)
    model.threads = 1
    alone = engine_logits(model, tokens, page_size=PS)

    model.threads = threads
    n_pages = -(-len(tokens) // PS)
    kv = model.kv_store(n_pages=n_pages + sum(-(-len(nb) // PS) for nb in neighbours), page_size=PS)
    own = np.arange(n_pages)
    # neighbours get their own pages after ours, and run alongside every chunk
    tables, next_page = [], n_pages
    for nb in neighbours:
        k = -(-len(nb) // PS)
        tables.append(np.arange(next_page, next_page + k))
        next_page += k
    rows = []
    bounds = [0, *cuts, len(tokens)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        batch = [SeqInput(tokens[a:b], a, own)]
        if i == 0:  # neighbours prefill alongside the first chunk, in front of it
            batch = [SeqInput(nb, 0, t) for nb, t in zip(neighbours, tables)] + batch
        out = model.forward(kv, batch, all_logits=True)
        rows.append(out[len(out) - (b - a):].copy())
    chunked = np.concatenate(rows)
    assert np.array_equal(alone, chunked)


@pytest.mark.parametrize("n_head, n_head_kv", [(4, 2), (8, 1)])
def test_streams_over_a_shared_prompt_equal_each_alone(tiny_model, n_head, n_head_kv):
    """Sixteen streams decoding over one prompt's pages (the radix cache's
    shared prefix) get each one's logits exactly as it gets them decoding
    beside one unrelated sequence, and as a prefill of its whole text does.
    Together, attention batches the queries of every stream that reads a
    page, and repeats a whole shared page's calls for the next page (heads
    4/2: 32 queries a call), or splits them over calls (8/1: 128 queries,
    over the 64 a call takes) and rebuilds them per page; beside the
    neighbour, whose page differs, every page's calls are rebuilt. One
    thread and four attention chunks (of 512 positions): four tasks, enough
    that every task takes all of a KV head's query heads."""
    model = Model(tiny_model(weight_type="Q4_1", n_vocab=256, n_embd=128, n_head=n_head, n_head_kv=n_head_kv,
                             n_ctx=2048, seed=5), threads=1)
    ps, streams = 4, 16
    prompt = [int(t) for t in np.random.default_rng(7).integers(0, 256, 1581)]  # 395 whole pages and one token
    full = len(prompt) // ps
    kv = model.kv_store(n_pages=full + 2 * streams + 1, page_size=ps)
    tables = [np.concatenate([np.arange(full), full + 2 * s + np.arange(2)]) for s in range(streams)]
    neighbour = [full + 2 * streams]
    model.forward(kv, [SeqInput(prompt, 0, tables[0])])
    for s in range(1, streams):  # each stream's copy of the partial last page
        kv.copy_page(int(tables[0][full]), int(tables[s][full]))
    steps = [[(3 * s + i) % 256 for s in range(streams)] for i in range(3)]
    together = [model.forward(kv, [SeqInput([toks[s]], len(prompt) + i, tables[s]) for s in range(streams)]).copy()
                for i, toks in enumerate(steps)]
    for s in range(streams):
        for i in range(3):  # again, beside the neighbour: the same K/V rewritten, the same logits
            pair = model.forward(kv, [SeqInput([steps[i][s]], len(prompt) + i, tables[s]),
                                      SeqInput([7], 0, neighbour)])
            assert np.array_equal(together[i][s], pair[0]), (s, i)
    for s in (0, streams - 1):
        solo = engine_logits(model, prompt + [steps[i][s] for i in range(3)], page_size=ps)
        for i in range(3):
            assert np.array_equal(together[i][s], solo[len(prompt) + i]), (s, i)


@pytest.mark.bundled
def test_bundled_decode_batch_is_bitwise_equal_to_single(bundled_model):
    """Four sequences decoded together give each one's solo logits exactly."""
    prompts = [[504, 3575, 282, 4649, 314], [1604, 3987, 46477, 24, 94, 727], [19556, 905], [28707, 216, 33]]
    solo = [engine_logits(bundled_model, p)[-1] for p in prompts]
    kv = bundled_model.kv_store(n_pages=len(prompts))
    # prefill all four prompts in one batch, then compare the last-token logits
    batch = [SeqInput(p, 0, [i]) for i, p in enumerate(prompts)]
    got = bundled_model.forward(kv, batch)
    for i in range(len(prompts)):
        assert np.array_equal(got[i], solo[i])


@pytest.mark.bundled
def test_forward_releases_the_gil(bundled_model):
    """A long prefill in a worker thread must leave the interpreter free: the
    asyncio loop keeps serving while a step runs."""
    import threading

    kv = bundled_model.kv_store(n_pages=24)
    tokens = list(range(1000, 1384))
    done = threading.Event()
    spins = 0

    def run() -> None:
        bundled_model.forward(kv, [SeqInput(tokens, 0, range(24))])
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    while not done.is_set():
        spins += 1
    worker.join()
    assert spins > 10_000, f"the main thread ran only {spins} loop iterations during the forward"


@st.composite
def long_workloads(draw):
    """A sequence across attention chunks (512 positions; 480 with pages of
    48; one page with pages of 320), cut anywhere, decoded alongside a
    neighbour, any threads."""
    n = draw(st.integers(520, 1000))  # past the first chunk whatever the page size
    seed = draw(st.integers(0, 2**16))
    tokens = [int(t) for t in np.random.default_rng(seed).integers(0, 256, n)]
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=1, max_size=3)))
    page_size = draw(st.sampled_from([4, 16, 48, 320]))
    threads = draw(st.integers(1, 3))
    return tokens, cuts, page_size, threads


@given(work=long_workloads())
def test_long_sequences_independent_of_chunking_batch_and_threads(tiny_model, work):
    tokens, cuts, ps, threads = work
    model = Model(tiny_model(weight_type="Q4_1", n_vocab=256, n_ctx=1024, seed=11))
    model.threads = 1
    alone = engine_logits(model, tokens, page_size=ps)
    model.threads = threads
    n_pages = -(-len(tokens) // ps)
    neighbour = tokens[: cuts[0]][::-1] or [1]
    nb_pages = -(-len(neighbour) // ps)
    kv = model.kv_store(n_pages=n_pages + nb_pages, page_size=ps)
    own, theirs = np.arange(n_pages), np.arange(n_pages, n_pages + nb_pages)
    rows = []
    bounds = [0, *cuts, len(tokens)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        batch = [SeqInput(tokens[a:b], a, own)]
        if i == 0:
            batch = [SeqInput(neighbour, 0, theirs)] + batch
        out = model.forward(kv, batch, all_logits=True)
        rows.append(out[len(out) - (b - a):].copy())
    assert np.array_equal(alone, np.concatenate(rows))
