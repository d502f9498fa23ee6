"""Prometheus metrics (prometheus-client), one registry per app.

Request-level series are updated by the handlers as requests end; pool, tree
and queue gauges and the scheduler's counters are read at scrape time from
the scheduler, and its per-step timings are fed into histograms from its
step log (each step observed once).
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .state import ServerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STEP = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("radixserve_requests", "HTTP generation requests by endpoint and outcome",
                                ["endpoint", "outcome"], registry=r)
        self.prompt_tokens = Counter("radixserve_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.cached_tokens = Counter("radixserve_cached_prompt_tokens", "prompt tokens served from the prefix cache",
                                     registry=r)
        self.generated_tokens = Counter("radixserve_generated_tokens", "tokens generated", registry=r)
        self.ttft = Histogram("radixserve_time_to_first_token_seconds", "time to first token", buckets=_LATENCY,
                              registry=r)
        self.duration = Histogram("radixserve_request_duration_seconds", "request duration", buckets=_LATENCY,
                                  registry=r)
        self.step_forward = Histogram("radixserve_step_forward_seconds", "engine forward time per scheduler step",
                                      buckets=_STEP, registry=r)
        self.step_schedule = Histogram("radixserve_step_schedule_seconds", "Python policy time per scheduler step",
                                       buckets=_STEP, registry=r)
        self.step_batch = Histogram("radixserve_step_sequences", "sequences per scheduler step",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self._last_step = 0
        r.register(_SchedulerCollector(state))

    def observe_request(self, endpoint: str, outcome: str, prompt: int, cached: int, generated: int,
                        ttft_s: float | None, duration_s: float) -> None:
        self.requests.labels(endpoint, outcome).inc()
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        self.generated_tokens.inc(generated)
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        self.duration.observe(duration_s)

    def render(self) -> bytes:
        self._feed_steps()
        return generate_latest(self.registry)

    def _feed_steps(self) -> None:
        loaded = self.state.loaded
        if loaded is None:
            return
        for st in list(loaded.scheduler.step_log):
            if st.step > self._last_step:
                self.step_forward.observe(st.forward_s)
                self.step_schedule.observe(st.schedule_s)
                self.step_batch.observe(st.sequences)
        if loaded.scheduler.step_log:
            self._last_step = max(self._last_step, loaded.scheduler.step_log[-1].step)


class _SchedulerCollector(Collector):
    """Gauges and counters read from the scheduler at scrape time."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        loaded = self.state.loaded
        if loaded is None:
            return
        s = loaded.scheduler.stats()
        pages = GaugeMetricFamily("radixserve_kv_pages", "KV pages by state", labels=["state"])
        for label, key in (("total", "total_pages"), ("free", "free_pages"), ("in_tree", "in_tree_pages"),
                           ("private", "held_pages"), ("locked", "locked_pages"), ("pinned", "pinned_pages"),
                           ("evictable", "evictable_pages")):
            pages.add_metric([label], float(s[key]))  # type: ignore[arg-type]
        yield pages
        yield GaugeMetricFamily("radixserve_requests_running", "sequences running", value=float(s["running"]))  # type: ignore[arg-type]
        yield GaugeMetricFamily("radixserve_requests_waiting", "sequences waiting", value=float(s["waiting"]))  # type: ignore[arg-type]
        yield GaugeMetricFamily("radixserve_cache_hit_rate", "fraction of queried prompt tokens served from cache",
                                value=float(s["hit_rate"]))  # type: ignore[arg-type]
        yield CounterMetricFamily("radixserve_cache_query_tokens", "tokens looked up in the prefix cache",
                                  value=float(s["query_tokens"]))  # type: ignore[arg-type]
        yield CounterMetricFamily("radixserve_cache_hit_tokens", "tokens found in the prefix cache",
                                  value=float(s["hit_tokens"]))  # type: ignore[arg-type]
        yield CounterMetricFamily("radixserve_cache_evicted_pages", "pages evicted from the prefix cache",
                                  value=float(s["evicted_pages"]))  # type: ignore[arg-type]
        counters = s["counters"]
        assert isinstance(counters, dict)
        for name in ("steps", "preempted", "prefill_tokens", "decode_tokens", "forked_samples"):
            yield CounterMetricFamily(f"radixserve_scheduler_{name}", f"scheduler {name.replace('_', ' ')}",
                                      value=float(counters[name]))
