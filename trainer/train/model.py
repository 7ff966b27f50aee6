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

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from llmops.trainer.config.model import ModelConfig

INIT_STD = 0.02  # transformers' Llama initializer_range, so both classes start from the same distribution


def hf_config(config: ModelConfig, vocab_size: int, eos_id: int | None = None) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.resolved_intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.kv_heads or config.num_heads,
        max_position_embeddings=config.context_length,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=config.tie_embeddings,
        attention_dropout=config.dropout,
        initializer_range=INIT_STD,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


class RotaryEmbedding(nn.Module):
    """cos/sin tables for every position, in transformers' "rotate half" convention."""

    def __init__(self, head_dim: int, context_length: int, theta: float):
        super().__init__()
        inverse = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        angles = torch.outer(torch.arange(context_length, dtype=torch.float32), inverse)
        angles = torch.cat((angles, angles), dim=-1)
        # Not saved in checkpoints: recomputed from the config, like transformers does.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, heads, length, head_dim)."""
        length = x.size(-2)
        cos, sin = self.cos[:length].to(x.dtype), self.sin[:length].to(x.dtype)
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

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
        batch, length, _ = x.shape
        q = rope(self.q(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2))
        k = rope(self.k(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2))
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

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope)
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
        self.rope = RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, self.rope)
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
