"""The model servers' Prometheus metrics as a canary analysis reads them: scrapes, their differences, and windows.

Pure (no I/O). A `Snapshot` holds the cumulative samples of one scrape that the checks need; `difference` turns
two scrapes of one pod into the increases of the interval between them (a restarted pod counts from zero, as
Prometheus' increase() does); `merge` sums several pods; `window` reduces increases to the numbers a check
judges: generation requests, 5xx errors and three p99 latencies, computed as PromQL's histogram_quantile does, so a
direct scrape and a Prometheus query give the same verdict.

What counts, for both runtimes:
- requests: HTTP requests to the generation routes (/v1/completions, /v1/chat/completions), any status; 4xx are
  the client's fault but still requests;
- errors: the 5xx among them;
- ttft / tpot: time to first token and time per output token after the first (what a streaming client feels;
  a stream's lifetime says little about the server);
- latency: receipt of a generation request to its last byte.

vLLM has no 5xx counter of its own: its OpenAI server is instrumented by prometheus-fastapi-instrumentator, whose
`http_requests_total{handler, method, status}` counts every response by route with the status grouped ("2xx",
"4xx", "5xx"). That counter is read exactly as ours. `vllm:request_success_total` cannot replace it: it counts
only requests the engine finished (a request refused or crashed before or outside the engine never reaches it),
so with it alone the error rate is unknown (None), and its sum over finished reasons only stands in for the
request count when the HTTP counter is missing (e.g. an instrumentator-less build).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from llmops.operator.api.v1alpha1.deployment import Runtime

GENERATION_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions"})
"""The routes whose requests a check counts (the same set trainer/serve/server.py admits as generation)."""

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
"""(sample name, sorted labels): one time series of one scrape."""
Buckets = tuple[tuple[float, float], ...]
"""A classic histogram's (upper bound, cumulative count) pairs, +Inf included, sorted by bound."""


@dataclass(frozen=True)
class MetricNames:
    """Which series one runtime's checks read. Histograms are named by their base name (without `_bucket`); a
    tuple lists alternatives, preferred first, of which the first the server exports is used."""

    requests: str
    """Counter sample of HTTP requests by route and status."""
    route_label: str
    status_label: str
    ttft: tuple[str, ...]
    tpot: tuple[str, ...]
    latency: tuple[str, ...]
    latency_by_route: bool
    """The latency histogram carries the route label (ours, every route) rather than counting only generation."""
    finished: str | None = None
    """Counter of finished generations: the request count when the HTTP counter is missing (errors unknown)."""

    def histograms(self) -> tuple[str, ...]:
        return (*self.ttft, *self.tpot, *self.latency)

    def wanted(self) -> frozenset[str]:
        """Every sample name a snapshot keeps; the rest of an exposition is dropped at parse time."""
        counters = {self.requests} | ({self.finished} if self.finished else set())
        return frozenset(counters | {f"{name}_bucket" for name in self.histograms()})


LLMOPS_NAMES = MetricNames(
    requests="llmops_serve_requests_total", route_label="route", status_label="code",
    ttft=("llmops_serve_time_to_first_token_seconds",),
    tpot=("llmops_serve_time_per_output_token_seconds",),
    latency=("llmops_serve_request_duration_seconds",), latency_by_route=True)
"""Our server (trainer/serve/metrics.py)."""

VLLM_NAMES = MetricNames(
    requests="http_requests_total", route_label="handler", status_label="status",
    ttft=("vllm:time_to_first_token_seconds",),
    # The per-request mean (decode time / decode tokens, vLLM >= 0.11) is our definition of TPOT; older vLLM
    # has only per-token gaps: inter_token_latency (0.10), and before it time_per_output_token, which despite
    # its name observed the same gaps.
    tpot=("vllm:request_time_per_output_token_seconds", "vllm:inter_token_latency_seconds",
          "vllm:time_per_output_token_seconds"),
    latency=("vllm:e2e_request_latency_seconds",), latency_by_route=False,
    finished="vllm:request_success_total")
"""vLLM's OpenAI-compatible server (V1 engine metrics plus prometheus-fastapi-instrumentator's HTTP metrics)."""


def names_for(runtime: Runtime) -> MetricNames:
    return VLLM_NAMES if runtime is Runtime.VLLM else LLMOPS_NAMES


@dataclass(frozen=True)
class Snapshot:
    """The samples a check reads from one scrape of one pod (cumulative), or an increase or a sum of pods."""

    names: MetricNames
    values: Mapping[SeriesKey, float] = field(default_factory=dict)


def parse(text: str, runtime: Runtime | None = None) -> Snapshot:
    """Parse a Prometheus text exposition. Without `runtime`, a server exporting `vllm:` series is vLLM."""
    families = list(text_string_to_metric_families(text))
    if runtime is None:
        runtime = Runtime.VLLM if any(f.name.startswith("vllm:") for f in families) else Runtime.LLMOPS
    names = names_for(runtime)
    wanted = names.wanted()
    values: dict[SeriesKey, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name in wanted and not math.isnan(sample.value):
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[key] = values.get(key, 0.0) + sample.value
    return Snapshot(names, values)


def merge(snapshots: Iterable[Snapshot]) -> Snapshot | None:
    """Sum snapshots (or increases) of several pods of one revision, series by series; None for none."""
    snapshots = list(snapshots)
    if not snapshots:
        return None
    values: dict[SeriesKey, float] = {}
    for snapshot in snapshots:
        if snapshot.names != snapshots[0].names:
            raise ValueError("cannot merge snapshots of different runtimes")
        for key, value in snapshot.values.items():
            values[key] = values.get(key, 0.0) + value
    return Snapshot(snapshots[0].names, values)


def restarted(previous: Snapshot, current: Snapshot) -> bool:
    """A counter went down: the server process restarted in between and every counter began again at zero.

    Prometheus' increase() corrects a reset series by series; a restart resets them all at once, and a series that
    grew past its old value since would hide it, so one decrease anywhere marks the whole scrape as restarted."""
    return any(current.values.get(key, 0.0) < value for key, value in previous.values.items())


def difference(previous: Snapshot, current: Snapshot) -> Snapshot:
    """The increase of every series from `previous` to `current` (two scrapes of the same pod). After a restart
    the current values are the increase (counted from zero); a series new since `previous` counts from zero."""
    if previous.names != current.names or restarted(previous, current):
        return current
    return Snapshot(current.names, {key: value - previous.values.get(key, 0.0)
                                    for key, value in current.values.items()})


# --- Reduction to a window ------------------------------------------------------------------------------------

def _select(snapshot: Snapshot, name: str, where: Callable[[dict[str, str]], bool]) -> list[tuple[dict, float]]:
    return [(dict(labels), value) for (sample, labels), value in snapshot.values.items()
            if sample == name and where(dict(labels))]


def _total(snapshot: Snapshot, name: str, where: Callable[[dict[str, str]], bool]) -> float | None:
    """Sum of the selected series; None when the server exports none (no data, not zero)."""
    selected = _select(snapshot, name, where)
    return sum(value for _, value in selected) if selected else None


def buckets(snapshot: Snapshot, names: tuple[str, ...],
            where: Callable[[dict[str, str]], bool] | None = None) -> Buckets | None:
    """The first exported histogram of `names`, summed over every label but `le` (PromQL's `sum by (le)`)."""
    for name in names:
        selected = _select(snapshot, f"{name}_bucket", where or _every)
        if selected:
            counts: dict[float, float] = {}
            for labels, value in selected:
                bound = float(labels["le"])
                counts[bound] = counts.get(bound, 0.0) + value
            return tuple(sorted(counts.items()))
    return None


def histogram_quantile(q: float, histogram: Iterable[tuple[float, float]] | None) -> float | None:
    """The q-quantile of a classic histogram, by the rules of PromQL's histogram_quantile (promql/quantile.go):
    buckets sorted by upper bound, equal bounds merged, counts forced monotonic; the rank q x total falls in the
    first bucket whose cumulative count reaches it and is interpolated linearly inside it, the lowest bucket
    starting at 0 (or returning its bound if that is <= 0); a rank in the +Inf bucket returns the highest finite
    bound. None where PromQL gives NaN: no observations, no +Inf bucket, fewer than two buckets."""
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    pairs = _coalesced(sorted(histogram or ()))
    if not pairs or not math.isinf(pairs[-1][0]) or len(pairs) < 2:
        return None
    total = pairs[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, (_, count) in enumerate(pairs[:-1]) if count >= rank), len(pairs) - 1)
    if index == len(pairs) - 1:
        return pairs[-2][0]
    upper, count = pairs[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = pairs[index - 1] if index > 0 else (0.0, 0.0)
    if count - below <= 0:  # only q == 0 over an empty lowest bucket: 0/0, NaN in PromQL
        return None
    return lower + (upper - lower) * (rank - below) / (count - below)


def _coalesced(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Merge equal bounds, smooth float noise (relative 1e-12) and force monotonic counts, as PromQL does."""
    merged: list[list[float]] = []
    for bound, count in pairs:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    previous = merged[0][1] if merged else 0.0
    for entry in merged[1:]:
        if entry[1] not in (previous, 0.0) and abs(entry[1] - previous) / entry[1] <= 1e-12:
            entry[1] = previous
        previous = entry[1]
    highest = -math.inf
    for entry in merged:
        highest = max(highest, entry[1])
        entry[1] = highest
    return [(bound, count) for bound, count in merged]


@dataclass(frozen=True)
class Window:
    """What one revision served in one analysis interval. None means no data (not zero): the server exported no
    such series, or nothing was observed (no generation reached its first token, say)."""

    requests: int | None = None
    """Generation-route requests, any status."""
    errors: int | None = None
    """The 5xx among them (None: the server exposes no status, e.g. vLLM without its HTTP metrics)."""
    error_rate: float | None = None
    """errors / requests, from the unrounded counts (None without requests or without errors)."""
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    latency_p99_ms: float | None = None

    @classmethod
    def measured(cls, requests: float | None, errors: float | None, ttft_s: float | None, tpot_s: float | None,
                 latency_s: float | None) -> Window:
        """From counts that may be fractional (Prometheus extrapolates increase()) and p99s in seconds."""
        rate = None
        if requests and requests > 0 and errors is not None:
            rate = min(1.0, max(0.0, errors / requests))
        return cls(requests=_count(requests), errors=_count(errors), error_rate=rate, ttft_p99_ms=_ms(ttft_s),
                   tpot_p99_ms=_ms(tpot_s), latency_p99_ms=_ms(latency_s))


def _count(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else max(0, round(value))


def _ms(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value * 1000.0


def is_generation(labels: dict[str, str], route_label: str) -> bool:
    return labels.get(route_label) in GENERATION_ROUTES


def is_server_error(status: str | None) -> bool:
    """5xx, grouped ("5xx", prometheus-fastapi-instrumentator's default) or not ("503")."""
    return bool(status) and status.startswith("5")


def window(increase: Snapshot) -> Window:
    """Reduce an interval's increases (or a whole cumulative snapshot) to the numbers a check judges."""
    names = increase.names

    def generation(labels: dict[str, str]) -> bool:
        return is_generation(labels, names.route_label)

    def server_error(labels: dict[str, str]) -> bool:
        return generation(labels) and is_server_error(labels.get(names.status_label))

    requests = _total(increase, names.requests, generation)
    errors = _total(increase, names.requests, server_error)
    if requests is not None and errors is None:
        errors = 0.0  # the counter is there; a labelled child for 5xx appears only with the first 5xx
    if requests is None and names.finished:
        requests = _total(increase, names.finished, _every)  # errors stay unknown
    return Window.measured(
        requests, errors,
        histogram_quantile(0.99, buckets(increase, names.ttft)),
        histogram_quantile(0.99, buckets(increase, names.tpot)),
        histogram_quantile(0.99, buckets(increase, names.latency, generation if names.latency_by_route else _every)))


def _every(_: dict[str, str]) -> bool:
    return True
