"""The model: Hugging Face's Llama (RMSNorm, RoPE, SwiGLU, grouped-query SDPA attention) built from our config.

Using the transformers class means every export is loadable unchanged by transformers, vLLM, TGI and
lm-eval; parallelism (DDP/FSDP) wraps it from the outside and never changes this file.
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from llmops.trainer.config.model import ModelConfig


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
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def build_model(config: ModelConfig, vocab_size: int, eos_id: int | None = None) -> LlamaForCausalLM:
    """A freshly initialised model (weights come from the global torch seed)."""
    model = LlamaForCausalLM(hf_config(config, vocab_size, eos_id))
    model.config._attn_implementation = "sdpa"
    return model
