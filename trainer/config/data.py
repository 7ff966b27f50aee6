"""What a Dataset workload does: read sources, clean, filter, de-duplicate, scrub PII, split, tokenize."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import ApiModel, Rule
from .types import Fraction, Name, Uri

BUILTIN_CORPORA = ("shakespeare", "pydoc-topics")
"""Corpora shipped with the trainer image, addressed as `builtin://NAME` (offline demos and tests)."""


class SourceFormat(StrEnum):
    AUTO = "auto"
    TEXT = "text"
    JSONL = "jsonl"
    PARQUET = "parquet"


class Compression(StrEnum):
    AUTO = "auto"
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class Source(ApiModel):
    """One input: a file, a directory, a bucket prefix or a built-in corpus, with its mixing weight."""

    name: Name
    """Unique name of this source within the Dataset; used in counts and the report."""

    uri: Uri
    """Where to read: a path, `file://`, `s3://`, `gs://` (fsspec), `pvc://CLAIM/PATH`, or `builtin://NAME`."""

    format: SourceFormat = SourceFormat.AUTO
    """File format. `auto` decides by extension (.txt, .jsonl/.json, .parquet, optionally .gz/.zst)."""

    text_field: str = Field(default="text", min_length=1, max_length=256)
    """Field that holds the document text in JSONL and Parquet records."""

    include: list[str] = Field(default_factory=lambda: ["**/*"], min_length=1, max_length=32)
    """Glob patterns of files to read under a directory or prefix."""

    compression: Compression = Compression.AUTO
    """Compression of the files. `auto` decides by extension."""

    weight: float = Field(default=1.0, gt=0, le=1000)
    """Relative share of this source in the mixture; 2.0 samples it twice as often as a source with 1.0."""

    cel_rules = (
        Rule(
            "!self.uri.startsWith('builtin://') || self.uri in "
            + "[" + ", ".join(f"'builtin://{name}'" for name in BUILTIN_CORPORA) + "]",
            "unknown built-in corpus; use one of " + ", ".join(f"builtin://{n}" for n in BUILTIN_CORPORA),
            field_path=".uri",
        ),
    )


class UnicodeForm(StrEnum):
    NFC = "NFC"
    NFKC = "NFKC"
    NONE = "none"


class NormalizeConfig(ApiModel):
    """Text normalisation applied before every other stage."""

    unicode: UnicodeForm = UnicodeForm.NFC
    """Unicode normalisation form."""

    collapse_whitespace: bool = True
    """Collapse runs of spaces and tabs and strip trailing whitespace on each line."""

    strip_control_characters: bool = True
    """Remove control characters other than newline and tab."""


class LengthFilter(ApiModel):
    """Drop documents shorter or longer than these limits (in characters, after normalisation)."""

    min_chars: int = Field(default=1, ge=0)
    """Shortest document kept."""

    max_chars: int = Field(default=10_000_000, ge=1)
    """Longest document kept."""

    cel_rules = (Rule("self.minChars <= self.maxChars", "minChars must not exceed maxChars", ".minChars"),)


class QualityFilter(ApiModel):
    """Gopher-style document quality heuristics. Each rule counts the documents it drops."""

    enabled: bool = True
    """Apply these heuristics."""

    min_words: int = Field(default=50, ge=0)
    """Fewest words a document may have."""

    max_words: int = Field(default=100_000, ge=1)
    """Most words a document may have."""

    min_mean_word_length: float = Field(default=3.0, ge=0)
    """Smallest mean word length, in characters."""

    max_mean_word_length: float = Field(default=10.0, gt=0)
    """Largest mean word length, in characters."""

    max_symbol_word_ratio: float = Field(default=0.1, ge=0)
    """Most `#` and `...` symbols per word."""

    max_ellipsis_line_fraction: Fraction = 0.3
    """Largest fraction of lines ending in an ellipsis."""

    max_bullet_line_fraction: Fraction = 0.9
    """Largest fraction of lines starting with a bullet."""

    min_alphabetic_word_fraction: Fraction = 0.8
    """Smallest fraction of words containing at least one letter."""

    max_duplicate_line_fraction: Fraction = 0.3
    """Largest fraction of lines that repeat an earlier line of the same document."""

    max_top_ngram_fraction: Fraction = 0.2
    """Largest share of characters covered by the most frequent word bigram."""

    cel_rules = (
        Rule("self.minWords <= self.maxWords", "minWords must not exceed maxWords", ".minWords"),
        Rule(
            "self.minMeanWordLength <= self.maxMeanWordLength",
            "minMeanWordLength must not exceed maxMeanWordLength",
            ".minMeanWordLength",
        ),
    )


class LineFilter(ApiModel):
    """C4-style line filters: remove lines, not documents."""

    enabled: bool = False
    """Apply these line filters."""

    min_words_per_line: int = Field(default=3, ge=0)
    """Drop lines with fewer words."""

    require_terminal_punctuation: bool = True
    """Drop lines that do not end in terminal punctuation."""

    drop_boilerplate: bool = True
    """Drop lines mentioning javascript, cookie policies, terms of use or lorem ipsum."""


class FilterConfig(ApiModel):
    """Document and line filters."""

    length: LengthFilter = Field(default_factory=LengthFilter)
    """Length limits."""

    quality: QualityFilter = Field(default_factory=QualityFilter)
    """Gopher-style quality heuristics."""

    lines: LineFilter = Field(default_factory=LineFilter)
    """C4-style line filters."""


class ExactDedupConfig(ApiModel):
    """Drop documents whose normalised text hashes equal an earlier document's."""

    enabled: bool = True
    """Apply exact de-duplication."""


class NearDedupConfig(ApiModel):
    """Drop near-duplicates with MinHash locality-sensitive hashing over word shingles."""

    enabled: bool = True
    """Apply near-duplicate removal."""

    shingle_size: int = Field(default=5, ge=1, le=32)
    """Words per shingle."""

    num_permutations: int = Field(default=128, ge=16, le=1024)
    """MinHash permutations (signature length)."""

    bands: int | None = Field(default=None, ge=1, le=1024)
    """LSH bands; rows per band = numPermutations / bands. Unset: chosen for the threshold."""

    threshold: float = Field(default=0.8, gt=0, le=1)
    """Estimated Jaccard similarity above which two documents are duplicates."""

    cel_rules = (
        Rule(
            "!has(self.bands) || (self.bands <= self.numPermutations && self.numPermutations % self.bands == 0)",
            "bands must divide numPermutations (e.g. 128 permutations in 16 bands of 8 rows)",
            field_path=".bands",
        ),
    )


class DedupConfig(ApiModel):
    """De-duplication stages, exact first."""

    exact: ExactDedupConfig = Field(default_factory=ExactDedupConfig)
    """Exact (content hash) de-duplication."""

    near: NearDedupConfig = Field(default_factory=NearDedupConfig)
    """Near-duplicate (MinHash LSH) de-duplication."""


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    IP_ADDRESS = "ipAddress"
    CREDIT_CARD = "creditCard"
    SECRET = "secret"


class PiiConfig(ApiModel):
    """Replace personal data and secrets by typed placeholders such as `<EMAIL>`."""

    enabled: bool = True
    """Scrub PII."""

    kinds: list[PiiKind] = Field(default_factory=lambda: list(PiiKind), min_length=1, max_length=16,
                                 json_schema_extra={"x-kubernetes-list-type": "set"})
    """What to scrub. Credit-card numbers are only replaced when their Luhn checksum holds."""


class SplitConfig(ApiModel):
    """Deterministic train/validation split by document hash."""

    validation_fraction: float = Field(default=0.05, ge=0, le=0.5)
    """Share of documents held out for validation."""

    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    """Salt of the hash that assigns documents to splits."""


class TokenizerTraining(ApiModel):
    """Train a byte-level BPE tokenizer on the cleaned training split."""

    vocab_size: int = Field(default=8192, ge=260, le=4194304)
    """Vocabulary size, special tokens included."""

    min_frequency: int = Field(default=2, ge=1)
    """Fewest occurrences for a merge to be learned."""

    special_tokens: list[str] = Field(
        default_factory=lambda: ["<|endoftext|>", "<|pad|>"], min_length=1, max_length=64
    )
    """Special tokens; the first one separates documents in the packed token stream."""


class TokenizerConfig(ApiModel):
    """Where the tokenizer comes from: trained here, or reused from a file (exactly one)."""

    train: TokenizerTraining | None = None
    """Train a new byte-level BPE tokenizer."""

    uri: Uri | None = None
    """Reuse an existing `tokenizer.json` (or a directory holding one), e.g. the base model's."""

    cel_rules = (
        Rule(
            "has(self.train) != has(self.uri)",
            "set exactly one of tokenizer.train (train a new tokenizer) or tokenizer.uri (reuse one)",
        ),
    )


class TokenDtype(StrEnum):
    AUTO = "auto"
    UINT16 = "uint16"
    UINT32 = "uint32"


class PipelineConfig(ApiModel):
    """Everything the data workload needs to turn sources into token shards; the Dataset spec extends it."""

    sources: list[Source] = Field(min_length=1, max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    """Inputs and their mixing weights."""

    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    """Unicode and whitespace normalisation."""

    filters: FilterConfig = Field(default_factory=FilterConfig)
    """Length, quality and line filters."""

    dedup: DedupConfig = Field(default_factory=DedupConfig)
    """Exact and near-duplicate removal."""

    pii: PiiConfig = Field(default_factory=PiiConfig)
    """PII scrubbing."""

    split: SplitConfig = Field(default_factory=SplitConfig)
    """Train/validation split."""

    tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(train=TokenizerTraining()))
    """Tokenizer to train or reuse. Default: train a byte-level BPE with 8192 tokens."""

    token_dtype: TokenDtype = TokenDtype.AUTO
    """Integer type of the token shards. `auto`: uint16 when the vocabulary fits, else uint32."""

    shard_size_tokens: int = Field(default=1 << 24, ge=1024, le=1 << 31)
    """Tokens per output shard."""

    write_documents: bool = True
    """Also write the cleaned documents as JSONL (input for fine-tuning and evaluation)."""

    cel_rules = (
        Rule(
            "self.sources.all(a, self.sources.exists_one(b, b.name == a.name))",
            "sources[].name must be unique",
            field_path=".sources",
        ),
        Rule(
            "!has(self.tokenizer.train) || self.tokenDtype != 'uint16' || self.tokenizer.train.vocabSize <= 65536",
            "tokenDtype uint16 holds at most 65536 token ids: lower tokenizer.train.vocabSize or use uint32",
            field_path=".tokenDtype",
        ),
    )


class StreamingConfig(ApiModel):
    """Curate through scratch files in blocks instead of in memory, for corpora larger than the machine.

    Driver memory then grows with the block size and the number of duplicate candidates, not the corpus;
    the output is identical to the in-memory path. Scratch files go under TMPDIR and are removed after.
    """

    enabled: bool = False
    """Stream: read, clean and sketch in blocks, spill rows to disk, de-duplicate by hash partitions."""

    block_documents: int = Field(default=2048, ge=1, le=1_000_000)
    """Documents per block: the unit of work of an engine task and of the driver's memory."""

    partitions: int = Field(default=16, ge=1, le=4096)
    """Hash partitions for exact de-duplication and the LSH band-key shuffle. Each partition is sorted in
    memory (24 bytes per band key), so raise it for corpora of tens of millions of documents."""


class DataJobConfig(PipelineConfig):
    """What the data workload reads from its config file: the pipeline plus resolved locations."""

    output_uri: Uri
    """Where to write shards, documents, tokenizer, manifest and report (a path or fsspec URI)."""

    workers: int = Field(default=1, ge=1, le=1024)
    """Ray workers; 1 runs Ray in local mode inside the pod."""

    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    """How curation holds the corpus (the Dataset's spec.execution.streaming)."""
