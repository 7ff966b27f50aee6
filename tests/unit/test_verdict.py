"""Thresholds and the verdict: pass, fail, relative to the baseline, margins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.trainer.config.evaluate import Threshold
from llmops.trainer.evaluate.verdict import verdict


def threshold(**fields: object) -> Threshold:
    return Threshold.model_validate({"task": "t", **fields})


def test_absolute_thresholds_pass_and_fail_with_margins() -> None:
    decision, results = verdict([threshold(metric="acc", min=0.5), threshold(metric="perplexity", max=20)],
                                {("t", "acc"): 0.75, ("t", "perplexity"): 25.0}, {})
    assert decision == "Failed"
    acc, ppl = results
    assert (acc.passed, acc.margin, acc.threshold) == (True, 0.25, ">= 0.5")
    assert (ppl.passed, ppl.margin, ppl.threshold) == (False, -5.0, "<= 20.0")


def test_all_passing_is_passed_and_unthresholded_metrics_are_reported() -> None:
    decision, results = verdict([threshold(metric="acc", min=0.5)], {("t", "acc"): 0.5, ("t", "acc_norm"): 0.4}, {})
    assert decision == "Passed"
    assert [(r.metric, r.passed) for r in results] == [("acc", True), ("acc_norm", None)]


@pytest.mark.parametrize(
    ("metric", "value", "baseline", "tolerance", "want"),
    [
        ("acc", 0.70, 0.72, 0.05, True),   # higher is better: may be 0.05 worse
        ("acc", 0.60, 0.72, 0.05, False),
        ("perplexity", 12.0, 11.0, 1.5, True),  # lower is better: may be 1.5 higher
        ("perplexity", 13.0, 11.0, 1.5, False),
    ],
)
def test_relative_to_baseline(metric: str, value: float, baseline: float, tolerance: float, want: bool) -> None:
    decision, (result,) = verdict([threshold(metric=metric, relativeTo="baseline", tolerance=tolerance)],
                                  {("t", metric): value}, {("t", metric): baseline})
    assert result.passed is want and decision == ("Passed" if want else "Failed")
    assert result.baseline_value == baseline


def test_a_threshold_on_an_unmeasured_metric_fails_and_says_why() -> None:
    decision, (result, other) = verdict([threshold(metric="f1", min=0.1)], {("t", "acc"): 1.0}, {})
    assert decision == "Failed" and result.value is None and "was not measured" in result.threshold
    assert (other.metric, other.passed) == ("acc", None)
    assert result.to_wire() == {"task": "t", "metric": "f1", "threshold": "f1 was not measured by task t",
                                "passed": False}  # valid JSON: no NaN in results.json or the status


def test_the_verdict_fits_the_termination_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.trainer import termination
    from llmops.trainer.config.result import MESSAGE_LIMIT, WorkloadResult

    log = tmp_path / "termination-log"
    log.write_text("")
    monkeypatch.setenv(termination.TERMINATION_LOG_ENV, str(log))
    results = [{"task": f"task-{i}", "metric": "acc", "value": 0.5, "threshold": ">= 0.4", "passed": True}
               for i in range(200)]
    termination.report(WorkloadResult(verdict="Passed", results=results))
    message = json.loads(log.read_text())
    assert message["verdict"] == "Passed" and 0 < len(message["results"]) < 200
    assert len(log.read_text()) <= MESSAGE_LIMIT
    # What either backend reads back from the channel: the same typed result, or None for a plain-text cause.
    read = WorkloadResult.from_message(log.read_text())
    assert read is not None and read.verdict == "Passed" and read.results[0].task == "task-0"
    assert WorkloadResult.from_message("model directory /m has no config.json") is None
