"""Dataset: ingest raw text and turn it into clean, de-duplicated, tokenized shards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops.trainer.config.base import ApiModel, Rule
from llmops.trainer.config.data import PipelineConfig, StreamingConfig
from llmops.trainer.config.manifest import DatasetStats

from .common import (
    AGE_COLUMN,
    PHASE_COLUMN,
    PROGRESS_COLUMN,
    ComputeResources,
    CrdNames,
    ImageSpec,
    Output,
    Placement,
    PrinterColumn,
    Quantity,
    Resource,
    WorkloadStatus,
)


class DataExecution(ApiModel):
    """Where the pipeline runs. One worker runs Ray in local mode inside a single pod."""

    workers: int = Field(default=1, ge=1, le=1024)
    """Ray workers. More than one runs on a Ray cluster (a KubeRay RayJob where KubeRay is installed)."""

    resources: ComputeResources = Field(default_factory=ComputeResources)
    """CPU and memory per worker."""

    placement: Placement = Field(default_factory=Placement)
    """Node selection for the workers."""

    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    """Curate in blocks through scratch files, for a corpus larger than the driver's memory limit (the output is
    the same). In a cluster the scratch files go to an emptyDir volume on the driver's pod."""

    scratch_size_limit: Quantity | None = None
    """Size limit of that scratch volume, e.g. 200Gi (about the cleaned corpus's size); default: no limit."""

    cel_rules = (
        Rule(
            "!has(self.scratchSizeLimit) || self.streaming.enabled",
            "scratchSizeLimit sizes the streaming engine's scratch volume: set streaming.enabled or remove it",
            field_path=".scratchSizeLimit",
        ),
    )


class DatasetSpec(PipelineConfig):
    """The data pipeline (sources, stages, tokenizer) plus where and how it runs."""

    execution: DataExecution = Field(default_factory=DataExecution)
    """Workers and their placement."""

    image: ImageSpec = Field(default_factory=ImageSpec)
    """Workload image."""

    output: Output = Field(default_factory=Output)
    """Where shards, documents, tokenizer and manifest are written."""

    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Retries of a failed pipeline run before the Dataset is Failed."""


class DatasetStatus(WorkloadStatus):
    stats: DatasetStats | None = None
    """Counts per stage, filled in as the pipeline reports them."""

    tokenizer_uri: str | None = None
    """The tokenizer.json written with the dataset."""


class Dataset(Resource):
    """Ingest, normalise, filter, de-duplicate, scrub PII and tokenize text into packed shards."""

    kind: Literal["Dataset"] = "Dataset"
    spec: DatasetSpec
    status: DatasetStatus | None = None

    names = CrdNames(
        plural="datasets",
        short_names=("llmds",),
        printer_columns=(
            PHASE_COLUMN,
            PROGRESS_COLUMN,
            PrinterColumn("Documents", "integer", ".status.stats.documentsKept", "Documents kept"),
            PrinterColumn("Tokens", "integer", ".status.stats.tokens", "Tokens written"),
            AGE_COLUMN,
        ),
    )
