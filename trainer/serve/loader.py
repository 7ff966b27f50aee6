"""Find and load a Hugging Face-format model directory: a local path or an fsspec URI (copied to a cache)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.trainer.config.serve import Dtype

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class ModelLoadError(Exception):
    """The model cannot be served as given; the message says which file or setting is wrong."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLMOPS_CACHE", Path.home() / ".cache" / "llmops")) / "models"


def localize(uri: str, cache_dir: Path | None = None) -> Path:
    """A local directory holding the model at `uri`; remote URIs are copied once into the cache."""
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model directory {path} does not exist")
        return path
    import fsspec

    target = (cache_dir or default_cache_dir()) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / "config.json").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except ImportError as error:  # e.g. s3:// without s3fs installed
        raise ModelLoadError(f"cannot read {uri}: {error}") from error
    if not fs.isdir(root):
        raise ModelLoadError(f"model directory {uri} does not exist")
    log.info("copying %s to %s", uri, target)
    fs.get(root.rstrip("/") + "/", str(partial), recursive=True)
    partial.rename(target)
    return target


def check_files(directory: Path) -> None:
    """Fail early, naming the missing file, instead of deep inside transformers."""
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{directory} has no config.json: not a Hugging Face-format model directory")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"{directory} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{directory} has no tokenizer: expected one of {', '.join(TOKENIZER_FILES)}")


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
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype(dtype, device.startswith("cuda")),
                                                     attn_implementation="sdpa")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the model in {directory}: {error}") from error
    model.to(device).eval()
    eos: set[int] = set()
    for source in (model.config.eos_token_id, tokenizer.eos_token_id):
        eos.update(source if isinstance(source, list) else [source] if source is not None else [])
    if (directory / "generation_config.json").is_file():
        generated = GenerationConfig.from_pretrained(directory).eos_token_id
        eos.update(generated if isinstance(generated, list) else [generated] if generated is not None else [])
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return LoadedModel(model, tokenizer, sorted(eos), context)
