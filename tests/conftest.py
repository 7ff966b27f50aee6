"""Shared test helpers: the repository root and the example manifests as builders."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "lifecycle"

DELETE = object()
"""In a patch: remove this key."""


def example(kind: str) -> dict[str, Any]:
    """A fresh copy of the lifecycle example of `kind` (e.g. "FineTune")."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["kind"] == kind:
            return doc
    raise KeyError(kind)


def patched(manifest: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `patch` into a copy of `manifest`; DELETE removes a key, lists are replaced whole."""
    out = copy.deepcopy(manifest)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = patched(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def root() -> Path:
    return ROOT
