"""Reading a workload's config file: every `llmops-*` entry point takes `--config FILE` the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigFileError(ValueError):
    """The file is missing, is not YAML/JSON, or does not validate; the message names the file and the field."""


def load_config(model: type[ModelT], path: str | Path, overrides: dict[str, object] | None = None) -> ModelT:
    """`path` (YAML or JSON) validated as `model`, after applying top-level `overrides` (e.g. a CLI flag)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
        if overrides:
            raw = {**(raw or {}), **overrides}
        return model.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConfigFileError(f"invalid config {path}: {error}") from error
