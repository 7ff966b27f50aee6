"""Atomic output: build in a scratch directory, then make it appear at the destination in one step.

Local paths: the scratch directory is a sibling of the destination, and a rename swaps it in (an older
output is moved aside first and removed after). Object stores have no rename: files are uploaded with
manifest.json last, and readers treat an output without manifest.json as absent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


@contextlib.contextmanager
def scratch_directory(destination: str) -> Iterator[Path]:
    """A fresh directory to build the output in; removed if the build fails."""
    if _is_local(destination):
        target = _local(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
        path.mkdir()
    else:
        path = Path(tempfile.mkdtemp(prefix="llmops-data-"))
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def publish(built: Path, destination: str) -> None:
    """Move the finished output to `destination` (see the module docstring for the guarantees)."""
    if _is_local(destination):
        target = _local(destination)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(built, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    fs, root = fsspec.core.url_to_fs(destination)
    files = sorted(p for p in built.rglob("*") if p.is_file() and p.name != "manifest.json")
    for path in [*files, built / "manifest.json"]:
        fs.put_file(str(path), f"{root.rstrip('/')}/{path.relative_to(built).as_posix()}")
    shutil.rmtree(built, ignore_errors=True)
