"""The model we pretrain: a Llama decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) in one readable file.

Our own module rather than transformers' LlamaForCausalLM so the whole forward pass is here to read, profile
and compile (no mask construction, cache plumbing or attention dispatch: SDPA with `is_causal`), and so the
trainer does not depend on transformers' internals. It computes the same function as LlamaForCausalLM:
`to_huggingface` maps the weights to transformers' names, and a test proves identical logits, so every export
still loads unchanged in transformers, vLLM, TGI and lm-eval. Projections are kept separate: on CPU, fusing
q/k/v and gate/up into one matrix saved no matrix-multiply time and added a concatenation to the backward
pass (measured, bench/RESULTS.md). Parallelism (DDP/FSDP) wraps the model from outside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from llmops.trainer.config.model import ModelConfig, RopeScaling, RopeScalingType

INIT_STD = 0.02  # transformers' Llama initializer_range, so both classes start from the same distribution


def hf_config(config: ModelConfig, vocab_size: int, eos_id: int | None = None) -> LlamaConfig:
    scaling = config.rope_scaling
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.resolved_intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.kv_heads or config.num_heads,
        max_position_embeddings=hf_max_position_embeddings(config),
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        rope_scaling=scaling.to_transformers() if scaling is not None else None,
        tie_word_embeddings=config.tie_embeddings,
        attention_dropout=config.dropout,
        initializer_range=INIT_STD,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def hf_max_position_embeddings(config: ModelConfig) -> int:
    """transformers' dynamic NTK grows the base past `max_position_embeddings` (it ignores the rope_scaling's
    original_max_position_embeddings), so for it that field must hold the pretrained length; vLLM reads it the
    same way. Every other model declares the context it was trained at."""
    scaling = config.rope_scaling
    if scaling is not None and scaling.type == RopeScalingType.DYNAMIC and scaling.original_context_length:
        return scaling.original_context_length
    return config.context_length


def default_frequencies(head_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Rotation speed of each pair of dimensions (radians per position): theta^(-2i/head_dim)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta ** exponents)


def linear_frequencies(head_dim: int, theta: float, scaling: RopeScaling,
                       device: torch.device | None = None) -> torch.Tensor:
    # Angles are position * frequency, so dividing the frequencies reads position p as p / factor.
    return default_frequencies(head_dim, theta, device) / scaling.factor


def original_length(scaling: RopeScaling) -> int:
    if scaling.original_context_length is None:  # the config's CEL rules require it for dynamic and yarn
        raise ValueError(f"rope scaling {scaling.type} needs originalContextLength")
    return scaling.original_context_length


def dynamic_ntk_frequencies(head_dim: int, theta: float, scaling: RopeScaling, length: int,
                            device: torch.device | None = None) -> torch.Tensor:
    """The base grows with the sequence beyond original_context_length (unchanged up to it): the slow
    dimensions stretch to cover `length` while the fast ones, which resolve nearby tokens, barely move."""
    original = original_length(scaling)
    length = max(length, original)
    growth = scaling.factor * length / original - (scaling.factor - 1)
    return default_frequencies(head_dim, theta * growth ** (head_dim / (head_dim - 2)), device)


def yarn_frequencies(head_dim: int, theta: float, scaling: RopeScaling,
                     device: torch.device | None = None) -> torch.Tensor:
    """Dimensions that turn more than beta_fast times over the original context keep their frequency, those
    turning fewer than beta_slow times are divided by factor, and a linear ramp blends the ones in between."""
    original = original_length(scaling)

    def dimension_turning(rotations: float) -> float:
        """The (fractional) pair index i whose wavelength fits `rotations` times into the original context."""
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(dimension_turning(scaling.resolved_beta_fast)), 0)
    high = min(math.ceil(dimension_turning(scaling.resolved_beta_slow)), head_dim - 1)
    width = (high - low) or 0.001  # transformers' guard against a zero-width ramp
    interpolated = ((torch.arange(head_dim // 2, dtype=torch.float32, device=device) - low) / width).clamp(0, 1)
    kept = default_frequencies(head_dim, theta, device)
    return kept / scaling.factor * interpolated + kept * (1 - interpolated)


def yarn_attention_factor(scaling: RopeScaling) -> float:
    """Multiplier on cos/sin (so on attention logits squared): longer contexts flatten attention, this
    sharpens it back. The YaRN paper's 0.1 ln(factor) + 1 unless set."""
    if scaling.attention_factor is not None:
        return scaling.attention_factor
    return 0.1 * math.log(scaling.factor) + 1.0


def rotary_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None, length: int,
                       device: torch.device | None = None) -> tuple[torch.Tensor, float]:
    """Per-pair frequencies and the cos/sin multiplier for a forward over `length` positions."""
    if scaling is None:
        return default_frequencies(head_dim, theta, device), 1.0
    match scaling.type:
        case RopeScalingType.LINEAR:
            return linear_frequencies(head_dim, theta, scaling, device), 1.0
        case RopeScalingType.DYNAMIC:
            return dynamic_ntk_frequencies(head_dim, theta, scaling, length, device), 1.0
        case RopeScalingType.YARN:
            return yarn_frequencies(head_dim, theta, scaling, device), yarn_attention_factor(scaling)


def rotation_tables(frequencies: torch.Tensor, length: int, multiplier: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, (length, head_dim), in transformers' "rotate half" layout."""
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=frequencies.device), frequencies)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos() * multiplier, angles.sin() * multiplier


class RotaryEmbedding(nn.Module):
    """cos/sin tables of the rotary positions, with the config's optional long-context scaling.

    Tables for every position up to context_length are computed once. Only dynamic NTK depends on the
    sequence: a forward longer than original_context_length gets tables for its own length, which is what
    transformers computes for a fresh forward of that length (transformers also keeps the grown base for later,
    shorter calls until one falls below the original length; we do not carry that state).
    """

    def __init__(self, head_dim: int, context_length: int, theta: float, scaling: RopeScaling | None = None):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        self.grows_beyond: int | None = None
        """Sequences longer than this get tables of their own (dynamic NTK); None: the tables never change."""
        if scaling is not None and scaling.type == RopeScalingType.DYNAMIC:
            self.grows_beyond = original_length(scaling)
        # For dynamic NTK the stored tables are those of sequences that do not grow the base.
        frequencies, multiplier = rotary_frequencies(head_dim, theta, scaling, self.grows_beyond or context_length)
        cos, sin = rotation_tables(frequencies, context_length, multiplier)
        # Not saved in checkpoints: recomputed from the config, like transformers does.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions 0..length-1, (length, head_dim)."""
        if self.grows_beyond is not None and length > self.grows_beyond:
            device = self.cos.device
            frequencies, multiplier = rotary_frequencies(self.head_dim, self.theta, self.scaling, length, device)
            return rotation_tables(frequencies, length, multiplier)
        return self.cos[:length], self.sin[:length]


def rotate(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary positions on x: (batch, heads, length, head_dim), in transformers' "rotate half" convention."""
    cos, sin = (table.to(x.dtype) for table in rotation)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = config.num_heads, config.head_dim
        self.kv_heads = config.kv_heads or config.num_heads
        self.dropout = config.dropout
        self.q = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=False)
        self.k = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batch, length, _ = x.shape
        q = rotate(self.q(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2), rotation)
        k = rotate(self.k(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2), rotation)
        v = self.v(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.kv_heads != self.heads:  # grouped-query attention: each KV head serves a group of query heads
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, config.resolved_intermediate_size, bias=False)
        self.up = nn.Linear(config.hidden_size, config.resolved_intermediate_size, bias=False)
        self.down = nn.Linear(config.resolved_intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attention = Attention(config)
        self.mlp_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rotation)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Token ids (batch, length) -> next-token logits (batch, length, vocab)."""

    def __init__(self, config: ModelConfig, vocab_size: int, eos_id: int | None = None):
        super().__init__()
        self.config, self.vocab_size, self.eos_id = config, vocab_size, eos_id
        self.embed = nn.Embedding(vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, vocab_size, bias=False)
        self.rope = RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta, config.rope_scaling)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        rotation = self.rope(input_ids.size(1))  # once per forward: every layer rotates by the same positions
        for layer in self.layers:
            x = layer(x, rotation)
        return self.lm_head(self.norm(x))


def build_model(config: ModelConfig, vocab_size: int, eos_id: int | None = None) -> Transformer:
    """A freshly initialised model (weights come from the global torch seed)."""
    return Transformer(config, vocab_size, eos_id)


# Our parameter names -> transformers' (per layer, after "layers.{i}." / "model.layers.{i}.").
LAYER_NAMES = {"attention.q": "self_attn.q_proj",
               "attention.k": "self_attn.k_proj", "attention.v": "self_attn.v_proj",
               "attention.out": "self_attn.o_proj", "mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj",
               "mlp.down": "mlp.down_proj", "attention_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}


def huggingface_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (full, unsharded) under transformers' LlamaForCausalLM names."""
    out = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"],
           "lm_head.weight": state.get("lm_head.weight", state["embed.weight"])}
    for name, tensor in state.items():
        if name.startswith("layers."):
            _, index, rest = name.split(".", 2)
            module, _, parameter = rest.rpartition(".")
            out[f"model.layers.{index}.{LAYER_NAMES[module]}.{parameter}"] = tensor
    return {name: tensor.detach().contiguous() for name, tensor in out.items()}


def to_huggingface(model: Transformer, state: dict[str, torch.Tensor] | None = None) -> LlamaForCausalLM:
    """A transformers LlamaForCausalLM computing the same function (what every export writes).

    `state`: the full state dict when the model is sharded (FSDP); default: the model's own.
    """
    state = state if state is not None else model.state_dict()
    hf = LlamaForCausalLM(hf_config(model.config, model.vocab_size, model.eos_id))
    hf.config._attn_implementation = "sdpa"
    hf.load_state_dict(huggingface_state_dict(state), strict=True)
    return hf.eval()
