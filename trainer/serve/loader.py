"""Find and load a Hugging Face-format model directory: a local path or an fsspec URI (staged into a cache).

A directory whose config.json has a compressed-tensors `quantization_config` (what FineTune method quantize
writes) is built with its Linear layers still quantized (`llmops.trainer.compress.qlinear`), without the
compressed-tensors package."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.trainer import storage
from llmops.trainer.config import layout
from llmops.trainer.config.serve import Dtype
from llmops.trainer.model_files import ModelLoadError, check_model_dir, context_length

if TYPE_CHECKING:
    from llmops.trainer.compress.quantize import WeightQuantization

__all__ = ["LoadedModel", "ModelLoadError", "check_files", "load", "localize"]

log = logging.getLogger(__name__)


def localize(uri: str, cache_dir: Path | None = None) -> Path:
    """A local directory holding the model at `uri`; a remote one is copied into the cache (default
    storage.cache_dir()) and copied again only when the store's objects change."""
    if not layout.is_local(uri):
        log.info("staging %s", uri)
    try:
        return storage.stage_in(uri, "model", require=layout.MODEL_CONFIG_FILE, cache=cache_dir)
    except storage.StorageError as error:
        raise ModelLoadError(str(error)) from error


check_files = check_model_dir
"""Fail early, naming the missing file, instead of deep inside transformers (the workloads' one check)."""


def torch_dtype(dtype: Dtype, cuda: bool) -> Any:
    import torch

    if dtype is Dtype.AUTO:
        return torch.bfloat16 if cuda else torch.float32
    return {Dtype.FLOAT32: torch.float32, Dtype.BFLOAT16: torch.bfloat16, Dtype.FLOAT16: torch.float16}[dtype]


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    eos_ids: list[int]
    context_length: int


def load(directory: Path, dtype: Dtype, device: str | None = None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    check_files(directory)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dtype = torch_dtype(dtype, device.startswith("cuda"))
    try:
        quantization = weight_quantization(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if quantization is not None:
            from llmops.trainer.compress.qlinear import load_quantized_model

            model = load_quantized_model(directory, quantization, model_dtype, device)
        else:
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=model_dtype, attn_implementation="sdpa")
            model.to(device).eval()
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the model in {directory}: {error}") from error
    eos: set[int] = set()
    for source in (model.config.eos_token_id, tokenizer.eos_token_id):
        eos.update(source if isinstance(source, list) else [source] if source is not None else [])
    if (directory / "generation_config.json").is_file():
        generated = GenerationConfig.from_pretrained(directory).eos_token_id
        eos.update(generated if isinstance(generated, list) else [generated] if generated is not None else [])
    context = context_length(model.config, 2048)
    return LoadedModel(model, tokenizer, sorted(eos), context)


def weight_quantization(directory: Path) -> WeightQuantization | None:
    """The compressed-tensors weight quantization config.json declares, or None (an ordinary model)."""
    from llmops.trainer.compress.quantize import read_weight_quantization

    return read_weight_quantization(json.loads((directory / layout.MODEL_CONFIG_FILE).read_text()))
