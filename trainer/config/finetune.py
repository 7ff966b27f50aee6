"""Fine-tuning methods and the record layouts they read (TRL-style field names by default)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import ApiModel, Rule
from .model import ModelConfig
from .training import CheckpointConfig, TrainingConfig


class FineTuneMethod(StrEnum):
    SFT = "sft"
    LORA = "lora"
    CLASSIFICATION = "classification"
    DPO = "dpo"
    REWARD = "reward"
    DISTILL = "distill"
    QUANTIZE = "quantize"
    PRUNE = "prune"


TRANSFORM_METHODS = (FineTuneMethod.QUANTIZE, FineTuneMethod.PRUNE)
"""Methods that transform a model without an optimisation loop (no training settings, no checkpoints)."""
PREFERENCE_METHODS = (FineTuneMethod.DPO, FineTuneMethod.REWARD)
"""Methods that read prompt/chosen/rejected records."""


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


class RewardConfig(ApiModel):
    """A reward model: a scalar head on the backbone trained on chosen/rejected pairs (Bradley-Terry loss,
    -log sigmoid(r_chosen - r_rejected)), exported as a one-label sequence-classification model as TRL's
    RewardTrainer writes it, so an Evaluation can use it as a judge."""

    center_rewards_coefficient: float = Field(default=0.0, ge=0, le=10)
    """Weight of a penalty on the squared mean reward (keeps rewards centred on zero). 0: none."""


class DistillConfig(ApiModel):
    """Knowledge distillation: the student learns the frozen teacher's next-token distributions.

    loss = (1 - crossEntropyWeight) * T^2 * KL(teacher_T || student_T) + crossEntropyWeight * CE(data),
    with T the temperature (Hinton et al.; the T^2 keeps gradient scale independent of T)."""

    temperature: float = Field(default=2.0, gt=0, le=100)
    """Softmax temperature applied to both teacher and student logits."""

    cross_entropy_weight: float = Field(default=0.0, ge=0, le=1)
    """Share of the loss that is plain cross-entropy on the data; 0 distils on the teacher alone."""

    student: ModelConfig | None = None
    """A new, smaller student shape trained from scratch (vocabulary from the teacher's tokenizer). Unset: the
    student is the FineTune's base model (e.g. a pruned model, the prune-then-distill recipe)."""


class QuantScheme(StrEnum):
    INT8 = "int8"
    INT4 = "int4"


class QuantizeConfig(ApiModel):
    """Post-training weight-only quantization (round to nearest, symmetric), written in the compressed-tensors
    format that transformers loads (with the compressed-tensors package) and llmops-serve serves."""

    scheme: QuantScheme = QuantScheme.INT8
    """int8: one scale per output channel. int4: one scale per group of groupSize input weights."""

    group_size: int = Field(default=128, ge=8, le=4096)
    """Weights sharing one scale (int4); must divide every quantized layer's input width."""

    ignore: list[str] = Field(default_factory=lambda: ["lm_head"], max_length=64)
    """Linear modules kept in full precision, by name (e.g. lm_head, model.layers.0.mlp.down_proj)."""

    cel_rules = (
        Rule("self.scheme == 'int4' || self.groupSize == 128",
             "groupSize applies to scheme int4 only: remove it or set scheme: int4", ".groupSize"),
    )


class PruneAxis(StrEnum):
    DEPTH = "depth"
    WIDTH = "width"


class PruneConfig(ApiModel):
    """Structured pruning by a measured importance score on calibration text, making a smaller model meant to be
    distilled next (Minitron's prune-then-distill).

    depth: drop whole blocks with the lowest block influence (1 - cosine similarity of a block's input and
    output hidden states, as ShortGPT measures it). width: drop MLP channels with the lowest mean activation
    magnitude (Minitron's activation-based importance)."""

    axis: PruneAxis
    """depth (fewer layers) or width (a narrower MLP)."""

    num_layers: int | None = Field(default=None, ge=1, le=512)
    """Layers to keep (axis depth)."""

    intermediate_size: int | None = Field(default=None, ge=16, le=262144)
    """MLP width to keep (axis width)."""

    calibration_examples: int = Field(default=64, ge=1, le=100_000)
    """Records of the data scored to measure importance."""

    cel_rules = (
        Rule("self.axis != 'depth' || (has(self.numLayers) && !has(self.intermediateSize))",
             "axis depth needs numLayers (the layers to keep) and no intermediateSize", ".numLayers"),
        Rule("self.axis != 'width' || (has(self.intermediateSize) && !has(self.numLayers))",
             "axis width needs intermediateSize (the MLP width to keep) and no numLayers", ".intermediateSize"),
    )


class RecordFields(ApiModel):
    """Names of the fields a fine-tuning record holds; which ones are read depends on the method."""

    prompt: str = Field(default="prompt", min_length=1, max_length=256)
    """Prompt text (sft, lora, dpo, reward; distill when there is no text field)."""

    response: str = Field(default="response", min_length=1, max_length=256)
    """Response text (sft, lora)."""

    messages: str = Field(default="messages", min_length=1, max_length=256)
    """Chat messages as a list of {role, content}; used instead of prompt/response when present."""

    chosen: str = Field(default="chosen", min_length=1, max_length=256)
    """Preferred response (dpo, reward)."""

    rejected: str = Field(default="rejected", min_length=1, max_length=256)
    """Dispreferred response (dpo, reward)."""

    text: str = Field(default="text", min_length=1, max_length=256)
    """Input text (classification; distill and prune calibration, else prompt + response)."""

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

    data_uri: str | None = Field(default=None, min_length=1)
    """JSONL file or directory of JSONL files with the records (a path or fsspec URI); every method but quantize
    needs it."""

    teacher_uri: str | None = Field(default=None, min_length=1)
    """Hugging Face-format teacher model directory (method distill)."""

    output_uri: str = Field(min_length=1)
    """Where checkpoints and the exported model (model/) go (a path or fsspec URI)."""

    method: FineTuneMethod
    """sft, lora, classification, dpo, reward, distill, quantize or prune."""

    sft: SftConfig = Field(default_factory=SftConfig)
    """Supervised objective settings (sft and lora)."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    """Adapter settings (lora)."""

    classification: ClassificationConfig | None = None
    """Labels (classification)."""

    dpo: DpoConfig = Field(default_factory=DpoConfig)
    """Preference settings (dpo)."""

    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Reward-model settings (reward)."""

    distill: DistillConfig = Field(default_factory=DistillConfig)
    """Distillation settings (distill)."""

    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    """Quantization settings (quantize)."""

    prune: PruneConfig | None = None
    """Pruning settings (prune)."""

    data: FineTuneDataConfig = Field(default_factory=FineTuneDataConfig)
    """Record layout and split."""

    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(epochs=1.0))
    """Optimisation settings (maxSteps or epochs). Default: one epoch; quantize and prune do not train."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """When checkpoints are written (into checkpoints/ under outputUri); a restarted run resumes from the newest."""

    lineage: dict[str, str] = Field(default_factory=dict)
    """Where the run came from; copied to lineage.json."""

    cel_rules = (
        Rule("self.method != 'classification' || has(self.classification)",
             "method classification needs classification.labels", ".classification"),
        Rule("has(self.training.maxSteps) || has(self.training.epochs)", "set training.maxSteps or training.epochs",
             ".training"),
        Rule("self.method == 'quantize' || has(self.dataUri)", "every method but quantize needs dataUri", ".dataUri"),
        Rule("self.method != 'distill' || has(self.teacherUri)", "method distill needs teacherUri", ".teacherUri"),
        Rule("self.method != 'prune' || has(self.prune)", "method prune needs prune settings", ".prune"),
    )
