"""Deployment (llmops.dev): serve a model that passed its gate, with canary rollout and rollback."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from llmops.trainer.config.base import ApiModel, Rule, StatusModel
from llmops.trainer.config.serve import ServerConfig
from llmops.trainer.config.types import Fraction

from .common import (
    AGE_COLUMN,
    CONDITIONS_SCHEMA_EXTRA,
    ComputeResources,
    Condition,
    CrdNames,
    Duration,
    ImageSpec,
    ModelRef,
    ObjectName,
    Placement,
    PrinterColumn,
    Resource,
    SecretKeySelector,
)


class Gate(ApiModel):
    """The promotion gate: an Evaluation of the same model that must have the verdict Passed."""

    evaluation: ObjectName
    """Name of an Evaluation in this namespace whose spec.model equals this Deployment's spec.model."""


class CanaryStep(ApiModel):
    """Send `weight` percent of traffic to the new revision, then hold for `pause` while analysis runs."""

    weight: int = Field(ge=1, le=100)
    """Percent of requests routed to the new revision."""

    pause: Duration = "5m"
    """How long to hold this weight before the next step (Go duration, e.g. 30s, 5m, 1h)."""


class CanaryAnalysis(ApiModel):
    """Checks run on the new revision's metrics at every interval; failureLimit failed checks roll back."""

    interval: Duration = "1m"
    """Time between checks."""

    max_error_rate: Fraction = 0.01
    """Largest share of 5xx responses."""

    max_time_to_first_token_p99_ms: float | None = Field(default=None, gt=0)
    """Largest 99th-percentile time to first token, in milliseconds."""

    max_latency_p99_ms: float | None = Field(default=None, gt=0)
    """Largest 99th-percentile request latency, in milliseconds."""

    min_requests: int = Field(default=20, ge=0)
    """Requests a check needs to count; with fewer the check is inconclusive, neither pass nor fail."""

    failure_limit: int = Field(default=2, ge=1, le=100)
    """Failed checks that trigger automatic rollback."""


class CanaryStrategy(ApiModel):
    """Progressive traffic shifting for a new model revision; without it a new revision replaces the old."""

    steps: list[CanaryStep] = Field(min_length=1, max_length=20)
    """Traffic steps with strictly increasing weights; after the last the new revision takes all traffic."""

    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)
    """Metric checks that decide between promotion and rollback."""

    cel_rules = (
        Rule(
            "self.steps.map(s, s.weight).isSorted()"
            " && self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight))",
            "steps[].weight must increase strictly from step to step (e.g. 10, 50, 100)",
            field_path=".steps",
        ),
    )


class ServerSpec(ServerConfig):
    """Model server settings plus what only Kubernetes knows."""

    api_key_secret: SecretKeySelector | None = None
    """Secret key holding the API key clients must send as a Bearer token. Unset: no authentication."""


class DeploymentSpec(ApiModel):
    """Model, gate, replicas, server settings and rollout strategy."""

    model: ModelRef
    """Model to serve."""

    gate: Gate
    """Evaluation that must have Passed before any traffic reaches this model."""

    replicas: int = Field(default=1, ge=0, le=10000)
    """Model server pods of the stable revision."""

    server: ServerSpec = Field(default_factory=ServerSpec)
    """Server settings and limits."""

    gpus_per_replica: int = Field(default=0, ge=0, le=64)
    """GPUs per server pod."""

    resources: ComputeResources = Field(default_factory=ComputeResources)
    """CPU and memory per server pod."""

    placement: Placement = Field(default_factory=Placement)
    """Node selection for server pods."""

    image: ImageSpec = Field(default_factory=ImageSpec)
    """Server image."""

    canary: CanaryStrategy | None = None
    """Canary rollout of a new revision. Unset: replace at once once the new pods are ready."""

    revision_history_limit: int = Field(default=5, ge=0, le=100)
    """Old revisions kept for rollback."""


class DeploymentPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    ROLLING_BACK = "RollingBack"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class CanaryStatus(StatusModel):
    step: int
    """Index of the current canary step."""

    weight: int
    """Percent of traffic on the new revision."""

    failed_checks: int = 0
    """Analysis checks failed so far in this rollout."""

    last_check: str | None = None
    """Outcome of the latest analysis check, in words."""


class Revision(StatusModel):
    """A model revision this Deployment served."""

    revision: int
    """Increasing revision number."""

    model_uri: str
    """Artifact served."""

    evaluation: str
    """Evaluation that gated it."""

    deployed_at: datetime | None = None
    """When it took all traffic."""

    outcome: str | None = None
    """Promoted, RolledBack or Superseded."""


class DeploymentStatus(StatusModel):
    phase: DeploymentPhase | None = None
    """Waiting (for the gate), Progressing (rolling out), Available, RollingBack, Degraded or Failed."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Ready, Gated, Progressing and Degraded, with reasons."""

    observed_generation: int | None = None
    """metadata.generation the status reflects."""

    replicas: int = 0
    """Server pods."""

    ready_replicas: int = 0
    """Server pods ready to take traffic."""

    url: str | None = None
    """In-cluster base URL of the OpenAI-compatible API."""

    current_revision: int | None = None
    """Revision taking (most of) the traffic."""

    canary: CanaryStatus | None = None
    """State of a rollout in progress."""

    history: list[Revision] = Field(default_factory=list, max_length=101)
    """Served revisions, newest last."""


class Deployment(Resource):
    """Serve a gated model over an OpenAI-compatible HTTP API with canary rollout and automatic rollback."""

    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus | None = None

    names = CrdNames(
        plural="deployments",
        short_names=("llmdeploy",),
        printer_columns=(
            PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase"),
            PrinterColumn("Ready", "integer", ".status.readyReplicas", "Ready server pods"),
            PrinterColumn("Canary", "integer", ".status.canary.weight", "Percent of traffic on the new revision"),
            PrinterColumn("Revision", "integer", ".status.currentRevision", "Revision serving traffic"),
            PrinterColumn("URL", "string", ".status.url", "In-cluster API URL", priority=1),
            AGE_COLUMN,
        ),
    )
