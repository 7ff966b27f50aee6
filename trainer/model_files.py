"""The one check that a directory is a loadable Hugging Face-format model (training's base, evaluation, serving).

It runs before transformers does, so a wrong URI fails in one line naming the missing file rather than deep
inside `from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.trainer.config import layout


class ModelLoadError(ValueError):
    """The model cannot be loaded as given; the message names the model and the missing file or setting."""


def check_model_dir(directory: Path, uri: str | None = None) -> None:
    """Raise ModelLoadError unless `directory` holds config.json, weights and a tokenizer; `uri` (default: the
    directory) is how the message names the model, e.g. the s3:// URI it was staged from."""
    name = uri or str(directory)
    if not (directory / layout.MODEL_CONFIG_FILE).is_file():
        raise ModelLoadError(f"model {name} has no {layout.MODEL_CONFIG_FILE}: not a Hugging Face-format model "
                             "directory")
    if not any((directory / file).is_file() for file in layout.WEIGHT_FILES):
        raise ModelLoadError(f"model {name} has no weights: expected one of {', '.join(layout.WEIGHT_FILES)}")
    if not any((directory / file).is_file() for file in layout.TOKENIZER_FILES):
        raise ModelLoadError(f"model {name} has no tokenizer: expected one of {', '.join(layout.TOKENIZER_FILES)}")


def context_length(config: Any, default: int) -> int:
    """The longest sequence a transformers config's model reads: `max_position_embeddings`, except under dynamic
    NTK RoPE scaling, whose exports keep the pretrained length there (transformers grows the base past it) and
    read `factor` times as far."""
    length = int(getattr(config, "max_position_embeddings", 0) or default)
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling.get("rope_type", scaling.get("type")) == "dynamic":
        return int(length * float(scaling["factor"]))
    return length
