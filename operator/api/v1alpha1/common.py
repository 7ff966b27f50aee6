"""Types every llmops.dev kind shares: metadata, references, placement, output, conditions, status."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator

from llmops.trainer.config import cel
from llmops.trainer.config.base import ApiModel, Rule, StatusModel
from llmops.trainer.config.types import Uri

GROUP = "llmops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "llmops"

# Kubernetes resource quantity ("500m", "4Gi", 2): the same schema the core API publishes.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# Go-style duration ("30s", "5m", "1h30m"), as Flagger and Argo Rollouts write pauses and intervals.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[str, Field(min_length=2, max_length=32, pattern=DURATION_PATTERN)]
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """A Go-style duration in seconds: "1m30s" -> 90.0, "250ms" -> 0.25."""
    import re

    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a duration such as 30s, 5m or 1h30m")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)

# Names of objects referenced in the same namespace (DNS-1123 subdomain).
ObjectName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
]

MAX_NAME_LENGTH = 50
"""Resource names are capped so that child names (`<name>-<suffix>`) and their labels fit in 63 chars."""


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is passed through untouched."""

    model_config = ConfigDict(alias_generator=lambda s: s, extra="allow", populate_by_name=True)

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SecretKeySelector(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: ObjectName
    """Secret name."""

    key: str = Field(min_length=1, max_length=253)
    """Key within the Secret."""


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A pod toleration, as in the core API."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key; empty with operator Exists matches every taint."""

    operator: TolerationOperator = TolerationOperator.EQUAL
    """Exists or Equal."""

    value: str | None = Field(default=None, max_length=63)
    """Taint value for operator Equal."""

    effect: TaintEffect | None = None
    """Taint effect to match. Unset: all effects."""

    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated."""


class ComputeResources(ApiModel):
    """CPU and memory per pod (GPUs are asked for separately)."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Minimum resources, e.g. {cpu: "4", memory: 16Gi}."""

    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Maximum resources."""


class Placement(ApiModel):
    """Where pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels a pod's node must have, e.g. {llmops.dev/pool: gpu}."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the pods tolerate (GPU pools are usually tainted)."""

    priority_class_name: ObjectName | None = None
    """PriorityClass of the pods."""

    gpu_resource_name: str = Field(default="nvidia.com/gpu", min_length=1, max_length=253)
    """Extended resource that counts GPUs on the nodes."""


class NodePool(Placement):
    """The nodes a distributed workload runs on: one pod per node, one process per GPU."""

    nodes: int = Field(default=1, ge=1, le=4096)
    """Number of nodes (pods). torchrun's rendezvous runs on the first."""

    gpus_per_node: int = Field(default=0, ge=0, le=64)
    """GPUs per pod; 0 runs one CPU process per pod."""

    resources: ComputeResources = Field(default_factory=ComputeResources)
    """CPU and memory per pod."""

    queue_name: ObjectName | None = None
    """Kueue LocalQueue: the Job is created suspended and Kueue admits all its pods at once."""


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ImageSpec(ApiModel):
    """Container image of a workload. Unset fields come from the operator's configuration (Helm values)."""

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Image reference. Unset: the operator's default image for this kind of workload."""

    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    """Image pull policy."""

    pull_secrets: list[ObjectName] = Field(default_factory=list, max_length=8)
    """Names of image pull Secrets."""


class Output(ApiModel):
    """Where the artifacts go and what happens to them when the resource is deleted."""

    uri: Uri | None = None
    """Artifact location (fsspec URI or `pvc://CLAIM/PATH`). Unset: the operator's artifact root
    followed by `<namespace>/<kind>/<name>`."""

    credentials_secret: ObjectName | None = None
    """Secret whose keys become environment variables of the workload (e.g. AWS_ACCESS_KEY_ID)."""

    retain_artifacts: bool = True
    """Keep the artifacts when the resource is deleted; false deletes them with it."""


class ModelRef(ApiModel):
    """A model: the output of a PretrainJob or FineTune in this namespace, or a Hugging Face-format path."""

    pretrain_job: ObjectName | None = None
    """Name of a PretrainJob; used once it has Succeeded."""

    fine_tune: ObjectName | None = None
    """Name of a FineTune; used once it has Succeeded."""

    uri: Uri | None = None
    """A Hugging Face-format model directory (config.json, *.safetensors, tokenizer.json)."""

    cel_rules = (
        Rule(
            "[has(self.pretrainJob), has(self.fineTune), has(self.uri)].filter(x, x).size() == 1",
            "set exactly one of pretrainJob, fineTune or uri",
        ),
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A condition as the Kubernetes API conventions define it."""

    type: str = Field(max_length=316)
    """Condition type in CamelCase, e.g. Ready or Succeeded."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str = Field(max_length=1024)
    """One-word CamelCase reason for the last transition."""

    message: str = Field(default="", max_length=32768)
    """Human-readable details."""

    last_transition_time: datetime
    """When status last changed."""

    observed_generation: int | None = None
    """metadata.generation this condition was computed from."""


class Phase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Progress(StatusModel):
    """How far a workload has come, for humans (printer columns) and automation."""

    completed: int = 0
    """Units done (steps, documents, examples)."""

    total: int | None = None
    """Units to do, when known."""

    unit: str = "steps"
    """What is counted."""

    percent: str | None = None
    """completed / total as text, e.g. "42%" (a printer column)."""

    rate: float | None = None
    """Units per second over the last report interval."""

    eta_seconds: int | None = None
    """Estimated seconds left."""


CONDITIONS_SCHEMA_EXTRA = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class RunInput(StatusModel):
    """An artifact of another resource that a run consumes: which resource, which of its runs made it, where."""

    kind: str
    """Kind of the referenced resource: Dataset, PretrainJob or FineTune."""

    name: str
    """Its name (same namespace)."""

    generation: int | None = None
    """Its metadata.generation whose run made the artifact."""

    run: str | None = None
    """Its run (Job name) that made the artifact: a re-run of the same generation is another artifact."""

    artifact_uri: str
    """Where the artifact is (the referenced resource's status.artifactUri)."""


class WorkloadStatus(StatusModel):
    """Status fields every workload kind shares."""

    phase: Phase | None = None
    """Summary of the conditions: Pending, Waiting, Running, Succeeded or Failed."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Ready, Progressing, Succeeded and Failed, with reasons."""

    observed_generation: int | None = None
    """metadata.generation the status reflects."""

    progress: Progress | None = None
    """Live progress of the workload."""

    artifact_uri: str | None = None
    """Where the output was written, once it Succeeded."""

    job_name: str | None = None
    """Name of the current run: the Kubernetes Job `<name>-<suffix>-<runNumber>`."""

    run_number: int | None = None
    """Number of the current (or last) run. A new run starts, under a new number, when the spec's generation or
    an input changes; it is never below metadata.generation, so without input changes it is the generation."""

    inputs: list[RunInput] = Field(default_factory=list)
    """The artifacts of other resources the current run consumes; empty while it waits for them."""

    start_time: datetime | None = None
    """When the workload started running."""

    completion_time: datetime | None = None
    """When it Succeeded or Failed."""

    restarts: int = 0
    """Times the workload was restarted (e.g. after preemption)."""

    waiting_for: str | None = None
    """What the resource waits for before it can start, e.g. "Dataset shakespeare"."""


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str  # string, integer, number, boolean, date
    json_path: str
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CrdNames:
    """How a kind is named and shown by kubectl."""

    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = field(default=(CATEGORY,))


PHASE_COLUMN = PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase")
PROGRESS_COLUMN = PrinterColumn("Progress", "string", ".status.progress.percent", "Completed share of the work")
AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp")

NAME_RULE = Rule(
    f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters so that the names of its Jobs, Services "
    "and pods fit Kubernetes' 63-character limit",
)


class Resource(BaseModel):
    """A whole custom resource. Subclasses set `kind`, `spec`, `status` and `names`."""

    model_config = ConfigDict(alias_generator=lambda s: "apiVersion" if s == "api_version" else s,
                              populate_by_name=True, extra="ignore")

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta
    spec: Any
    status: Any = None

    names: ClassVar[CrdNames]
    root_rules: ClassVar[tuple[Rule, ...]] = (NAME_RULE,)

    @classmethod
    def field_model(cls, field: str) -> type[BaseModel]:
        """The model class of `spec` or `status` (unwrapping `X | None`)."""
        annotation = cls.model_fields[field].annotation
        (model,) = [a for a in typing.get_args(annotation) or (annotation,) if a is not type(None)]
        return model

    @model_validator(mode="after")
    def _check_root_rules(self) -> Resource:
        # Root-level CEL rules may only read metadata.name (and generateName), as on the API server.
        view = {"metadata": {"name": self.metadata.name}}
        for rule in self.root_rules:
            if not cel.evaluate(rule.rule, view):
                raise ValueError(rule.message)
        return self
