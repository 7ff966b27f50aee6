"""FineTune: adapt a base model with SFT, LoRA, a classification head or DPO."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops.trainer.config.base import ApiModel, Rule
from llmops.trainer.config.finetune import (
    ClassificationConfig,
    DistillConfig,
    DpoConfig,
    FineTuneDataConfig,
    FineTuneMethod,
    LoraConfig,
    PruneConfig,
    QuantizeConfig,
    RewardConfig,
    SftConfig,
)
from llmops.trainer.config.training import CheckpointConfig, TrainingConfig
from llmops.trainer.config.types import Uri

from .common import CrdNames, ImageSpec, ModelRef, NodePool, ObjectName, Output, Resource
from .pretrainjob import IMMUTABLE_AFTER_CREATION, TRAINING_COLUMNS, TrainingStatus


class FineTuneData(FineTuneDataConfig):
    """Fine-tuning records (JSONL): a Dataset's cleaned documents, or a file or directory."""

    dataset: ObjectName | None = None
    """Name of a Dataset whose documents JSONL holds the records; used once it has Succeeded."""

    uri: Uri | None = None
    """JSONL file or directory of JSONL files."""

    cel_rules = (Rule("has(self.dataset) != has(self.uri)", "set exactly one of data.dataset or data.uri"),)


class DistillSpec(DistillConfig):
    """Distillation from a teacher model into the student (the base, or a new smaller shape)."""

    teacher: ModelRef
    """The model whose distributions the student learns; it runs frozen, without gradients."""


def _block_matches_method(block: str, *methods: FineTuneMethod) -> Rule:
    allowed = " || ".join(f"self.method == '{m.value}'" for m in methods)
    return Rule(
        f"!has(self.{block}) || {allowed}",
        f"{block} settings only apply to method " + " or ".join(m.value for m in methods)
        + f": change method or remove {block}",
        field_path=f".{block}",
    )


class FineTuneSpec(ApiModel):
    """Base model, method and its settings, data, and how to train."""

    base: ModelRef
    """Model to start from."""

    method: FineTuneMethod
    """sft (full fine-tune on responses), lora (adapters), classification (a head), dpo (preferences), reward (a
    reward model on preferences), distill (learn a teacher's distributions), quantize (int8/int4 weights, no
    training), prune (drop layers or MLP channels, no training). quantize and prune transform the base model:
    training and checkpoint do not apply to them."""

    sft: SftConfig | None = None
    """Settings of the supervised objective (methods sft and lora)."""

    lora: LoraConfig | None = None
    """Adapter settings (method lora). Unset: the defaults."""

    classification: ClassificationConfig | None = None
    """Labels and head settings (required for method classification)."""

    dpo: DpoConfig | None = None
    """Preference settings (method dpo). Unset: the defaults."""

    reward: RewardConfig | None = None
    """Reward-model settings (method reward). Unset: the defaults."""

    distill: DistillSpec | None = None
    """Teacher and distillation settings (required for method distill)."""

    quantize: QuantizeConfig | None = None
    """Quantization scheme (method quantize). Unset: int8 per channel."""

    prune: PruneConfig | None = None
    """What to prune and how much (required for method prune)."""

    data: FineTuneData | None = None
    """Training records (calibration text for prune); every method but quantize needs them."""

    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(epochs=1.0, optimizer={"learning_rate": 2e-5, "weight_decay": 0.0},
                                               schedule={"warmup_steps": 10})
    )
    """Optimisation settings. Default: one epoch at learning rate 2e-5."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoint policy."""

    node_pool: NodePool = Field(default_factory=NodePool)
    """Nodes, GPUs and placement."""

    image: ImageSpec = Field(default_factory=ImageSpec)
    """Workload image."""

    output: Output = Field(default_factory=Output)
    """Where the fine-tuned model goes."""

    backoff_limit: int = Field(default=3, ge=0, le=1000)
    """Failed pod restarts before the FineTune is Failed. Preemptions do not count."""

    active_deadline_seconds: int | None = Field(default=None, ge=60)
    """Fail the run after this many seconds of running."""

    cel_rules = (
        _block_matches_method("sft", FineTuneMethod.SFT, FineTuneMethod.LORA),
        _block_matches_method("lora", FineTuneMethod.LORA),
        _block_matches_method("classification", FineTuneMethod.CLASSIFICATION),
        _block_matches_method("dpo", FineTuneMethod.DPO),
        _block_matches_method("reward", FineTuneMethod.REWARD),
        _block_matches_method("distill", FineTuneMethod.DISTILL),
        _block_matches_method("quantize", FineTuneMethod.QUANTIZE),
        _block_matches_method("prune", FineTuneMethod.PRUNE),
        Rule(
            "self.method != 'distill' || has(self.distill)",
            "method distill needs distill.teacher (a pretrainJob, fineTune or uri)",
            field_path=".distill",
        ),
        Rule(
            "self.method != 'prune' || has(self.prune)",
            "method prune needs prune.axis and its target (numLayers for depth, intermediateSize for width)",
            field_path=".prune",
        ),
        Rule(
            "self.method == 'quantize' || has(self.data)",
            "set data (a dataset or uri of JSONL records): every method but quantize reads records",
            field_path=".data",
        ),
        Rule(
            "self.method != 'classification' || has(self.classification)",
            "method classification needs classification.labels (at least two label names)",
            field_path=".classification",
        ),
        Rule(
            "has(self.training.maxSteps) || has(self.training.epochs)",
            "set training.maxSteps or training.epochs",
            field_path=".training",
        ),
        Rule("self.base == oldSelf.base", "base " + IMMUTABLE_AFTER_CREATION, field_path=".base"),
        Rule("self.method == oldSelf.method", "method " + IMMUTABLE_AFTER_CREATION, field_path=".method"),
    )


class FineTune(Resource):
    """Fine-tune a base model (a PretrainJob's, another FineTune's, or one at a path)."""

    kind: Literal["FineTune"] = "FineTune"
    spec: FineTuneSpec
    status: TrainingStatus | None = None

    names = CrdNames(plural="finetunes", short_names=("ft",), printer_columns=TRAINING_COLUMNS)
