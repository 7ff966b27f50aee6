"""Deployment (llmops.dev): serve a model that passed its gate, with canary rollout and rollback."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from llmops.trainer.config.base import ApiModel, Rule, StatusModel
from llmops.trainer.config.evaluate import Threshold
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
from .evaluation import EvaluationTask


class Gate(ApiModel):
    """The promotion gate: an Evaluation that must have the verdict Passed for the very artifact served."""

    evaluation: ObjectName
    """Name of an Evaluation in this namespace. It counts only once it has Passed and the artifact it scored
    (`status.modelUri`) is the one this Deployment resolves from spec.model; an Evaluation of another model, or
    of an older run of the same one, does not."""


class CanaryStep(ApiModel):
    """Send `weight` percent of traffic to the new revision, then hold for `pause` while analysis runs."""

    weight: int = Field(ge=1, le=100)
    """Percent of requests routed to the new revision."""

    pause: Duration = "5m"
    """How long to hold this weight before the next step (Go duration, e.g. 30s, 5m, 1h). With analysis, the
    step also needs one passing check before it ends."""


class StableComparison(ApiModel):
    """The canary measured against the stable revision over the same interval (both need minRequests)."""

    latency_tolerance: float = Field(default=0.25, ge=0, le=100)
    """Largest relative regression of each p99 latency: canary <= stable x (1 + tolerance)."""

    error_rate_tolerance: Fraction = 0.01
    """Largest increase of the 5xx share: canary <= stable + tolerance."""


class OnlineEvaluation(ApiModel):
    """Tasks scored against the canary's OpenAI-compatible endpoint by a Job running llmops-evaluate."""

    tasks: list[EvaluationTask] = Field(min_length=1, max_length=16)
    """What to measure (tasks that need only the HTTP API: exactMatch, f1, multipleChoice, perplexity)."""

    thresholds: list[Threshold] = Field(default_factory=list, max_length=64)
    """Pass conditions."""

    cel_rules = (
        Rule(
            "self.tasks.all(t, has(t.uri))",
            "online evaluation tasks read their data from uri (a Dataset's split is not resolved for them)",
            field_path=".tasks",
        ),
        Rule(
            "self.thresholds.all(t, self.tasks.exists(k, k.name == t.task))",
            "every thresholds[].task must name one of tasks[].name",
            field_path=".thresholds",
        ),
    )


class CanaryAnalysis(ApiModel):
    """Checks of the canary's (and the stable's) live metrics at every interval.

    A check with fewer than minRequests canary requests is inconclusive: never a failure. failureLimit failed
    checks roll back; inconclusiveLimit inconclusive checks pause the rollout until it is promoted or aborted.
    """

    interval: Duration = "1m"
    """Time between checks; each check covers the requests of the interval before it."""

    max_error_rate: Fraction = 0.01
    """Largest share of 5xx responses."""

    max_time_to_first_token_p99_ms: float | None = Field(default=None, gt=0)
    """Largest 99th-percentile time to first token, in milliseconds (streamed or not)."""

    max_time_per_output_token_p99_ms: float | None = Field(default=None, gt=0)
    """Largest 99th-percentile time per output token after the first, in milliseconds."""

    max_latency_p99_ms: float | None = Field(default=None, gt=0)
    """Largest 99th-percentile request latency (receipt to last byte), in milliseconds."""

    min_requests: int = Field(default=20, ge=0)
    """Requests a check needs to count; with fewer the check is inconclusive, neither pass nor fail."""

    failure_limit: int = Field(default=2, ge=1, le=100)
    """Failed checks in one rollout that trigger automatic rollback."""

    inconclusive_limit: int = Field(default=5, ge=1, le=1000)
    """Inconclusive checks in one rollout that pause it (condition Progressing=False, AnalysisInconclusive)."""

    compare_to_stable: StableComparison | None = None
    """Also require the canary to be no worse than the stable by a tolerance."""

    online_evaluation: OnlineEvaluation | None = None
    """An Evaluation run against the canary's live endpoint at each step; a Failed verdict is a failed check."""


class CanaryStrategy(ApiModel):
    """Progressive traffic shifting for a new model revision; without it a new revision replaces the old."""

    steps: list[CanaryStep] = Field(min_length=1, max_length=20)
    """Traffic steps with strictly increasing weights; after the last the new revision takes all traffic."""

    analysis: CanaryAnalysis | None = None
    """Metric checks that decide between promotion and rollback. Unset: steps advance on their pauses alone."""

    scale_down_delay: Duration = "30s"
    """How long the old stable keeps running after a promotion, while post-promotion analysis continues; a
    failure meanwhile rolls back to it at once, without a cold start."""

    cel_rules = (
        Rule(
            "self.steps.map(s, s.weight).isSorted()"
            " && self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight))",
            "steps[].weight must increase strictly from step to step (e.g. 10, 50, 100)",
            field_path=".steps",
        ),
    )


class Runtime(StrEnum):
    LLMOPS = "llmops"
    """Our server (llmops-serve): CPU or GPU."""
    VLLM = "vllm"
    """The vLLM OpenAI-compatible server, for GPU pools (image from spec.image or the chart's vllmImage)."""


class ServerSpec(ServerConfig):
    """Model server settings plus what only Kubernetes knows."""

    runtime: Runtime = Runtime.LLMOPS
    """Which server runs the model: llmops (default) or vllm."""

    api_key_secret: SecretKeySelector | None = None
    """Secret key holding the API key clients must send as a Bearer token. Unset: no authentication."""

    startup_seconds: int = Field(default=600, ge=10, le=86400)
    """How long a pod may take to load its model before its startup probe fails (large models load slowly)."""


class ParentRef(ApiModel):
    """A Gateway the route attaches to (Gateway API parentRef)."""

    name: ObjectName
    """Gateway name."""

    namespace: ObjectName | None = None
    """Gateway namespace. Unset: this Deployment's namespace."""

    section_name: str | None = Field(default=None, min_length=1, max_length=253)
    """Listener name on the Gateway."""


class RouteSpec(ApiModel):
    """The HTTPRoute that splits traffic between revisions, when the cluster serves Gateway API."""

    parent_refs: list[ParentRef] = Field(default_factory=list, max_length=16)
    """Gateways to attach to. Unset: the operator's default (chart value gateway.parentRefs)."""

    hostnames: list[str] = Field(default_factory=list, max_length=16)
    """Host names the route matches."""


class DeploymentSpec(ApiModel):
    """Model, gate, replicas, server settings and rollout strategy."""

    model: ModelRef
    """Model to serve."""

    gate: Gate
    """Evaluation that must have Passed for this model before any traffic reaches it."""

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

    route: RouteSpec = Field(default_factory=RouteSpec)
    """The Gateway API route (used when the cluster serves HTTPRoute)."""

    paused: bool = False
    """Hold a rollout where it is: weights stay, steps do not advance (analysis still runs and may roll back)."""

    progress_deadline: Duration = "10m"
    """How long a new revision's pods may take to become ready before its rollout fails."""

    revision_history_limit: int = Field(default=5, ge=0, le=100)
    """Old revisions kept in status.history (and for `llmops rollout undo`)."""


class DeploymentPhase(StrEnum):
    WAITING = "Waiting"
    """For the model, or for the gate, and nothing serves yet."""
    PROGRESSING = "Progressing"
    """A revision is rolling out (or starting, the first time)."""
    AVAILABLE = "Available"
    """One revision takes all traffic and is ready."""
    ROLLING_BACK = "RollingBack"
    """A canary failed: its traffic is gone and its pods are going."""
    DEGRADED = "Degraded"
    """The stable serves, but the newest revision was rolled back, aborted or failed to start."""
    FAILED = "Failed"
    """Nothing can serve (the only revision failed to start, or the spec cannot be run)."""


class Verdict(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class MetricCheck(StatusModel):
    """One metric of one analysis check."""

    metric: str
    """errorRate, ttftP99Ms, tpotP99Ms, latencyP99Ms, or onlineEvaluation."""

    value: float | None = None
    """The canary's value over the interval (none: no data)."""

    threshold: float | None = None
    """The largest value allowed (absolute, or from the stable plus its tolerance)."""

    stable: float | None = None
    """The stable revision's value over the same interval."""

    passed: bool | None = None
    """Null when it could not be judged (no data)."""


class AnalysisCheck(StatusModel):
    """The outcome of one check, with every value and threshold."""

    time: datetime
    """When it was made."""

    verdict: Verdict
    """Passed, Failed or Inconclusive."""

    requests: int = 0
    """Canary requests in the interval."""

    stable_requests: int | None = None
    """Stable requests in the interval."""

    source: str = "scrape"
    """Where the numbers came from: prometheus or scrape (the operator read the pods' /metrics)."""

    metrics: list[MetricCheck] = Field(default_factory=list, max_length=16)
    """Each metric against its threshold."""

    message: str = ""
    """The verdict in words."""


class CanaryStatus(StatusModel):
    """State of a rollout in progress (or of post-promotion analysis)."""

    revision: int
    """The revision rolling out."""

    previous_revision: int | None = None
    """The stable revision when this rollout began (rolled back to on failure)."""

    step: int = 0
    """Index of the current canary step."""

    weight: int = 0
    """Percent of traffic on the new revision, as routed now."""

    desired_weight: int = 0
    """Percent of traffic the current step asks for (the route reaches it once the canary's pods are ready)."""

    effective_weight: int | None = None
    """Without a traffic router: ready canary pods / all ready pods, in percent (approximate)."""

    started_at: datetime | None = None
    """When the rollout of this revision began (progress deadline)."""

    waiting_since: datetime | None = None
    """When the current step began waiting for the canary's pods (the progress deadline counts from here)."""

    step_started_at: datetime | None = None
    """When the current step reached its weight."""

    paused_reason: str | None = None
    """Why the rollout holds (AnalysisInconclusive, WaitingForEvaluation); cleared by `llmops rollout promote`."""

    step_passed: bool = False
    """Whether a check passed during the current step."""

    next_check_at: datetime | None = None
    """When the next analysis check is due."""

    failed_checks: int = 0
    """Analysis checks failed so far in this rollout."""

    inconclusive_checks: int = 0
    """Inconclusive checks so far in this rollout."""

    online_evaluation: str | None = None
    """The current step's online Evaluation: Running, Passed or Failed."""

    online_attempts: int = 0
    """Online Evaluations run in the current step (a Failed one counts as a failed check and runs again)."""

    promoted_at: datetime | None = None
    """Set once promoted: the old stable scales down scaleDownDelay later."""

    last_check: AnalysisCheck | None = None
    """The latest analysis check."""


class Outcome(StrEnum):
    STABLE = "Stable"
    """Takes all traffic now."""
    CANARY = "Canary"
    """Rolling out now."""
    SUPERSEDED = "Superseded"
    """Served before; replaced by a newer stable."""
    ROLLED_BACK = "RolledBack"
    """Failed its analysis; not retried until the spec changes."""
    ABORTED = "Aborted"
    """Stopped by `llmops rollout abort`; not retried until the spec changes."""
    FAILED = "Failed"
    """Its pods did not become ready within the progress deadline."""
    GATED = "Gated"
    """Its Evaluation did not pass: it never received traffic."""


class Revision(StatusModel):
    """A model revision this Deployment served or tried to."""

    revision: int
    """Increasing revision number."""

    digest: str
    """Identity of (model artifact, server settings, image): a new digest is a new revision."""

    model_uri: str
    """Artifact served."""

    model_run: str | None = None
    """The run of the referenced PretrainJob or FineTune that made it (`FineTune/NAME@JOB`)."""

    image: str
    """Server image."""

    evaluation: str
    """Evaluation that gated it."""

    metrics: dict[str, float] = Field(default_factory=dict, max_length=32)
    """The gating Evaluation's key metrics (task/metric: value)."""

    generation: int | None = None
    """metadata.generation when it was last acted on (a RolledBack revision is retried only at a newer one)."""

    created_at: datetime | None = None
    """When its rollout started."""

    deployed_at: datetime | None = None
    """When it took all traffic."""

    ended_at: datetime | None = None
    """When its traffic was taken away (rolled back, aborted, failed or superseded mid-rollout)."""

    outcome: Outcome
    """Stable, Canary, Superseded, RolledBack, Aborted, Failed or Gated."""

    reason: str | None = None
    """Why it ended that way."""


class DeploymentStatus(StatusModel):
    phase: DeploymentPhase | None = None
    """Waiting (for the gate), Progressing (rolling out), Available, RollingBack, Degraded or Failed."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Ready, Gated, Progressing and Degraded, with reasons."""

    observed_generation: int | None = None
    """metadata.generation the status reflects."""

    replicas: int = 0
    """Server pods of every revision."""

    ready_replicas: int = 0
    """Server pods ready to take traffic."""

    url: str | None = None
    """In-cluster base URL of the OpenAI-compatible API."""

    traffic: str | None = None
    """How traffic is split: httpRoute, inferencePool or replicas (approximate, by pod count)."""

    current_revision: int | None = None
    """The stable revision: takes all traffic but the canary's share."""

    canary: CanaryStatus | None = None
    """State of a rollout in progress."""

    pinned_revision: int | None = None
    """Set by `llmops rollout undo --to-revision N`: served instead of spec.model until the spec changes."""

    pinned_generation: int | None = None
    """metadata.generation the pin applies to."""

    handled_commands: dict[str, str] = Field(default_factory=dict, max_length=8)
    """The last value of each llmops.dev/rollout-* annotation acted on, so each command runs once."""

    history: list[Revision] = Field(default_factory=list, max_length=101)
    """Revisions, newest last: the stable, the canary, and up to revisionHistoryLimit older ones."""


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
            PrinterColumn("Step", "integer", ".status.canary.step", "Current canary step"),
            PrinterColumn("Revision", "integer", ".status.currentRevision", "Stable revision"),
            PrinterColumn("URL", "string", ".status.url", "In-cluster API URL"),
            AGE_COLUMN,
        ),
    )
