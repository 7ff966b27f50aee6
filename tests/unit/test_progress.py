"""Live progress: parsing the workloads' JSON lines, picking the pod to read, merging into the status."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3
from kubernetes.client import ApiException
from pydantic import ValidationError

from llmops.operator.api.v1alpha1.common import Phase, Progress
from llmops.operator.api.v1alpha1.pretrainjob import TrainingMetrics, TrainingStatus
from llmops.operator.reconcile.jobs import JobState
from llmops.operator.reconcile.progress import ProgressReport, parse_progress, percent, rank_zero_pod, with_progress
from llmops.operator.reconcile.workload import workload_status
from llmops.operator.runtime.handlers import KINDS, Controller
from llmops.operator.runtime.metrics import OperatorMetrics
from llmops.operator.settings import OperatorSettings

JOB = "tiny-train-1"


def train(step: int, time: float, **extra: Any) -> str:
    return json.dumps({"event": "train", "time": time, "step": step, "totalSteps": 200, **extra})


def stage(stage: str, completed: int, total: int | None, unit: str = "documents", rate: float | None = 50.0) -> str:
    return json.dumps({"event": "progress", "stage": stage, "completed": completed, "total": total, "unit": unit,
                       "rate": rate, "elapsedSeconds": 3.0})


TRAINING = "\n".join([
    "W1124 torch/distributed: some warning, not JSON",
    train(20, 1000.0, loss=4.1, learningRate=3e-4, gradNorm=1.5, tokensPerSecond=8000.0, tokensSeen=40960,
          etaSeconds=90),
    train(40, 1010.0, loss=3.25, learningRate=2.9e-4, gradNorm=1.2, tokensPerSecond=8192.0, tokensSeen=81920,
          etaSeconds=80, mfu=0.31),
])


@pytest.mark.parametrize(
    ("log", "kind", "want_progress", "want_metrics"),
    [
        pytest.param(TRAINING, "PretrainJob",
                     {"completed": 40, "total": 200, "unit": "steps", "percent": "20%", "rate": 2.0,
                      "etaSeconds": 80},
                     {"step": 40, "loss": 3.25, "learningRate": 2.9e-4, "gradNorm": 1.2, "tokensPerSecond": 8192.0,
                      "tokensSeen": 81920, "mfu": 0.31},
                     id="the newest report wins; steps/s from the last two reports"),
        pytest.param(TRAINING + "\n" + json.dumps({"event": "train", "time": 1011.0, "step": 40,
                                                  "validationLoss": 3.5}),
                     "PretrainJob",
                     {"completed": 40, "total": 200, "unit": "steps", "percent": "20%", "rate": 2.0,
                      "etaSeconds": 80},
                     {"step": 40, "loss": 3.25, "validationLoss": 3.5, "learningRate": 2.9e-4, "gradNorm": 1.2,
                      "tokensPerSecond": 8192.0, "tokensSeen": 81920, "mfu": 0.31},
                     id="a validation report adds its loss and hides nothing"),
        pytest.param(TRAINING + '\n{"event": "train", "time": 1020.0, "step": 60, "totalSt', "PretrainJob",
                     {"completed": 40, "total": 200, "unit": "steps", "percent": "20%", "rate": 2.0,
                      "etaSeconds": 80}, None, id="a partial last line is ignored"),
        pytest.param(TRAINING + "\n" + train(41, 1011.0, loss=float("nan"), gradNorm=float("inf"),
                                             error="NonFiniteLoss"), "PretrainJob",
                     {"completed": 40, "total": 200, "unit": "steps", "percent": "20%", "rate": 2.0,
                      "etaSeconds": 80}, None, id="a non-finite report is no report"),
        pytest.param("\n".join([train(99, 5.0, loss=1.0), json.dumps({"event": "train", "step": "many"}),
                                "[1, 2]", "{not json}", "null"]), "FineTune",
                     {"completed": 99, "total": 200, "unit": "steps", "percent": "49%"},
                     {"step": 99, "loss": 1.0}, id="junk and wrongly typed lines are skipped; percent rounds down"),
        pytest.param("\n".join([train(10, 100.0, loss=2.0), train(20, 105.0, loss=1.9)]), "FineTune",
                     {"completed": 20, "total": 200, "unit": "steps", "percent": "10%", "rate": 2.0,
                      "etaSeconds": 90}, {"step": 20, "loss": 1.9}, id="no ETA printed: computed from the rate"),
        pytest.param("\n".join([stage("read", 500, None), stage("clean", 120, 500)]), "Dataset",
                     {"completed": 120, "total": 500, "unit": "documents (clean)", "percent": "24%", "rate": 50.0,
                      "etaSeconds": 8}, None, id="a pipeline stage, named in the unit"),
        pytest.param(stage("pack", 81920, None, unit="tokens"), "Dataset",
                     {"completed": 81920, "unit": "tokens (pack)", "rate": 50.0}, None,
                     id="a stage without a total has no percent"),
        pytest.param(stage("done", 480, 500), "Dataset",
                     {"completed": 500, "total": 500, "unit": "documents", "percent": "100%", "rate": 50.0,
                      "etaSeconds": 0}, None, id="the pipeline's last line means done"),
        pytest.param(json.dumps({"event": "progress", "completed": 3, "total": 12, "unit": "examples"}),
                     "Evaluation", {"completed": 3, "total": 12, "unit": "examples", "percent": "25%"}, None,
                     id="an evaluation may print plain progress lines"),
    ],
)
def test_parse_progress(log: str, kind: str, want_progress: dict[str, Any],
                        want_metrics: dict[str, Any] | None) -> None:
    report = parse_progress(log, kind, JOB)
    assert report is not None and report.job_name == JOB
    assert report.progress.to_wire() == want_progress
    if want_metrics is not None:
        assert report.metrics is not None
        assert report.metrics.model_dump(mode="json", by_alias=True, exclude_none=True,
                                         exclude_unset=True) == want_metrics
    if kind not in ("PretrainJob", "FineTune"):
        assert report.metrics is None


@pytest.mark.parametrize(
    ("log", "kind"),
    [
        ("", "PretrainJob"),
        ("starting torchrun\nrendezvous ok\n", "PretrainJob"),
        (stage("clean", 1, 2), "PretrainJob"),  # another kind's lines are not this kind's report
        (train(1, 1.0, loss=1.0), "Dataset"),
        ('{"event": "progress", "completed": -1}', "Evaluation"),
    ],
)
def test_no_report_in_the_log_is_none(log: str, kind: str) -> None:
    assert parse_progress(log, kind, JOB) is None


@pytest.mark.parametrize(("completed", "total", "want"),
                         [(0, 200, "0%"), (1, 3, "33%"), (199, 200, "99%"), (200, 200, "100%"), (250, 200, "100%"),
                          (5, None, None), (5, 0, None)])
def test_percent(completed: int, total: int | None, want: str | None) -> None:
    assert percent(completed, total) == want


def pod(name: str, index: str, phase: str = "Running", created: str = "2026-11-24T10:00:00Z",
        job: str = JOB) -> dict[str, Any]:
    state = {"Running": {"running": {}}, "Pending": {"waiting": {"reason": "ContainerCreating"}},
             "Failed": {"terminated": {"exitCode": 75}}}[phase]
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": {"job-name": job},
                         "annotations": {"batch.kubernetes.io/job-completion-index": index}},
            "status": {"phase": phase, "containerStatuses": [{"name": "main", "state": state}]}}


@pytest.mark.parametrize(
    ("pods", "want"),
    [
        ([pod("a-1", "1"), pod("a-0", "0")], "a-0"),
        ([pod("a-0", "0", "Pending")], None),  # no log before the container starts
        ([pod("old", "0", "Failed", "2026-11-24T09:00:00Z"), pod("new", "0", created="2026-11-24T09:30:00Z")],
         "new"),
        ([pod("old", "0", "Failed", "2026-11-24T09:00:00Z"), pod("new", "0", "Pending", "2026-11-24T09:30:00Z")],
         "old"),  # the replacement has not started: the failed one still has the newest words
        ([pod("other", "0", job="tiny-train-2")], None),
        ([], None),
    ],
)
def test_rank_zero_pod(pods: list[dict[str, Any]], want: str | None) -> None:
    assert rank_zero_pod(pods, JOB) == want


REPORT = ProgressReport(job_name=JOB, progress=Progress(completed=40, total=200, percent="20%", eta_seconds=80),
                        metrics=TrainingMetrics(step=40, loss=3.25))


@pytest.mark.parametrize(
    ("status", "report", "want_progress", "want_metrics"),
    [
        pytest.param({"phase": "Running", "jobName": JOB, "metrics": {"step": 20, "validationLoss": 3.9}}, REPORT,
                     {"completed": 40, "total": 200, "unit": "steps", "percent": "20%", "etaSeconds": 80},
                     {"step": 40, "loss": 3.25, "validationLoss": 3.9}, id="running: the report is shown"),
        pytest.param({"phase": "Running", "jobName": "tiny-train-2"}, REPORT, None, None,
                     id="a report of an earlier run is not shown"),
        pytest.param({"phase": "Pending", "jobName": JOB, "progress": {"completed": 20, "total": 200}}, REPORT,
                     {"completed": 20, "total": 200}, None, id="pending again (a pod replaced): kept as it was"),
        pytest.param({"phase": "Succeeded", "jobName": JOB,
                      "progress": {"completed": 180, "total": 200, "percent": "90%", "etaSeconds": 20}}, REPORT,
                     {"completed": 200, "total": 200, "unit": "steps", "percent": "100%", "etaSeconds": 0},
                     {"step": 40, "loss": 3.25}, id="succeeded: all done, with the last report's loss"),
        pytest.param({"phase": "Succeeded", "jobName": JOB}, None,
                     {"completed": 1, "total": 1, "unit": "runs", "percent": "100%", "etaSeconds": 0}, None,
                     id="succeeded before any report was read: still 100%"),
        pytest.param({"phase": "Failed", "jobName": JOB,
                      "progress": {"completed": 180, "total": 200, "percent": "90%", "etaSeconds": 20}}, REPORT,
                     {"completed": 180, "total": 200, "percent": "90%"}, None,
                     id="failed: how far it got, no ETA"),
    ],
)
def test_with_progress(status: dict[str, Any], report: ProgressReport | None, want_progress: dict[str, Any] | None,
                       want_metrics: dict[str, Any] | None) -> None:
    before = json.dumps(status, sort_keys=True)
    out = with_progress(status, report)
    assert out.get("progress") == want_progress
    if want_metrics is not None:
        assert out["metrics"] == want_metrics
    assert json.dumps(status, sort_keys=True) == before  # pure: the input is not changed
    assert {k: v for k, v in out.items() if k not in ("progress", "metrics")} == \
        {k: v for k, v in status.items() if k not in ("progress", "metrics")}


def test_a_new_run_starts_without_the_old_runs_progress() -> None:
    previous = TrainingStatus(job_name="tiny-train-1", phase=Phase.SUCCEEDED,
                              progress=Progress(completed=200, total=200, percent="100%"),
                              metrics=TrainingMetrics(step=200, loss=1.5))
    state = JobState(Phase.RUNNING, "Running", "running")
    now = datetime(2026, 11, 24, tzinfo=UTC)
    same, _ = workload_status(previous, state, generation=1, job_name="tiny-train-1", artifact_uri="x", now=now)
    assert same.progress == previous.progress and same.metrics == previous.metrics
    fresh, _ = workload_status(previous, state, generation=2, job_name="tiny-train-2", artifact_uri="x", now=now)
    assert fresh.progress is None and fresh.metrics is None


def test_the_interval_is_a_setting_and_zero_turns_it_off() -> None:
    assert OperatorSettings.from_env({}).progress_interval_seconds == 15
    assert OperatorSettings.from_env({"LLMOPS_PROGRESS_INTERVAL_SECONDS": "0"}).progress_interval_seconds == 0
    with pytest.raises(ValidationError, match="progress_interval_seconds"):
        OperatorSettings.from_env({"LLMOPS_PROGRESS_INTERVAL_SECONDS": "-1"})


class FakeLogs:
    """Stands in for KubeWriter.read_log: returns the next text, or raises the next error."""

    def __init__(self, *answers: str | Exception):
        self.answers, self.reads = list(answers), 0

    def read_log(self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int) -> str:
        self.reads += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def observe(logs: FakeLogs, phase: str = "Running", pods: list[dict[str, Any]] | None = None) -> list[bool]:
    controller = Controller(OperatorSettings(), logs, OperatorMetrics())  # type: ignore[arg-type]
    kind = next(k for k in KINDS if k.name == "PretrainJob")
    body = {"metadata": {"namespace": "team", "name": "tiny"}, "status": {"phase": phase, "jobName": JOB}}
    pods = [pod("tiny-train-1-0", "0")] if pods is None else pods

    async def run() -> list[bool]:
        return [await controller.observe_progress(kind, body, pods) for _ in logs.answers[:]]

    return asyncio.run(run())


def test_observing_reports_only_new_progress() -> None:
    first, later = train(20, 1.0, loss=3.0), train(40, 2.0, loss=2.5)
    assert observe(FakeLogs(first, first, first + "\n" + later, "no report here")) == [True, False, True, False]


@pytest.mark.parametrize("error", [ApiException(status=400, reason="container is waiting to start"),
                                   ApiException(status=404, reason="Not Found"),
                                   urllib3.exceptions.ReadTimeoutError(None, "/log", "read timed out"),
                                   ConnectionResetError()])
def test_a_log_that_cannot_be_read_is_skipped_quietly(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    logs = FakeLogs(error, train(20, 1.0, loss=3.0))
    assert observe(logs) == [False, True]  # and the next tick reads again
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_forbidden_log_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    assert observe(FakeLogs(forbidden, forbidden, forbidden)) == [False, False, False]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "no live progress: reading pod logs is forbidden (the operator's role needs pods/log get)"]


@pytest.mark.parametrize(("phase", "pods"), [("Succeeded", None), ("Pending", None),
                                             ("Running", [pod("tiny-train-1-0", "0", "Pending")])])
def test_nothing_is_read_unless_a_started_rank_zero_pod_runs(phase: str, pods: list[dict[str, Any]] | None) -> None:
    logs = FakeLogs(train(20, 1.0, loss=3.0))
    assert observe(logs, phase, pods) == [False]
    assert logs.reads == 0
