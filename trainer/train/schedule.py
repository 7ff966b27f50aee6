"""Learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import math

from llmops.trainer.config.training import ScheduleConfig, ScheduleKind


def learning_rate(step: int, peak: float, max_steps: int, config: ScheduleConfig) -> float:
    """Linear warm-up to `peak`, then cosine/linear decay to peak * minLearningRateRatio (or constant)."""
    if config.warmup_steps and step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    floor = peak * config.min_learning_rate_ratio
    if config.kind is ScheduleKind.CONSTANT:
        return peak
    progress = min(1.0, (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps))
    if config.kind is ScheduleKind.LINEAR:
        return peak - (peak - floor) * progress
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
