"""Pure pieces of training: schedule, compute-budget sizing, FLOPs and MFU accounting, OOM advice."""

from __future__ import annotations

import pytest

from llmops.trainer.config.model import ModelConfig
from llmops.trainer.config.training import ComputeBudget, ScheduleConfig, ScheduleKind, steps_for_budget
from llmops.trainer.train.memory import out_of_memory_advice
from llmops.trainer.train.metrics import flops_per_token, peak_flops
from llmops.trainer.train.schedule import learning_rate


def test_warmup_then_cosine_to_the_floor() -> None:
    config = ScheduleConfig(kind=ScheduleKind.COSINE, warmup_steps=10, min_learning_rate_ratio=0.1)
    assert learning_rate(0, 1.0, 110, config) == pytest.approx(0.1)
    assert learning_rate(9, 1.0, 110, config) == pytest.approx(1.0)
    assert learning_rate(60, 1.0, 110, config) == pytest.approx(0.55)
    assert learning_rate(110, 1.0, 110, config) == pytest.approx(0.1)


def test_linear_and_constant_schedules() -> None:
    linear = ScheduleConfig(kind=ScheduleKind.LINEAR, warmup_steps=0, min_learning_rate_ratio=0.0)
    assert learning_rate(50, 2.0, 100, linear) == pytest.approx(1.0)
    constant = ScheduleConfig(kind=ScheduleKind.CONSTANT, warmup_steps=0)
    assert learning_rate(99, 2.0, 100, constant) == 2.0


def test_budget_sizing_spends_six_flops_per_parameter_and_token() -> None:
    parameters = ModelConfig(hidden_size=128, num_layers=2, num_heads=4).parameter_count(vocab_size=2048)
    steps = steps_for_budget(ComputeBudget(flops=6 * parameters * 4096 * 100), parameters, tokens_per_step=4096)
    assert steps == 100


def test_flops_and_peak() -> None:
    assert flops_per_token(1_000_000, layers=2, hidden=64, context=128) == 6_000_000 + 12 * 2 * 64 * 128
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops(None) is None and peak_flops("Some CPU") is None


def test_out_of_memory_advice_keeps_the_global_batch() -> None:
    message = out_of_memory_advice(16, 2, "model.contextLength", 2048)
    assert "microBatchSize 16 x model.contextLength 2048" in message
    assert "microBatchSize 8 with gradientAccumulationSteps 4" in message and "shorter model.contextLength" in message
