"""Dataset: one Job runs the data pipeline (Ray in local mode inside the pod) with its config mounted.

Each spec generation runs once: children are named `<name>-data-<generation>`, so a changed spec starts a
fresh run and the stale children are deleted, while re-applying the same generation changes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1 import Dataset
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.runtime.settings import OperatorSettings
from llmops.trainer.config.data import DataJobConfig, PipelineConfig

from .jobs import CONFIG_DIR, CONFIG_FILE, KubernetesOptions, job_from_plan
from .objects import labels, metadata
from .storage import local_path
from .workload import Decision, run_decision

ENTRYPOINT = "llmops-data"
"""The data workload's console script in the trainer image."""


def child_suffix(dataset: Dataset) -> str:
    return f"data-{dataset.metadata.generation or 1}"


def output_uri(dataset: Dataset, settings: OperatorSettings) -> str:
    return dataset.spec.output.uri or f"{settings.artifact_root}/{dataset.metadata.namespace}/datasets/" \
        f"{dataset.metadata.name}"


def job_config(dataset: Dataset, settings: OperatorSettings) -> DataJobConfig:
    """The workload's config: the pipeline part of the spec, with every pvc:// URI as its mount path."""
    pipeline = dataset.spec.model_dump(include=set(PipelineConfig.model_fields))
    for source in pipeline["sources"]:
        source["uri"] = local_path(source["uri"])
    return DataJobConfig(**pipeline, output_uri=local_path(output_uri(dataset, settings)),
                         workers=dataset.spec.execution.workers)


def launch_plan(dataset: Dataset, settings: OperatorSettings) -> specs.AppDef:
    role = specs.Role(
        name="data",
        image=dataset.spec.image.image or settings.trainer_image,
        entrypoint=ENTRYPOINT,
        args=["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        # cpu and memory are Kubernetes quantities, carried by KubernetesOptions; -1 means "not set here".
        resource=specs.Resource(cpu=-1, gpu=0, memMB=-1),
    )
    return specs.AppDef(name=dataset.metadata.name, roles=[role])


def desired_children(dataset: Dataset, settings: OperatorSettings) -> list[dict[str, Any]]:
    meta = metadata(dataset, child_suffix(dataset))
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
              "data": {CONFIG_FILE: json.dumps(job_config(dataset, settings).to_wire(), indent=2, sort_keys=True)}}
    spec = dataset.spec
    options = KubernetesOptions(
        config_map=meta["name"], resources=spec.execution.resources, placement=spec.execution.placement,
        image=spec.image, backoff_limit=spec.backoff_limit, credentials_secret=spec.output.credentials_secret,
        pvc_uris=(output_uri(dataset, settings), *(s.uri for s in spec.sources)), labels=labels(dataset))
    if spec.execution.workers > 1:
        raise NotImplementedError("Datasets with more than one worker (a Ray cluster) are not supported yet: "
                                  "set spec.execution.workers to 1")
    return [config, job_from_plan(launch_plan(dataset, settings), meta, options)]


def references(dataset: Dataset) -> list[tuple[str, str]]:
    """A Dataset refers to no other resource."""
    return []


def reconcile(dataset: Dataset, children: dict[str, list[dict[str, Any]]], refs: dict[tuple[str, str], Any],
              settings: OperatorSettings, now: datetime) -> Decision:
    """Pure: the children this Dataset needs and its next status, given the children it owns now."""
    desired = desired_children(dataset, settings)
    status, events = run_decision(dataset.status or DatasetStatus(), desired, children,
                                  generation=dataset.metadata.generation, artifact_uri=output_uri(dataset, settings),
                                  now=now)
    return Decision(children=desired, status=status.to_wire(), events=events)
