"""Several Runs (one per prompt of a batched completion) as one stream.

OpenAI numbers a batch's choices prompt by prompt: prompt i's sample j is
choice i * n + j. Each prompt is its own scheduler request, so prompts that
share a prefix share its KV pages through the radix cache and decode in the
same batches; here their deltas are merged in arrival order, renumbered, and
their usage summed. A failure of any prompt ends the whole response, as it
would end a one-prompt request.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence

from .runner import Delta, Run, Usage


class MultiRun:
    """The merged Deltas of `runs`; `usage` and `finish_reasons` read through."""

    def __init__(self, runs: Sequence[Run], n: int) -> None:
        self.runs = list(runs)
        self.n = n

    @property
    def usage(self) -> Usage:
        us = [r.usage for r in self.runs]
        firsts = [u.first_token_s for u in us if u.first_token_s is not None]
        return Usage(prompt_tokens=sum(u.prompt_tokens for u in us),
                     completion_tokens=sum(u.completion_tokens for u in us),
                     cached_tokens=sum(u.cached_tokens for u in us),
                     first_token_s=min(firsts) if firsts else None)

    @property
    def finish_reasons(self) -> list[str | None]:
        return [reason for r in self.runs for reason in r.finish_reasons]

    @property
    def elapsed_s(self) -> float:
        return max(r.elapsed_s for r in self.runs)

    async def deltas(self) -> AsyncIterator[Delta]:
        if len(self.runs) == 1:  # no tasks and no queue for the common case
            async for d in self.runs[0].deltas():
                yield d
            return
        queue: asyncio.Queue[tuple[int, Delta | None, BaseException | None]] = asyncio.Queue()

        async def pump(i: int, run: Run) -> None:
            try:
                async for d in run.deltas():
                    queue.put_nowait((i, d, None))
            except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
                queue.put_nowait((i, None, e))
                return
            queue.put_nowait((i, None, None))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(self.runs)]
        try:
            left = len(tasks)
            while left:
                i, d, err = await queue.get()
                if err is not None:
                    raise err
                if d is None:
                    left -= 1
                    continue
                yield dataclasses.replace(d, index=i * self.n + d.index)
        finally:
            for t in tasks:
                t.cancel()  # each Run's own finally cancels its request
