"""Read documents from sources: files, directories and object stores (fsspec), and built-in corpora.

Malformed input is skipped and counted with its first few examples, never a crash. A source that does not
exist or yields no document at all fails the run with a message naming it.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import fsspec

from llmops.trainer import storage
from llmops.trainer.config.data import Compression, Source, SourceFormat

MAX_EXAMPLES = 5
CORPORA_ENV = "LLMOPS_CORPORA"


class SourceError(RuntimeError):
    """A source cannot be read at all; the message names it and says what to fix."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    source: str


@dataclass
class SourceReport:
    """What reading one source found."""

    files: int = 0
    documents: int = 0
    malformed: int = 0
    empty_files: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append(f"{where}: {why}")


def corpora_dir() -> Path:
    return Path(os.environ.get(CORPORA_ENV) or Path.home() / ".cache" / "llmops" / "corpora")


def read_source(source: Source, report: SourceReport) -> Iterator[Document]:
    """Every document of `source`, in a stable order."""
    if source.uri.startswith("builtin://"):
        yield from _read_builtin(source, source.uri.removeprefix("builtin://"), report)
    else:
        for path, opener in _files(source):
            report.files += 1
            yield from _read_file(source, path, opener, report)
    if report.documents == 0:
        detail = f" ({report.malformed} malformed records skipped)" if report.malformed else ""
        raise SourceError(f"source {source.name!r} ({source.uri}) has no readable documents{detail}")


def _files(source: Source) -> Iterator[tuple[str, fsspec.core.OpenFile]]:
    try:
        fs, root = storage.filesystem(source.uri)
        is_dir = fs.isdir(root)
        exists = is_dir or fs.exists(root)
    except storage.StorageError as error:
        raise SourceError(f"source {source.name!r}: {error}") from error
    except (OSError, ValueError) as error:
        raise SourceError(f"source {source.name!r}: cannot open {source.uri}: {error}") from error
    if not exists:
        raise SourceError(f"source {source.name!r}: {storage.why_missing(source.uri)}")
    if not is_dir:
        paths = [root]
    else:
        paths = sorted({p for pattern in source.include for p in fs.glob(f"{root.rstrip('/')}/{pattern}")
                        if not fs.isdir(p)})
    for path in paths:
        yield path, fsspec.core.OpenFile(fs, path, mode="rb")


def _compression(path: str, declared: Compression) -> str | None:
    if declared is Compression.NONE:
        return None
    if declared is not Compression.AUTO:
        return declared.value
    return {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}.get(PurePosixPath(path).suffix)


def _format(path: str, declared: SourceFormat) -> SourceFormat:
    if declared is not SourceFormat.AUTO:
        return declared
    suffixes = PurePosixPath(path).suffixes
    stem = suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in (".gz", ".zst", ".zstd") else (
        suffixes[-1] if suffixes else "")
    return {".jsonl": SourceFormat.JSONL, ".json": SourceFormat.JSONL, ".parquet": SourceFormat.PARQUET}.get(
        stem, SourceFormat.TEXT)


def _read_bytes(opener: fsspec.core.OpenFile, compression: str | None) -> bytes:
    with opener as raw:
        data = raw.read()
    if compression == "gzip":
        import gzip

        return gzip.decompress(data)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def _read_file(source: Source, path: str, opener: fsspec.core.OpenFile, report: SourceReport) -> Iterator[Document]:
    name = PurePosixPath(path).name
    try:
        data = _read_bytes(opener, _compression(path, source.compression))
    except (OSError, EOFError, ValueError) as error:  # truncated or corrupt archive
        report.skip(name, f"unreadable: {error}")
        return
    if not data.strip():
        report.empty_files += 1
        return
    fmt = _format(path, source.format)
    if fmt is SourceFormat.PARQUET:
        yield from _read_parquet(source, name, data, report)
    elif fmt is SourceFormat.JSONL:
        yield from _read_jsonl(source, name, data, report)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            report.skip(name, f"not UTF-8 at byte {error.start}")
            return
        report.documents += 1
        yield Document(f"{source.name}/{name}", text, source.name)


def _read_jsonl(source: Source, name: str, data: bytes, report: SourceReport) -> Iterator[Document]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            report.skip(where, "not UTF-8")
            continue
        except json.JSONDecodeError as error:
            report.skip(where, f"bad JSON ({error.msg})")
            continue
        text = record.get(source.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.skip(where, f"no string field {source.text_field!r}")
            continue
        report.documents += 1
        yield Document(f"{source.name}/{where}", text, source.name)


def _read_parquet(source: Source, name: str, data: bytes, report: SourceReport) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data), columns=[source.text_field])
    except Exception as error:  # pyarrow raises several types for corrupt files or a missing column
        report.skip(name, f"unreadable parquet: {error}")
        return
    for row, text in enumerate(table.column(source.text_field).to_pylist()):
        if not isinstance(text, str):
            report.skip(f"{name}:{row}", f"no string field {source.text_field!r}")
            continue
        report.documents += 1
        yield Document(f"{source.name}/{name}:{row}", text, source.name)


def _read_builtin(source: Source, corpus: str, report: SourceReport) -> Iterator[Document]:
    if corpus == "pydoc-topics":
        from pydoc_data.topics import topics

        report.files += 1
        for key in sorted(topics):
            report.documents += 1
            yield Document(f"{source.name}/{key}", topics[key], source.name)
        return
    # shakespeare: one document per speech or passage (blank-line separated) of each play.
    directory = corpora_dir() / corpus
    if not directory.is_dir():
        raise SourceError(f"source {source.name!r}: built-in corpus {corpus!r} is not installed in {directory}; "
                          f"run hack/fetch-corpora.sh (make setup does) or set {CORPORA_ENV}")
    for path in sorted(directory.iterdir()):
        if not any(fnmatch.fnmatch(path.name, pattern) or pattern == "**/*" for pattern in source.include):
            continue
        report.files += 1
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, passage in enumerate(p for p in text.split("\n\n") if p.strip()):
            report.documents += 1
            yield Document(f"{source.name}/{path.name}:{number}", passage, source.name)
