"""Workload I/O on any fsspec store: a path or file:// URI (a mounted PVC included), s3://, gs://, memory://.

Inputs are staged in: a local path is used where it is; a remote file or directory is copied into a local cache
and reused while the store lists the same objects (names, sizes, ETags), so a re-written output is fetched again.
Outputs are built in a local directory and uploaded with one marker file last (manifest.json, meta.json,
config.json): object stores have no rename, so readers take the marker as "complete". Local outputs are swapped
in with a rename instead.

Every failure of a store becomes a StorageError that names the URI and what was missing; the workloads report
it as a configuration error (exit 78), since a retry finds the same missing bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem

from llmops.trainer.config import layout

STAMP_FILE = ".llmops-staged.json"
"""Inside a staged copy: the URI and the listing it was copied from."""


class StorageError(ValueError):
    """A URI cannot be read or written; the message names it and what was wrong. A ValueError, as the other
    "the spec cannot work" errors (ConfigFileError, ModelLoadError) are: the CLIs exit 78 on it."""


def cache_dir(kind: str = "stage") -> Path:
    """`$LLMOPS_CACHE/<kind>` (default ~/.cache/llmops/<kind>): node-local copies of remote inputs."""
    return Path(os.environ.get("LLMOPS_CACHE") or Path.home() / ".cache" / "llmops") / kind


def _client_errors() -> tuple[type[BaseException], ...]:
    """What the stores' clients raise besides OSError (an unreachable endpoint, refused credentials)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    with contextlib.suppress(ImportError):
        from aiohttp import ClientError as HttpClientError

        errors.append(HttpClientError)
    return tuple(errors)


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of `uri` and the path inside it."""
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as error:  # s3:// without s3fs, gs:// without gcsfs
        raise StorageError(f"cannot open {uri}: {error}") from error
    except ValueError as error:  # an unknown protocol
        raise StorageError(f"cannot open {uri}: {error}") from error


def _bucket(root: str) -> str | None:
    """The bucket of an object-store path (its first component); None for filesystems without buckets."""
    return None if root.startswith("/") else root.split("/", 1)[0]


def why_missing(uri: str) -> str:
    """What to say about a URI that was not found: its bucket does not exist, or no object is at it."""
    try:
        fs, root = filesystem(uri)
    except StorageError as error:
        return str(error)
    return _missing(uri, fs, root)


def _missing(uri: str, fs: AbstractFileSystem, root: str) -> str:
    bucket = _bucket(root)
    if bucket:
        try:
            present = fs.exists(bucket)
        except _client_errors():
            present = True  # cannot tell (no permission to look): say what is certain
        if not present:
            return f"bucket {bucket!r} of {uri} does not exist"
    return f"{uri} does not exist" if layout.is_local(uri) else f"no object at {uri}"


@contextlib.contextmanager
def _translated(uri: str, fs: AbstractFileSystem, root: str, doing: str) -> Iterator[None]:
    """Store calls inside raise StorageError naming `uri`."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as error:
        raise StorageError(_missing(uri, fs, root)) from error
    except PermissionError as error:
        raise StorageError(f"{doing} {uri}: access denied ({error}); check the workload's storage credentials") \
            from error
    except _client_errors() as error:
        raise StorageError(f"{doing} {uri} failed: {type(error).__name__}: {error}") from error


def check_bucket(uri: str) -> None:
    """Fail now, not after hours of training, when the bucket an output goes to does not exist."""
    if layout.is_local(uri):
        return
    fs, root = filesystem(uri)
    bucket = _bucket(root)
    if not bucket:
        return
    with _translated(uri, fs, root, "checking"):
        if not fs.exists(bucket):
            raise StorageError(f"bucket {bucket!r} of {uri} does not exist")


def listing(uri: str) -> dict[str, dict[str, Any]]:
    """Every object under `uri` by its path relative to it ("" for `uri` itself when it is one file); empty when
    nothing is there but the bucket is. Listings are never served from a cache: other processes write too."""
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    with _translated(uri, fs, root, "listing"):
        fs.invalidate_cache(root)
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            found = {}
        if not found:
            check_bucket(uri)
            return {}
    out = {}
    for path, info in found.items():
        path = path.rstrip("/")
        out["" if path == root else path[len(root) + 1:]] = info
    return out


def exists(uri: str) -> bool:
    if layout.is_local(uri):
        return layout.local_path(uri).exists()
    fs, root = filesystem(uri)
    with _translated(uri, fs, root, "checking"):
        fs.invalidate_cache(root)
        return bool(fs.exists(root))


def delete(uri: str) -> bool:
    """Remove the file or directory at `uri`; False when nothing was there."""
    if layout.is_local(uri):
        path = layout.local_path(uri)
        if not path.exists() and not path.is_symlink():
            return False
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    with _translated(uri, fs, root, "deleting"):
        fs.invalidate_cache(root)
        if not fs.exists(root):  # a missing bucket included: gone is gone
            return False
        fs.rm(root, recursive=True)
    return True


@contextlib.contextmanager
def open(uri: str, mode: str = "rb", **kwargs: Any) -> Iterator[IO[Any]]:
    """One file at `uri` (results.json); writing creates the parent directories of a local path."""
    fs, root = filesystem(uri)
    with _translated(uri, fs, root, "writing" if "w" in mode else "reading"):
        if "w" in mode and layout.is_local(uri):
            layout.local_path(uri).parent.mkdir(parents=True, exist_ok=True)
        with fs.open(root, mode, **kwargs) as file:
            yield file


def _fingerprint(found: dict[str, dict[str, Any]]) -> str:
    """Changes when any object is added, removed or re-written."""
    keys = ("ETag", "etag", "md5Hash", "size", "LastModified", "mtime", "created")
    rows = [[name, *(str(info.get(k)) for k in keys)] for name, info in sorted(found.items())]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _stamp(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return {}


def stage_in(uri: str, what: str, *, require: str | None = None, cache: Path | None = None) -> Path:
    """A local path holding the file or directory at `uri` (`what` names it in errors: "dataset", "base model").

    `require`: a file the directory must hold (its completion marker), checked before anything is copied.
    Remote inputs are copied into `cache` (default cache_dir()) once per content; concurrent processes on one
    node may stage the same URI (each copies to its own scratch name, the first rename wins)."""
    if layout.is_local(uri):
        path = layout.local_path(uri).expanduser()
        if not path.exists():
            raise StorageError(f"{what} {uri} does not exist")
        if require and not (path / require).is_file():
            raise StorageError(f"{what} {uri} is incomplete: no {require} in it")
        return path
    try:
        found = listing(uri)
    except StorageError as error:
        raise StorageError(f"{what}: {error}") from error
    if not found:
        fs, root = filesystem(uri)
        raise StorageError(f"{what}: {_missing(uri, fs, root)}")
    single = list(found) == [""]
    if require and not single and require not in found:
        raise StorageError(f"{what} {uri} is incomplete: no object at {layout.join(uri, require)}")
    target = (cache or cache_dir()) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    fingerprint = _fingerprint(found)
    if _stamp(target).get("fingerprint") != fingerprint:
        _download(uri, found, target, fingerprint)
    return target / Path(uri.rstrip("/")).name if single else target


def _download(uri: str, found: dict[str, dict[str, Any]], target: Path, fingerprint: str) -> None:
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with _translated(uri, fs, root, "downloading"):
            for name in found:
                local = partial / (name or Path(root).name)
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{root}/{name}" if name else root, str(local))
        (partial / STAMP_FILE).write_text(json.dumps({"uri": uri, "fingerprint": fingerprint}))
        replace_local(partial, target)
    except OSError:
        if _stamp(target).get("fingerprint") != fingerprint:  # not another process that won the race
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def replace_local(built: Path, target: Path) -> None:
    """Swap the directory `built` in at `target` (a sibling on the same filesystem): whoever looks sees the old
    or the new directory whole."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    os.rename(built, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def upload_files(local: Path, uri: str, *, skip: tuple[str, ...] = ()) -> None:
    """Put every file under `local` at the same relative path under `uri` (except the names in `skip`)."""
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name not in skip)
    with _translated(uri, fs, root, "uploading to"):
        for path in files:
            fs.put_file(str(path), f"{root}/{path.relative_to(local).as_posix()}")


def put_file(local: Path, uri: str) -> None:
    fs, root = filesystem(uri)
    with _translated(uri, fs, root, "uploading to"):
        fs.put_file(str(local), root)


def upload_dir(local: Path, uri: str, *, last: str) -> None:
    """Replace the directory at `uri` with `local`'s files, `last` (the completion marker) written last.

    On a store the old marker goes first, so a half-replaced output never looks complete. Local destinations get
    a copy swapped in by rename (see replace_local)."""
    if not (local / last).is_file():
        raise ValueError(f"{local} has no {last}: it is not a finished output")
    if layout.is_local(uri):
        target = layout.local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
        shutil.copytree(local, staged)
        replace_local(staged, target)
        return
    check_bucket(uri)
    delete(layout.join(uri, last))
    delete(uri)
    upload_files(local, uri, skip=(last,))
    put_file(local / last, layout.join(uri, last))


@contextlib.contextmanager
def output_dir(uri: str, *, last: str) -> Iterator[Path]:
    """Where to write the directory `uri` here: the local path itself (the writer replaces it whole), or for a
    store a scratch directory that is uploaded (see upload_dir) when the block ends without an error."""
    if layout.is_local(uri):
        path = layout.local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
        return
    check_bucket(uri)
    scratch = Path(tempfile.mkdtemp(prefix="llmops-output-"))
    try:
        yield scratch / "out"
        upload_dir(scratch / "out", uri, last=last)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
