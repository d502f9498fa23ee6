"""Per-step statistics and running counters of the scheduler (what /metrics
and /v1/cache will show, and what the benchmarks divide)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class StepStats:
    step: int
    sequences: int          # sequences in this step's batch
    decode_tokens: int
    prefill_tokens: int
    running: int
    waiting: int
    schedule_s: float       # deciding + committing (Python policy)
    forward_s: float        # the engine call


@dataclasses.dataclass(slots=True)
class Counters:
    steps: int = 0
    requests: int = 0
    rejected: int = 0
    finished_stop: int = 0
    finished_length: int = 0
    cancelled: int = 0
    failed: int = 0
    preempted: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    generated_tokens: int = 0
    forked_samples: int = 0
    deferred_for_shared_prefix: int = 0
    schedule_s: float = 0.0
    forward_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)
