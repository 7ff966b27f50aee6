"""One canary analysis check: the canary's window of metrics against its thresholds, and against the stable's.

Pure. The rules, as Flagger and Argo Rollouts judge a metric check, with two choices of ours:
- too little traffic is Inconclusive, never Failed: fewer than minRequests canary requests (or no window at all)
  says nothing about the canary, and rolling back on it would punish a quiet hour;
- a metric without data (no generation reached its first token, vLLM without its HTTP counter) is not judged
  (passed: null) and fails nothing; the others still decide.

Thresholds: errorRate always has one (maxErrorRate); a latency p99 is checked when its maximum is set. With
compareToStable every p99 latency is checked too, and each threshold becomes the stricter of the absolute maximum
and the stable's value plus its tolerance (latency: stable x (1 + latencyTolerance), errors: stable +
errorRateTolerance) -- both must hold -- provided the stable served minRequests in the same interval; otherwise
the stable says too little and the check judges on the absolute thresholds alone, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from llmops.operator.api.v1alpha1.deployment import AnalysisCheck, CanaryAnalysis, MetricCheck, Verdict

from .samples import Window


@dataclass(frozen=True)
class Metric:
    """One judged metric: its name in status, how to read it from a window, its absolute maximum."""

    name: str
    value: Callable[[Window], float | None]
    absolute: Callable[[CanaryAnalysis], float | None]
    latency: bool


METRICS = (
    Metric("errorRate", lambda w: w.error_rate, lambda a: a.max_error_rate, latency=False),
    Metric("ttftP99Ms", lambda w: w.ttft_p99_ms, lambda a: a.max_time_to_first_token_p99_ms, latency=True),
    Metric("tpotP99Ms", lambda w: w.tpot_p99_ms, lambda a: a.max_time_per_output_token_p99_ms, latency=True),
    Metric("latencyP99Ms", lambda w: w.latency_p99_ms, lambda a: a.max_latency_p99_ms, latency=True),
)


def check(analysis: CanaryAnalysis, canary: Window | None, stable: Window | None, now: datetime,
          source: str) -> AnalysisCheck:
    """Judge one interval. Never raises on missing data: no window, no requests and no series are all data too."""
    requests = _requests(canary)
    stable_requests = _requests(stable) if stable is not None else None
    compare = analysis.compare_to_stable is not None
    enough_stable = stable_requests is not None and stable_requests >= analysis.min_requests
    usable_stable = stable if compare and enough_stable else None
    metrics = [_judge(metric, analysis, canary, usable_stable, stable)
               for metric in METRICS if metric.absolute(analysis) is not None or (compare and metric.latency)]
    notes = [] if not compare or usable_stable is not None else [_stable_note(stable_requests, analysis)]

    def made(verdict: Verdict, message: str, judged: list[MetricCheck]) -> AnalysisCheck:
        return AnalysisCheck(time=now, verdict=verdict, requests=requests, stable_requests=stable_requests,
                             source=source, metrics=judged, message="; ".join([message, *notes]))

    if canary is None:
        return made(Verdict.INCONCLUSIVE, "no metrics could be read from the canary", [])
    if requests < analysis.min_requests:
        unjudged = [m.model_copy(update={"passed": None}) for m in metrics]
        return made(Verdict.INCONCLUSIVE,
                    f"{requests} canary requests, fewer than minRequests {analysis.min_requests}", unjudged)
    failed = [m for m in metrics if m.passed is False]
    if failed:
        by_name = {metric.name: metric for metric in METRICS}
        return made(Verdict.FAILED, "; ".join(_failure(m, by_name[m.metric], analysis, canary) for m in failed),
                    metrics)
    unjudged_names = [m.metric for m in metrics if m.passed is None]
    said = f"{requests} canary requests, within every threshold"
    if unjudged_names:
        said += f" (no data: {', '.join(unjudged_names)})"
    return made(Verdict.PASSED, said, metrics)


def _requests(window: Window | None) -> int:
    return window.requests or 0 if window is not None else 0


def _judge(metric: Metric, analysis: CanaryAnalysis, canary: Window | None, usable_stable: Window | None,
           stable: Window | None) -> MetricCheck:
    value = metric.value(canary) if canary is not None else None
    threshold = _threshold(metric, analysis, usable_stable)
    passed = None if value is None or threshold is None else value <= threshold
    return MetricCheck(metric=metric.name, value=value, threshold=threshold,
                       stable=metric.value(stable) if stable is not None else None, passed=passed)


def _threshold(metric: Metric, analysis: CanaryAnalysis, usable_stable: Window | None) -> float | None:
    """The stricter of the absolute maximum and the stable's value plus its tolerance (whichever exist)."""
    limits = [limit] if (limit := metric.absolute(analysis)) is not None else []
    comparison = analysis.compare_to_stable
    if comparison is not None and usable_stable is not None and (base := metric.value(usable_stable)) is not None:
        limits.append(base * (1 + comparison.latency_tolerance) if metric.latency
                      else base + comparison.error_rate_tolerance)
    return min(limits) if limits else None


def _stable_note(stable_requests: int | None, analysis: CanaryAnalysis) -> str:
    if stable_requests is None:
        return "no stable window to compare with: judged on absolute thresholds only"
    return (f"the stable had {stable_requests} requests, fewer than minRequests {analysis.min_requests}: "
            "judged on absolute thresholds only")


def _failure(check: MetricCheck, metric: Metric, analysis: CanaryAnalysis, canary: Window) -> str:
    """e.g. "ttftP99Ms 812 > 300", and where a threshold stricter than the absolute came from."""
    assert check.value is not None and check.threshold is not None
    said = f"{check.metric} {number(check.value)} > {number(check.threshold)}"
    extra = []
    if metric.name == "errorRate" and canary.requests:
        extra.append(f"{canary.errors} of {canary.requests} requests")
    absolute, comparison = metric.absolute(analysis), analysis.compare_to_stable
    if comparison is not None and check.stable is not None and (absolute is None or check.threshold < absolute):
        extra.append(f"stable {number(check.stable)} x {1 + comparison.latency_tolerance:g}" if metric.latency
                     else f"stable {number(check.stable)} + {comparison.error_rate_tolerance:g}")
    return f"{said} ({', '.join(extra)})" if extra else said


def number(value: float) -> str:
    """Short and exact enough for a condition message: 812, 12.5, 0.07317."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
