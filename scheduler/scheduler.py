"""The continuous-batching loop: every shared prefix is one allocation.

Each step is decide, run, commit (only the loop is async; the forward runs
in a worker thread with the GIL released, so the event loop keeps serving):

  decide  release cancelled sequences; give every decoding sequence the page
          its next token needs (preempting the most recently admitted
          sequence when the pool is exhausted); admit waiting sequences,
          longest cached prefix first, each locking its cached prefix and
          allocating pages for the rest of its prompt; fill the token budget
          with decode tokens, then prefill chunks.
  run     one engine call for the whole batch.
  commit  sample the sequences that produced logits; a sequence whose prompt
          is complete inserts its full pages into the tree at once (so
          identical prompts arriving later, and its own forks, share them);
          finished sequences insert everything they computed and release.

A waiting sequence whose prompt shares more than the cache holds with a
prompt being prefilled right now waits for that prefill instead of
computing the same prefix twice.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import os
import time
from collections.abc import Hashable, Sequence as Seq

import numpy as np

from .config import SchedulerConfig
from .engine_protocol import SEQ_FIELDS, Engine, KVPages
from .errors import OutOfPages
from .page_allocator import PageAllocator
from .radix_cache import RadixCache
from .request import (FinishReason, GenerateRequest, RequestError, RequestHandle, Sequence, SeqState,
                      TokenEvent)
from .sampling import SamplerState, SamplingError, sample_batch
from .step_stats import Counters, StepStats

log = logging.getLogger("radixserve.scheduler")


@dataclasses.dataclass(slots=True)
class _Entry:
    seq: Sequence
    start: int
    n: int
    want_logits: bool
    decode: bool


class Scheduler:
    """Batches every running sequence through one engine over one radix cache."""

    def __init__(self, engine: Engine, kv: KVPages, config: SchedulerConfig | None = None) -> None:
        self.engine = engine
        self.kv = kv
        self.config = config or SchedulerConfig()
        self.page_size = kv.page_size
        self.cache = RadixCache(self.page_size)
        self.alloc = PageAllocator(kv.n_pages, self.cache)
        self.n_ctx = min(self.config.context_length or engine.n_ctx_train, engine.n_ctx_train)
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.forks: dict[int, list[Sequence]] = {}  # id(sample 0) -> its waiting siblings
        self.counters = Counters()
        self.last_step: StepStats | None = None
        self.step_log: collections.deque[StepStats] = collections.deque(maxlen=4096)  # recent steps
        self.step_no = 0
        self._system: tuple[list[int], Hashable | None] | None = None
        self._logits = np.empty((self.config.max_running, engine.n_vocab), dtype=np.float32)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="radixserve-engine")
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public API

    def submit(self, spec: GenerateRequest, *, _pin: bool = False) -> RequestHandle:
        """Queue a request; its events arrive on the returned handle. Raises
        RequestError at once for a request that could never run."""
        self._validate(spec)
        handle = RequestHandle(spec, self)
        handle.pin_on_finish = _pin
        # sample i draws from seed + i: a seeded request is reproducible, its samples differ
        base = spec.sampling.seed if spec.sampling.seed is not None else int.from_bytes(os.urandom(4), "little")
        prompt = list(spec.prompt)
        for i in range(spec.n):
            sampler = SamplerState(dataclasses.replace(spec.sampling, seed=base + i), prompt)
            handle.sequences.append(Sequence(handle, i, sampler))
        first, rest = handle.sequences[0], handle.sequences[1:]
        self.waiting.append(first)
        if rest:
            for s in rest:
                s.state = SeqState.FORKING
            self.forks[id(first)] = rest
        self.counters.requests += 1
        self.counters.prompt_tokens += len(first.tokens)
        self._wake()
        return handle

    async def set_system_prompt(self, tokens: Seq[int], namespace: Hashable | None = None) -> int:
        """Prefill and pin a prefix (batched with whatever else runs); then unpin
        the previous one, which stays usable by requests that hold it and ages
        out by LRU. Returns the number of tokens pinned (page-aligned)."""
        tokens = [int(t) for t in tokens]
        handle = self.submit(GenerateRequest(prompt=tokens, max_tokens=0, namespace=namespace), _pin=True)
        async for ev in handle:
            if ev.finish_reason is not FinishReason.LENGTH:
                raise RequestError(f"system prompt prefill ended with {ev.finish_reason}: {ev.error}")
        old, self._system = self._system, (tokens, namespace)
        if old is not None and len(old[0]) >= self.page_size:
            self.cache.unpin(old[0], old[1])
        return len(tokens) - len(tokens) % self.page_size

    @property
    def system_prompt(self) -> list[int] | None:
        return None if self._system is None else list(self._system[0])

    def stats(self) -> dict[str, object]:
        """Pool and tree statistics, queue lengths and counters (one dict, for fronts)."""
        out: dict[str, object] = dict(self.alloc.stats().as_dict())
        out.update(running=len(self.running), waiting=len(self.waiting) + sum(map(len, self.forks.values())))
        out["counters"] = self.counters.as_dict()
        if self.last_step is not None:
            out["last_step"] = dataclasses.asdict(self.last_step)
        return out

    async def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="radixserve-scheduler")

    async def stop(self) -> None:
        """Cancel every request, stop the loop, release everything."""
        for s in list(self.running) + list(self.waiting):
            s.request.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)  # no forward writes into a page after this
        self._release_cancelled()

    async def __aenter__(self) -> "Scheduler":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def check_invariants(self) -> None:
        """Page conservation across the pool, the tree and every sequence's private pages."""
        self.alloc.check_invariants()
        private = [p for s in self.running for p in s.private_pages]
        held = self.alloc.stats().held_pages
        if len(private) != held or len(set(private)) != len(private):
            raise AssertionError(f"sequences hold {len(private)} private pages, the pool says {held}")
        for s in self.waiting:
            if s.pages or s.lock is not None:
                raise AssertionError("a waiting sequence holds pages")

    # ------------------------------------------------------------------ validation

    def _validate(self, spec: GenerateRequest) -> None:
        if not isinstance(spec, GenerateRequest):
            raise RequestError(f"submit takes a GenerateRequest, got {type(spec).__name__}")
        prompt = np.asarray(spec.prompt)
        if prompt.ndim != 1 or prompt.size == 0:
            raise RequestError("the prompt must be a non-empty list of token ids")
        if not np.issubdtype(prompt.dtype, np.integer):
            raise RequestError(f"prompt token ids must be integers, got {prompt.dtype}")
        bad = (prompt < 0) | (prompt >= self.engine.n_vocab)
        if bad.any():
            raise RequestError(f"token id {int(prompt[bad][0])} at position {int(np.argmax(bad))} "
                               f"is outside the vocabulary [0, {self.engine.n_vocab})")
        if isinstance(spec.max_tokens, bool) or not isinstance(spec.max_tokens, int) or spec.max_tokens < 0:
            raise RequestError(f"max_tokens must be a non-negative int, got {spec.max_tokens!r}")
        if isinstance(spec.n, bool) or not isinstance(spec.n, int) or not 1 <= spec.n <= self.config.max_running:
            raise RequestError(f"n must be an int in [1, {self.config.max_running}], got {spec.n!r}")
        total = prompt.size + spec.max_tokens
        if total > self.n_ctx:
            raise RequestError(f"the prompt ({prompt.size} tokens) plus max_tokens ({spec.max_tokens}) "
                               f"exceeds the context length of {self.n_ctx} tokens")
        need = -(-total // self.page_size)
        if need > self.kv.n_pages:
            raise RequestError(f"the prompt plus max_tokens needs {need} KV pages; the store has {self.kv.n_pages}")
        try:
            spec.sampling.check_vocab(self.engine.n_vocab)
        except SamplingError as e:
            raise RequestError(str(e)) from None

    # ------------------------------------------------------------------ the loop

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            t0 = time.perf_counter()
            plan = self._decide()
            if not plan:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            t1 = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self._executor, self._forward, plan)
            except Exception as e:  # the engine refused this batch: fail its sequences, keep serving
                t2 = time.perf_counter()
                for entry in plan:
                    self._finish(entry.seq, FinishReason.ERROR, error=f"engine error: {e}")
            else:
                t2 = time.perf_counter()
                try:
                    self._commit(plan, logits)
                except Exception as e:  # a bug must not hang every client: fail this batch, log, go on
                    log.exception("scheduler commit failed; failing the batch's sequences")
                    for entry in plan:
                        self._finish(entry.seq, FinishReason.ERROR, error=f"internal error: {e}")
            t3 = time.perf_counter()
            self._record(plan, (t1 - t0) + (t3 - t2), t2 - t1)

    def _record(self, plan: list[_Entry], schedule_s: float, forward_s: float) -> None:
        self.step_no += 1
        c = self.counters
        c.steps += 1
        decode = sum(e.n for e in plan if e.decode)
        prefill = sum(e.n for e in plan) - decode
        c.decode_tokens += decode
        c.prefill_tokens += prefill
        c.schedule_s += schedule_s
        c.forward_s += forward_s
        self.last_step = StepStats(self.step_no, len(plan), decode, prefill, len(self.running),
                                   len(self.waiting), schedule_s, forward_s)
        self.step_log.append(self.last_step)

    def _forward(self, plan: list[_Entry]) -> np.ndarray:
        tokens, seqs, pages = self._arrays(plan)
        return self.engine.forward_arrays(self.kv, tokens, seqs, pages, out=self._logits)

    def _arrays(self, plan: list[_Entry]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seqs = np.empty((len(plan), SEQ_FIELDS), dtype=np.int32)
        toks: list[int] = []
        pages: list[int] = []
        for i, e in enumerate(plan):
            n_pages = -(-(e.start + e.n) // self.page_size)
            seqs[i] = (len(toks), e.n, e.start, len(pages), n_pages, int(e.want_logits))
            toks.extend(e.seq.tokens[e.start:e.start + e.n])
            pages.extend(e.seq.pages[:n_pages])
        return np.asarray(toks, dtype=np.int32), seqs, np.asarray(pages, dtype=np.int32)

    # ------------------------------------------------------------------ decide

    def _decide(self) -> list[_Entry]:
        self._release_cancelled()
        budget = self.config.max_batch_tokens
        plan: list[_Entry] = []
        # decode: first a page for every next token (this may preempt the
        # newest sequences), then one entry per sequence still decoding
        for seq in [s for s in self.running if s.state is SeqState.DECODE]:
            if seq.state is SeqState.DECODE:
                self._ensure_page(seq)
        for seq in self.running:
            if seq.state is SeqState.DECODE and budget > 0:
                plan.append(_Entry(seq, seq.computed, 1, True, True))
                budget -= 1
        # prefill chunks of admitted sequences, oldest first
        for seq in self.running:
            if budget <= 0:
                break
            if seq.state is SeqState.PREFILL:
                budget -= self._add_prefill(plan, seq, budget)
        # admit waiting sequences while there is room
        while self.waiting and budget > 0 and len(self.running) < self.config.max_running:
            seq = self._pick_waiting()
            if seq is None or not self._admit(seq):
                break
            budget -= self._add_prefill(plan, seq, budget)
        if not plan and self.waiting and not self.running:
            head = self.waiting[0]  # nothing runs and it still does not fit: it never will
            self._finish(head, FinishReason.ERROR, error="the KV store is too full of pinned prefixes for this request")
        return plan

    def _add_prefill(self, plan: list[_Entry], seq: Sequence, budget: int) -> int:
        n = min(seq.n_prompt - seq.computed, budget)
        if n <= 0:
            return 0
        last = seq.computed + n == seq.n_prompt
        plan.append(_Entry(seq, seq.computed, n, last and seq.request.spec.max_tokens > 0, False))
        return n

    def _ensure_page(self, seq: Sequence) -> bool:
        """The page for position seq.computed; preempts the newest sequences
        when the pool is exhausted. False when seq itself was preempted."""
        if seq.computed < len(seq.pages) * self.page_size:
            return True
        while True:
            try:
                seq.pages.extend(int(p) for p in self.alloc.allocate(1))
                return True
            except OutOfPages:
                victim = max(self.running, key=lambda s: s.admitted_step)
                if victim is seq and len(self.running) == 1:
                    self._finish(seq, FinishReason.ERROR, error="the KV store is too small for this sequence")
                    return False
                self._preempt(victim)
                if victim is seq:
                    return False

    def _pick_waiting(self) -> Sequence | None:
        """Longest cached prefix first among the first max_waiting_scan; the
        head goes first once it has waited starvation_s. Sequences whose
        prompt is being computed by another prefill right now wait for it."""
        now = time.monotonic()
        head = self.waiting[0]
        scan = self.waiting[: self.config.max_waiting_scan]
        inflight = [s for s in self.running if s.state is SeqState.PREFILL and s.request.spec.cache_prompt]
        best, best_len = None, -1
        for seq in scan:
            spec = seq.request.spec
            cached = self.cache.peek(seq.tokens[: seq.n_prompt - 1], spec.namespace) if spec.cache_prompt else 0
            if spec.cache_prompt and self._shares_inflight(seq, cached, inflight):
                self.counters.deferred_for_shared_prefix += 1
                continue
            if seq is head and now - seq.arrival >= self.config.starvation_s:
                return seq
            if cached > best_len:
                best, best_len = seq, cached
        return best

    def _shares_inflight(self, seq: Sequence, cached: int, inflight: list[Sequence]) -> bool:
        """Does a prefill in progress cover at least one more page of seq's prompt than the cache?"""
        want = (seq.n_prompt - 1) // self.page_size * self.page_size
        if want <= cached:
            return False
        mine = np.asarray(seq.tokens[:want], dtype=np.int64)
        for other in inflight:
            if other.request.spec.namespace != seq.request.spec.namespace:
                continue
            theirs = np.asarray(other.tokens[: min(want, other.n_prompt)], dtype=np.int64)
            n = min(mine.size, theirs.size)
            diff = np.flatnonzero(mine[:n] != theirs[:n])
            common = int(diff[0]) if diff.size else n
            if common // self.page_size * self.page_size > cached:
                return True
        return False

    def _admit(self, seq: Sequence) -> bool:
        """Lock the cached prefix, allocate pages for the rest of the prompt."""
        spec = seq.request.spec
        if spec.cache_prompt:
            m = self.cache.match(seq.tokens[: seq.n_prompt - 1], spec.namespace)
            lock = self.cache.lock(m)
            shared = [int(p) for p in m.pages]
        else:
            m, lock, shared = None, None, []
        need = -(-seq.n_prompt // self.page_size) - len(shared)
        try:
            own = [int(p) for p in self.alloc.allocate(need)] if need > 0 else []
        except OutOfPages:
            if lock is not None:
                self.cache.unlock(lock)
            return False
        self.waiting.remove(seq)
        seq.lock, seq.pages, seq.n_shared = lock, shared + own, len(shared)
        seq.computed = m.n_tokens if m is not None else 0
        if not seq.reported_cached:
            seq.cached_tokens = seq.computed
            self.counters.cached_prompt_tokens += seq.computed
        seq.state = SeqState.PREFILL
        seq.admitted_step = self.step_no
        self.running.append(seq)
        return True

    # ------------------------------------------------------------------ commit

    def _commit(self, plan: list[_Entry], logits: np.ndarray) -> None:
        sampled: list[tuple[Sequence, np.ndarray]] = []
        row = 0
        for e in plan:
            e.seq.computed += e.n
            if e.want_logits:
                sampled.append((e.seq, logits[row]))
                row += 1
        for e in plan:  # prompts just completed: share their pages, fork siblings
            seq = e.seq
            if seq.state is SeqState.PREFILL and seq.computed == seq.n_prompt:
                if seq.request.spec.cache_prompt:
                    self._share(seq)
                if seq.request.spec.max_tokens == 0:
                    self._finish(seq, FinishReason.LENGTH)
                    continue
                seq.state = SeqState.DECODE
                parent_row = next(r for s, r in sampled if s is seq)
                for sib in self.forks.pop(id(seq), []):
                    if seq.request.spec.cache_prompt and self._fork(seq, sib):
                        sampled.append((sib, parent_row))  # same logits, its own sampler
                    else:
                        sib.state = SeqState.WAITING
                        self.waiting.append(sib)
        live = [(s, r) for s, r in sampled
                if s.state is SeqState.DECODE and not s.request.cancelled and not s.cancelled]
        if not live:
            return
        rows = np.stack([r for _, r in live]) if len(live) > 1 else live[0][1][None, :]
        choices = sample_batch(rows, [s.sampler for s, _ in live])
        for (seq, _), choice in zip(live, choices):
            self._emit_token(seq, choice)

    def _emit_token(self, seq: Sequence, choice) -> None:  # type: ignore[no-untyped-def]
        spec = seq.request.spec
        seq.tokens.append(choice.token)
        seq.n_generated += 1
        self.counters.generated_tokens += 1
        finish = None
        if choice.token in spec.stop_ids:
            finish = FinishReason.STOP
        elif seq.n_generated >= spec.max_tokens or len(seq.tokens) >= self.n_ctx:
            finish = FinishReason.LENGTH
        cached = 0 if seq.reported_cached else seq.cached_tokens
        seq.reported_cached = True
        seq.request.events.put_nowait(TokenEvent(seq.index, choice.token, None, choice.logprob, choice.top,
                                                 cached))
        if finish is not None:
            self._finish(seq, finish, emit=False)
            seq.request.events.put_nowait(TokenEvent(seq.index, None, finish))

    def _share(self, seq: Sequence) -> None:
        """Insert seq's computed full pages into the tree and re-point its table
        at the tree's pages (bitwise the same K/V: outputs are deterministic)."""
        spec = seq.request.spec
        full = seq.computed // self.page_size
        if full <= seq.n_shared:
            return
        n = full * self.page_size
        dups = self.cache.insert(seq.tokens[:n], seq.pages[:full], spec.namespace)
        m = self.cache.match(seq.tokens[:n], spec.namespace, count=False)  # re-pointing, not a query
        lock = self.cache.lock(m)
        if seq.lock is not None:
            self.cache.unlock(seq.lock)
        seq.lock = lock
        seq.pages[:m.n_pages] = [int(p) for p in m.pages]
        seq.n_shared = m.n_pages
        if dups.size:
            self.alloc.free(dups)

    def _fork(self, parent: Sequence, sib: Sequence) -> bool:
        """sib takes parent's prompt: the tree's full pages (locked) and a copy
        of the partial last page. False (sib queued normally) when no page is free."""
        spec = parent.request.spec
        partial = parent.n_prompt % self.page_size != 0
        try:
            own = [int(p) for p in self.alloc.allocate(1)] if partial else []
        except OutOfPages:
            return False
        m = self.cache.match(parent.tokens[: parent.n_shared * self.page_size], spec.namespace, count=False)
        sib.lock = self.cache.lock(m)
        sib.pages = [int(p) for p in m.pages] + own
        sib.n_shared = m.n_pages
        if partial:
            self.kv.copy_page(parent.pages[m.n_pages], own[0])
        sib.computed = parent.n_prompt
        sib.cached_tokens = parent.cached_tokens
        sib.state = SeqState.DECODE
        sib.admitted_step = self.step_no
        self.running.append(sib)
        self.counters.forked_samples += 1
        return True

    # ------------------------------------------------------------------ release

    def _release(self, seq: Sequence, keep_cache: bool) -> None:
        """Give back everything seq holds; with keep_cache its computed full
        pages go into the tree first (the next turn of a chat hits them)."""
        if seq.pages:
            if keep_cache and seq.request.spec.cache_prompt:
                self._share(seq)
            if seq.request.pin_on_finish and seq.n_shared:
                self.cache.pin(seq.tokens[: seq.n_shared * self.page_size], seq.request.spec.namespace)
            if seq.private_pages:
                self.alloc.free(seq.private_pages)
        if seq.lock is not None:
            self.cache.unlock(seq.lock)
        seq.pages, seq.n_shared, seq.lock = [], 0, None

    def _finish(self, seq: Sequence, reason: FinishReason, *, error: str | None = None, emit: bool = True) -> None:
        if seq.state is SeqState.DONE:
            return
        self._release(seq, keep_cache=reason in (FinishReason.STOP, FinishReason.LENGTH, FinishReason.CANCELLED))
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        seq.state = SeqState.DONE
        req = seq.request
        req.open_samples -= 1
        c = self.counters
        if reason is FinishReason.STOP:
            c.finished_stop += 1
        elif reason is FinishReason.LENGTH:
            c.finished_length += 1
        elif reason is FinishReason.CANCELLED:
            c.cancelled += 1
        else:
            c.failed += 1
        if emit:
            req.events.put_nowait(TokenEvent(seq.index, None, reason, error=error))
        for sib in self.forks.pop(id(seq), []):  # siblings of a sample that never prefilled
            if req.cancelled or reason is FinishReason.ERROR:
                self._finish(sib, reason, error=error)
            else:
                sib.state = SeqState.WAITING
                self.waiting.append(sib)

    def _preempt(self, seq: Sequence) -> None:
        """Free seq's pages and requeue it at the front; it resumes from
        whatever of its tokens is still cached (its sampler state is kept, so
        its output is the same as if it had never been interrupted)."""
        self._release(seq, keep_cache=True)
        self.running.remove(seq)
        seq.n_prompt = len(seq.tokens)
        seq.computed = 0
        seq.state = SeqState.WAITING
        self.waiting.insert(0, seq)
        self.counters.preempted += 1

    def _release_cancelled(self) -> None:
        for seq in [s for s in self.running + self.waiting if s.request.cancelled or s.cancelled]:
            self._finish(seq, FinishReason.CANCELLED)
        for parent_id, sibs in list(self.forks.items()):
            for sib in [s for s in sibs if s.request.cancelled or s.cancelled]:
                sibs.remove(sib)
                self._finish(sib, FinishReason.CANCELLED)
            if not sibs:
                del self.forks[parent_id]
