"""TokenShards: a split's shards read as one stream, window by window, without joining them in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmops.trainer.config.manifest import DatasetFileError, ShardEntry, ShardIndex
from llmops.trainer.data.packing import write_shards
from llmops.trainer.train.shards import TokenShards

EOS = 0


def documents(count: int, seed: int) -> list[list[int]]:
    """Documents of 1..300 random token ids in [1, 500), each ended by EOS (as packing.encode ends them)."""
    rng = np.random.default_rng(seed)
    return [[*rng.integers(1, 500, size=int(rng.integers(1, 300))).tolist(), EOS] for _ in range(count)]


def dataset(directory: Path, shard_size: int, train_docs: int = 60, validation_docs: int = 20) -> Path:
    """A Dataset output as llmops-data writes it (write_shards + ShardIndex), in shards of `shard_size`."""
    shards = directory / "shards"
    dtype = np.dtype(np.uint16)
    ShardIndex(dtype="uint16", eos_id=EOS,
               train=write_shards(shards, "train", documents(train_docs, 1), dtype, shard_size),
               validation=write_shards(shards, "validation", documents(validation_docs, 2), dtype, shard_size)
               ).write(ShardIndex.path(directory))
    return directory


def index_of(directory: Path) -> ShardIndex:
    return ShardIndex.read(ShardIndex.path(directory))


def stream(directory: Path, split: str) -> np.ndarray:
    """The split as one array: what the reader must behave as (the concatenation of its shards in index order)."""
    index = index_of(directory)
    return np.concatenate([np.fromfile(directory / "shards" / s.file, dtype=np.uint16)
                           for s in index.split(split)]).astype(np.int64)  # type: ignore[arg-type]


def windows_of(tokens: np.ndarray, batch_size: int, length: int, seed: int, step: int, index: int) -> torch.Tensor:
    """The data-position rule: the starts are drawn from default_rng([seed, step, index]) over the stream."""
    starts = np.random.default_rng([seed, step, index]).integers(0, len(tokens) - length - 1, size=batch_size)
    return torch.from_numpy(np.stack([tokens[s:s + length + 1] for s in starts]))


@pytest.mark.parametrize("shard_size", [1 << 20, 1500], ids=["one shard", "several shards"])
def test_batches_are_windows_of_the_concatenated_stream(tmp_path: Path, shard_size: int) -> None:
    directory = dataset(tmp_path, shard_size)
    tokens = stream(directory, "train")
    shards = TokenShards(directory, "train")
    want_parts = 1 if shard_size > len(tokens) else -(-len(tokens) // shard_size)
    assert len(index_of(directory).train) == want_parts and len(shards) == len(tokens)

    for seed, step, index in [(0, 0, 0), (7, 12, 3), (123, 9999, 1)]:
        inputs, targets = shards.batch(16, 64, seed=seed, step=step, index=index)
        want = windows_of(tokens, 16, 64, seed, step, index)
        assert inputs.dtype == torch.int64 and inputs.shape == (16, 64)
        assert torch.equal(inputs, want[:, :-1]) and torch.equal(targets, want[:, 1:])


def test_a_window_across_shard_boundaries_is_read_from_each_shard(tmp_path: Path) -> None:
    directory = dataset(tmp_path, 1500)
    tokens, shards = stream(directory, "train"), TokenShards(directory, "train")
    assert len(index_of(directory).train) >= 3
    # From 5 tokens before the first boundary to 5 after the second: three shards in one window.
    assert np.array_equal(shards.window(1495, 1510), tokens[1495:3005])
    assert np.array_equal(shards.window(0, len(tokens)), tokens)
    with pytest.raises(IndexError, match="outside the stream"):
        shards.window(len(tokens) - 3, 4)


def test_sequential_batches_are_the_stream_from_its_start(tmp_path: Path) -> None:
    directory = dataset(tmp_path, 1500)
    tokens, shards = stream(directory, "validation"), TokenShards(directory, "validation")
    batches = shards.sequential(4, 100, max_batches=3)
    assert len(batches) == min(3, (len(tokens) - 1) // 100 // 4)
    for b, (inputs, targets) in enumerate(batches):
        for row in range(4):
            start = (b * 4 + row) * 100
            assert torch.equal(inputs[row], torch.from_numpy(tokens[start:start + 100]))
            assert torch.equal(targets[row], torch.from_numpy(tokens[start + 1:start + 101]))


def test_empty_shards_are_skipped_and_an_empty_split_says_so(tmp_path: Path) -> None:
    directory = dataset(tmp_path, 1500, validation_docs=0)
    assert index_of(directory).validation == [ShardEntry(file="validation-00000.bin", tokens=0)]
    shards = TokenShards(directory, "validation")
    assert len(shards) == 0 and shards.eos_id == EOS
    with pytest.raises(ValueError, match="the split has 0 tokens, fewer than one window of 65"):
        shards.batch(2, 64, seed=0, step=0)


def test_a_shard_shorter_than_its_index_entry_is_reported_not_misread(tmp_path: Path) -> None:
    directory = dataset(tmp_path, 1500)
    damaged = directory / "shards" / "train-00001.bin"
    damaged.write_bytes(damaged.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"train-00001.bin: holds 1490 tokens but index.json says 1500; .*rebuild"):
        TokenShards(directory, "train")


def test_a_directory_without_an_index_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match=r"shards/index.json: not found; point at a Dataset's output"):
        TokenShards(tmp_path, "train")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "index.json").write_text('{"dtype": "float32", "eosId": 0}')
    with pytest.raises(DatasetFileError, match=r"not a valid ShardIndex .*dtype"):
        TokenShards(tmp_path, "train")


def test_an_unknown_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split: 'test' is not a split of a Dataset; use 'train' or 'validation'"):
        TokenShards(dataset(tmp_path, 1500), "test")  # type: ignore[arg-type]
