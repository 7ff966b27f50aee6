"""Scrapes, their differences and windows (operator/reconcile/serving/samples.py), as a specification.

Every expected number is worked out by hand in the case itself from PromQL's documented histogram_quantile rules
(promql/quantile.go): rank = q x total; the first bucket whose cumulative count reaches the rank holds it; linear
interpolation inside it, from 0 for the lowest bucket; a rank in the +Inf bucket gives the highest finite bound.
Expositions come from the real server's metrics class (trainer/serve/metrics.py) and from vLLM-shaped text in
tests/data/.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmops.operator.api.v1alpha1.deployment import Runtime
from llmops.operator.reconcile.serving import samples
from llmops.operator.reconcile.serving.samples import Window, histogram_quantile
from llmops.trainer.serve.metrics import LATENCY_BUCKETS, METRICS, ServerMetrics

DATA = Path(__file__).parents[1] / "data"
INF = math.inf


# --- histogram_quantile ---------------------------------------------------------------------------------------

QUANTILE_CASES = [
    # (what, q, buckets as (le, cumulative count), want)
    ("interpolates inside the bucket: rank 20 of 40 lies 10 into (0.1, 0.5] holding 20 -> 0.1 + 0.4 x 10/20",
     0.5, [(0.1, 10), (0.5, 30), (1, 40), (INF, 40)], 0.3),
    ("the lowest bucket starts at 0: rank 5 of 20, 5/10 into (0, 0.5] -> 0.25",
     0.25, [(0.5, 10), (1, 20), (INF, 20)], 0.25),
    ("a rank in the +Inf bucket gives the highest finite bound: rank 9.9 > 8 -> 0.2",
     0.99, [(0.1, 5), (0.2, 8), (INF, 10)], 0.2),
    ("a rank equal to a bucket's count stays in that bucket: rank 5 reaches (0, 1] -> 1.0",
     0.5, [(1, 5), (2, 10), (INF, 10)], 1.0),
    ("a lowest bound <= 0 is returned as such: rank 3 in the bucket le=0 -> 0",
     0.3, [(0, 5), (1, 10), (INF, 10)], 0.0),
    ("unsorted input, equal bounds summed: (0.5, 2), (1, 8); rank 4 is 2 into (0.5, 1] holding 6 -> 0.5 + 0.5/3",
     0.5, [(1, 4), (0.5, 2), (1, 4), (INF, 8)], 0.5 + 0.5 * 2 / 6),
    ("counts forced monotonic: le=0.2 taken as 5; rank 4 in (0, 0.1] -> 0.1 x 4/5",
     0.4, [(0.1, 5), (0.2, 3), (INF, 10)], 0.08),
    ("counts forced monotonic: rank 6 passes 0.1 (5) and the forced 0.2 (5) -> +Inf bucket -> 0.2",
     0.6, [(0.1, 5), (0.2, 3), (INF, 10)], 0.2),
    ("p99 of 36: rank 35.64 is 0.64 into (0.5, 0.75] holding 1 -> 0.5 + 0.25 x 0.64",
     0.99, [(0.06, 30), (0.25, 35), (0.5, 35), (0.75, 36), (INF, 36)], 0.66),
    ("q = 1 is the top of the highest bucket with observations: rank 10 reaches (1, 2] at its end",
     1.0, [(1, 4), (2, 10), (5, 10), (INF, 10)], 2.0),
    ("no observations -> no value", 0.99, [(0.1, 0), (1, 0), (INF, 0)], None),
    ("no +Inf bucket -> no value", 0.5, [(0.1, 5), (1, 10)], None),
    ("fewer than two buckets -> no value", 0.5, [(INF, 10)], None),
    ("no buckets at all -> no value", 0.5, [], None),
    ("q below 0 -> -Inf", -0.1, [(1, 1), (INF, 1)], -INF),
    ("q above 1 -> +Inf", 1.1, [(1, 1), (INF, 1)], INF),
    ("q NaN -> no value", math.nan, [(1, 1), (INF, 1)], None),
]


@pytest.mark.parametrize(("what", "q", "buckets", "want"), QUANTILE_CASES, ids=[c[0][:48] for c in QUANTILE_CASES])
def test_histogram_quantile_follows_promql(what: str, q: float, buckets: list, want: float | None) -> None:
    got = histogram_quantile(q, buckets)
    if want is None:
        assert got is None, what
    else:
        assert got == pytest.approx(want, abs=1e-12), what


# --- our server's exposition --------------------------------------------------------------------------------

def served(requests: dict[tuple[str, str], int], ttft: list[float] = (), tpot: list[float] = (),
           duration: dict[str, list[float]] | None = None) -> str:
    """The exposition of a real ServerMetrics after the given traffic."""
    metrics = ServerMetrics()
    for (route, code), count in requests.items():
        metrics.requests.labels(route, code).inc(count)
    for value in ttft:
        metrics.ttft.observe(value)
    for value in tpot:
        metrics.tpot.observe(value)
    for route, values in (duration or {}).items():
        for value in values:
            metrics.duration.labels(route).observe(value)
    return metrics.exposition().decode()


def test_the_names_read_for_llmops_are_the_servers_own() -> None:
    from llmops.trainer.serve.server import GENERATION_ROUTES

    names = samples.LLMOPS_NAMES
    assert names.requests in METRICS
    assert set(names.histograms()) <= set(METRICS)
    assert samples.GENERATION_ROUTES == GENERATION_ROUTES


def test_only_generation_routes_count_and_4xx_are_requests_not_errors() -> None:
    text = served({("/v1/completions", "200"): 12, ("/v1/chat/completions", "200"): 5,
                   ("/v1/chat/completions", "400"): 2, ("/v1/completions", "404"): 1,
                   ("/v1/completions", "503"): 2, ("/v1/models", "200"): 40, ("other", "404"): 3,
                   ("/healthz", "200"): 100})
    got = samples.window(samples.parse(text))
    assert (got.requests, got.errors) == (12 + 5 + 2 + 1 + 2, 2)
    assert got.error_rate == pytest.approx(2 / 22)


def test_latencies_read_token_histograms_and_only_generation_durations() -> None:
    # TTFT 98 x 0.02 and 2 x 0.3: rank 99 is 1 into (0.25, 0.5] holding 2 -> 0.25 + 0.25 x 1/2 = 0.375 s.
    # TPOT 100 x 0.004 in (0.0025, 0.005]: rank 99 -> 0.0025 + 0.0025 x 99/100 = 0.004975 s.
    # Duration of generation routes 10 x 2.0 in (1, 2.5]: rank 9.9 -> 1 + 1.5 x 9.9/10 = 2.485 s; /v1/models' 20
    # slow answers would move it to (5, 10] if they counted.
    text = served({("/v1/completions", "200"): 10}, ttft=[0.02] * 98 + [0.3] * 2, tpot=[0.004] * 100,
                  duration={"/v1/completions": [2.0] * 10, "/v1/models": [7.0] * 20})
    got = samples.window(samples.parse(text))
    assert got.ttft_p99_ms == pytest.approx(375.0)
    assert got.tpot_p99_ms == pytest.approx(4.975)
    assert got.latency_p99_ms == pytest.approx(2485.0)


def test_a_fresh_server_has_no_data_not_zeros() -> None:
    got = samples.window(samples.parse(served({})))
    assert got == Window()
    assert samples.parse(served({})).names is samples.LLMOPS_NAMES


def test_no_5xx_series_yet_means_zero_errors() -> None:
    got = samples.window(samples.parse(served({("/v1/completions", "200"): 3})))
    assert (got.requests, got.errors, got.error_rate) == (3, 0, 0.0)


# --- difference and merge -------------------------------------------------------------------------------------

def test_difference_is_the_increase_and_a_new_series_counts_from_zero() -> None:
    before = samples.parse(served({("/v1/completions", "200"): 10}, ttft=[0.02] * 10))
    after = samples.parse(served({("/v1/completions", "200"): 25, ("/v1/completions", "500"): 5},
                                 ttft=[0.02] * 10 + [0.3] * 15))
    got = samples.window(samples.difference(before, after))
    # 15 more 200s and 5 new 500s; the 15 new TTFTs all 0.3 in (0.25, 0.5]: rank 14.85 -> 0.25 + 0.25 x 14.85/15
    assert (got.requests, got.errors) == (20, 5)
    assert got.ttft_p99_ms == pytest.approx((0.25 + 0.25 * 14.85 / 15) * 1000)


def test_a_restarted_pod_counts_from_zero() -> None:
    before = samples.parse(served({("/v1/completions", "200"): 50, ("/v1/completions", "503"): 1}))
    # Restarted, then served 60: more than the 50 before, so the 200 series alone would hide the restart; the
    # 503 series that went back to nothing gives it away.
    after = samples.parse(served({("/v1/completions", "200"): 60}))
    assert samples.restarted(before, after)
    assert samples.window(samples.difference(before, after)).requests == 60
    grew = samples.parse(served({("/v1/completions", "200"): 60, ("/v1/completions", "503"): 1}))
    assert not samples.restarted(before, grew)
    assert samples.window(samples.difference(before, grew)).requests == 10


def test_merge_sums_pods_series_by_series() -> None:
    one = samples.parse(served({("/v1/completions", "200"): 3}, ttft=[0.02] * 3))
    two = samples.parse(served({("/v1/completions", "200"): 7, ("/v1/chat/completions", "502"): 1},
                               ttft=[0.02] * 6 + [0.7]))
    got = samples.window(samples.merge([one, two]))
    # 10 TTFTs: 9 in (0.01, 0.025], 1 in (0.5, 1]: rank 9.9 -> 0.5 + 0.5 x 0.9 = 0.95 s
    assert (got.requests, got.errors) == (11, 1)
    assert got.ttft_p99_ms == pytest.approx(950.0)
    assert samples.merge([]) is None


def test_window_counts_round_but_the_rate_uses_the_unrounded_counts() -> None:
    got = Window.measured(20.7, 1.03, None, 0.012, None)
    assert (got.requests, got.errors) == (21, 1)
    assert got.error_rate == pytest.approx(1.03 / 20.7)
    assert got.tpot_p99_ms == pytest.approx(12.0)
    assert Window.measured(0.0, 0.0, None, None, None).error_rate is None
    assert Window.measured(None, None, math.nan, None, None) == Window()


def test_a_duration_histogram_uses_the_servers_buckets() -> None:
    # One observation per bucket of the server's latency buckets: p99 of 14 (13 finite + 1 beyond 60 s) is rank
    # 13.86 in the +Inf bucket, so the highest finite bound, 60 s.
    values = [bound * 0.9 for bound in LATENCY_BUCKETS] + [120.0]
    got = samples.window(samples.parse(served({("/v1/completions", "200"): 14},
                                              duration={"/v1/completions": values})))
    assert got.latency_p99_ms == pytest.approx(LATENCY_BUCKETS[-1] * 1000)


# --- vLLM -----------------------------------------------------------------------------------------------------

def vllm(name: str, drop: tuple[str, ...] = ()) -> str:
    """A vLLM-shaped exposition from tests/data, without the lines of the series named in `drop`."""
    lines = (DATA / name).read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not any(d in line for d in drop))


def test_vllm_is_recognised_by_its_series() -> None:
    assert samples.parse(vllm("vllm-metrics-v0.11-a.txt")).names is samples.VLLM_NAMES
    assert samples.parse(vllm("vllm-metrics-v0.11-a.txt"), Runtime.VLLM).names is samples.VLLM_NAMES


def test_vllm_window_between_two_scrapes() -> None:
    before, after = (samples.parse(vllm(f"vllm-metrics-v0.11-{s}.txt")) for s in "ab")
    got = samples.window(samples.difference(before, after))
    # http_requests_total between the scrapes: chat 2xx +30, 4xx +2, 5xx +2; completions 2xx +6, 5xx +1 (a
    # series new in b); /v1/models +3 does not count.
    assert (got.requests, got.errors) == (41, 3)
    assert got.error_rate == pytest.approx(3 / 41)
    # TTFT of the 36 finished: 30 in (0.04, 0.06], 5 in (0.1, 0.25], 1 in (0.5, 0.75]: rank 35.64 -> 0.66 s.
    assert got.ttft_p99_ms == pytest.approx(660.0)
    # Per-request TPOT (preferred): 34 in (0.01, 0.025], 2 in (0.025, 0.05]: 0.025 + 0.025 x 1.64/2 = 0.0455 s.
    assert got.tpot_p99_ms == pytest.approx(45.5)
    # e2e: 30 in (1, 1.5], 6 in (2.5, 5]: rank 35.64 is 5.64 into the latter -> 2.5 + 2.5 x 5.64/6 = 4.85 s.
    assert got.latency_p99_ms == pytest.approx(4850.0)


def test_vllm_without_the_per_request_tpot_reads_inter_token_latency() -> None:
    drop = ("vllm:request_time_per_output_token_seconds",)
    before, after = (samples.parse(vllm(f"vllm-metrics-v0.11-{s}.txt", drop)) for s in "ab")
    got = samples.window(samples.difference(before, after))
    # Token gaps of the interval: 30 chats x 63 at 0.02 and 6 completions x (58 at 0.02 + 5 at 0.06): 2238 in
    # (0.01, 0.025], 30 in (0.05, 0.075]; rank 0.99 x 2268 = 2245.32 -> 0.05 + 0.025 x 7.32/30.
    assert got.tpot_p99_ms == pytest.approx((0.05 + 0.025 * 7.32 / 30) * 1000)


def test_an_older_vllm_reads_time_per_output_token() -> None:
    got = samples.window(samples.parse(vllm("vllm-metrics-v0.6.txt")))  # cumulative: one scrape since start
    assert (got.requests, got.errors) == (20 + 4 + 1, 1)
    # TTFT 18 in (0.02, 0.04], 2 in (0.25, 0.5]: rank 19.8 -> 0.25 + 0.25 x 1.8/2 = 0.475 s.
    assert got.ttft_p99_ms == pytest.approx(475.0)
    # 620 token gaps at 0.03 in (0.025, 0.05]: rank 613.8 -> 0.025 + 0.025 x 613.8/620.
    assert got.tpot_p99_ms == pytest.approx((0.025 + 0.025 * 613.8 / 620) * 1000)
    # e2e 19 in (1, 2.5], 1 in (5, 10]: rank 19.8 -> 5 + 5 x 0.8 = 9 s.
    assert got.latency_p99_ms == pytest.approx(9000.0)


def test_vllm_without_http_metrics_counts_finished_requests_and_cannot_judge_errors() -> None:
    got = samples.window(samples.parse(vllm("vllm-metrics-v0.6.txt", drop=("http_",))))
    assert got.requests == 20  # vllm:request_success_total, every finished_reason
    assert (got.errors, got.error_rate) == (None, None)
    assert got.ttft_p99_ms == pytest.approx(475.0)
