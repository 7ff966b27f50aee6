"""Dataset: one run of the data pipeline (Ray in local mode inside its process); with more than one worker, the
driver of a Ray cluster (a KubeRay RayJob in a cluster, see backends/kubernetes.py).

Each spec generation runs once: runs are named `<name>-data-<generation>`, so a changed spec starts a
fresh run and the stale children are deleted, while re-applying the same generation changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import Dataset
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.data import DataJobConfig, PipelineConfig

from .plan import Compute, Launcher, LaunchPlan, RunObservation, plan_app
from .workload import Event

ENTRYPOINT = "llmops-data"
"""The data workload's console script in the trainer image."""


def child_suffix(dataset: Dataset) -> str:
    return f"data-{dataset.metadata.generation or 1}"


def output_uri(dataset: Dataset, settings: OperatorSettings) -> str:
    return dataset.spec.output.uri or f"{settings.artifact_root}/{dataset.metadata.namespace}/datasets/" \
        f"{dataset.metadata.name}"


def job_config(dataset: Dataset, settings: OperatorSettings) -> DataJobConfig:
    """The workload's config: the pipeline part of the spec, and where to write."""
    pipeline = dataset.spec.model_dump(include=set(PipelineConfig.model_fields))
    return DataJobConfig(**pipeline, output_uri=output_uri(dataset, settings), workers=dataset.spec.execution.workers)


def plan(dataset: Dataset, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan:
    """One run of the data pipeline: in one process (Ray in local mode, or no Ray), or as the driver of a Ray
    cluster of `workers` nodes."""
    spec = dataset.spec
    ray = spec.execution.workers > 1
    app = plan_app(dataset.metadata.name, "data", spec.image.image or settings.trainer_image, ENTRYPOINT,
                   replicas=spec.execution.workers if ray else 1)
    if ray:  # the engine joins the Ray cluster through RAY_ADDRESS, which the driver is given
        app.roles[0].args.extend(["--engine", "ray"])
    out = output_uri(dataset, settings)
    compute = Compute(image=spec.image, resources=spec.execution.resources, placement=spec.execution.placement,
                      backoff_limit=spec.backoff_limit, credentials_secret=spec.output.credentials_secret)
    return LaunchPlan(run=f"{dataset.metadata.name}-{child_suffix(dataset)}", app=app,
                      launcher=Launcher.RAY if ray else Launcher.PROCESS,
                      config=job_config(dataset, settings).to_wire(),
                      reads={f"source:{s.name}": s.uri for s in spec.sources}, writes=out, artifact_uri=out,
                      compute=compute)


def references(dataset: Dataset) -> list[tuple[str, str]]:
    """A Dataset refers to no other resource."""
    return []


def complete(dataset: Dataset, status: DatasetStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    return []
