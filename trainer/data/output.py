"""Atomic output: build in a scratch directory, then make it appear at the destination in one step.

Local paths: the scratch directory is a sibling of the destination, and a rename swaps it in (an older
output is moved aside first and removed after). Object stores have no rename: files are uploaded with
manifest.json last, and readers treat an output without manifest.json as absent (trainer/storage.py).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from llmops.trainer import storage
from llmops.trainer.config import layout


@contextlib.contextmanager
def scratch_directory(destination: str) -> Iterator[Path]:
    """A fresh directory to build the output in; removed if the build fails."""
    if layout.is_local(destination):
        target = layout.local_path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
        path.mkdir()
    else:
        storage.check_bucket(destination)  # before the pipeline runs, not after
        path = Path(tempfile.mkdtemp(prefix="llmops-data-"))
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def publish(built: Path, destination: str) -> None:
    """Move the finished output to `destination` (see the module docstring for the guarantees)."""
    if layout.is_local(destination):
        storage.replace_local(built, layout.local_path(destination))
        return
    try:
        storage.upload_dir(built, destination, last=layout.MANIFEST_FILE)
    finally:
        shutil.rmtree(built, ignore_errors=True)
