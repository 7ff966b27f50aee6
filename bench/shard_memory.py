"""Memory of the pretrain data reader: ours (TokenShards, windows read with pread through an offset index)
versus the reader it replaced (every shard memory-mapped, then `np.concatenate`d into one array), on a split
of several large shards, same batches, each in its own process so peak RSS is its own.

A third reader, `mmap` (an offset index over the memory maps, no concatenation), shows why ours reads
with pread: the kernel maps whole page-cache folios around each touched page, so random windows pull the
map's RSS towards the split's size even though nothing is copied.

Prints, per reader, peak RSS, its growth over the process after imports, and windows/s (from opening the split
to the last batch, so the baseline's concatenation counts), then the CPU, and as its last line
`shard_memory: ratio=X.XX` (baseline peak RSS / ours) with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_description  # bench/machine.py (scripts run with bench/ on sys.path)

CHUNK = 1 << 22
BATCH, LENGTH = 16, 1024


class ConcatenatingShards:
    """The baseline: the reader before this change, as it was (batch only, which is what the bench draws)."""

    def __init__(self, dataset_dir: Path, split: str):
        index = json.loads((dataset_dir / "shards" / "index.json").read_text())
        self.eos_id: int = index["eosId"]
        self.parts = [np.memmap(dataset_dir / "shards" / shard["file"], dtype=np.dtype(index["dtype"]), mode="r")
                      for shard in index[split] if shard["tokens"]]
        self.stream = np.concatenate(self.parts) if len(self.parts) > 1 else (
            self.parts[0] if self.parts else np.zeros(0, dtype=np.uint16))

    def __len__(self) -> int:
        return len(self.stream)

    def batch(self, batch_size: int, length: int, *, seed: int, step: int, index: int = 0) -> tuple:
        import torch

        rng = np.random.default_rng([seed, step, index])
        starts = rng.integers(0, len(self.stream) - length - 1, size=batch_size)
        windows = np.stack([np.asarray(self.stream[s:s + length + 1], dtype=np.int64) for s in starts])
        tensor = torch.from_numpy(windows)
        return tensor[:, :-1], tensor[:, 1:]


class MappedShards:
    """An offset index over memory maps: nothing concatenated, windows sliced from the maps they span."""

    def __init__(self, dataset_dir: Path, split: str):
        index = json.loads((dataset_dir / "shards" / "index.json").read_text())
        self.parts = [np.memmap(dataset_dir / "shards" / shard["file"], dtype=np.dtype(index["dtype"]), mode="r")
                      for shard in index[split] if shard["tokens"]]
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        out, filled = np.empty(length, dtype=np.int64), 0
        part = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while filled < length:
            begin = start + filled - int(self.offsets[part])
            piece = self.parts[part][begin:begin + length - filled]
            out[filled:filled + len(piece)] = piece
            filled, part = filled + len(piece), part + 1
        return out

    def batch(self, batch_size: int, length: int, *, seed: int, step: int, index: int = 0) -> tuple:
        import torch

        starts = np.random.default_rng([seed, step, index]).integers(0, len(self) - length - 1, size=batch_size)
        tensor = torch.from_numpy(np.stack([self.window(int(s), length + 1) for s in starts]))
        return tensor[:, :-1], tensor[:, 1:]


def write_split(directory: Path, shards: int, tokens_per_shard: int) -> int:
    """`shards` shards of random uint16 token ids (written in chunks), indexed as llmops-data indexes them."""
    from llmops.trainer.config.manifest import ShardEntry, ShardIndex

    (directory / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for shard in range(shards):
        name = f"train-{shard:05d}.bin"
        with (directory / "shards" / name).open("wb") as out:
            for begin in range(0, tokens_per_shard, CHUNK):
                rng.integers(0, 1 << 16, size=min(CHUNK, tokens_per_shard - begin), dtype=np.uint16).tofile(out)
        entries.append(ShardEntry(file=name, tokens=tokens_per_shard))
    ShardIndex(dtype="uint16", eos_id=0, train=entries).write(ShardIndex.path(directory))
    return shards * tokens_per_shard * 2


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(kind: str, data: Path, batches: int) -> None:
    import torch  # noqa: F401  (every reader returns tensors: count the import in the baseline, not the growth)

    from llmops.trainer.train.shards import TokenShards

    reader_type = {"ours": TokenShards, "baseline": ConcatenatingShards, "mmap": MappedShards}[kind]
    before = rss_kib()
    started = time.perf_counter()
    reader = reader_type(data, "train")
    checksum = 0
    for step in range(batches):
        inputs, _ = reader.batch(BATCH, LENGTH, seed=1337, step=step)
        checksum = (checksum * 31 + int(inputs.sum())) % (1 << 61)
    seconds = time.perf_counter() - started
    print(json.dumps({"kind": kind, "peakRssMb": rss_kib() / 1024, "growthMb": (rss_kib() - before) / 1024,
                      "windowsPerSecond": batches * BATCH / seconds, "checksum": checksum}))




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 shards of 64 MB, 100 batches (under 2 minutes)")
    parser.add_argument("--worker", choices=("ours", "baseline", "mmap"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shards, tokens_per_shard, batches = (3, 32 << 20, 100) if args.quick else (4, 64 << 20, 400)
    if args.worker:
        worker(args.worker, args.data, args.batches)
        return
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        size = write_split(Path(tmp) / "data", shards, tokens_per_shard)
        results = {}
        for kind in ("baseline", "mmap", "ours"):
            out = subprocess.run([sys.executable, __file__, "--worker", kind, "--data", str(Path(tmp) / "data"),
                                  "--batches", str(batches)], capture_output=True, text=True, check=True, cwd="/")
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    if len({r["checksum"] for r in results.values()}) != 1:
        raise SystemExit(f"the readers drew different batches: {results}")
    print(f"split: {shards} shards x {tokens_per_shard * 2 >> 20} MB of uint16 ({size >> 20} MB), "
          f"{batches} batches of {BATCH} x {LENGTH + 1} tokens, the same batches from each reader")
    for kind, result in results.items():
        print(f"{kind:<9} peak RSS {result['peakRssMb']:6.0f} MB  growth {result['growthMb']:6.0f} MB  "
              f"{result['windowsPerSecond']:8.0f} windows/s")
    print(f"cpu: {cpu_description()}")
    ours, baseline = results["ours"], results["baseline"]
    print(f"shard_memory: ratio={baseline['peakRssMb'] / ours['peakRssMb']:.2f} "
          f"ours_peak_mb={ours['peakRssMb']:.0f} baseline_peak_mb={baseline['peakRssMb']:.0f} "
          f"ours_growth_mb={ours['growthMb']:.0f} baseline_growth_mb={baseline['growthMb']:.0f} "
          f"mmap_growth_mb={results['mmap']['growthMb']:.0f} split_mb={size >> 20}")


if __name__ == "__main__":
    main()
