"""The Dataset workload end to end, as the operator's Job runs it: `llmops-data --config FILE`."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from llmops.trainer.config import exit_codes
from llmops.trainer.config.data import DataJobConfig
from llmops.trainer.config.manifest import DatasetManifest, DatasetStats, ShardIndex
from llmops.trainer.config.progress import ProgressLine, parse_lines
from llmops.trainer.config.result import TERMINATION_LOG_ENV, WorkloadResult
from llmops.trainer.data import pipeline
from llmops.trainer.data.engines import InlineEngine, RayEngine
from llmops.trainer.data.packing import read_shard

WORDS = ("sea boat fish wind harbour morning evening net rope sail storm island lighthouse gull wave tide "
         "shore rock anchor mast deck captain crew village market bread salt lantern map compass star").split()


def story(seed: int, words: int = 60) -> str:
    """A distinct pseudo-story: different seeds share almost no five-word shingles."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def documents() -> list[dict[str, Any]]:
    docs = [{"text": story(i)} for i in range(40)]
    docs.append({"text": docs[3]["text"]})  # exact duplicate
    docs.append({"text": docs[5]["text"] + " The end."})  # near duplicate
    docs.append({"text": "Contact the harbour master at harbour.master@example.com about it. " + story(99)})
    docs.append({"text": "too short"})
    return docs


def write_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(d) for d in documents()] + ["{this is not json"]
    (directory / "stories.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base = {
        "sources": [{"name": "stories", "uri": str(write_corpus(tmp_path / "corpus"))}],
        "filters": {"quality": {"minWords": 10}},
        "dedup": {"near": {"threshold": 0.8}},
        "split": {"validationFraction": 0.1},
        "tokenizer": {"train": {"vocabSize": 300}},
        "outputUri": str(tmp_path / "out"),
    }
    return {**base, **overrides}


def run_cli(tmp_path: Path, cfg: dict[str, Any], *extra: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    executable = Path(sys.executable).parent / "llmops-data"
    return subprocess.run([str(executable), "--config", str(path), "--engine", "inline", *extra],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_cli_cleans_deduplicates_scrubs_and_packs(tmp_path: Path) -> None:
    result = run_cli(tmp_path, config(tmp_path))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    manifest = DatasetManifest.read(DatasetManifest.path(out))
    counts = manifest.counts
    assert counts.read == 44 and counts.malformed == 1
    assert counts.dropped == {"dedup.exact": 1, "dedup.near": 1, "quality.minWords": 1}
    assert counts.kept == 41 and counts.train + counts.validation == 41
    assert counts.pii_replaced == {"email": 1}
    assert manifest.sources[0].malformed_examples == ["stories.jsonl:45: bad JSON (Expecting property name "
                                                      "enclosed in double quotes)"]

    kept = [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]
    assert any("<EMAIL>" in d["text"] for d in kept)
    assert not any("harbour.master@example.com" in d["text"] for d in kept)

    # The shards are flat token streams the pretrain loader memory-maps; they decode back to the documents.
    index = ShardIndex.read(ShardIndex.path(out))
    assert index.dtype == manifest.shards.dtype == "uint16"
    tokens = read_shard(out / "shards" / index.train[0].file, index.dtype)
    assert len(tokens) == manifest.tokens.train == index.train[0].tokens
    assert int((tokens == index.eos_id).sum()) == counts.train
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    first_doc = tokens[: int(np.argmax(tokens == index.eos_id))]
    train_docs = [d for d in kept if d["split"] == "train"]
    assert tokenizer.decode(first_doc.tolist()) == train_docs[0]["text"]
    assert "| dedup.near | 1 |" in (out / "report.md").read_text()


def test_the_cli_reports_its_result_and_progress_for_the_operator(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.touch()  # as the kubelet creates /dev/termination-log
    result = run_cli(tmp_path, config(tmp_path), env={TERMINATION_LOG_ENV: str(log)})
    assert result.returncode == 0, result.stderr

    reported = WorkloadResult.from_message(log.read_text())
    assert reported is not None
    out = str(tmp_path / "out")
    assert reported.artifact_uri == out and reported.tokenizer_uri == f"{out}/tokenizer.json"
    manifest = DatasetManifest.read(DatasetManifest.path(tmp_path / "out"))
    assert reported.stats == manifest.stats() == DatasetStats(
        documents_read=44, documents_kept=41, dropped={"dedup.exact": 1, "dedup.near": 1, "quality.minWords": 1},
        malformed=1, pii_replaced={"email": 1}, tokens=manifest.tokens.total, train_tokens=manifest.tokens.train,
        validation_tokens=manifest.tokens.validation, vocab_size=300)
    assert manifest.tokens.total == manifest.tokens.train + manifest.tokens.validation > 0

    stages = parse_lines(result.stdout, ProgressLine)
    assert [line.stage for line in stages] == ["read", "clean", "tokenizer", "pack", "done"]
    assert (stages[-1].completed, stages[-1].total, stages[-1].unit) == (41, 44, "documents")
    assert stages[3].completed == manifest.tokens.total


def test_the_manifest_and_index_are_the_documented_wire_form(tmp_path: Path) -> None:
    pipeline.run(DataJobConfig.model_validate(config(tmp_path)), InlineEngine())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(manifest) == ["version", "createdAt", "seconds", "config", "sources", "counts", "tokens",
                              "tokenizer", "shards"]
    assert manifest["tokenizer"]["file"] == "tokenizer.json" and manifest["tokenizer"]["vocabSize"] == 300
    assert manifest["shards"] == {"index": "shards/index.json", "dtype": "uint16"}
    assert set(manifest["counts"]) == {"read", "kept", "dropped", "malformed", "linesRemoved", "piiReplaced",
                                       "train", "validation"}
    index = json.loads((tmp_path / "out" / "shards" / "index.json").read_text())
    assert list(index) == ["dtype", "eosId", "train", "validation"]
    assert index["train"][0] == {"file": "train-00000.bin", "tokens": manifest["tokens"]["train"]}


def test_a_second_dataset_can_reuse_the_first_ones_tokenizer(tmp_path: Path) -> None:
    assert run_cli(tmp_path, config(tmp_path)).returncode == 0
    reuse = config(tmp_path, tokenizer={"uri": str(tmp_path / "out")}, outputUri=str(tmp_path / "out2"))
    assert run_cli(tmp_path, reuse).returncode == 0
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (tmp_path / "out2" / "tokenizer.json").read_bytes()


def test_source_weights_repeat_training_documents(tmp_path: Path) -> None:
    once = DataJobConfig.model_validate(config(tmp_path, outputUri=str(tmp_path / "once")))
    twice_cfg = config(tmp_path, outputUri=str(tmp_path / "twice"))
    twice_cfg["sources"][0]["weight"] = 2.0
    twice = DataJobConfig.model_validate(twice_cfg)
    a = pipeline.run(once, InlineEngine()).tokens
    b = pipeline.run(twice, InlineEngine()).tokens
    assert b.train == 2 * a.train and b.validation == a.validation


def test_an_unreachable_source_fails_with_the_config_error_code(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["sources"] = [{"name": "missing", "uri": str(tmp_path / "nope")}]
    result = run_cli(tmp_path, cfg)
    assert result.returncode == exit_codes.CONFIG_ERROR
    assert "source 'missing'" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_crash_never_leaves_an_output_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = DataJobConfig.model_validate(config(tmp_path))
    pipeline.run(good, InlineEngine())
    before = (tmp_path / "out" / "manifest.json").read_text()

    def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "write_shards", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.run(good, InlineEngine())
    # The previous complete output is untouched, and no scratch directory is left behind.
    assert (tmp_path / "out" / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "out"]
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(RuntimeError):
        pipeline.run(good, InlineEngine())
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_engine_gives_the_same_result_as_inline(tmp_path: Path) -> None:
    inline = pipeline.run(DataJobConfig.model_validate(config(tmp_path, outputUri=str(tmp_path / "a"))),
                          InlineEngine())
    on_ray = pipeline.run(DataJobConfig.model_validate(config(tmp_path, outputUri=str(tmp_path / "b"))),
                          RayEngine(num_cpus=2))
    assert on_ray.counts == inline.counts and on_ray.tokens == inline.tokens
    assert (tmp_path / "a" / "documents.jsonl").read_text() == (tmp_path / "b" / "documents.jsonl").read_text()


def test_object_store_source_and_output_through_fsspec(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/in/stories.jsonl", "\n".join(json.dumps(d) for d in documents()).encode())
    cfg = config(tmp_path, outputUri="memory://bucket/out")
    cfg["sources"] = [{"name": "remote", "uri": "memory://bucket/in"}]
    manifest = pipeline.run(DataJobConfig.model_validate(cfg), InlineEngine())
    assert manifest.counts.kept == 41
    assert DatasetManifest.model_validate_json(fs.cat("/bucket/out/manifest.json")) == manifest
    assert fs.exists("/bucket/out/shards/index.json") and fs.exists("/bucket/out/tokenizer.json")
