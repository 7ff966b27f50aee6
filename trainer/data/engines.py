"""Where the per-document stages run: in-process, or on Ray Data (local mode, or a Ray cluster)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any, Protocol

from .clean import Batch, clean_batch

BATCH_SIZE = 256


class Engine(Protocol):
    def clean(self, columns: Batch, config_json: str) -> Iterator[dict[str, Any]]: ...


class InlineEngine:
    """Runs the stages in this process: tests, and tiny datasets."""

    def clean(self, columns: Batch, config_json: str) -> Iterator[dict[str, Any]]:
        size = len(columns["id"])
        for start in range(0, size, BATCH_SIZE):
            batch = clean_batch({k: v[start:start + BATCH_SIZE] for k, v in columns.items()}, config_json)
            yield from (dict(zip(batch, row, strict=True)) for row in zip(*batch.values(), strict=True))


class RayEngine:
    """Runs the stages as Ray Data `map_batches`, order preserved so results do not depend on scheduling.

    Starts Ray on this machine unless RAY_ADDRESS points at a cluster (a KubeRay RayJob sets it).
    """

    def __init__(self, num_cpus: int | None = None):
        self.num_cpus = num_cpus

    def clean(self, columns: Batch, config_json: str) -> Iterator[dict[str, Any]]:
        import ray
        import ray.data

        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            ray.init(address=address, num_cpus=None if address else self.num_cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        dataset = ray.data.from_items(rows).map_batches(
            functools.partial(_clean_numpy_batch, config_json=config_json), batch_size=BATCH_SIZE,
            batch_format="numpy")
        for row in dataset.iter_rows():
            yield {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}


def _clean_numpy_batch(batch: dict[str, Any], config_json: str) -> Batch:
    return clean_batch({key: list(values) for key, values in batch.items()}, config_json)
