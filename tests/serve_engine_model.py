"""A tiny Llama and transformers' greedy `generate` as the reference for the serving engine's tests."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from llmops.trainer.config.model import ModelConfig
from llmops.trainer.serve.engine import Engine, Group
from llmops.trainer.serve.sampling import SamplingParams
from llmops.trainer.train.model import hf_config

VOCAB = 97


def tiny_llama(context_length: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    shape = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, kv_heads=2, context_length=context_length)
    model = LlamaForCausalLM(hf_config(shape, vocab_size=VOCAB, eos_id=1)).eval()
    with torch.no_grad():  # wider than the init so greedy output varies from token to token
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.normal_(0, 0.2)
    return model


def reference(model: LlamaForCausalLM, prompt: list[int], max_new: int, eos: int | None = None) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=eos, pad_token_id=0, min_new_tokens=0 if eos is not None else max_new)
    return out[0, len(prompt):].tolist()


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def generate(engine: Engine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Add the prompts together and run the engine until they are done."""
    groups = [Group.of(p, greedy(max_tokens), 1, [None]) for p in prompts]
    for group in groups:
        engine.add(group)
    while engine.has_work():
        engine.step()
    return [g.sequences[0].output for g in groups]
