"""Shape of the decoder-only transformer that PretrainJob trains (Llama family)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import ApiModel, Rule


class Architecture(StrEnum):
    LLAMA = "llama"


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
