"""The whole Dataset run: read -> clean (engine) -> de-duplicate -> split -> tokenizer -> shards -> publish.

Everything is written into a scratch directory first; the output appears complete or not at all
(see `publish`). `manifest.json` is always the last file written, so a reader that finds it knows the
rest is there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from llmops.trainer.config import layout
from llmops.trainer.config.data import DataJobConfig, PipelineConfig
from llmops.trainer.config.manifest import (
    DatasetManifest,
    DocumentCounts,
    ShardIndex,
    ShardsEntry,
    SourceEntry,
    TokenCounts,
    TokenizerEntry,
)

from .counts import Counts
from .dedup import NearDuplicateIndex
from .engines import Engine
from .output import publish, scratch_directory
from .packing import encode, end_of_text_id, load_tokenizer, token_dtype, train_tokenizer, write_shards
from .progress import Progress
from .sources import SourceReport, read_source
from .stages import is_validation
from .streaming import curate_streaming


class CuratedRows(Protocol):
    """What `run` needs from curation: counts, and the kept rows in read order (re-readable)."""

    counts: Counts
    reports: dict[str, SourceReport]
    digests: dict[str, str]

    def rows(self, split: str | None = None) -> Iterator[dict[str, Any]]: ...


@dataclass
class Curated:
    """What curation produced: the kept documents (with their split) and what happened to the rest."""

    kept: list[dict[str, Any]]
    counts: Counts
    reports: dict[str, SourceReport]
    digests: dict[str, str]
    near_duplicates: list[str] = field(default_factory=list)
    """Ids of the documents dropped as near-duplicates (for reports and the benchmark's recall)."""

    def rows(self, split: str | None = None) -> Iterator[dict[str, Any]]:
        return (row for row in self.kept if split is None or row["split"] == split)


def curate(config: PipelineConfig, engine: Engine, progress: Progress | None = None) -> Curated:
    """Read every source, clean each document on the engine, then de-duplicate and split on the driver."""
    progress = progress or Progress(enabled=False)
    # Read. Sources are read in order, each document once; a source with nothing readable fails the run.
    reports: dict[str, SourceReport] = {}
    columns: dict[str, list[Any]] = {"id": [], "text": [], "source": []}
    digests = {}
    for source in config.sources:
        report = reports[source.name] = SourceReport()
        digest = hashlib.sha256()
        for doc in read_source(source, report):
            columns["id"].append(doc.id)
            columns["text"].append(doc.text)
            columns["source"].append(doc.source)
            digest.update(doc.id.encode() + b"\0" + hashlib.sha1(doc.text.encode()).digest())
        digests[source.name] = digest.hexdigest()
        progress.report("read", len(columns["id"]), None, "documents")

    # Clean (per document, on the engine), then de-duplicate in read order: the first copy wins.
    counts = Counts(read=len(columns["id"]))
    pipeline_json = PipelineConfig.model_validate(config.model_dump(include=set(PipelineConfig.model_fields)))\
        .model_dump_json()
    near = NearDuplicateIndex(config.dedup.near) if config.dedup.near.enabled else None
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    near_duplicates: list[str] = []
    for done, row in enumerate(engine.clean(columns, pipeline_json), start=1):
        counts.lines_removed += row["lines_removed"]
        counts.pii.update(json.loads(row["pii"]))
        reason = row["reason"] or _duplicate_reason(row, config, seen, near)
        if reason:
            counts.dropped[reason] += 1
            if reason == "dedup.near":
                near_duplicates.append(row["id"])
        else:
            row["split"] = "validation" if is_validation(row["hash"], config.split.validation_fraction,
                                                         config.split.seed) else "train"
            kept.append(row)
        if done % 1000 == 0 or done == counts.read:
            progress.report("clean", done, counts.read, "documents")
    counts.kept = len(kept)
    counts.validation = sum(row["split"] == "validation" for row in kept)
    counts.train = counts.kept - counts.validation
    return Curated(kept, counts, reports, digests, near_duplicates)


def run(config: DataJobConfig, engine: Engine, progress: Progress | None = None) -> DatasetManifest:
    """Run the pipeline and publish to config.output_uri; returns the manifest."""
    progress = progress or Progress(enabled=False)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        curated: CuratedRows
        if config.streaming.enabled:
            spill = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-data-spill-")))
            curated = curate_streaming(config, engine, spill, config.streaming, progress)
        else:
            curated = curate(config, engine, progress)
        return build(config, curated, progress, started)


def build(config: DataJobConfig, curated: CuratedRows, progress: Progress, started: float) -> DatasetManifest:
    """`run`'s second half: tokenizer, shards, documents, report and manifest from the kept rows, streamed (never
    listed)."""
    counts = curated.counts
    if not counts.kept:
        raise ValueError(f"every one of the {counts.read} documents was dropped ({dict(counts.dropped)}); "
                         "loosen spec.filters")

    with scratch_directory(config.output_uri) as out:
        # Tokenizer: trained on the training split only, so validation stays unseen.
        if config.tokenizer.train:
            tokenizer = train_tokenizer((row["text"] for row in curated.rows("train")), config.tokenizer)
        else:
            tokenizer = load_tokenizer(config.tokenizer.uri or "")
        tokenizer.save(str(out / layout.TOKENIZER_FILE))
        eos = end_of_text_id(tokenizer, config.tokenizer)
        dtype = token_dtype(tokenizer.get_vocab_size(), config.token_dtype)
        progress.report("tokenizer", 1, 1, "tokenizers")

        weights = {source.name: source.weight for source in config.sources}
        shards_dir = out / layout.SHARDS_DIR
        index = ShardIndex(
            dtype=dtype.name, eos_id=eos,
            train=write_shards(shards_dir, "train", encode(tokenizer, _weighted(curated.rows("train"), weights), eos),
                               dtype, config.shard_size_tokens),
            validation=write_shards(shards_dir, "validation", encode(
                tokenizer, (row["text"] for row in curated.rows("validation")), eos), dtype,
                config.shard_size_tokens))
        index.write(ShardIndex.path(out))
        tokens = TokenCounts(train=index.tokens("train"), validation=index.tokens("validation"),
                             total=index.tokens("train") + index.tokens("validation"))
        progress.report("pack", tokens.total, None, "tokens")

        if config.write_documents:
            with (out / "documents.jsonl").open("w") as documents:
                for row in curated.rows():
                    documents.write(json.dumps({"id": row["id"], "source": row["source"], "split": row["split"],
                                                "text": row["text"]}) + "\n")

        manifest = DatasetManifest(
            created_at=datetime.now(UTC).isoformat(), seconds=round(time.monotonic() - started, 3),
            config=config.to_wire(), sources=_sources(config, curated), tokens=tokens,
            counts=DocumentCounts(
                read=counts.read, kept=counts.kept, dropped=dict(sorted(counts.dropped.items())),
                malformed=sum(r.malformed for r in curated.reports.values()), lines_removed=counts.lines_removed,
                pii_replaced=dict(sorted(counts.pii.items())), train=counts.train, validation=counts.validation),
            tokenizer=TokenizerEntry(vocab_size=tokenizer.get_vocab_size(), eos_id=eos, sha256=hashlib.sha256(
                (out / layout.TOKENIZER_FILE).read_bytes()).hexdigest()),
            shards=ShardsEntry(dtype=index.dtype))
        (out / "report.md").write_text(render_report(manifest))
        manifest.write(DatasetManifest.path(out))  # last: marks the output complete
    publish(out, config.output_uri)
    progress.report("done", counts.kept, counts.read, "documents")
    return manifest


def _sources(config: PipelineConfig, curated: CuratedRows) -> list[SourceEntry]:
    return [SourceEntry(name=s.name, uri=s.uri, digest=curated.digests[s.name], files=report.files,
                        documents=report.documents, empty_files=report.empty_files, malformed=report.malformed,
                        malformed_examples=report.malformed_examples)
            for s in config.sources for report in [curated.reports[s.name]]]


def _duplicate_reason(row: dict[str, Any], config: PipelineConfig, seen: set[str],
                      near: NearDuplicateIndex | None) -> str | None:
    if config.dedup.exact.enabled:
        if row["hash"] in seen:
            return "dedup.exact"
        seen.add(row["hash"])
    if near is not None and near.is_duplicate(row["id"], row["text"]):
        return "dedup.near"
    return None


def _weighted(rows: Iterator[dict[str, Any]], weights: dict[str, float]) -> Any:
    """Each training document `weight` times: whole repeats plus a deterministic share of the fraction."""
    for row in rows:
        weight = weights[row["source"]]
        repeats = math.floor(weight)
        fraction = weight - repeats
        if fraction and int(row["hash"][:8], 16) / 0xFFFFFFFF < fraction:
            repeats += 1
        for _ in range(repeats):
            yield row["text"]


def render_report(manifest: DatasetManifest) -> str:
    counts, tokens = manifest.counts, manifest.tokens
    lines = [
        "# Dataset report", "",
        f"Read {counts.read} documents, kept {counts.kept} ({counts.train} train, {counts.validation} validation); "
        f"{counts.malformed} malformed records skipped.",
        f"Tokens: {tokens.train} train, {tokens.validation} validation "
        f"(vocabulary {manifest.tokenizer.vocab_size}, {manifest.shards.dtype}).", "",
        "| dropped by | documents |", "|---|---|",
        *(f"| {rule} | {n} |" for rule, n in counts.dropped.items()), "",
        f"Lines removed by line filters: {counts.lines_removed}.",
        "PII replaced: " + (", ".join(f"{k} {v}" for k, v in counts.pii_replaced.items()) or "none") + ".", "",
        "| source | documents | malformed | first malformed |", "|---|---|---|---|",
        *(f"| {s.name} | {s.documents} | {s.malformed} | {'; '.join(s.malformed_examples[:1])} |"
          for s in manifest.sources),
    ]
    return "\n".join(lines) + "\n"
