"""A batch that does not fit in memory ends the run with its own exit code (not retried: the same batch would not
fit again) and a message naming the knobs to lower. The forward pass raises torch's own OutOfMemoryError, as
CUDA's allocator does; the rest is the workload's real CLI entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from llmops.trainer.config import exit_codes
from llmops.trainer.train import finetune, pretrain
from llmops.trainer.train.model import Transformer
from tests.integration.test_finetune import INSTRUCTIONS
from tests.integration.test_finetune import config as finetune_config
from tests.integration.test_pretrain import run_config


def no_room(*_: Any, **__: Any) -> Any:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def write(config: dict[str, Any], path: Path) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_exit_code_is_not_retried_and_has_its_reason() -> None:
    assert exit_codes.OUT_OF_MEMORY in exit_codes.DO_NOT_RETRY
    assert exit_codes.REASONS[exit_codes.OUT_OF_MEMORY] == "OutOfMemory"
    assert exit_codes.OUT_OF_MEMORY not in (exit_codes.CONFIG_ERROR, exit_codes.PREEMPTED, exit_codes.NON_FINITE_LOSS)


def test_pretraining_out_of_memory_names_micro_batch_and_context(dataset: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(Transformer, "forward", no_room)
    path = write(run_config(dataset, tmp_path / "out", maxSteps=8).to_wire(), tmp_path / "pretrain.yaml")
    assert pretrain.main(["--config", path]) == exit_codes.OUT_OF_MEMORY
    stderr = capsys.readouterr().err
    assert "microBatchSize 8 x model.contextLength 64 does not fit" in stderr
    assert "try microBatchSize 4 with gradientAccumulationSteps 2" in stderr


def test_fine_tuning_out_of_memory_names_micro_batch_and_max_length(base_model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(finetune.Method, "loss", no_room)
    config = finetune_config(base_model, INSTRUCTIONS, tmp_path / "out", "lora", training={"maxSteps": 4})
    assert finetune.main(["--config", write(config.to_wire(), tmp_path / "ft.yaml")]) == exit_codes.OUT_OF_MEMORY
    stderr = capsys.readouterr().err
    assert f"microBatchSize 4 x data.maxLength {config.data.max_length} does not fit" in stderr
