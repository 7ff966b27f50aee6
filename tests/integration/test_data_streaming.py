"""The streaming curation end to end: the same output as the in-memory path, byte for byte, and a corpus
larger than its memory limit curated without ever holding it."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from llmops.trainer.config.data import DataJobConfig
from llmops.trainer.config.manifest import DatasetManifest
from llmops.trainer.data import pipeline
from llmops.trainer.data.engines import Engine, InlineEngine, RayEngine
from tests.unit.test_data_streaming import VOCABULARY, corpus


def write_sources(root: Path) -> list[dict[str, Any]]:
    """Two sources (one weighted 1.5, to exercise repeats): planted exact and near copies and A~B~C chains,
    a document with an e-mail address, one too short, and a malformed line."""
    texts = corpus(seed=5, originals=120)
    texts.insert(7, "Write to ahab@example.com about the whale. " + texts[3])
    texts.insert(9, "too short")
    sources = []
    for name, part in (("first", texts[:90]), ("second", texts[90:])):
        (root / name).mkdir(parents=True)
        lines = [json.dumps({"text": t}) for t in part] + ["{not json"]
        (root / name / "docs.jsonl").write_text("\n".join(lines) + "\n")
        sources.append({"name": name, "uri": str(root / name), "weight": 1.5 if name == "second" else 1.0})
    return sources


def job(tmp_path: Path, out: str, streaming: dict[str, Any] | None = None) -> DataJobConfig:
    return DataJobConfig.model_validate({
        "sources": write_sources(tmp_path / f"corpus-{out}"),
        "filters": {"quality": {"minWords": 10}},
        "split": {"validationFraction": 0.2},
        "tokenizer": {"train": {"vocabSize": 400}},
        "shardSizeTokens": 4096,  # several shards, so shard boundaries are compared too
        "outputUri": str(tmp_path / out),
        **({"streaming": streaming} if streaming else {}),
    })


def output_files(directory: Path) -> dict[str, bytes]:
    """Every file of an output except the manifest (which records times and the config)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def assert_same_output(tmp_path: Path, streamed: DatasetManifest, reference: DatasetManifest, out: str) -> None:
    assert streamed.counts == reference.counts and streamed.tokens == reference.tokens
    assert streamed.tokenizer == reference.tokenizer and streamed.shards == reference.shards
    assert [s.model_dump(exclude={"uri"}) for s in streamed.sources] == \
        [s.model_dump(exclude={"uri"}) for s in reference.sources]
    assert output_files(tmp_path / out) == output_files(tmp_path / "in-memory")


def reference(tmp_path: Path) -> DatasetManifest:
    return pipeline.run(job(tmp_path, "in-memory"), InlineEngine())


def test_streaming_output_is_identical_to_the_in_memory_output(tmp_path: Path) -> None:
    want = reference(tmp_path)
    assert want.counts.dropped["dedup.near"] >= 30 and want.counts.dropped["dedup.exact"] >= 10
    assert len(list((tmp_path / "in-memory" / "shards").glob("train-*.bin"))) > 1
    got = pipeline.run(job(tmp_path, "streamed", {"enabled": True, "blockDocuments": 13, "partitions": 5}),
                       InlineEngine())
    assert_same_output(tmp_path, got, want, "streamed")


@pytest.mark.slow
def test_streaming_on_ray_is_identical_to_the_in_memory_output(tmp_path: Path) -> None:
    want = reference(tmp_path)
    engine: Engine = RayEngine(num_cpus=2)
    got = pipeline.run(job(tmp_path, "on-ray", {"enabled": True, "blockDocuments": 16, "partitions": 3}), engine)
    assert_same_output(tmp_path, got, want, "on-ray")


def write_large_corpus(root: Path, files: int, docs_per_file: int, seed: int = 0) -> int:
    """Distinct documents of about 2 kB, each 50th a near copy of the one before; returns the size in bytes."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    size, previous = 0, ""
    for number in range(files):
        lines = []
        for doc in range(docs_per_file):
            if doc % 50 == 49:
                words = previous.split()
                words[len(words) // 2] = "changed"
                text = " ".join(words)
            else:
                text = " ".join(rng.choice(VOCABULARY) for _ in range(250)) + "."
            previous = text
            lines.append(json.dumps({"text": text}))
        data = ("\n".join(lines) + "\n").encode()
        (root / f"part-{number:03d}.jsonl").write_bytes(data)
        size += len(data)
    return size


@pytest.mark.slow
def test_curates_a_corpus_larger_than_its_memory_limit(tmp_path: Path) -> None:
    """Python heap at its peak while curating and writing a ~8 MB corpus stays under half the corpus size:
    impossible for the in-memory path, which holds every cleaned text at once (it peaks above the corpus
    size on this input). What streaming does hold is bounded by knobs, not the corpus: a block of
    documents, one hash partition, one encoding batch, and one shard's token buffer."""
    files, per_file = 20, 200
    corpus_bytes = write_large_corpus(tmp_path / "corpus", files, per_file)
    config = DataJobConfig.model_validate({
        "sources": [{"name": "large", "uri": str(tmp_path / "corpus")}],
        # Quality rules and PII scrubbing cost time, not memory: off, to keep the test short.
        "filters": {"quality": {"enabled": False}},
        "pii": {"enabled": False},
        "tokenizer": {"train": {"vocabSize": 300}},
        "shardSizeTokens": 1 << 16,
        "outputUri": str(tmp_path / "out"),
        "streaming": {"enabled": True, "blockDocuments": 32, "partitions": 4},
    })
    tracemalloc.start()
    try:
        manifest = pipeline.run(config, InlineEngine())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    near_copies = files * (per_file // 50)
    assert manifest.counts.read == files * per_file and manifest.counts.dropped == {"dedup.near": near_copies}
    assert manifest.counts.kept == files * per_file - near_copies and manifest.tokens.total > 0
    assert peak < corpus_bytes / 2, f"peak {peak / 1e6:.1f} MB for a {corpus_bytes / 1e6:.1f} MB corpus"
