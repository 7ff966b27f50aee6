"""Fine-tuning methods and the record layouts they read (TRL-style field names by default)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import ApiModel, Rule
from .training import CheckpointConfig, TrainingConfig


class FineTuneMethod(StrEnum):
    SFT = "sft"
    LORA = "lora"
    CLASSIFICATION = "classification"
    DPO = "dpo"


class SftConfig(ApiModel):
    """Supervised fine-tuning on prompt/response or chat records (also the objective of `lora`)."""

    train_on_prompt: bool = False
    """Compute the loss on prompt tokens too. Default: only on response tokens."""

    packing: bool = False
    """Pack each micro-batch's examples into as few rows as fit data.maxLength, instead of padding every example
    to the longest: attention and positions restart at each example, so the loss is the same with less padding."""

    chat_template: str | None = Field(default=None, max_length=65536)
    """Jinja chat template. Unset: the tokenizer's own template, else a plain role-prefixed one."""


class LoraConfig(ApiModel):
    """Low-rank adapters (PEFT) on the chosen modules; the base weights stay frozen."""

    rank: int = Field(default=8, ge=1, le=1024)
    """Rank r of each adapter."""

    alpha: float = Field(default=16.0, gt=0)
    """Scaling numerator; the adapter output is scaled by alpha / rank."""

    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter input."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], min_length=1, max_length=32
    )
    """Names of the linear modules that get adapters."""

    merge: bool = True
    """Export the adapters merged into the base weights; false exports the adapter alone (PEFT format)."""


class Pooling(StrEnum):
    LAST = "last"


class ClassificationConfig(ApiModel):
    """A classification head on the backbone's hidden state."""

    labels: list[str] = Field(min_length=2, max_length=1000)
    """Label names, in class-index order."""

    pooling: Pooling = Pooling.LAST
    """How a sequence becomes one vector: the last (non-padding) token's hidden state, as transformers'
    sequence-classification models do, so the export loads unchanged."""

    train_backbone: bool = True
    """Also train the backbone; false trains the head alone."""


class DpoLoss(StrEnum):
    SIGMOID = "sigmoid"


class DpoConfig(ApiModel):
    """Direct preference optimisation against a frozen copy of the base model."""

    beta: float = Field(default=0.1, gt=0, le=100)
    """Strength of the implicit KL penalty."""

    loss: DpoLoss = DpoLoss.SIGMOID
    """DPO loss variant."""


class RecordFields(ApiModel):
    """Names of the fields a fine-tuning record holds; which ones are read depends on the method."""

    prompt: str = Field(default="prompt", min_length=1, max_length=256)
    """Prompt text (sft, lora, dpo)."""

    response: str = Field(default="response", min_length=1, max_length=256)
    """Response text (sft, lora)."""

    messages: str = Field(default="messages", min_length=1, max_length=256)
    """Chat messages as a list of {role, content}; used instead of prompt/response when present."""

    chosen: str = Field(default="chosen", min_length=1, max_length=256)
    """Preferred response (dpo)."""

    rejected: str = Field(default="rejected", min_length=1, max_length=256)
    """Dispreferred response (dpo)."""

    text: str = Field(default="text", min_length=1, max_length=256)
    """Input text (classification)."""

    label: str = Field(default="label", min_length=1, max_length=256)
    """Label name or index (classification)."""


class FineTuneDataConfig(ApiModel):
    """How fine-tuning records are read and split."""

    fields: RecordFields = Field(default_factory=RecordFields)
    """Field names in each record."""

    validation_fraction: float = Field(default=0.05, ge=0, le=0.5)
    """Share of records held out for validation metrics."""

    max_examples: int | None = Field(default=None, ge=1)
    """Read at most this many records (quick experiments)."""

    max_length: int = Field(default=512, ge=8, le=1048576)
    """Longest tokenized example; longer ones are cut from the end."""




class FineTuneRunConfig(ApiModel):
    """What the fine-tune workload reads; the operator resolves it from a FineTune."""

    base_uri: str = Field(min_length=1)
    """Hugging Face-format model directory to start from (a path or fsspec URI)."""

    data_uri: str = Field(min_length=1)
    """JSONL file or directory of JSONL files with the records (a path or fsspec URI)."""

    output_uri: str = Field(min_length=1)
    """Where checkpoints and the exported model (model/) go (a path or fsspec URI)."""

    method: FineTuneMethod
    """sft, lora, classification or dpo."""

    sft: SftConfig = Field(default_factory=SftConfig)
    """Supervised objective settings (sft and lora)."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    """Adapter settings (lora)."""

    classification: ClassificationConfig | None = None
    """Labels (classification)."""

    dpo: DpoConfig = Field(default_factory=DpoConfig)
    """Preference settings (dpo)."""

    data: FineTuneDataConfig = Field(default_factory=FineTuneDataConfig)
    """Record layout and split."""

    training: TrainingConfig
    """Optimisation settings (maxSteps or epochs)."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """When checkpoints are written (into checkpoints/ under outputUri); a restarted run resumes from the newest."""

    lineage: dict[str, str] = Field(default_factory=dict)
    """Where the run came from; copied to lineage.json."""

    cel_rules = (
        Rule("self.method != 'classification' || has(self.classification)",
             "method classification needs classification.labels", ".classification"),
        Rule("has(self.training.maxSteps) || has(self.training.epochs)", "set training.maxSteps or training.epochs",
             ".training"),
    )
