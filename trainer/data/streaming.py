"""Curation with bounded memory: blocks through the engine, rows spilled to scratch files, dedup by partitions.

Pass 1 reads the sources in blocks, tagging each document with its read order (so "first copy wins" holds
however the blocks were scheduled); the engine cleans each block and computes content hashes and LSH band
keys; the driver appends surviving rows to `rows.jsonl` and the (hash, order) and (band key, order) records
to hash-partitioned files. Exact dedup then sorts one partition at a time; the band-key partitions yield
candidate pairs (lsh.candidate_pairs), whose documents are re-read from the spill for the exact Jaccard
check, and lsh.resolve gives the same verdicts as the sequential NearDuplicateIndex. The driver holds one
block, one partition, and the candidate pairs (their shingle hashes wait in a scratch file): never the corpus.

`SpilledCuration.rows()` then streams the kept rows back, as often as the tokenizer and shards need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmops.trainer.config.data import PipelineConfig, StreamingConfig

from . import lsh
from .clean import Batch
from .counts import Counts
from .engines import Engine
from .progress import Progress
from .sources import SourceReport, read_source
from .stages import is_validation

HASH_RECORD = np.dtype([("hash", "S20"), ("order", "<i8")])
ROWS_FILE = "rows.jsonl"
GRAMS_FILE = "candidate-shingles.bin"


@dataclass
class SpilledCuration:
    """Curated, with the kept rows on disk: `rows()` streams them in read order, each with its split."""

    spill: Path
    config: PipelineConfig
    counts: Counts
    reports: dict[str, SourceReport]
    digests: dict[str, str]
    dropped: set[int]
    """Read orders of the spilled rows that de-duplication dropped (scales with duplicates, not the corpus)."""
    near_duplicates: list[str] = field(default_factory=list)

    def rows(self, split: str | None = None) -> Iterator[dict[str, Any]]:
        for row in _spilled_rows(self.spill):
            if row["order"] in self.dropped:
                continue
            row["split"] = _split(row["hash"], self.config)
            if split is None or row["split"] == split:
                yield row


def curate_streaming(config: PipelineConfig, engine: Engine, spill: Path, options: StreamingConfig,
                     progress: Progress | None = None) -> SpilledCuration:
    """Curate into `spill` (an empty scratch directory the caller removes after)."""
    progress = progress or Progress(enabled=False)
    counts = Counts()
    reports: dict[str, SourceReport] = {}
    digests: dict[str, str] = {}
    config_json = PipelineConfig.model_validate(config.model_dump(include=set(PipelineConfig.model_fields)))\
        .model_dump_json()
    blocks = _read_blocks(config, options.block_documents, reports, digests, progress)
    with _Spill(spill, options.partitions) as writer:
        for block in engine.clean_blocks(blocks, config_json):
            writer.add(block, counts)
            progress.report("clean", counts.read, None, "documents")

    exact = _exact_duplicates(spill, options.partitions) if config.dedup.exact.enabled else np.array([], "<i8")
    near: list[int] = []
    near_ids: list[str] = []
    if config.dedup.near.enabled:
        near, near_ids = _near_duplicates(spill, options.partitions, exact, config)
    counts.dropped["dedup.exact"] += len(exact)
    counts.dropped["dedup.near"] += len(near)
    counts.dropped = +counts.dropped  # drop zero entries, as the in-memory path never adds them
    curated = SpilledCuration(spill, config, counts, reports, digests, set(exact.tolist()) | set(near), near_ids)
    for row in curated.rows():
        counts.kept += 1
        setattr(counts, row["split"], getattr(counts, row["split"]) + 1)
    return curated


def _split(text_hash: str, config: PipelineConfig) -> str:
    return "validation" if is_validation(text_hash, config.split.validation_fraction, config.split.seed) else "train"


def _read_blocks(config: PipelineConfig, size: int, reports: dict[str, SourceReport], digests: dict[str, str],
                 progress: Progress) -> Iterator[Batch]:
    """Columns id, text, source, order of at most `size` documents, in read order across all sources."""
    block: Batch = {"id": [], "text": [], "source": [], "order": []}
    order = 0
    for source in config.sources:
        report = reports[source.name] = SourceReport()
        digest = hashlib.sha256()
        for doc in read_source(source, report):
            block["id"].append(doc.id)
            block["text"].append(doc.text)
            block["source"].append(doc.source)
            block["order"].append(order)
            order += 1
            digest.update(doc.id.encode() + b"\0" + hashlib.sha1(doc.text.encode()).digest())
            if len(block["id"]) == size:
                yield block
                block = {key: [] for key in block}
        digests[source.name] = digest.hexdigest()
        progress.report("read", order, None, "documents")
    if block["id"]:
        yield block


class _Spill:
    """Appends a cleaned block's surviving rows and its hash and band-key records to the scratch files."""

    def __init__(self, directory: Path, partitions: int):
        self.directory, self.partitions = directory, partitions
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Spill:
        self.rows = self._stack.enter_context((self.directory / ROWS_FILE).open("w"))
        self.hashes = [self._stack.enter_context(_partition(self.directory, "hash", p).open("wb"))
                       for p in range(self.partitions)]
        self.bands = [self._stack.enter_context(_partition(self.directory, "bands", p).open("wb"))
                      for p in range(self.partitions)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def add(self, block: Batch, counts: Counts) -> None:
        hashes, bands = [], []
        for order, doc_id, source, text, reason, removed, pii, text_hash, keys in zip(
                block["order"], block["id"], block["source"], block["text"], block["reason"],
                block["lines_removed"], block["pii"], block["hash"], block["bands"], strict=True):
            counts.read += 1
            counts.lines_removed += removed
            counts.pii.update(json.loads(pii))
            if reason:
                counts.dropped[reason] += 1
                continue
            self.rows.write(json.dumps({"order": order, "id": doc_id, "source": source, "text": text,
                                        "hash": text_hash}) + "\n")
            hashes.append((bytes.fromhex(text_hash), order))
            bands.extend((key, order) for key in keys)
        hash_records = np.array(hashes, dtype=HASH_RECORD)
        _append(self.hashes, hash_records, np.array([h[0] for h, _ in hashes], dtype=np.uint64))
        band_records = np.array(bands, dtype=lsh.BAND_RECORD)
        _append(self.bands, band_records, band_records["key"])


def _partition(directory: Path, kind: str, number: int) -> Path:
    return directory / f"{kind}-{number:04d}.bin"


def _append(files: list[Any], records: np.ndarray, key: np.ndarray) -> None:
    """Each record to the partition its key hashes to (keys are already uniform hashes)."""
    if len(records) == 0:
        return
    owner = key % np.uint64(len(files))
    for number, file in enumerate(files):
        records[owner == number].tofile(file)


def _exact_duplicates(spill: Path, partitions: int) -> np.ndarray:
    """Orders of documents whose content hash an earlier document has; one partition in memory at a time."""
    dropped = []
    for number in range(partitions):
        records = np.sort(np.fromfile(_partition(spill, "hash", number), dtype=HASH_RECORD), order=["hash", "order"])
        repeat = np.concatenate(([False], records["hash"][1:] == records["hash"][:-1]))
        dropped.append(records["order"][repeat])
    return np.sort(np.concatenate(dropped)) if dropped else np.array([], "<i8")


def _near_duplicates(spill: Path, partitions: int, exact: np.ndarray,
                     config: PipelineConfig) -> tuple[list[int], list[str]]:
    """(orders, ids) dropped as near-duplicates; exact duplicates take no part (as in the in-memory path).

    The candidates' shingle hashes go to a scratch file (a sorted int64 array of distinct hashes per document)
    and each pair reads its two arrays back: in memory they would take ~9 KB per candidate, and candidates grow
    with the corpus. What stays in memory is the pairs and an (offset, length) per candidate."""
    pairs: set[tuple[int, int]] = set()
    for number in range(partitions):
        records = np.fromfile(_partition(spill, "bands", number), dtype=lsh.BAND_RECORD)
        pairs.update(lsh.candidate_pairs(records[~np.isin(records["order"], exact)]))
    candidates = {order for pair in pairs for order in pair}
    where: dict[int, tuple[int, int]] = {}
    ids: dict[int, str] = {}
    with (spill / GRAMS_FILE).open("wb") as out:
        for row in _spilled_rows(spill):
            if row["order"] in candidates:
                hashes = np.sort(np.fromiter(lsh.shingle_hashes(row["text"], config.dedup.near.shingle_size),
                                             dtype=np.int64))
                where[row["order"]] = (out.tell(), hashes.size)
                out.write(hashes.tobytes())
                ids[row["order"]] = row["id"]
    threshold = config.dedup.near.threshold
    with (spill / GRAMS_FILE).open("rb") as grams:

        def read(order: int) -> np.ndarray:
            offset, count = where[order]
            return np.frombuffer(os.pread(grams.fileno(), count * 8, offset), dtype=np.int64)

        dropped = lsh.resolve(pair for pair in sorted(pairs)
                              if lsh.arrays_similar(read(pair[0]), read(pair[1]), threshold))
    return dropped, [ids[order] for order in dropped]


def _spilled_rows(spill: Path) -> Iterator[dict[str, Any]]:
    with (spill / ROWS_FILE).open() as rows:
        for line in rows:
            yield json.loads(line)
