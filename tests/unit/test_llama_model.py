"""Our pretraining module computes exactly what transformers' LlamaForCausalLM computes from the same weights."""

from __future__ import annotations

import pytest
import torch

from llmops.trainer.config.model import ModelConfig
from llmops.trainer.train.model import build_model, huggingface_state_dict, to_huggingface


@pytest.mark.parametrize(("kv_heads", "tied"), [(None, True), (2, True), (2, False), (1, False)],
                         ids=["multi-head, tied", "grouped-query, tied", "grouped-query, untied", "multi-query"])
def test_same_logits_as_transformers(kv_heads: int | None, tied: bool) -> None:
    config = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, kv_heads=kv_heads, context_length=32,
                         tie_embeddings=tied)
    torch.manual_seed(0)
    ours = build_model(config, vocab_size=97, eos_id=0).eval()
    theirs = to_huggingface(ours)
    ids = torch.randint(0, 97, (3, 32))
    with torch.no_grad():
        assert torch.allclose(ours(ids), theirs(input_ids=ids).logits, atol=1e-6)
    assert theirs.config.tie_word_embeddings is tied and theirs.config.num_key_value_heads == (kv_heads or 4)


def test_every_weight_maps_to_a_transformers_name() -> None:
    config = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, kv_heads=2, context_length=16,
                         tie_embeddings=False)
    model = build_model(config, vocab_size=50)
    state = huggingface_state_dict(model.state_dict())
    assert set(state) == set(to_huggingface(model).state_dict())
    assert torch.equal(state["model.layers.1.self_attn.k_proj.weight"], model.layers[1].attention.k.weight)
