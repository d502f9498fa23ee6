"""Scheduler settings, frozen and validated once."""
from __future__ import annotations

import dataclasses


class ConfigError(ValueError):
    """A scheduler setting is out of range; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_running: int = 32          # sequences in the running set (decode + prefill)
    max_batch_tokens: int = 512    # tokens per engine step: decode tokens first, then prefill chunks
    max_waiting_scan: int = 64     # waiting requests considered per step for longest-prefix-first
    starvation_s: float = 2.0      # a request waiting longer than this is admitted in arrival order
    context_length: int | None = None  # default: the model's n_ctx_train

    def __post_init__(self) -> None:
        for name, lo in (("max_running", 1), ("max_batch_tokens", 1), ("max_waiting_scan", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an int >= {lo}, got {v!r}")
        if not isinstance(self.starvation_s, (int, float)) or self.starvation_s < 0:
            raise ConfigError(f"starvation_s must be >= 0, got {self.starvation_s!r}")
        if self.context_length is not None and (not isinstance(self.context_length, int) or self.context_length < 2):
            raise ConfigError(f"context_length must be an int >= 2, got {self.context_length!r}")
