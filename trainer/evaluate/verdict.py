"""Thresholds to a verdict: a pure function from measured metrics to pass/fail with margins."""

from __future__ import annotations

from llmops.trainer.config.evaluate import Baseline, Metric, MetricResult, Threshold


def check(threshold: Threshold, value: float, baseline: float | None) -> MetricResult:
    """One threshold against one measured value; margin > 0 means inside the bound by that much."""
    metric = Metric(threshold.metric)
    if threshold.relative_to is Baseline.BASELINE:
        if baseline is None:
            raise ValueError(f"threshold on {threshold.task}/{metric.value} is relative to the baseline, "
                             "but no baseline value was measured")
        if metric.higher_is_better:
            bound, margin, text = baseline - threshold.tolerance, value - (baseline - threshold.tolerance), ">="
        else:
            bound, margin, text = baseline + threshold.tolerance, (baseline + threshold.tolerance) - value, "<="
        description = f"{text} baseline {'-' if metric.higher_is_better else '+'} {threshold.tolerance} ({bound:.6g})"
    elif threshold.min is not None:
        margin, description = value - threshold.min, f">= {threshold.min}"
    else:
        assert threshold.max is not None
        margin, description = threshold.max - value, f"<= {threshold.max}"
    return MetricResult(task=threshold.task, metric=metric, value=value, baseline_value=baseline,
                        threshold=description, margin=round(margin, 6), passed=margin >= 0)


def verdict(thresholds: list[Threshold], values: dict[tuple[str, str], float],
            baseline: dict[tuple[str, str], float]) -> tuple[str, list[MetricResult]]:
    """("Passed" | "Failed", every metric with its threshold). A threshold whose metric is missing fails."""
    results: list[MetricResult] = []
    checked = set()
    for threshold in thresholds:
        key = (threshold.task, threshold.metric.value)
        checked.add(key)
        if key not in values:
            results.append(MetricResult(task=threshold.task, metric=threshold.metric,
                                        threshold=f"{key[1]} was not measured by task {key[0]}", passed=False))
            continue
        results.append(check(threshold, values[key], baseline.get(key)))
    for key, value in sorted(values.items()):
        if key not in checked:
            results.append(MetricResult(task=key[0], metric=Metric(key[1]), value=value,
                                        baseline_value=baseline.get(key)))
    passed = all(r.passed is not False for r in results)
    return ("Passed" if passed else "Failed"), results
