"""A Dataset's output, as its writer (the data workload) and its readers (training, the operator) see it.

`manifest.json` is written last, so a reader that finds it knows the output is complete; `shards/index.json`
lists the token shards. `DatasetStats` is what the operator shows in `Dataset.status.stats`, made from the
manifest by the workload and carried on the result channel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from .base import StatusModel

MANIFEST_VERSION = 1


class DatasetStats(StatusModel):
    """What the pipeline kept and dropped, and why."""

    documents_read: int = 0
    """Documents read from all sources."""

    documents_kept: int = 0
    """Documents written after every stage."""

    dropped: dict[str, int] = Field(default_factory=dict)
    """Documents dropped, by stage and rule (e.g. quality.minWords, dedup.near)."""

    malformed: int = 0
    """Records skipped because they could not be read (bad JSON, undecodable bytes, missing field)."""

    pii_replaced: dict[str, int] = Field(default_factory=dict)
    """Placeholders written, by PII kind."""

    tokens: int = 0
    """Tokens in all shards."""

    train_tokens: int = 0
    """Tokens in the training split."""

    validation_tokens: int = 0
    """Tokens in the validation split."""

    vocab_size: int | None = None
    """Vocabulary size of the tokenizer."""


class ShardEntry(StatusModel):
    file: str
    """File name inside shards/."""

    tokens: int
    """Tokens in the file (its length in elements of the index's dtype)."""


class ShardIndex(StatusModel):
    """`shards/index.json`: every shard of each split, in stream order."""

    dtype: str
    eos_id: int
    train: list[ShardEntry] = Field(default_factory=list)
    validation: list[ShardEntry] = Field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> ShardIndex:
        return cls.model_validate(json.loads(path.read_text()))


class SourceEntry(StatusModel):
    name: str
    uri: str
    digest: str
    files: int = 0
    documents: int = 0
    empty_files: int = 0
    malformed: int = 0
    malformed_examples: list[str] = Field(default_factory=list)


class DocumentCounts(StatusModel):
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    malformed: int = 0
    lines_removed: int = 0
    pii_replaced: dict[str, int] = Field(default_factory=dict)
    train: int = 0
    validation: int = 0


class TokenCounts(StatusModel):
    train: int = 0
    validation: int = 0
    total: int = 0


class TokenizerEntry(StatusModel):
    file: str
    vocab_size: int
    eos_id: int
    sha256: str


class ShardsEntry(StatusModel):
    index: str
    dtype: str


class DatasetManifest(StatusModel):
    """`manifest.json`."""

    version: int = MANIFEST_VERSION
    created_at: str
    seconds: float
    config: dict[str, Any]
    """The DataJobConfig the output was made with (wire form)."""

    sources: list[SourceEntry]
    counts: DocumentCounts
    tokens: TokenCounts
    tokenizer: TokenizerEntry
    shards: ShardsEntry

    @classmethod
    def read(cls, path: Path) -> DatasetManifest:
        return cls.model_validate(json.loads(path.read_text()))

    def stats(self) -> DatasetStats:
        return DatasetStats(
            documents_read=self.counts.read, documents_kept=self.counts.kept, dropped=self.counts.dropped,
            malformed=self.counts.malformed, pii_replaced=self.counts.pii_replaced, tokens=self.tokens.total,
            train_tokens=self.tokens.train, validation_tokens=self.tokens.validation,
            vocab_size=self.tokenizer.vocab_size)
