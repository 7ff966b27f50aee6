"""Read the Dataset's packed token shards and sample training windows deterministically.

A micro-batch is a pure function of (seed, step, index), where index = rank x accumulation + micro-step:
resuming at step N draws exactly the batches an uninterrupted run would have drawn (no data-position
state), and two processes without accumulation see the same data as one process accumulating two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class TokenShards:
    """All shards of one split as a single token stream (memory-mapped, never loaded whole)."""

    def __init__(self, dataset_dir: Path, split: str):
        index = json.loads((dataset_dir / "shards" / "index.json").read_text())
        self.eos_id: int = index["eosId"]
        self.parts = [np.memmap(dataset_dir / "shards" / shard["file"], dtype=np.dtype(index["dtype"]), mode="r")
                      for shard in index[split] if shard["tokens"]]
        self.stream = np.concatenate(self.parts) if len(self.parts) > 1 else (
            self.parts[0] if self.parts else np.zeros(0, dtype=np.uint16))

    def __len__(self) -> int:
        return len(self.stream)

    def batch(self, batch_size: int, length: int, *, seed: int, step: int,
              index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each [batch_size, length]; targets are inputs shifted by one token."""
        if len(self.stream) <= length + 1:
            raise ValueError(f"the split has {len(self.stream)} tokens, fewer than one window of {length + 1}")
        rng = np.random.default_rng([seed, step, index])
        starts = rng.integers(0, len(self.stream) - length - 1, size=batch_size)
        windows = np.stack([np.asarray(self.stream[s:s + length + 1], dtype=np.int64) for s in starts])
        tensor = torch.from_numpy(windows)
        return tensor[:, :-1], tensor[:, 1:]

    def sequential(self, batch_size: int, length: int, max_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows from the start (validation: the same batches every time)."""
        batches = []
        usable = (len(self.stream) - 1) // length
        for b in range(min(max_batches, max(1, usable // batch_size))):
            rows = [np.asarray(self.stream[(b * batch_size + i) * length:(b * batch_size + i) * length + length + 1],
                               dtype=np.int64) for i in range(batch_size)
                    if (b * batch_size + i + 1) * length + 1 <= len(self.stream)]
            if rows:
                tensor = torch.from_numpy(np.stack(rows))
                batches.append((tensor[:, :-1], tensor[:, 1:]))
        return batches
