"""One canary analysis check (operator/reconcile/serving/analysis.py), as a table: each row is a rule.

A row gives the spec's analysis (wire names, as a user writes them), the canary's and the stable's windows, and
what the check must say: verdict, each metric's (value, threshold, passed), and words the message must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from llmops.operator.api.v1alpha1.deployment import CanaryAnalysis, Verdict
from llmops.operator.reconcile.serving.analysis import check
from llmops.operator.reconcile.serving.samples import Window

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PASSED, FAILED, INCONCLUSIVE = Verdict.PASSED, Verdict.FAILED, Verdict.INCONCLUSIVE
COMPARE = {"compareToStable": {}}  # defaults: latencyTolerance 0.25, errorRateTolerance 0.01


def served(requests: int, errors: int = 0, **latencies: float | None) -> Window:
    """A window of `requests` with `errors` 5xx and the given p99s (ttft=..., tpot=..., latency=..., in ms)."""
    return Window(requests=requests, errors=errors, error_rate=errors / requests if requests else None,
                  ttft_p99_ms=latencies.get("ttft"), tpot_p99_ms=latencies.get("tpot"),
                  latency_p99_ms=latencies.get("latency"))


def rounded(value: float | None) -> float | None:
    """Thresholds such as 0 + 0.01 or 200 x 1.25 compare exactly up to float noise."""
    return None if value is None else round(value, 9)


@dataclass
class Case:
    name: str
    spec: dict[str, Any]
    canary: Window | None
    stable: Window | None = None
    want_verdict: Verdict = PASSED
    want_metrics: dict[str, tuple[float | None, float | None, bool | None]] = field(default_factory=dict)
    """metric -> (value, threshold, passed); every metric the check lists, no more."""
    want_said: tuple[str, ...] = ()


CASES = [
    # --- Too little to judge: inconclusive, never failed ------------------------------------------------------
    Case("no window at all (nothing could be read) is inconclusive",
         {}, None, want_verdict=INCONCLUSIVE, want_said=("no metrics could be read",)),
    Case("fewer than minRequests is inconclusive even when every request failed",
         {"minRequests": 20}, served(5, errors=5), want_verdict=INCONCLUSIVE,
         want_metrics={"errorRate": (1.0, 0.01, None)}, want_said=("5 canary requests, fewer than minRequests 20",)),
    Case("a window without the request counter counts as no requests",
         {}, Window(), want_verdict=INCONCLUSIVE, want_metrics={"errorRate": (None, 0.01, None)},
         want_said=("0 canary requests",)),
    Case("minRequests 0 asks for no traffic: an empty window passes, saying what had no data",
         {"minRequests": 0}, Window(), want_metrics={"errorRate": (None, 0.01, None)},
         want_said=("no data: errorRate",)),

    # --- Absolute thresholds ------------------------------------------------------------------------------------
    Case("exactly minRequests and errors within maxErrorRate pass; only errorRate is checked by default",
         {"minRequests": 20}, served(20, ttft=5000.0), want_metrics={"errorRate": (0.0, 0.01, True)},
         want_said=("20 canary requests, within every threshold",)),
    Case("an error rate above maxErrorRate fails, naming value, threshold and counts",
         {"maxErrorRate": 0.05}, served(40, errors=4), want_verdict=FAILED,
         want_metrics={"errorRate": (0.1, 0.05, False)}, want_said=("errorRate 0.1 > 0.05 (4 of 40 requests)",)),
    Case("a value equal to its threshold passes",
         {"maxErrorRate": 0.1}, served(40, errors=4), want_metrics={"errorRate": (0.1, 0.1, True)}),
    Case("each latency maximum that is set is checked; a p99 above it fails",
         {"maxTimeToFirstTokenP99Ms": 300, "maxLatencyP99Ms": 2000}, served(50, ttft=812.0, latency=1500.0),
         want_verdict=FAILED,
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (812.0, 300.0, False),
                       "latencyP99Ms": (1500.0, 2000.0, True)},
         want_said=("ttftP99Ms 812 > 300",)),
    Case("every failing metric is named",
         {"maxTimeToFirstTokenP99Ms": 300, "maxTimePerOutputTokenP99Ms": 20}, served(50, 5, ttft=400.0, tpot=25.5),
         want_verdict=FAILED,
         want_metrics={"errorRate": (0.1, 0.01, False), "ttftP99Ms": (400.0, 300.0, False),
                       "tpotP99Ms": (25.5, 20.0, False)},
         want_said=("errorRate 0.1 > 0.01 (5 of 50 requests)", "ttftP99Ms 400 > 300", "tpotP99Ms 25.5 > 20")),
    Case("a metric without data is not judged and fails nothing",
         {"maxTimeToFirstTokenP99Ms": 300}, served(30, ttft=None),
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (None, 300.0, None)},
         want_said=("no data: ttftP99Ms",)),
    Case("an unknown error rate (vLLM without HTTP metrics) is not judged",
         {}, Window(requests=30), want_metrics={"errorRate": (None, 0.01, None)}),

    # --- Against the stable -------------------------------------------------------------------------------------
    Case("with compareToStable the stricter of absolute and stable x (1 + tolerance) holds: min(300, 200 x 1.25)",
         {"maxTimeToFirstTokenP99Ms": 300, **COMPARE}, served(40, ttft=260.0), served(200, ttft=200.0),
         want_verdict=FAILED,
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (260.0, 250.0, False),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)},
         want_said=("ttftP99Ms 260 > 250 (stable 200 x 1.25)",)),
    Case("an absolute maximum stricter than the stable's allowance still holds",
         {"maxTimeToFirstTokenP99Ms": 300, **COMPARE}, served(40, ttft=310.0), served(200, ttft=280.0),
         want_verdict=FAILED,
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (310.0, 300.0, False),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)},
         want_said=("ttftP99Ms 310 > 300",)),
    Case("compareToStable checks every p99 latency, even without an absolute maximum",
         {**COMPARE, "compareToStable": {"latencyTolerance": 0.5}}, served(40, tpot=31.0, latency=900.0),
         served(100, tpot=20.0, latency=800.0), want_verdict=FAILED,
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (None, None, None),
                       "tpotP99Ms": (31.0, 30.0, False), "latencyP99Ms": (900.0, 1200.0, True)},
         want_said=("tpotP99Ms 31 > 30 (stable 20 x 1.5)",)),
    Case("errors: the stricter of maxErrorRate and stable + errorRateTolerance (min(0.05, 0 + 0.01))",
         {"maxErrorRate": 0.05, **COMPARE}, served(100, errors=2), served(100, errors=0), want_verdict=FAILED,
         want_metrics={"errorRate": (0.02, 0.01, False), "ttftP99Ms": (None, None, None),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)},
         want_said=("errorRate 0.02 > 0.01 (2 of 100 requests, stable 0 + 0.01)",)),
    Case("a canary no worse than the stable passes, with the stable's values shown",
         {"maxErrorRate": 0.05, **COMPARE}, served(100, errors=2, ttft=110.0), served(100, errors=2, ttft=100.0),
         want_metrics={"errorRate": (0.02, 0.03, True), "ttftP99Ms": (110.0, 125.0, True),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)}),
    Case("a stable below minRequests says too little: absolute thresholds only, and the message says so",
         {"maxTimeToFirstTokenP99Ms": 300, **COMPARE}, served(40, ttft=260.0), served(5, ttft=100.0),
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (260.0, 300.0, True),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)},
         want_said=("the stable had 5 requests, fewer than minRequests 20: judged on absolute thresholds only",)),
    Case("no stable window: absolute thresholds only, and the message says so",
         {"maxTimeToFirstTokenP99Ms": 300, **COMPARE}, served(40, ttft=260.0), None,
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (260.0, 300.0, True),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)},
         want_said=("no stable window to compare with",)),
    Case("a stable without data for a metric leaves its absolute threshold",
         {"maxTimeToFirstTokenP99Ms": 300, **COMPARE}, served(40, ttft=290.0), served(100, ttft=None),
         want_metrics={"errorRate": (0.0, 0.01, True), "ttftP99Ms": (290.0, 300.0, True),
                       "tpotP99Ms": (None, None, None), "latencyP99Ms": (None, None, None)}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check(case: Case) -> None:
    analysis = CanaryAnalysis.model_validate(case.spec)
    got = check(analysis, case.canary, case.stable, NOW, "scrape")
    assert got.verdict is case.want_verdict, got.message
    want = {name: (rounded(value), rounded(limit), ok) for name, (value, limit, ok) in case.want_metrics.items()}
    assert {m.metric: (rounded(m.value), rounded(m.threshold), m.passed) for m in got.metrics} == want
    for words in case.want_said:
        assert words in got.message
    assert (got.time, got.source) == (NOW, "scrape")
    assert got.requests == (case.canary.requests or 0 if case.canary else 0)
    assert got.stable_requests == (case.stable.requests if case.stable else None)


def test_stable_values_are_reported_even_when_not_compared() -> None:
    got = check(CanaryAnalysis(max_time_to_first_token_p99_ms=300), served(30, ttft=100.0),
                served(30, ttft=90.0), NOW, "prometheus")
    assert [(m.metric, m.stable) for m in got.metrics] == [("errorRate", 0.0), ("ttftP99Ms", 90.0)]
    assert got.source == "prometheus"


def test_the_check_fits_the_status_schema() -> None:
    """What lands in status.canary.lastCheck round-trips through its wire form."""
    from llmops.operator.api.v1alpha1.deployment import AnalysisCheck

    got = check(CanaryAnalysis.model_validate({"maxLatencyP99Ms": 100, **COMPARE}), served(30, 1, latency=120.0),
                served(30, latency=50.0), NOW, "scrape")
    assert AnalysisCheck.model_validate(got.to_wire()) == got
