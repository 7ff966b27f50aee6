"""Where things are inside a resource's output root: one layout for the workloads that write it, the operator
that points at it (status.artifactUri, cleanup) and the readers downstream (FineTune, Evaluation, the server).

    <output>/model/             Hugging Face-format model (PretrainJob, FineTune): config.json, weights,
                                tokenizer files, model-card.md, lineage.json
    <output>/checkpoints/       step-NNNNNNNN/ training state (PretrainJob, FineTune)
    <output>/results.json       metrics and verdict (Evaluation)
    <output>/manifest.json      a Dataset's manifest, written last; shards/, tokenizer.json, report.md beside it

Plain string functions (no fsspec, no torch): URIs stay URIs, local paths stay paths.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
RESULTS_FILE = "results.json"
MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"
SHARD_INDEX_FILE = "index.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_CARD_FILE = "model-card.md"
LINEAGE_FILE = "lineage.json"
MODEL_CONFIG_FILE = "config.json"

RUN_ENV = "LLMOPS_RUN"
"""The run's name (`<name>-<suffix>-<number>`), set by either backend: a checkpoint records the run that wrote it,
and a run resumes only from its own (a new run of a resource starts afresh under the same output root)."""

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
"""Any one of these makes a model directory loadable (with config.json and a tokenizer)."""

TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer.model", "vocab.json")


def is_local(uri: str) -> bool:
    """A path or file:// URI (pvc:// is mapped to its mount before a workload sees it)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (see is_local)."""
    return Path(uri.removeprefix("file://"))


def join(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, keeping its scheme (s3://b/x + model -> s3://b/x/model)."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def model_uri(output: str) -> str:
    return join(output, MODEL_DIR)


def checkpoints_uri(output: str) -> str:
    return join(output, CHECKPOINTS_DIR)


def results_uri(output: str) -> str:
    return join(output, RESULTS_FILE)
