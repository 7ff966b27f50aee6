"""PretrainJob: distributed training of a decoder-only model from scratch on a Dataset's token shards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops.trainer.config.base import ApiModel, Rule, StatusModel
from llmops.trainer.config.model import ModelConfig
from llmops.trainer.config.result import CheckpointStatus
from llmops.trainer.config.sizing import BudgetSizing
from llmops.trainer.config.training import CheckpointConfig, ComputeBudget, ContextExtension, TrainingConfig
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
    WorkloadStatus,
)


class TokenData(ApiModel):
    """Packed token shards to train on: a Dataset in this namespace, or shards at a URI."""

    dataset: ObjectName | None = None
    """Name of a Dataset; training starts once it has Succeeded."""

    uri: Uri | None = None
    """Output location of a Dataset run (holds manifest.json, shards and tokenizer.json)."""

    cel_rules = (Rule("has(self.dataset) != has(self.uri)", "set exactly one of data.dataset or data.uri"),)


IMMUTABLE_AFTER_CREATION = "cannot change after creation; create a new resource instead"


class InitModel(ModelRef, ContextExtension):
    """The model continued pretraining starts from: a PretrainJob's or FineTune's (once Succeeded) or a
    Hugging Face-format Llama at a URI. Its shape is kept (but for contextLength) and its tokenizer must be the
    Dataset's."""


def unchanged(field: str) -> Rule:
    """An optional field that may not be added, removed or changed after creation."""
    return Rule(f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == "
                f"oldSelf.{field})", f"{field} " + IMMUTABLE_AFTER_CREATION, field_path=f".{field}")


class PretrainJobSpec(ApiModel):
    """What to train, on which data, how, and on which nodes."""

    data: TokenData
    """Training data."""

    model: ModelConfig | None = None
    """Model shape. Unset: the defaults (hiddenSize 256, 4 layers), or with init the shape of the model it
    starts from."""

    init: InitModel | None = None
    """Continue pretraining an existing model on this data instead of starting from random weights (domain
    adaptation; with contextLength, training at a longer context)."""

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Optimisation settings."""

    compute_budget: ComputeBudget | None = None
    """Derive training.maxSteps from a FLOP budget instead of setting it."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoint policy; a restarted pod resumes from the newest checkpoint."""

    node_pool: NodePool = Field(default_factory=NodePool)
    """Nodes, GPUs and placement."""

    image: ImageSpec = Field(default_factory=ImageSpec)
    """Workload image."""

    output: Output = Field(default_factory=Output)
    """Where checkpoints and the exported model go."""

    backoff_limit: int = Field(default=3, ge=0, le=1000)
    """Failed pod restarts before the PretrainJob is Failed. Preemptions and node disruptions do not count."""

    active_deadline_seconds: int | None = Field(default=None, ge=60)
    """Fail the run after this many seconds of running."""

    cel_rules = (
        Rule(
            "has(self.training.maxSteps) != has(self.computeBudget)",
            "set exactly one of training.maxSteps or computeBudget",
            field_path=".training.maxSteps",
        ),
        Rule("!has(self.training.epochs)", "training.epochs is for FineTune; use training.maxSteps",
             field_path=".training.epochs"),
        Rule(
            "!has(self.init) || !has(self.model)",
            "with init the shape is the model's it starts from: remove model (set init.contextLength to train at a "
            "longer context)",
            field_path=".model",
        ),
        Rule(
            "!has(self.init) || !has(self.computeBudget)",
            "computeBudget sizes a model trained from scratch: with init set training.maxSteps",
            field_path=".computeBudget",
        ),
        unchanged("model"),
        unchanged("init"),
        Rule("self.data == oldSelf.data", "data " + IMMUTABLE_AFTER_CREATION, field_path=".data"),
    )


class TrainingMetrics(StatusModel):
    """The latest training metrics the workload reported."""

    step: int = 0
    """Optimizer steps done."""

    loss: float | None = None
    """Training loss (mean over the last log interval)."""

    validation_loss: float | None = None
    """Latest validation loss."""

    learning_rate: float | None = None
    """Current learning rate."""

    grad_norm: float | None = None
    """Global gradient norm before clipping."""

    tokens_per_second: float | None = None
    """Training throughput over all processes."""

    mfu: float | None = None
    """Model FLOPs utilisation, where the GPU's peak is known."""

    tokens_seen: int = 0
    """Training tokens consumed."""


class TrainingStatus(WorkloadStatus):
    """Status of a training workload (PretrainJob and FineTune)."""

    metrics: TrainingMetrics | None = None
    """Latest metrics."""

    checkpoint: CheckpointStatus | None = None
    """Newest complete checkpoint."""

    parameters: int | None = None
    """Trainable parameters."""

    data_uri: str | None = None
    """The training data this run uses, resolved when it started (a referenced Dataset's artifact)."""

    init_uri: str | None = None
    """The model this run continues from (PretrainJob spec.init), resolved when it started."""

    sizing: BudgetSizing | None = None
    """What spec.computeBudget bought: shape, parameters, tokens, steps and passes over the data (PretrainJob)."""


TRAINING_COLUMNS = (
    PHASE_COLUMN,
    PROGRESS_COLUMN,
    PrinterColumn("Loss", "number", ".status.metrics.loss", "Training loss"),
    PrinterColumn("Tokens/s", "number", ".status.metrics.tokensPerSecond", "Throughput", priority=1),
    AGE_COLUMN,
)


class PretrainJob(Resource):
    """Pretrain a decoder-only transformer with torchrun on a node pool, with checkpoints and live status."""

    kind: Literal["PretrainJob"] = "PretrainJob"
    spec: PretrainJobSpec
    status: TrainingStatus | None = None

    names = CrdNames(plural="pretrainjobs", short_names=("ptj",), printer_columns=TRAINING_COLUMNS)
