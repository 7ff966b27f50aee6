"""Read the Dataset's packed token shards and sample training windows deterministically.

A micro-batch is a pure function of (seed, step, index), where index = rank x accumulation + micro-step:
resuming at step N draws exactly the batches an uninterrupted run would have drawn (no data-position
state), and two processes without accumulation see the same data as one process accumulating two.
"""

from __future__ import annotations

import bisect
import itertools
import os
import weakref
from pathlib import Path

import numpy as np
import torch

from llmops.trainer.config import layout
from llmops.trainer.config.manifest import ShardIndex, Split


class TokenShards:
    """All shards of one split as a single token stream (`shards/index.json` order), never loaded whole.

    An index of cumulative offsets maps a stream position to its shard, and a window is read from the shards
    it spans with `pread`: the process holds the windows it asked for and nothing else. (A memory map would
    read the same bytes, but the kernel maps whole page-cache folios around each touch, so a reader's RSS grows
    towards the size of the split as random windows land everywhere; see bench/shard_memory.py.)
    """

    def __init__(self, dataset_dir: Path, split: Split):
        if split not in ("train", "validation"):
            raise ValueError(f"split: {split!r} is not a split of a Dataset; use 'train' or 'validation'")
        index = ShardIndex.read(ShardIndex.path(dataset_dir))
        self.eos_id: int = index.eos_id
        self.dtype = np.dtype(index.dtype)
        shards = [(dataset_dir / layout.SHARDS_DIR / s.file, s.tokens) for s in index.split(split) if s.tokens]
        self.files: list[int] = []
        """One open descriptor per shard, in stream order (closed when this object goes)."""
        weakref.finalize(self, _close, self.files)
        self.paths = [path for path, _ in shards]
        for path, tokens in shards:
            self.files.append(self._open(path, tokens))
        self.offsets = list(itertools.accumulate((tokens for _, tokens in shards), initial=0))
        """offsets[i] is where shard i starts in the stream; offsets[-1] is the stream's length."""

    def _open(self, path: Path, tokens: int) -> int:
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        if size != tokens * self.dtype.itemsize:
            os.close(fd)
            raise ValueError(f"{path}: holds {size // self.dtype.itemsize} tokens but {layout.SHARD_INDEX_FILE} "
                             f"says {tokens}; the Dataset output is damaged, rebuild it")
        return fd

    def __len__(self) -> int:
        return self.offsets[-1]

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream as int64, read from every shard the range spans."""
        raw = np.empty(length, dtype=self.dtype)
        self._fill(raw, start)
        return raw.astype(np.int64)

    def _fill(self, out: np.ndarray, start: int) -> None:
        """Read the stream from `start` into `out` (a contiguous array of the shards' dtype)."""
        length = len(out)
        if start < 0 or start + length > len(self):
            raise IndexError(f"window [{start}, {start + length}) is outside the stream of {len(self)} tokens")
        shard, filled = bisect.bisect_right(self.offsets, start) - 1, 0
        while filled < length:
            begin = start + filled - self.offsets[shard]
            count = min(length - filled, self.offsets[shard + 1] - start - filled)
            self._read_into(out[filled:filled + count], shard, begin)
            filled, shard = filled + count, shard + 1

    def _read_into(self, out: np.ndarray, shard: int, begin: int) -> None:
        view, offset = memoryview(out).cast("B"), begin * self.dtype.itemsize
        while view:  # a regular file reads short only at its end, which the size check in _open rules out
            done = os.preadv(self.files[shard], [view], offset)
            if not done:
                raise ValueError(f"{self.paths[shard]}: ended early; the Dataset output is damaged, rebuild it")
            view, offset = view[done:], offset + done

    def batch(self, batch_size: int, length: int, *, seed: int, step: int,
              index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each [batch_size, length]; targets are inputs shifted by one token."""
        if len(self) <= length + 1:
            raise ValueError(f"the split has {len(self)} tokens, fewer than one window of {length + 1}")
        rng = np.random.default_rng([seed, step, index])
        starts = rng.integers(0, len(self) - length - 1, size=batch_size)
        raw = np.empty((batch_size, length + 1), dtype=self.dtype)
        for row, start in zip(raw, starts, strict=True):
            self._fill(row, int(start))
        tensor = torch.from_numpy(raw.astype(np.int64))
        return tensor[:, :-1], tensor[:, 1:]

    def sequential(self, batch_size: int, length: int, max_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows from the start (validation: the same batches every time)."""
        batches = []
        usable = (len(self) - 1) // length
        for b in range(min(max_batches, max(1, usable // batch_size))):
            rows = [self.window(row * length, length + 1) for row in range(b * batch_size, (b + 1) * batch_size)
                    if (row + 1) * length + 1 <= len(self)]
            if rows:
                tensor = torch.from_numpy(np.stack(rows))
                batches.append((tensor[:, :-1], tensor[:, 1:]))
        return batches


def _close(files: list[int]) -> None:
    for fd in files:
        os.close(fd)
