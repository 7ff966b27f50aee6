"""Shared test helpers: the repository root, the example manifests as builders, and a real S3 API."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.s3_server import S3Server

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


def lora_deployment() -> dict[str, Any]:
    """The example Deployment serving (and gated on) the LoRA fine-tune itself instead of its int8 form: the
    shortest chain from a Dataset to a served model."""
    return patched(example("Deployment"), {"spec": {"model": {"fineTune": "tiny-shakespeare-lora"},
                                                    "gate": {"evaluation": "tiny-shakespeare-lora"}}})


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 API server, started once (see tests/s3_server.py)."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto_server.log")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 server; this process (and `workload_env` for subprocesses) points fsspec at the
    server and stages remote inputs into this test's own cache."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "llmops-cache"))
    return s3_server.create_bucket()
