"""Continued pretraining: start a run from an existing model's weights (a PretrainJob's or FineTune's export, or
any Hugging Face Llama directory) instead of a fresh initialisation.

The shape comes from the model's config.json (only the context length may change, to train at a longer
context); the weights are mapped back from transformers' names to ours; the tokenizer must be the Dataset's, or
every token id would mean something else to the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmops.trainer.config import layout
from llmops.trainer.config.model import ModelConfig, RopeScaling, RopeScalingType
from llmops.trainer.config.training import ModelInit

from .model import LAYER_NAMES, Transformer

HF_TO_OURS = {hf: ours for ours, hf in LAYER_NAMES.items()}
TOKENIZER_FILE = "tokenizer.json"


class InitError(ValueError):
    """The model to start from cannot be continued on this data (exit 78: a config error, not retried)."""


def read_config(directory: Path) -> dict[str, Any]:
    return json.loads((directory / layout.MODEL_CONFIG_FILE).read_text())


def shape_of(directory: Path, init: ModelInit) -> tuple[ModelConfig, int]:
    """The shape and vocabulary size of the model in `directory`, with the init's context length."""
    config = read_config(directory)
    if config.get("model_type") != "llama" or config.get("architectures", ["LlamaForCausalLM"]) != [
            "LlamaForCausalLM"]:
        raise InitError(f"init: {init.uri} is a {config.get('architectures') or config.get('model_type')} model; "
                        "continued pretraining starts from a Llama causal LM (a PretrainJob's model, or a FineTune "
                        "of method sft, lora with merge, or distill)")
    heads = config["num_attention_heads"]
    shape = ModelConfig(
        hidden_size=config["hidden_size"], num_layers=config["num_hidden_layers"], num_heads=heads,
        kv_heads=None if config.get("num_key_value_heads", heads) == heads else config["num_key_value_heads"],
        intermediate_size=config["intermediate_size"],
        context_length=init.context_length or config["max_position_embeddings"],
        vocab_size=config["vocab_size"], rope_theta=config.get("rope_theta", 10000.0),
        rope_scaling=init.rope_scaling or rope_scaling_of(config.get("rope_scaling")),
        norm_eps=config.get("rms_norm_eps", 1e-5), tie_embeddings=config.get("tie_word_embeddings", True))
    return shape, int(config["vocab_size"])


def rope_scaling_of(scaling: dict[str, Any] | None) -> RopeScaling | None:
    """A transformers `rope_scaling` dict (the inverse of RopeScaling.to_transformers)."""
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in {t.value for t in RopeScalingType}:
        raise InitError(f"init: rope_scaling type {kind!r} is not one we train (linear, dynamic, yarn)")
    return RopeScaling(type=kind, factor=scaling["factor"],
                       original_context_length=scaling.get("original_max_position_embeddings"),
                       **{k: scaling[k] for k in ("beta_fast", "beta_slow", "attention_factor")
                          if kind == "yarn" and scaling.get(k) is not None})


def check_tokenizer(model_dir: Path, data_dir: Path, init: ModelInit) -> None:
    """The Dataset's tokenizer must be the model's: same tokens with the same ids."""
    from tokenizers import Tokenizer

    if not (model_dir / TOKENIZER_FILE).is_file():
        raise InitError(f"init: {init.uri} has no {TOKENIZER_FILE}, so its tokenizer cannot be compared with the "
                        "Dataset's")
    ours = Tokenizer.from_file(str(data_dir / layout.TOKENIZER_FILE)).get_vocab()
    theirs = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE)).get_vocab()
    if ours != theirs:
        differing = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda item: item[1])[:3]
        raise InitError(
            f"init: the Dataset's tokenizer ({len(ours)} tokens) is not the tokenizer of {init.uri} ({len(theirs)} "
            f"tokens; e.g. {', '.join(f'{t!r}={i}' for t, i in differing)} differ): build the Dataset with "
            f"spec.tokenizer.uri set to the model's {TOKENIZER_FILE} so both number tokens alike")


def our_state_dict(hf_state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """transformers' LlamaForCausalLM names -> ours (the inverse of model.huggingface_state_dict)."""
    out = {"embed.weight": hf_state["model.embed_tokens.weight"], "norm.weight": hf_state["model.norm.weight"],
           "lm_head.weight": hf_state["model.embed_tokens.weight"] if tied else hf_state["lm_head.weight"]}
    for name, tensor in hf_state.items():
        if name.startswith("model.layers."):
            _, _, index, rest = name.split(".", 3)
            module, _, parameter = rest.rpartition(".")
            out[f"layers.{index}.{HF_TO_OURS[module]}.{parameter}"] = tensor
    return out


def load_weights(model: Transformer, directory: Path) -> None:
    """Copy the weights of the model in `directory` into `model` (same shape; every weight must match)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise InitError(f"init: no *.safetensors weights in {directory}")
    hf_state: dict[str, torch.Tensor] = {}
    for file in files:
        hf_state.update(load_file(file))
    state = our_state_dict(hf_state, model.config.tie_embeddings)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
