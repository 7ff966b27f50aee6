"""Live progress of a running workload, read from the JSON lines its rank-0 process prints on stdout.

The lines are the models in llmops.trainer.config.progress, which the workloads serialise: the trainers print
TrainLine (`{"event": "train", ...}`), the data pipeline and the evaluator ProgressLine (`{"event": "progress",
...}`). The operator reads the tail of the rank-0 pod's log through the API server (pods/log), so workload pods
need no permission and no network path to the operator. Everything here is pure: log text in, status fields out.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from llmops.operator.api.v1alpha1.common import Phase, Progress
from llmops.operator.api.v1alpha1.pretrainjob import TrainingMetrics
from llmops.trainer.config.progress import ProgressLine, TrainLine, parse_lines

TRAINING_KINDS = frozenset({"PretrainJob", "FineTune"})
"""Kinds whose workload prints training reports (and whose status has `metrics`)."""

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class ProgressReport(BaseModel):
    """What one read of a workload's log says: its progress and, for training kinds, its latest metrics."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    """The Job whose pod printed it: a report never outlives its run."""

    progress: Progress
    metrics: TrainingMetrics | None = None


def percent(completed: int, total: int | None) -> str | None:
    """completed / total as the printer column shows it, rounded down so "100%" means done."""
    if not total:
        return None
    return f"{min(100, math.floor(100 * completed / total))}%"


def _eta(completed: int, total: int | None, rate: float | None) -> int | None:
    if total is None or not rate:
        return None
    return max(0, round((total - completed) / rate))


def _training_report(lines: list[TrainLine], job_name: str) -> ProgressReport:
    # Later lines win, field by field: a validation report updates validationLoss without hiding the loss, the
    # learning rate or the ETA of the training report just before it.
    latest: dict[str, Any] = {}
    for line in lines:
        latest.update(line.model_dump(exclude_none=True))
    step, total = latest["step"], latest.get("total_steps")
    reports = [line for line in lines if line.loss is not None and line.time is not None]
    rate = None
    if len(reports) >= 2 and reports[-1].time != reports[-2].time:
        assert reports[-1].time is not None and reports[-2].time is not None
        rate = round((reports[-1].step - reports[-2].step) / (reports[-1].time - reports[-2].time), 4)
        rate = rate if rate > 0 else None  # a restart from a checkpoint goes back in steps
    eta = latest.get("eta_seconds")
    progress = Progress(completed=step, total=total, unit="steps", percent=percent(step, total), rate=rate,
                        eta_seconds=round(eta) if eta is not None else _eta(step, total, rate))
    metrics = TrainingMetrics.model_validate({k: v for k, v in latest.items() if k in TrainingMetrics.model_fields})
    return ProgressReport(job_name=job_name, progress=progress, metrics=metrics)


def _stage_report(line: ProgressLine, job_name: str) -> ProgressReport:
    if line.stage == "done":  # the pipeline's summary line: kept of read documents, and nothing left to do
        total = line.total if line.total is not None else line.completed
        progress = Progress(completed=total, total=total, unit=line.unit, percent="100%", rate=line.rate,
                            eta_seconds=0)
    else:
        # Each stage counts its own unit; naming the stage keeps "40%" of cleaning from reading as 40% of the run.
        unit = f"{line.unit} ({line.stage})" if line.stage else line.unit
        progress = Progress(completed=line.completed, total=line.total, unit=unit,
                            percent=percent(line.completed, line.total), rate=line.rate,
                            eta_seconds=_eta(line.completed, line.total, line.rate))
    return ProgressReport(job_name=job_name, progress=progress)


def parse_progress(log_tail: str, kind: str, job_name: str) -> ProgressReport | None:
    """The progress the newest well-formed report in `log_tail` states, or None when there is none."""
    if kind in TRAINING_KINDS:
        train = [line for line in parse_lines(log_tail, TrainLine) if line.error is None]
        return _training_report(train, job_name) if train else None
    stages = parse_lines(log_tail, ProgressLine)
    return _stage_report(stages[-1], job_name) if stages else None


def rank_zero_pod(pods: list[dict[str, Any]], job_name: str) -> str | None:
    """Name of the pod whose log to read: completion index 0 of the Job (rank 0 prints the reports), the newest
    one that has started (a replaced pod leaves its failed predecessor behind)."""

    def started(pod: dict[str, Any]) -> bool:
        return any("running" in c.get("state", {}) or "terminated" in c.get("state", {})
                   for c in pod.get("status", {}).get("containerStatuses", []))

    def created(pod: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(pod["metadata"].get("creationTimestamp", "1970-01-01T00:00:00Z")
                                      .replace("Z", "+00:00"))

    candidates = [p for p in pods if p["metadata"].get("labels", {}).get("job-name") == job_name
                  and p["metadata"].get("annotations", {}).get(COMPLETION_INDEX_ANNOTATION, "0") == "0"
                  and started(p)]
    if not candidates:
        return None
    return str(max(candidates, key=lambda p: (p.get("status", {}).get("phase") == "Running", created(p)))
               ["metadata"]["name"])


def _merged(status: dict[str, Any], report: ProgressReport) -> dict[str, Any]:
    out = {**status, "progress": report.progress.to_wire()}
    if report.metrics is not None:
        out["metrics"] = {**(status.get("metrics") or {}), **report.metrics.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude_unset=True)}
    return out


def with_progress(status: dict[str, Any], report: ProgressReport | None) -> dict[str, Any]:
    """The decided status (wire form) with live progress merged in: the report while the run it came from is
    Running, 100% once it Succeeded; any other phase keeps what was last shown (a Failed run shows how far it got).
    """
    phase = status.get("phase")
    current = report is not None and report.job_name == status.get("jobName")
    if phase == Phase.RUNNING and current:
        return _merged(status, report)
    if phase == Phase.SUCCEEDED:
        if current:  # the last report, read as the run ended: its final loss
            status = _merged(status, report)
        if not status.get("progress"):  # finished before a report was read: all there is to say is that it ran
            return {**status, "progress": Progress(completed=1, total=1, unit="runs", percent="100%",
                                                   eta_seconds=0).to_wire()}
        shown = Progress.model_validate(status["progress"])
        done = shown.model_copy(update={"completed": shown.total if shown.total is not None else shown.completed,
                                        "percent": "100%", "eta_seconds": 0})
        return {**status, "progress": done.to_wire()}
    if phase == Phase.FAILED and (status.get("progress") or {}).get("etaSeconds") is not None:
        return {**status, "progress": {k: v for k, v in status["progress"].items() if k != "etaSeconds"}}
    return status
