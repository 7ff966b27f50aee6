"""How a training run optimises: optimizer, schedule, batch, precision, checkpoints, budget."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import ApiModel, Rule
from .model import ModelConfig, RopeScaling


class OptimizerName(StrEnum):
    ADAMW = "adamw"


class OptimizerConfig(ApiModel):
    """AdamW with decoupled weight decay."""

    name: OptimizerName = OptimizerName.ADAMW
    """Optimizer. Only `adamw` today."""

    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    """Peak learning rate, reached at the end of warm-up."""

    beta1: float = Field(default=0.9, ge=0, lt=1)
    """Adam's first-moment decay."""

    beta2: float = Field(default=0.95, ge=0, lt=1)
    """Adam's second-moment decay."""

    eps: float = Field(default=1e-8, gt=0, lt=1)
    """Adam's epsilon."""

    weight_decay: float = Field(default=0.1, ge=0, le=10)
    """Decoupled weight decay; not applied to norms and biases."""

    fused: bool | None = None
    """Use the fused kernel. Unset: fused wherever the device supports it."""


class ScheduleKind(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class ScheduleConfig(ApiModel):
    """Learning-rate schedule: linear warm-up, then decay to minLearningRateRatio of the peak."""

    kind: ScheduleKind = ScheduleKind.COSINE
    """Decay shape after warm-up."""

    warmup_steps: int = Field(default=100, ge=0, le=10_000_000)
    """Optimizer steps of linear warm-up from zero."""

    min_learning_rate_ratio: float = Field(default=0.1, ge=0, le=1)
    """Final learning rate as a fraction of the peak."""


class BatchConfig(ApiModel):
    """Batch per step: microBatchSize sequences per process, accumulated gradientAccumulationSteps times."""

    micro_batch_size: int = Field(default=8, ge=1, le=65536)
    """Sequences per process per forward pass."""

    gradient_accumulation_steps: int = Field(default=1, ge=1, le=65536)
    """Micro-batches summed before each optimizer step."""


class Precision(StrEnum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class Strategy(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"


class TrainingConfig(ApiModel):
    """The optimisation loop shared by pretraining and fine-tuning."""

    max_steps: int | None = Field(default=None, ge=1, le=100_000_000)
    """Optimizer steps to run. PretrainJob: set this or spec.computeBudget. FineTune: set this or epochs."""

    epochs: float | None = Field(default=None, gt=0, le=1000)
    """Passes over the training data (fine-tuning); an alternative to maxSteps."""

    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    """Optimizer and its hyper-parameters."""

    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""

    batch: BatchConfig = Field(default_factory=BatchConfig)
    """Batch size and gradient accumulation."""

    precision: Precision = Precision.AUTO
    """Compute precision. `auto`: bf16 autocast on GPUs that support it, fp32 on CPU."""

    strategy: Strategy = Strategy.DDP
    """Data parallelism across processes: `ddp` replicates the model, `fsdp` shards it (FSDP2)."""

    gradient_clip_norm: float | None = Field(default=1.0, gt=0)
    """Clip the global gradient norm to this value. Unset: no clipping."""

    compile: bool = False
    """Compile the model with torch.compile."""

    seed: int = Field(default=1337, ge=0, le=2**31 - 1)
    """Seed for initialisation, data order and dropout."""

    eval_interval_steps: int = Field(default=100, ge=1)
    """Steps between validation-loss measurements."""

    eval_batches: int = Field(default=20, ge=1, le=100_000)
    """Micro-batches used for each validation-loss measurement."""

    log_interval_steps: int = Field(default=10, ge=1)
    """Steps between metric reports (stdout JSON lines, Prometheus, the resource's status)."""

    cel_rules = (
        Rule(
            "!(has(self.maxSteps) && has(self.epochs))",
            "set either training.maxSteps or training.epochs, not both",
            field_path=".epochs",
        ),
        Rule(
            "!has(self.maxSteps) || self.schedule.warmupSteps < self.maxSteps",
            "training.schedule.warmupSteps must be smaller than training.maxSteps",
            field_path=".schedule.warmupSteps",
        ),
    )


class CheckpointConfig(ApiModel):
    """When checkpoints are written. A checkpoint holds model, optimizer, schedule, RNG and data position."""

    interval_steps: int = Field(default=500, ge=1)
    """Optimizer steps between checkpoints."""

    keep_last: int = Field(default=2, ge=1, le=100)
    """Checkpoints kept; older ones are deleted once a newer one is complete."""

    on_preemption: bool = True
    """Also write a checkpoint when the pod receives SIGTERM (preemption, node drain)."""


class ComputeBudget(ApiModel):
    """Size the run from a compute budget (Chinchilla-style): steps follow from FLOPs = 6 x params x tokens, and
    with chooseShape the model's shape too."""

    # No upper bound: the API server compares a whole-number value with a schema maximum as a 64-bit integer, so
    # any maximum above 2^63 (a real budget's size) rejects every whole-number budget.
    flops: float = Field(gt=0)
    """Training compute to spend, in floating-point operations (e.g. 1e18, or 120000000000)."""

    tokens_per_parameter: float = Field(default=20.0, gt=0, le=10000)
    """Training tokens per model parameter the shape is chosen for (about 20 is compute-optimal, Chinchilla);
    with a given shape it is only reported (status.sizing.tokensPerParameter)."""

    choose_shape: bool = False
    """Choose the model's hiddenSize, numLayers and numHeads from the budget: N = sqrt(flops / (6 x
    tokensPerParameter)) parameters, D = flops / 6N tokens; spec.model's other fields (contextLength, vocabSize,
    norms) are kept. status.sizing shows the shape, parameters, tokens and steps."""


class ContextExtension(ApiModel):
    """What a continued run may change of the model it starts from: a longer context (with RoPE scaling)."""

    context_length: int | None = Field(default=None, ge=8, le=1048576)
    """Train at this context length instead of the model's own (e.g. 4x longer, with ropeScaling). Unset: the
    model's."""

    rope_scaling: RopeScaling | None = None
    """RoPE scaling for the longer context (e.g. type yarn, factor 4, originalContextLength the model's own
    context). Unset: the model's own scaling, if any."""


class ModelInit(ContextExtension):
    """The model a continued pretraining run starts from, as the workload reads it."""

    uri: str = Field(min_length=1)
    """Hugging Face-format Llama directory (a path or fsspec URI); its tokenizer must be the Dataset's."""


class PretrainRunConfig(ApiModel):
    """What the pretrain workload reads from its config file; the operator resolves it from a PretrainJob."""

    data_uri: str = Field(min_length=1)
    """A Dataset's output directory (manifest.json, shards/, tokenizer.json): a path or fsspec URI."""

    output_uri: str = Field(min_length=1)
    """Where checkpoints (checkpoints/) and the exported model (model/) are written: a path or fsspec URI."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """Model shape."""

    training: TrainingConfig
    """Optimisation settings; maxSteps is required here (the operator derives it from a budget)."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoint policy."""

    init: ModelInit | None = None
    """Start from an existing model's weights (continued pretraining) instead of a fresh initialisation; its shape
    replaces `model`'s (but for the context length the init names)."""

    lineage: dict[str, str] = Field(default_factory=dict)
    """Where the run came from (dataset name and manifest digest, resource name); copied to lineage.json."""

    cel_rules = (Rule("has(self.training.maxSteps)", "training.maxSteps is required", ".training.maxSteps"),)


def steps_for_budget(budget: ComputeBudget, parameters: int, tokens_per_step: int) -> int:
    """Optimizer steps that spend `budget.flops` at about 6 x parameters FLOPs per training token."""
    return max(1, int(budget.flops / (6 * parameters * tokens_per_step)))
