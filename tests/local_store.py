"""A local-mode store for the tests of `llmops.operator.local`: resources as the runner writes them.

Statuses come from the real status models' `to_wire()`, so a renamed field breaks these tests rather than
hiding behind hand-written dicts; specs come from the lifecycle examples.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from llmops.operator.api.v1alpha1.common import Condition, ConditionStatus, Phase, Progress
from llmops.operator.api.v1alpha1.dataset import DatasetStats, DatasetStatus
from llmops.operator.api.v1alpha1.deployment import CanaryStatus, DeploymentPhase, DeploymentStatus
from llmops.operator.api.v1alpha1.evaluation import EvaluationStatus, Verdict
from llmops.operator.api.v1alpha1.pretrainjob import TrainingMetrics, TrainingStatus
from llmops.trainer.config.evaluate import Metric, MetricResult
from tests.conftest import example

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    """RFC 3339 with a Z, as the API server (and so the runner) writes timestamps."""
    return moment.isoformat().replace("+00:00", "Z")


def resource(kind: str, status: dict[str, Any] | None, *, age: timedelta = timedelta(minutes=5)) -> dict[str, Any]:
    """The lifecycle example of `kind` with a status, as `<store>/resources/<kind>/<name>.yaml` holds it."""
    doc = example(kind)
    doc["metadata"] = {"name": doc["metadata"]["name"], "namespace": "default", "generation": 1,
                       "creationTimestamp": stamp(NOW - age), "annotations": {}}
    doc["status"] = status
    return doc


def ready(status: str, reason: str, message: str, ago: timedelta = timedelta(seconds=30)) -> Condition:
    return Condition(type="Ready", status=ConditionStatus(status), reason=reason, message=message,
                     last_transition_time=NOW - ago)


def dataset() -> dict[str, Any]:
    status = DatasetStatus(phase=Phase.SUCCEEDED, conditions=[ready("True", "Succeeded", "1200 documents kept")],
                           stats=DatasetStats(documents_read=1500, documents_kept=1200, tokens=345678,
                                              dropped={"quality.minWords": 300}),
                           artifact_uri="artifacts/datasets/shakespeare")
    return resource("Dataset", status.to_wire(), age=timedelta(hours=3))


def pretrain(completed: int = 40, loss: float = 5.12345, phase: Phase = Phase.RUNNING,
             reason: str = "Training", artifact: str | None = None) -> dict[str, Any]:
    status = TrainingStatus(
        phase=phase,
        conditions=[ready("True" if phase == Phase.SUCCEEDED else "False", reason, "torchrun on 1 process")],
        progress=Progress(completed=completed, total=200, unit="steps", percent=f"{completed * 100 // 200}%",
                          rate=2.1, eta_seconds=76),
        metrics=TrainingMetrics(step=completed, loss=loss, tokens_per_second=12345.6, learning_rate=3e-4),
        artifact_uri=artifact,
    )
    return resource("PretrainJob", status.to_wire())


def finetune() -> dict[str, Any]:
    status = TrainingStatus(phase=Phase.WAITING, waiting_for="PretrainJob tiny-shakespeare")
    return resource("FineTune", status.to_wire(), age=timedelta(seconds=45))


def evaluation() -> dict[str, Any]:
    status = EvaluationStatus(
        phase=Phase.SUCCEEDED, verdict=Verdict.FAILED,
        conditions=[ready("True", "Failed", "1 of 2 thresholds failed")],
        results=[MetricResult(task="heldout", metric=Metric.PERPLEXITY, value=42.123, threshold="<= 400",
                              passed=True),
                 MetricResult(task="who-said-it", metric=Metric.ACC, value=0.125, threshold=">= 0.2", passed=False)],
    )
    return resource("Evaluation", status.to_wire())


def deployment() -> dict[str, Any]:
    status = DeploymentStatus(phase=DeploymentPhase.PROGRESSING, ready_replicas=2, current_revision=1,
                              canary=CanaryStatus(revision=2, step=1, weight=25), url="http://127.0.0.1:8000/v1")
    return resource("Deployment", status.to_wire(), age=timedelta(days=2, hours=1))


def lifecycle() -> list[dict[str, Any]]:
    """One resource of every kind, deliberately not in lifecycle order."""
    return [deployment(), evaluation(), finetune(), pretrain(), dataset()]


def write_store(store: Path, resources: list[dict[str, Any]],
                events: dict[tuple[str, str], list[dict[str, Any]]] | None = None) -> Path:
    """Lay resources and events out the way the runner does."""
    for doc in resources:
        path = store / "resources" / doc["kind"].lower() / f"{doc['metadata']['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    for (kind, name), items in (events or {}).items():
        path = store / "events" / kind.lower() / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return store


def event(reason: str, message: str, ago: timedelta, type_: str = "Normal") -> dict[str, Any]:
    return {"time": stamp(NOW - ago), "type": type_, "reason": reason, "message": message}
