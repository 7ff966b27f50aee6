"""Dataset: one Job runs the data pipeline (Ray in local mode inside the pod) with its config mounted; with more than
one worker, a KubeRay RayJob runs it on a Ray cluster where KubeRay is present (see rayjob.py), else it is rejected.

Each spec generation runs once: children are named `<name>-data-<generation>`, so a changed spec starts a
fresh run and the stale children are deleted, while re-applying the same generation changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1 import Dataset
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.runtime.settings import KubeRayMode, OperatorSettings
from llmops.trainer.config.data import DataJobConfig, PipelineConfig

from .jobs import CONFIG_DIR, CONFIG_FILE, KubernetesOptions, config_map, job_from_plan
from .objects import labels, metadata
from .rayjob import KIND as RAY_JOB
from .rayjob import ray_job_from_plan, ray_job_pods, ray_job_state
from .storage import local_path
from .workload import Decision, Rejected, run_decision, workload_status

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


def on_ray_cluster(dataset: Dataset, settings: OperatorSettings) -> bool:
    """Whether this Dataset runs as a RayJob; several workers without KubeRay are rejected with the way out."""
    if dataset.spec.execution.workers == 1:
        return False
    if settings.kuberay is not KubeRayMode.ON:
        raise Rejected("KubeRayUnavailable", f"spec.execution.workers is {dataset.spec.execution.workers}, and more "
                       "than one worker runs on a Ray cluster, which needs KubeRay (the rayjobs.ray.io/v1 API) and "
                       "the chart's integrations.kuberay.enabled=true: install KubeRay, or set workers to 1")
    return True


def launch_plan(dataset: Dataset, settings: OperatorSettings) -> specs.AppDef:
    ray = on_ray_cluster(dataset, settings)
    role = specs.Role(
        name="data",
        image=dataset.spec.image.image or settings.trainer_image,
        entrypoint=ENTRYPOINT,
        # On a Ray cluster the engine joins it through RAY_ADDRESS, which the Ray job's driver is given.
        args=["--config", f"{CONFIG_DIR}/{CONFIG_FILE}", *(["--engine", "ray"] if ray else [])],
        num_replicas=dataset.spec.execution.workers if ray else 1,
        # cpu and memory are Kubernetes quantities, carried by KubernetesOptions; -1 means "not set here".
        resource=specs.Resource(cpu=-1, gpu=0, memMB=-1),
    )
    return specs.AppDef(name=dataset.metadata.name, roles=[role])


def desired_children(dataset: Dataset, settings: OperatorSettings) -> list[dict[str, Any]]:
    meta = metadata(dataset, child_suffix(dataset))
    config = config_map(meta, job_config(dataset, settings).to_wire())
    spec = dataset.spec
    options = KubernetesOptions(
        config_map=meta["name"], resources=spec.execution.resources, placement=spec.execution.placement,
        image=spec.image, backoff_limit=spec.backoff_limit, credentials_secret=spec.output.credentials_secret,
        pvc_uris=(output_uri(dataset, settings), *(s.uri for s in spec.sources)), labels=labels(dataset))
    plan = launch_plan(dataset, settings)
    if plan.roles[0].num_replicas > 1:
        return [config, ray_job_from_plan(plan, meta, options)]
    return [config, job_from_plan(plan, meta, options)]


def references(dataset: Dataset) -> list[tuple[str, str]]:
    """A Dataset refers to no other resource."""
    return []


def reconcile(dataset: Dataset, children: dict[str, list[dict[str, Any]]], refs: dict[tuple[str, str], Any],
              settings: OperatorSettings, now: datetime) -> Decision:
    """Pure: the children this Dataset needs and its next status, given the children it owns now."""
    desired = desired_children(dataset, settings)
    previous, generation, artifact = dataset.status or DatasetStatus(), dataset.metadata.generation, \
        output_uri(dataset, settings)
    run = desired[-1]
    if run["kind"] == RAY_JOB:
        name = run["metadata"]["name"]
        ray_job = next((r for r in children.get(RAY_JOB, []) if r["metadata"]["name"] == name), None)
        status, events = workload_status(previous, ray_job_state(ray_job, name, ray_job_pods(children, name)),
                                         generation=generation, job_name=name, artifact_uri=artifact, now=now)
    else:
        status, events = run_decision(previous, desired, children, generation=generation, artifact_uri=artifact,
                                      now=now)
    return Decision(children=desired, status=status.to_wire(), events=events)
