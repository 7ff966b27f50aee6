"""Evaluation: score a model on held-out text and tasks; its verdict gates Deployment.

The model is a trained artifact (loaded by the workload) or a live OpenAI-compatible endpoint (scored over
HTTP, nothing loaded): the same tasks, the same metrics.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from llmops.trainer.config.base import Rule
from llmops.trainer.config.evaluate import (
    ENDPOINT_TASKS,
    EndpointTarget,
    EvalRunConfig,
    MetricResult,
    TaskSettings,
    Threshold,
)
from llmops.trainer.config.types import Uri

from .common import (
    AGE_COLUMN,
    PHASE_COLUMN,
    PROGRESS_COLUMN,
    CrdNames,
    ImageSpec,
    ModelRef,
    NodePool,
    ObjectName,
    Output,
    PrinterColumn,
    Resource,
    SecretKeySelector,
    WorkloadStatus,
)


class EvaluationTask(TaskSettings):
    """A task and its data: a Dataset's validation split, or local files (nothing is downloaded)."""

    dataset: ObjectName | None = None
    """Name of a Dataset; its validation split is scored (perplexity) once it has Succeeded."""

    uri: Uri | None = None
    """Text or JSONL data for the task (for lmEval: a directory with the task's local data)."""

    cel_rules = TaskSettings.cel_rules + (
        Rule(
            "self.type == 'lmEval' ? !has(self.dataset) : has(self.dataset) != has(self.uri)",
            "set exactly one of dataset or uri (type lmEval takes an optional uri only)",
        ),
    )


class ModelEndpoint(EndpointTarget):
    """A model served by an OpenAI-compatible server (llmops-serve, vLLM), scored over HTTP: tasks of type
    perplexity, multipleChoice and exactMatch."""

    api_key_secret: SecretKeySelector | None = None
    """Secret key holding the API key, sent as a Bearer token. Unset: no key."""


class EvaluatedModel(ModelRef):
    """The model under evaluation: a trained artifact, or a live endpoint."""

    endpoint: ModelEndpoint | None = None
    """A served model, scored over HTTP: the Evaluation waits for nothing and loads no weights."""

    cel_rules = (
        Rule(
            "[has(self.pretrainJob), has(self.fineTune), has(self.uri), has(self.endpoint)].filter(x, x).size() == 1",
            "set exactly one of pretrainJob, fineTune, uri or endpoint",
        ),
    )


class BaselineRef(ModelRef):
    """The model to compare with: usually what a Deployment serves now."""

    deployment: ObjectName | None = None
    """Name of an llmops.dev Deployment; its currently served model is the baseline."""

    cel_rules = (
        Rule(
            "[has(self.pretrainJob), has(self.fineTune), has(self.uri), has(self.deployment)]"
            ".filter(x, x).size() == 1",
            "set exactly one of pretrainJob, fineTune, uri or deployment",
        ),
    )


class EvaluationSpec(EvalRunConfig):
    """Model, tasks, pass thresholds and where to run."""

    model: EvaluatedModel
    """Model under evaluation."""

    baseline: BaselineRef | None = None
    """Model to compare with (thresholds with relativeTo baseline, winRate tasks)."""

    judge: ModelRef | None = None
    """A reward model (e.g. a FineTune of method reward) that judges winRate tasks: a prompt is won when it
    rewards the model's answer above the baseline's, and rows need no reference answers. Unset: the answer with
    the higher F1 against the references wins."""

    tasks: list[EvaluationTask] = Field(min_length=1, max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    """What to measure."""

    thresholds: list[Threshold] = Field(default_factory=list, max_length=128)
    """Pass conditions; with none, every completed Evaluation Passes."""

    node_pool: NodePool = Field(default_factory=NodePool)
    """Nodes, GPUs and placement."""

    image: ImageSpec = Field(default_factory=ImageSpec)
    """Workload image."""

    output: Output = Field(default_factory=Output)
    """Where results.json goes. Unset: next to the model."""

    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Retries of a failed run."""

    cel_rules = (
        Rule(
            "self.tasks.all(a, self.tasks.exists_one(b, b.name == a.name))",
            "tasks[].name must be unique",
            field_path=".tasks",
        ),
        Rule(
            "self.thresholds.all(t, self.tasks.exists(k, k.name == t.task))",
            "every thresholds[].task must name one of tasks[].name",
            field_path=".thresholds",
        ),
        Rule(
            "has(self.baseline) || !(self.thresholds.exists(t, t.relativeTo == 'baseline') "
            "|| self.tasks.exists(k, k.type == 'winRate'))",
            "thresholds relative to the baseline and winRate tasks need spec.baseline",
            field_path=".baseline",
        ),
        Rule(
            "!has(self.model.endpoint) || !has(self.baseline)",
            "a baseline is scored from its weights, which an Evaluation of an endpoint does not load: compare "
            "an endpoint with absolute thresholds (min or max)",
            field_path=".baseline",
        ),
        Rule(
            "!has(self.judge) || self.tasks.exists(k, k.type == 'winRate')",
            "spec.judge judges winRate tasks only: add a task of type winRate (with spec.baseline to compare "
            "with) or remove spec.judge",
            field_path=".judge",
        ),
        Rule(
            "!has(self.model.endpoint) || !has(self.judge)",
            "spec.judge compares the model's answers with a baseline's, which an Evaluation of an endpoint does not "
            "score: remove spec.judge and compare an endpoint with absolute thresholds (min or max)",
            field_path=".judge",
        ),
        Rule(
            f"!has(self.model.endpoint) || self.tasks.all(k, k.type in {[t.value for t in ENDPOINT_TASKS]})",
            f"an endpoint is scored on tasks of type {', '.join(t.value for t in ENDPOINT_TASKS)} only (classification "
            "needs the model's head, lmEval the model loaded in the workload)",
            field_path=".tasks",
        ),
    )


class Verdict(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"


class EvaluationStatus(WorkloadStatus):
    model_run: str | None = None
    """Which run of the referenced PretrainJob or FineTune made that artifact (`FineTune/NAME@JOB`); a retrained
    model at the same URI is another artifact to a Deployment's gate."""

    model_uri: str | None = None
    """The artifact this run scores, or the endpoint's URL (a Deployment's gate counts this Evaluation only for
    that artifact)."""

    verdict: Verdict | None = None
    """Passed when every threshold held."""

    results: list[MetricResult] = Field(default_factory=list)
    """Every metric measured."""

    results_uri: str | None = None
    """results.json with the full report."""


class Evaluation(Resource):
    """Evaluate a model; the verdict (Passed/Failed) gates its Deployment."""

    kind: Literal["Evaluation"] = "Evaluation"
    spec: EvaluationSpec
    status: EvaluationStatus | None = None

    names = CrdNames(
        plural="evaluations",
        short_names=("llmeval",),
        printer_columns=(
            PHASE_COLUMN,
            PrinterColumn("Verdict", "string", ".status.verdict", "Passed or Failed"),
            PROGRESS_COLUMN,
            AGE_COLUMN,
        ),
    )
