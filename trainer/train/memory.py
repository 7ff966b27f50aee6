"""What a training run says when a batch does not fit in memory (exit code OUT_OF_MEMORY, not retried)."""

from __future__ import annotations


def out_of_memory_advice(micro_batch_size: int, accumulation: int, length_field: str, length: int) -> str:
    """Which knobs to lower: the micro-batch (the same global batch kept by accumulating more) or the sequence
    length (`length_field`, e.g. model.contextLength)."""
    smaller = max(1, micro_batch_size // 2)
    return (f"OutOfMemory: a micro-batch of training.batch.microBatchSize {micro_batch_size} x {length_field} "
            f"{length} does not fit: try microBatchSize {smaller} with gradientAccumulationSteps "
            f"{accumulation * micro_batch_size // smaller} (same global batch), or a shorter {length_field}")
