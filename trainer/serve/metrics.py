"""The server's Prometheus metrics: the signals a canary analysis reads, named once here (and in the README)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

PREFIX = "llmops_serve_"

METRICS: dict[str, str] = {
    "llmops_serve_requests_total": "HTTP requests by route and status code (labels: route, code)",
    "llmops_serve_request_duration_seconds": "Time from receiving a request to its last byte (label: route)",
    "llmops_serve_time_to_first_token_seconds": "Time from receiving a generation request to its first token",
    "llmops_serve_time_per_output_token_seconds": "Mean time between output tokens of one choice, after the first",
    "llmops_serve_output_tokens_total": "Tokens generated; its rate is the output throughput in tokens/s",
    "llmops_serve_prompt_tokens_total": "Prompt tokens of admitted requests",
    "llmops_serve_queue_depth": "Sequences waiting for a batch slot",
    "llmops_serve_running_sequences": "Sequences in the running batch",
    "llmops_serve_kv_cache_usage_ratio": "Fraction of the KV cache's token positions in use",
    "llmops_serve_prefix_cache_query_tokens_total": "Prompt tokens looked up in the prefix cache",
    "llmops_serve_prefix_cache_hit_tokens_total": "Prompt tokens found in the prefix cache (copied, not computed)",
}

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _name(full: str) -> str:
    # prometheus_client appends `_total` to counters itself.
    return full.removesuffix("_total")


class ServerMetrics:
    """One registry per server, so several servers (tests) in one process never share counters."""

    def __init__(self) -> None:
        disable_created_metrics()  # `_created` series double the exposition and no dashboard reads them
        self.registry = CollectorRegistry()
        m, r = METRICS, self.registry
        self.requests = Counter(_name(n := "llmops_serve_requests_total"), m[n], ["route", "code"], registry=r)
        self.duration = Histogram(n := "llmops_serve_request_duration_seconds", m[n], ["route"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(n := "llmops_serve_time_to_first_token_seconds", m[n], buckets=LATENCY_BUCKETS,
                              registry=r)
        self.tpot = Histogram(n := "llmops_serve_time_per_output_token_seconds", m[n], buckets=TOKEN_BUCKETS,
                              registry=r)
        self.output_tokens = Counter(_name(n := "llmops_serve_output_tokens_total"), m[n], registry=r)
        self.prompt_tokens = Counter(_name(n := "llmops_serve_prompt_tokens_total"), m[n], registry=r)
        self.queue_depth = Gauge(n := "llmops_serve_queue_depth", m[n], registry=r)
        self.running = Gauge(n := "llmops_serve_running_sequences", m[n], registry=r)
        self.kv_cache = Gauge(n := "llmops_serve_kv_cache_usage_ratio", m[n], registry=r)

    def watch_engine(self, queued: Callable[[], float], running: Callable[[], float],
                     kv_usage: Callable[[], float]) -> None:
        """Engine gauges are read when scraped, so the decode loop pays nothing for them."""
        self.queue_depth.set_function(queued)
        self.running.set_function(running)
        self.kv_cache.set_function(kv_usage)

    def watch_prefix_cache(self, queried: Callable[[], float], hits: Callable[[], float]) -> None:
        """The engine counts; these counters read its totals when scraped."""
        self.registry.register(_EngineCounters({"llmops_serve_prefix_cache_query_tokens_total": queried,
                                                "llmops_serve_prefix_cache_hit_tokens_total": hits}))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCounters(Collector):
    """Counters whose values live in the engine (its thread increments plain ints: no lock per step)."""

    def __init__(self, read: dict[str, Callable[[], float]]):
        self.read = read

    def collect(self):
        for full, value in self.read.items():
            family = CounterMetricFamily(_name(full), METRICS[full])
            family.add_metric([], value())
            yield family
