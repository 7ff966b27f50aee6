"""Dataset: one run of the data pipeline (Ray in local mode inside its process); with more than one worker, the
driver of a Ray cluster (a KubeRay RayJob in a cluster, see backends/kubernetes.py).

Each spec generation runs once: runs are named `<name>-data-<runNumber>` (the generation, as a Dataset references
nothing), so a changed spec starts a fresh run and the stale children are deleted, while re-applying the same
generation changes nothing. The run's counts and tokenizer come back on the result channel into status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import Dataset
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.data import DataJobConfig, PipelineConfig
from llmops.trainer.config.layout import TOKENIZER_FILE, join

from .defaults import output_root, workload_image
from .plan import Compute, Launcher, LaunchPlan, RunObservation, Scratch, plan_app
from .workload import Event

ENTRYPOINT = "llmops-data"
"""The data workload's console script in the trainer image."""
SUFFIX = "data"


def job_config(dataset: Dataset, settings: OperatorSettings) -> DataJobConfig:
    """The workload's config: the pipeline part of the spec, and where to write."""
    pipeline = dataset.spec.model_dump(include=set(PipelineConfig.model_fields))
    execution = dataset.spec.execution
    return DataJobConfig(**pipeline, output_uri=output_root(dataset, settings), workers=execution.workers,
                         streaming=execution.streaming)


def plan(dataset: Dataset, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan:
    """One run of the data pipeline: in one process (Ray in local mode, or no Ray), or as the driver of a Ray
    cluster of `workers` nodes."""
    spec = dataset.spec
    ray = spec.execution.workers > 1
    app = plan_app(dataset.metadata.name, SUFFIX, workload_image(spec.image, settings), ENTRYPOINT,
                   replicas=spec.execution.workers if ray else 1)
    if ray:  # the engine joins the Ray cluster through RAY_ADDRESS, which the driver is given
        app.roles[0].args.extend(["--engine", "ray"])
    out = output_root(dataset, settings)
    execution = spec.execution
    compute = Compute(image=spec.image, resources=execution.resources, placement=execution.placement,
                      backoff_limit=spec.backoff_limit, credentials_secret=spec.output.credentials_secret,
                      scratch=Scratch(execution.scratch_size_limit) if execution.streaming.enabled else None)
    return LaunchPlan(suffix=SUFFIX, number=dataset.metadata.generation or 1, app=app,
                      launcher=Launcher.RAY if ray else Launcher.PROCESS,
                      config=job_config(dataset, settings).to_wire(),
                      reads={f"source:{s.name}": s.uri for s in spec.sources}, writes=out, artifact_uri=out,
                      compute=compute)


def references(dataset: Dataset) -> list[tuple[str, str]]:
    """A Dataset refers to no other resource."""
    return []


def complete(dataset: Dataset, status: DatasetStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    """A succeeded run's counts (printer columns Documents and Tokens; a PretrainJob's computeBudget reads the
    vocabulary size) and tokenizer, as the workload reported them from its manifest."""
    result = observation.result
    if status.phase is Phase.SUCCEEDED and result is not None:
        status.stats = result.stats.model_copy(deep=True) if result.stats is not None else status.stats
        if result.tokenizer_uri:  # the workload names it as it sees it (a mount path in a pod); status keeps URIs
            status.tokenizer_uri = join(plan.writes, TOKENIZER_FILE)
    return []
