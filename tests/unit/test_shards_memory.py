"""TokenShards keeps memory flat: a process drawing batches from a split of several large shards grows by a
small fraction of their size (the pages its windows touch), never by the split itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from llmops.trainer.config.manifest import ShardEntry, ShardIndex

PERIOD = 65521
"""Token i of the stream is i % PERIOD (a prime below 2**16): any window's content is known from its start."""

SHARD_TOKENS = 48 << 20  # 96 MiB of uint16 per shard
SHARDS = 3
CHUNK = 1 << 22

READER = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path

    import numpy as np
    from llmops.trainer.config.manifest import ShardIndex
    from llmops.trainer.train.shards import TokenShards

    directory, period = Path(sys.argv[1]), int(sys.argv[2])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shards = TokenShards(directory, "train")
    rows = [shards.batch(8, 1024, seed=0, step=step)[0] for step in range(50)]
    boundary, crossing = 0, []
    for entry in ShardIndex.read(ShardIndex.path(directory)).train[:-1]:  # one window across every shard boundary
        boundary += entry.tokens
        crossing.append(shards.window(boundary - 512, 1024))
    crossing += [inputs for inputs, _ in shards.sequential(8, 1024, max_batches=4)]
    windows = [w.numpy() for w in rows] + [np.atleast_2d(w) for w in crossing]
    consecutive = all(bool(((w[:, 1:] - w[:, :-1]) % period == 1).all()) for w in windows)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tokens": len(shards), "consecutive": consecutive, "growthKiB": after - before}))
""")


def write_large_split(directory: Path) -> int:
    """SHARDS shards of SHARD_TOKENS uint16 tokens (i % PERIOD over the whole stream), written in chunks so
    this process stays small too. Returns the bytes written."""
    (directory / "shards").mkdir(parents=True)
    entries = []
    for shard in range(SHARDS):
        name = f"train-{shard:05d}.bin"
        with (directory / "shards" / name).open("wb") as out:
            for begin in range(shard * SHARD_TOKENS, (shard + 1) * SHARD_TOKENS, CHUNK):
                (np.arange(begin, begin + CHUNK, dtype=np.int64) % PERIOD).astype(np.uint16).tofile(out)
        entries.append(ShardEntry(file=name, tokens=SHARD_TOKENS))
    ShardIndex(dtype="uint16", eos_id=0, train=entries).write(ShardIndex.path(directory))
    return SHARDS * SHARD_TOKENS * 2


@pytest.mark.slow
def test_reading_batches_from_large_shards_keeps_memory_flat(tmp_path: Path) -> None:
    size = write_large_split(tmp_path / "data")
    result = subprocess.run([sys.executable, "-c", READER, str(tmp_path / "data"), str(PERIOD)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.splitlines()[-1])

    assert measured["tokens"] == SHARDS * SHARD_TOKENS
    assert measured["consecutive"], "a window is not a run of consecutive stream positions"
    # Joining the shards would grow the reader by all 288 MiB of them; windows touch a few pages each.
    assert measured["growthKiB"] * 1024 < size / 10, f"grew by {measured['growthKiB'] / 1024:.1f} MiB"
