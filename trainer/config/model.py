"""Shape of the decoder-only transformer that PretrainJob trains (Llama family)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import ApiModel, Rule


class Architecture(StrEnum):
    LLAMA = "llama"


class RopeScalingType(StrEnum):
    LINEAR = "linear"
    DYNAMIC = "dynamic"
    YARN = "yarn"


YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


class RopeScaling(ApiModel):
    """Rotary position scaling: the Hugging Face `rope_scaling` of the same type, so exports load unchanged."""

    type: RopeScalingType
    """linear (position interpolation) reads position p as p / factor: simple; needs some training at the new
    length. dynamic (dynamic NTK) leaves sequences up to originalContextLength unchanged and raises the rotary
    base only for longer ones: for using a model beyond its context without further training. yarn keeps the
    fast-rotating dimensions, interpolates the slow ones by factor, blends those in between and sharpens
    attention: the best long-context quality after a short training at the new length."""

    factor: float = Field(gt=1, le=1024)
    """How much longer the context becomes (new contextLength over the pretrained one), e.g. 4 from 2048 to 8192."""

    original_context_length: int | None = Field(default=None, ge=8, le=1048576)
    """Context length the model was pretrained at, before scaling; required for dynamic and yarn."""

    beta_fast: float | None = Field(default=None, gt=0, le=1024)
    """yarn only: dimensions that rotate more often than this over originalContextLength keep their frequency.
    Unset: 32."""

    beta_slow: float | None = Field(default=None, gt=0, le=1024)
    """yarn only: dimensions that rotate less often than this over originalContextLength are interpolated by
    factor; those in between blend linearly. Unset: 1."""

    attention_factor: float | None = Field(default=None, gt=0, le=100)
    """yarn only: multiplier on the rotary cos/sin, which scales attention logits by its square. Unset:
    0.1 * ln(factor) + 1."""

    cel_rules = (
        Rule(
            "self.type == 'linear' || has(self.originalContextLength)",
            "originalContextLength is required for types dynamic and yarn: set it to the context length the "
            "model was pretrained at (e.g. 2048)",
            field_path=".originalContextLength",
        ),
        Rule(
            "self.type != 'linear' || !has(self.originalContextLength)",
            "originalContextLength does not apply to type linear, which scales every position by 1/factor: "
            "remove it",
            field_path=".originalContextLength",
        ),
        Rule(
            "self.type == 'yarn' || !has(self.betaFast)",
            "betaFast applies only to type yarn: remove it or set type: yarn",
            field_path=".betaFast",
        ),
        Rule(
            "self.type == 'yarn' || !has(self.betaSlow)",
            "betaSlow applies only to type yarn: remove it or set type: yarn",
            field_path=".betaSlow",
        ),
        Rule(
            "self.type == 'yarn' || !has(self.attentionFactor)",
            "attentionFactor applies only to type yarn: remove it or set type: yarn",
            field_path=".attentionFactor",
        ),
        Rule(
            # double(): a number written without a decimal point reaches cel-python (offline admission) as an int.
            f"(has(self.betaFast) ? double(self.betaFast) : {YARN_BETA_FAST}) > "
            f"(has(self.betaSlow) ? double(self.betaSlow) : {YARN_BETA_SLOW})",
            f"betaFast must be greater than betaSlow (unset: {YARN_BETA_FAST:g} and {YARN_BETA_SLOW:g}), "
            "e.g. betaFast 32 with betaSlow 1",
            field_path=".betaFast",
        ),
    )

    @property
    def resolved_beta_fast(self) -> float:
        return self.beta_fast if self.beta_fast is not None else YARN_BETA_FAST

    @property
    def resolved_beta_slow(self) -> float:
        return self.beta_slow if self.beta_slow is not None else YARN_BETA_SLOW

    def to_transformers(self) -> dict[str, Any]:
        """The `rope_scaling` dict of a transformers config (LlamaConfig) meaning the same scaling."""
        out: dict[str, Any] = {"rope_type": self.type.value, "factor": self.factor}
        if self.original_context_length is not None:
            out["original_max_position_embeddings"] = self.original_context_length
        if self.type == RopeScalingType.YARN:
            out["beta_fast"], out["beta_slow"] = self.resolved_beta_fast, self.resolved_beta_slow
            if self.attention_factor is not None:
                out["attention_factor"] = self.attention_factor
        return out


class ModelConfig(ApiModel):
    """Size of a Llama-style model: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention."""

    architecture: Architecture = Architecture.LLAMA
    """Model family. Only `llama` exists today; exported artifacts use the Hugging Face Llama format."""

    hidden_size: int = Field(default=256, ge=16, le=65536)
    """Width of the residual stream (`hidden_size` in Hugging Face configs)."""

    num_layers: int = Field(default=4, ge=1, le=512)
    """Number of transformer blocks."""

    num_heads: int = Field(default=4, ge=1, le=512)
    """Attention heads per block. hiddenSize / numHeads is the head dimension and must be even."""

    kv_heads: int | None = Field(default=None, ge=1, le=512)
    """Key/value heads for grouped-query attention; must divide numHeads. Unset: equal to numHeads."""

    intermediate_size: int | None = Field(default=None, ge=16, le=262144)
    """Width of the SwiGLU MLP. Unset: 8/3 of hiddenSize rounded up to a multiple of 64."""

    context_length: int = Field(default=256, ge=8, le=1048576)
    """Longest sequence the model is trained on, in tokens."""

    vocab_size: int | None = Field(default=None, ge=32, le=4194304)
    """Vocabulary size. Unset: taken from the tokenizer of the training data."""

    rope_theta: float = Field(default=10000.0, gt=0)
    """Base of the rotary position embedding frequencies."""

    rope_scaling: RopeScaling | None = None
    """Long context: stretch the rotary positions so a model pretrained at originalContextLength reads
    contextLength tokens (e.g. type yarn, factor 4, originalContextLength 2048, contextLength 8192). Exports
    carry it as the Hugging Face config's rope_scaling. Unset: no scaling."""

    norm_eps: float = Field(default=1e-5, gt=0, lt=1)
    """Epsilon of RMSNorm."""

    tie_embeddings: bool = True
    """Share the input embedding and output projection weights."""

    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout probability during training."""

    cel_rules = (
        Rule(
            "self.hiddenSize % self.numHeads == 0 && (self.hiddenSize / self.numHeads) % 2 == 0",
            "hiddenSize must be a multiple of numHeads with an even quotient (the head dimension), "
            "e.g. hiddenSize 256 with numHeads 4",
            field_path=".hiddenSize",
        ),
        Rule(
            "!has(self.kvHeads) || (self.kvHeads <= self.numHeads && self.numHeads % self.kvHeads == 0)",
            "kvHeads must divide numHeads (e.g. numHeads 8 with kvHeads 2); leave it unset for one per head",
            field_path=".kvHeads",
        ),
        Rule(
            "!has(self.ropeScaling) || !has(self.ropeScaling.originalContextLength) || "
            "self.ropeScaling.originalContextLength < self.contextLength",
            "ropeScaling.originalContextLength must be below contextLength: scaling extends a model pretrained "
            "at originalContextLength to the longer contextLength",
            field_path=".ropeScaling.originalContextLength",
        ),
    )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def resolved_intermediate_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return -(-(8 * self.hidden_size // 3) // 64) * 64

    def parameter_count(self, vocab_size: int) -> int:
        """Number of trainable parameters for a given vocabulary (the budget sizing uses this)."""
        kv_heads = self.kv_heads or self.num_heads
        attention = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * kv_heads)
        mlp = 3 * self.hidden_size * self.resolved_intermediate_size
        norms = 2 * self.hidden_size
        embeddings = vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return self.num_layers * (attention + mlp + norms) + embeddings + self.hidden_size
