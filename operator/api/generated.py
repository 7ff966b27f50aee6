"""The generated files (`llmops generate`): every CRD, in both places it lives, and the API reference.

Above crds.py and reference.py, so neither imports the other's caller (the reference reads the CRD schemas).
"""

from __future__ import annotations

from pathlib import Path

from .crds import CRD_DIRS, crd_filename, render_crd
from .reference import render_reference
from .v1alpha1 import KINDS


def generated_files() -> dict[Path, str]:
    """Every generated file, by path relative to the repository root, with its content."""
    files: dict[Path, str] = {}
    for resource in KINDS.values():
        text = render_crd(resource)
        for directory in CRD_DIRS:
            files[directory / crd_filename(resource)] = text
    files[Path("docs/api-reference.md")] = render_reference()
    return files


def stale_files(root: Path) -> list[Path]:
    """Generated files that are missing or differ from what the models produce."""
    return [
        path for path, text in generated_files().items()
        if not (root / path).is_file() or (root / path).read_text() != text
    ]


def write_generated(root: Path) -> list[Path]:
    written = []
    for path, text in generated_files().items():
        target = root / path
        if not target.is_file() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(path)
    return written
