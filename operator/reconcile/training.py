"""Shared by the training and evaluation kinds: model references, output locations and their children, either
one pod running the workload or torchrun on an Indexed Job (PretrainJob always, FineTune when distributed)."""

from __future__ import annotations

from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import ImageSpec, ModelRef, NodePool, Output, Resource
from llmops.operator.runtime.settings import OperatorSettings

from .dependencies import Dependency, dependency
from .jobs import (
    CONFIG_DIR,
    CONFIG_FILE,
    KubernetesOptions,
    config_map,
    headless_service,
    job_from_plan,
    torchrun_env,
)
from .objects import labels, metadata


def model_reference(ref: ModelRef) -> tuple[str, str] | None:
    if ref.pretrain_job:
        return ("PretrainJob", ref.pretrain_job)
    if ref.fine_tune:
        return ("FineTune", ref.fine_tune)
    return None


def model_run(ref: ModelRef, refs: dict[tuple[str, str], Any]) -> str | None:
    """Which run of a referenced PretrainJob or FineTune made its current artifact (`FineTune/x@<job>`): outputs
    keep their URI from run to run, so the URI alone cannot tell a retrained model from the one evaluated."""
    target = model_reference(ref)
    body = refs.get(target) if target else None
    job = ((body or {}).get("status") or {}).get("jobName")
    return f"{target[0]}/{target[1]}@{job}" if target and job else None


def resolve_model(ref: ModelRef, refs: dict[tuple[str, str], Any]) -> Dependency:
    """The model directory a reference points at, once the training that makes it has succeeded."""
    target = model_reference(ref)
    if target is None:
        return Dependency(True, False, "model given by uri", ref.uri)
    return dependency(*target, refs.get(target))


def default_output(resource: Resource, settings: OperatorSettings) -> str:
    meta = resource.metadata
    return f"{settings.artifact_root}/{meta.namespace}/{resource.names.plural}/{meta.name}"


def workload_image(image: ImageSpec, gpus: int, settings: OperatorSettings) -> str:
    """The spec's image, else the operator's default (the CUDA variant when GPUs are asked for)."""
    return image.image or (settings.trainer_cuda_image if gpus else settings.trainer_image)


def is_distributed(pool: NodePool) -> bool:
    """More than one training process: several pods, or several GPUs (one process each) in one pod."""
    return pool.nodes > 1 or pool.gpus_per_node > 1


def torchrun_children(resource: Resource, suffix: str, entrypoint: str, config: dict[str, Any], *,
                      pool: NodePool, image: ImageSpec, backoff_limit: int, output: Output,
                      pvc_uris: tuple[str, ...], settings: OperatorSettings,
                      active_deadline_seconds: int | None = None) -> list[dict[str, Any]]:
    """ConfigMap, a headless Service when there are several nodes, and an Indexed Job of `pool.nodes` pods, each
    running `torchrun --no-python entrypoint --config FILE` with one process per GPU (one on a CPU pod)."""
    meta = metadata(resource, f"{suffix}-{resource.metadata.generation or 1}")
    children = [config_map(meta, config)]
    service = None
    if pool.nodes > 1:
        service = meta["name"]
        children.append(headless_service(meta, {**labels(resource), "job-name": meta["name"]}))
    role = specs.Role(
        name=suffix, image=workload_image(image, pool.gpus_per_node, settings), entrypoint="torchrun",
        args=["--no-python", entrypoint, "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        env=torchrun_env(meta["name"], service or "", pool.nodes, max(1, pool.gpus_per_node)),
        num_replicas=pool.nodes, resource=specs.Resource(cpu=-1, gpu=pool.gpus_per_node, memMB=-1))
    options = KubernetesOptions(
        config_map=meta["name"], resources=pool.resources, placement=pool, image=image, backoff_limit=backoff_limit,
        active_deadline_seconds=active_deadline_seconds, queue_name=pool.queue_name,
        credentials_secret=output.credentials_secret, pvc_uris=tuple(u for u in pvc_uris if u),
        labels=labels(resource))
    children.append(job_from_plan(specs.AppDef(name=resource.metadata.name, roles=[role]), meta, options, service))
    return children


def single_pod_children(resource: Resource, suffix: str, entrypoint: str, config: dict[str, Any], *,
                        pool: NodePool, image: ImageSpec, backoff_limit: int, output: Output,
                        pvc_uris: tuple[str, ...], settings: OperatorSettings,
                        active_deadline_seconds: int | None = None) -> list[dict[str, Any]]:
    """ConfigMap with the workload's config, and a one-pod Job running `entrypoint --config FILE`."""
    if pool.nodes > 1:
        raise NotImplementedError(f"multi-node {resource.kind} runs are not built yet: set spec.nodePool.nodes to 1")
    meta = metadata(resource, f"{suffix}-{resource.metadata.generation or 1}")
    role = specs.Role(name=suffix, image=workload_image(image, pool.gpus_per_node, settings), entrypoint=entrypoint,
                      args=["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
                      resource=specs.Resource(cpu=-1, gpu=pool.gpus_per_node, memMB=-1))
    options = KubernetesOptions(
        config_map=meta["name"], resources=pool.resources, placement=pool, image=image, backoff_limit=backoff_limit,
        active_deadline_seconds=active_deadline_seconds, queue_name=pool.queue_name,
        credentials_secret=output.credentials_secret, pvc_uris=tuple(u for u in pvc_uris if u),
        labels=labels(resource))
    plan = specs.AppDef(name=resource.metadata.name, roles=[role])
    return [config_map(meta, config), job_from_plan(plan, meta, options)]
