"""Near-duplicate detection as map -> shuffle -> reduce, with the same verdicts as NearDuplicateIndex.

Map (per document, on any worker): the MinHash signature cut into bands, each band hashed to a 64-bit
band key. Shuffle: (band key, order) records partitioned by key. Reduce (per partition): documents sharing
a band key are candidate pairs. Then, on the driver, candidates are verified by exact shingle Jaccard and
resolved in read order: a document is dropped iff an earlier *kept* document is a verified candidate.
That is exactly the sequential index's rule (it only ever compares against kept documents), so a chain
A~B~C with A!~C drops B and keeps C, as the index does.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
from datasketch import MinHash

from llmops.trainer.config.data import NearDedupConfig

from .dedup import lsh_parameters, shingles

BAND_RECORD = np.dtype([("key", "<u8"), ("order", "<i8")])
"""One shuffle record: a band key and the read-order key of the document that has it."""


@functools.lru_cache(maxsize=4)
def _sketcher(config_json: str) -> tuple[int, int, MinHash]:
    # (bands, rows, template), once per process: choosing the bands integrates the S-curve (milliseconds),
    # and the template holds the same permutations as NearDuplicateIndex's (seed 1).
    bands, rows = lsh_parameters(NearDedupConfig.model_validate_json(config_json))
    return bands, rows, MinHash(num_perm=bands * rows, seed=1)


def band_keys(text: str, config: NearDedupConfig) -> list[int]:
    """One 64-bit key per LSH band. Two documents share a key iff their signatures agree on that band
    (up to a 2^-64 hash collision, which only adds a candidate that verification then rejects)."""
    bands, rows, template = _sketcher(config.model_dump_json())
    minhash = MinHash(num_perm=bands * rows, seed=1, permutations=template.permutations, scheme=template.scheme)
    minhash.update_batch(list(shingles(text, config.shingle_size)))
    values = minhash.hashvalues
    return [int.from_bytes(hashlib.blake2b(band.to_bytes(2, "little") + values[band * rows:(band + 1) * rows]
                                           .tobytes(), digest_size=8).digest(), "little")
            for band in range(bands)]


def candidate_pairs(records: np.ndarray) -> Iterator[tuple[int, int]]:
    """(earlier, later) orders of documents that share a band key, from one partition's records."""
    if len(records) < 2:
        return
    records = np.sort(records, order=["key", "order"])
    keys, orders = records["key"], records["order"]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    ends = np.append(starts[1:], len(keys))
    for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        bucket = orders[start:end].tolist()
        for i, earlier in enumerate(bucket):
            for later in bucket[i + 1:]:
                yield earlier, later


def shingle_hashes(text: str, size: int) -> frozenset[int]:
    """What the exact check compares (as NearDuplicateIndex does)."""
    return frozenset(hash(g) for g in shingles(text, size))


def is_similar(a: frozenset[int], b: frozenset[int], threshold: float) -> bool:
    return _jaccard_reaches(len(a & b), len(a), len(b), threshold)


def arrays_similar(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """`is_similar` for shingle hashes held as sorted arrays of distinct values."""
    return _jaccard_reaches(np.intersect1d(a, b, assume_unique=True).size, a.size, b.size, threshold)


def _jaccard_reaches(shared: int, size_a: int, size_b: int, threshold: float) -> bool:
    return shared / (size_a + size_b - shared) >= threshold  # |a & b| / |a | b|


def resolve(verified: Iterable[tuple[int, int]]) -> list[int]:
    """Orders dropped as near-duplicates: in read order, a document goes iff an earlier kept one is similar."""
    earlier: defaultdict[int, list[int]] = defaultdict(list)
    for a, b in verified:
        earlier[max(a, b)].append(min(a, b))
    dropped: set[int] = set()
    for doc in sorted(earlier):
        if any(other not in dropped for other in earlier[doc]):
            dropped.add(doc)
    return sorted(dropped)


def near_duplicates(texts: dict[int, str], config: NearDedupConfig, partitions: int = 4) -> list[int]:
    """The whole map/shuffle/reduce in memory over {order: text}: for tests and small inputs."""
    records = np.array([(key, order) for order, text in texts.items() for key in band_keys(text, config)],
                       dtype=BAND_RECORD)
    pairs = {pair for p in range(partitions) for pair in candidate_pairs(records[records["key"] % partitions == p])}
    grams = {order: shingle_hashes(texts[order], config.shingle_size) for pair in pairs for order in pair}
    return resolve(pair for pair in pairs if is_similar(grams[pair[0]], grams[pair[1]], config.threshold))
