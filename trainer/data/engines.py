"""Where the per-document stages run: in-process, or on Ray Data (local mode, or a Ray cluster)."""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from .clean import Batch, clean_and_sketch_batch, clean_batch

BATCH_SIZE = 256


class Engine(Protocol):
    def clean(self, columns: Batch, config_json: str) -> Iterator[dict[str, Any]]: ...

    def clean_blocks(self, blocks: Iterable[Batch], config_json: str) -> Iterator[Batch]:
        """The streaming path: clean_and_sketch_batch over each block, results in input order, holding only
        a bounded number of blocks at a time."""
        ...


class InlineEngine:
    """Runs the stages in this process: tests, and tiny datasets."""

    def clean(self, columns: Batch, config_json: str) -> Iterator[dict[str, Any]]:
        size = len(columns["id"])
        for start in range(0, size, BATCH_SIZE):
            batch = clean_batch({k: v[start:start + BATCH_SIZE] for k, v in columns.items()}, config_json)
            yield from (dict(zip(batch, row, strict=True)) for row in zip(*batch.values(), strict=True))

    def clean_blocks(self, blocks: Iterable[Batch], config_json: str) -> Iterator[Batch]:
        return (clean_and_sketch_batch(block, config_json) for block in blocks)


class RayEngine:
    """Runs the stages as Ray Data `map_batches`, order preserved so results do not depend on scheduling.

    Starts Ray on this machine unless RAY_ADDRESS points at a cluster (a KubeRay RayJob sets it).
    """

    def __init__(self, num_cpus: int | None = None):
        self.num_cpus = num_cpus

    def _start(self) -> None:
        import ray

        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            ray.init(address=address, num_cpus=None if address else self.num_cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)

    def clean_blocks(self, blocks: Iterable[Batch], config_json: str) -> Iterator[Batch]:
        """One Ray task per block, at most two per cluster CPU in flight: the driver reads ahead while the
        workers clean and sketch, and never holds more than that window of blocks."""
        import ray

        self._start()
        task = ray.remote(num_cpus=1)(clean_and_sketch_batch)
        config_ref = ray.put(config_json)
        window: deque[Any] = deque()
        limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        for block in blocks:
            window.append(task.remote(block, config_ref))
            if len(window) >= limit:
                yield ray.get(window.popleft())
        while window:
            yield ray.get(window.popleft())

    def clean(self, columns: Batch, config_json: str) -> Iterator[dict[str, Any]]:
        import ray.data

        self._start()
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
