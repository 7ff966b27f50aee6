"""A Dataset's output, as its writer (the data workload) and its readers (training, the operator) see it.

`manifest.json` is written last, so a reader that finds it knows the output is complete; `shards/index.json`
lists the token shards. `DatasetStats` is what the operator shows in `Dataset.status.stats`, made from the
manifest by the workload and carried on the result channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError

from . import layout
from .base import StatusModel

MANIFEST_VERSION = 1

Split = Literal["train", "validation"]
ShardDtype = Literal["uint16", "uint32"]
"""Token ids are stored as the smallest unsigned type that holds the vocabulary."""

DocumentT = TypeVar("DocumentT", bound=StatusModel)


class DatasetFileError(ValueError):
    """A Dataset output file that is missing or does not parse; the message names the file and the fix."""


def _read(model: type[DocumentT], path: Path) -> DocumentT:
    if not path.is_file():
        raise DatasetFileError(f"{path}: not found; point at a Dataset's output directory (one that "
                               f"llmops-data wrote, with {layout.MANIFEST_FILE} and {layout.SHARDS_DIR}/)")
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise DatasetFileError(f"{path}: not a valid {model.__name__} ({error.error_count()} errors, first: "
                               f"{'.'.join(map(str, error.errors()[0]['loc']))}: {error.errors()[0]['msg']}); "
                               "rebuild the Dataset with this version of llmops-data") from error


def _write(document: StatusModel, path: Path) -> None:
    path.write_text(document.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n")


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

    tokens: int = Field(ge=0)
    """Tokens in the file (its length in elements of the index's dtype)."""


class ShardIndex(StatusModel):
    """`shards/index.json`: every shard of each split, in stream order (a split's stream is its shards
    concatenated). Each shard is a flat array of token ids, each document followed by `eosId`."""

    dtype: ShardDtype
    eos_id: int = Field(ge=0)
    """The end-of-text token that separates documents."""

    train: list[ShardEntry] = Field(default_factory=list)
    validation: list[ShardEntry] = Field(default_factory=list)

    def split(self, name: Split) -> list[ShardEntry]:
        return self.train if name == "train" else self.validation

    def tokens(self, name: Split) -> int:
        return sum(shard.tokens for shard in self.split(name))

    @classmethod
    def read(cls, path: Path) -> ShardIndex:
        """`path` is a Dataset output's `shards/index.json` (ShardIndex.path(dataset_dir))."""
        return _read(cls, path)

    def write(self, path: Path) -> None:
        _write(self, path)

    @staticmethod
    def path(dataset_dir: Path) -> Path:
        return dataset_dir / layout.SHARDS_DIR / layout.SHARD_INDEX_FILE


class SourceEntry(StatusModel):
    """One source as it was read."""

    name: str
    uri: str
    digest: str
    """sha256 over every document's id and text hash, in read order: same digest, same input."""

    files: int = 0
    documents: int = 0
    empty_files: int = 0
    malformed: int = 0
    """Records skipped as unreadable."""

    malformed_examples: list[str] = Field(default_factory=list)
    """The first few skipped records, `file:line: why`."""


class DocumentCounts(StatusModel):
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    """By stage and rule (quality.minWords, dedup.exact, ...)."""

    malformed: int = 0
    lines_removed: int = 0
    """Lines removed by line filters inside kept documents."""

    pii_replaced: dict[str, int] = Field(default_factory=dict)
    train: int = 0
    """Kept documents in the training split (before source weights repeat them)."""

    validation: int = 0


class TokenCounts(StatusModel):
    train: int = 0
    validation: int = 0
    total: int = 0


class TokenizerEntry(StatusModel):
    file: str = layout.TOKENIZER_FILE
    vocab_size: int = Field(ge=1)
    eos_id: int = Field(ge=0)
    sha256: str


class ShardsEntry(StatusModel):
    index: str = f"{layout.SHARDS_DIR}/{layout.SHARD_INDEX_FILE}"
    dtype: ShardDtype


class DatasetManifest(StatusModel):
    """`manifest.json`: what the output holds and how it was made. Written last: its presence marks the output
    complete."""

    version: int = MANIFEST_VERSION
    created_at: str
    """ISO 8601, UTC."""

    seconds: float
    """How long the run took."""

    config: dict[str, Any]
    """The DataJobConfig the output was made with (wire form)."""

    sources: list[SourceEntry]
    counts: DocumentCounts
    tokens: TokenCounts
    tokenizer: TokenizerEntry
    shards: ShardsEntry

    @classmethod
    def read(cls, path: Path) -> DatasetManifest:
        """`path` is a Dataset output's `manifest.json` (DatasetManifest.path(dataset_dir))."""
        return _read(cls, path)

    def write(self, path: Path) -> None:
        _write(self, path)

    @staticmethod
    def path(dataset_dir: Path) -> Path:
        return dataset_dir / layout.MANIFEST_FILE

    def stats(self) -> DatasetStats:
        return DatasetStats(
            documents_read=self.counts.read, documents_kept=self.counts.kept, dropped=self.counts.dropped,
            malformed=self.counts.malformed, pii_replaced=self.counts.pii_replaced, tokens=self.tokens.total,
            train_tokens=self.tokens.train, validation_tokens=self.tokens.validation,
            vocab_size=self.tokenizer.vocab_size)
